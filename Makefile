# `make demo` and `make test` are the two entry points (see README.md);
# `make docs` builds the documentation site.
# bash: `make bench` needs pipefail.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
BACKENDS := tensorflow jax torch
PYTEST_ARGS ?=
# Two pytest-xdist workers, one per core of the CI machine (tests/conftest.py
# gives each worker one compute thread); `make test XDIST=` runs in one process.
XDIST ?= -n 2 --dist worksteal
# The demo's backend: KERAS_BACKEND if set, else tensorflow.
DEMO_BACKEND := $(or $(KERAS_BACKEND),tensorflow)
# The oldest Keras the package supports (keras_rnnreg/_keras_compat.py); `make
# test` also runs the suite on it once, on the torch backend (the quickest).
KERAS_MINIMUM := $(shell sed -n 's/^KERAS_MINIMUM = "\(.*\)"/\1/p' keras_rnnreg/_keras_compat.py)
KERAS_MINIMUM_DIR := .keras-minimum

.PHONY: demo test test-keras-minimum venv docs bench benchmark clean

# The CPU build of torch is installed first, pinned, so that the package's
# `torch>=2.2,<3` range is already met and pip never pulls a multi-GB CUDA build.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[all,test,docs]"
	touch $@

# The demo needs one backend: install just that one (quicker on a fresh machine).
$(BIN)/.installed-demo-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if [ "$*" = torch ]; then $(BIN)/python -m pip install -q torch==2.13.0; fi
	$(BIN)/python -m pip install -q -e ".[$*,plot]"
	touch $@

venv: $(BIN)/.installed

# The main job: `keras-rnnreg train` with no flags (the embedded synthetic
# corpus, a regularized model), into a fresh runs/demo-<backend>.
demo: $(BIN)/.installed-demo-$(DEMO_BACKEND)
	rm -rf runs/demo-$(DEMO_BACKEND)
	KERAS_BACKEND=$(DEMO_BACKEND) $(BIN)/keras-rnnreg train --output runs/demo-$(DEMO_BACKEND)

# Only Keras itself, at the minimum version, shadows the venv's through
# PYTHONPATH; its dependencies are the venv's.
$(KERAS_MINIMUM_DIR)/keras-$(KERAS_MINIMUM): $(BIN)/.installed
	rm -rf $(KERAS_MINIMUM_DIR)
	$(BIN)/python -m pip install -q --no-deps --target $(KERAS_MINIMUM_DIR) keras==$(KERAS_MINIMUM)
	touch $@

test-keras-minimum: $(KERAS_MINIMUM_DIR)/keras-$(KERAS_MINIMUM)
	@echo "=== KERAS_BACKEND=torch, keras==$(KERAS_MINIMUM) ==="
	PYTHONPATH=$(KERAS_MINIMUM_DIR) KERAS_BACKEND=torch $(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) $(PYTEST_ARGS) tests

# The site (mkdocs.yml) into site/. --strict turns every warning into a
# failure: a broken link or anchor, a page missing from the nav, an API
# reference (mkdocstrings) naming an object or parameter the code lacks.
docs: venv
	$(BIN)/mkdocs build --strict

# Every test runs once per backend, then once on the minimum Keras, while
# the docs build (single-threaded, ~20 s) runs beside that last pass, its
# output printed after it; all runs go ahead even if one fails.
test: venv $(KERAS_MINIMUM_DIR)/keras-$(KERAS_MINIMUM)
	@status=0; for backend in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$backend ==="; \
	  KERAS_BACKEND=$$backend $(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) $(PYTEST_ARGS) tests || status=1; \
	done; \
	docs_log=$$(mktemp); $(MAKE) --no-print-directory docs > $$docs_log 2>&1 & docs=$$!; \
	$(MAKE) --no-print-directory test-keras-minimum || status=1; \
	wait $$docs || status=1; \
	echo "=== mkdocs build --strict ==="; cat $$docs_log; rm -f $$docs_log; \
	exit $$status

# The short benchmarks (docs/benchmarks.md), on every backend, each one
# single-threaded: on a shared 2-core machine torch's two OpenMP threads
# stall whenever another process holds a core, and one thread on every side
# keeps the Keras-vs-PyTorch comparison fair. Each prints its medians and
# ratios, and a copy goes to runs/bench/. About 30 minutes on 2 cores.
# `make bench BENCH_ARGS=--quick`: a smoke test of the whole target.
BENCH_ARGS ?=
BENCH_VARIANTS := plain,keras_lstm,weight_drop,locked_dropout,embedding_dropout,artar,tied,asgd_off,gradient_noise
bench: venv
	mkdir -p runs/bench
	@set -o pipefail; for backend in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$backend ==="; \
	  KERAS_BACKEND=$$backend $(BIN)/python benchmarks/awd_vs_pytorch.py --threads 1 $(BENCH_ARGS) \
	    | tee runs/bench/awd_vs_pytorch-$$backend.txt || exit 1; \
	  KERAS_BACKEND=$$backend $(BIN)/python benchmarks/throughput.py --threads 1 $(BENCH_ARGS) \
	    --variants $(BENCH_VARIANTS) | tee runs/bench/throughput-$$backend.txt || exit 1; \
	  KERAS_BACKEND=$$backend $(BIN)/python benchmarks/noisin_throughput.py --threads 1 $(BENCH_ARGS) \
	    | tee runs/bench/noisin_throughput-$$backend.txt || exit 1; \
	  KERAS_BACKEND=$$backend $(BIN)/python benchmarks/noise_draws.py --threads 1 $(BENCH_ARGS) \
	    | tee runs/bench/noise_draws-$$backend.txt || exit 1; \
	  KERAS_BACKEND=$$backend $(BIN)/python benchmarks/output_projection.py --threads 1 $(BENCH_ARGS) \
	    | tee runs/bench/output_projection-$$backend.txt || exit 1; \
	  KERAS_BACKEND=$$backend $(BIN)/python benchmarks/lstm_layer.py --threads 1 $(BENCH_ARGS) \
	    | tee runs/bench/lstm_layer-$$backend.txt || exit 1; \
	done; \
	$(BIN)/python benchmarks/resume_compile.py $(BENCH_ARGS) \
	  | tee runs/bench/resume_compile-jax.txt || exit 1; \
	KERAS_BACKEND=torch $(BIN)/python benchmarks/torch_data_path.py --threads 1 $(BENCH_ARGS) \
	  | tee runs/bench/torch_data_path-torch.txt

benchmark: bench

clean:
	rm -rf $(VENV) $(KERAS_MINIMUM_DIR) *.egg-info .pytest_cache site
