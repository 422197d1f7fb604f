# `make demo` and `make test` are the two entry points (see README.md).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
BACKENDS := tensorflow jax torch
PYTEST_ARGS ?=

.PHONY: demo test venv benchmark clean

# The CPU build of torch is installed first, pinned, so that the package's
# `torch>=2.2,<3` range is already met and pip never pulls a multi-GB CUDA build.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[all,test]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	KERAS_BACKEND=$${KERAS_BACKEND:-tensorflow} $(BIN)/python examples/awd_lstm_demo.py

# Every test runs once per backend; all backends run even if one fails.
test: venv
	@status=0; for backend in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$backend ==="; \
	  KERAS_BACKEND=$$backend $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests || status=1; \
	done; exit $$status

# torch runs single-threaded: on a shared 2-core machine its two OpenMP
# threads stall whenever another process holds a core (docs/benchmarks.md).
benchmark: venv
	KERAS_BACKEND=tensorflow $(BIN)/python benchmarks/throughput.py
	KERAS_BACKEND=jax $(BIN)/python benchmarks/throughput.py
	KERAS_BACKEND=torch $(BIN)/python benchmarks/throughput.py --threads 1

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
