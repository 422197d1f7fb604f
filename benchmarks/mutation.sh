#!/usr/bin/env bash
# Mutation testing (mutmut 3.8) of five modules, each against its own tests,
# on the torch backend, niced and one process at a time (a shared 2-core box).
#
#   benchmarks/mutation.sh CHECKOUT [MODULE_KEY...]
#
# MODULE_KEY is one of: averaging nt_asgd bptt checkpoint weight_drop
# (default: all five, cheapest first). For each module the checkout's
# keras_rnnreg/, tests/ and pyproject.toml are copied to
# CHECKOUT/runs/mutation/KEY/ (runs/ is git-ignored; nothing tracked is
# touched), a [tool.mutmut] section is appended to that copy's pyproject.toml,
# and `mutmut run --max-children 1` runs there. mutmut copies the package to
# mutants/ and puts mutants/ first on sys.path; PYTHONPATH names it too, so the
# `python -m keras_rnnreg` subprocess of tests/test_cli.py imports the mutated
# copy as well. keras-rnnreg itself must NOT be installed in the venv.
# Afterwards, per module: the survivors (`mutmut results`) and the counts.
# Inspect one later with:  cd CHECKOUT/runs/mutation/KEY && VENV/bin/mutmut show NAME
#
# Environment:
#   MUTATION_VENV      venv to use (default /work/mut-venv); created if absent with
#                      the CPU build torch==2.13.0 first (never an unpinned torch: a
#                      multi-GB CUDA build), then keras numpy pytest scipy
#                      matplotlib mutmut==3.8.1 (scipy: test_gradient_noise;
#                      matplotlib: test_cli's plot check).
#   MUTATION_BUDGET_S  wall-clock limit per module (default 3600); at the limit the
#                      run gets SIGINT, mutmut stops cleanly and the counts printed
#                      are partial ("not checked" for the rest).
#   MUTATION_FRESH=1   delete a module's previous results first (default: mutmut
#                      resumes, re-testing only mutants without a result).
set -uo pipefail

CHECKOUT=$(cd "${1:?usage: $0 CHECKOUT [MODULE_KEY...]}" && pwd)
shift
KEYS=("$@")
[ ${#KEYS[@]} -eq 0 ] && KEYS=(averaging nt_asgd bptt checkpoint weight_drop)
VENV=${MUTATION_VENV:-/work/mut-venv}
BUDGET=${MUTATION_BUDGET_S:-3600}
WORK=$CHECKOUT/runs/mutation

module_of() {
  case $1 in
    averaging)   echo keras_rnnreg/optimizers/averaging.py ;;
    nt_asgd)     echo keras_rnnreg/callbacks/nt_asgd.py ;;
    bptt)        echo keras_rnnreg/callbacks/bptt.py ;;
    checkpoint)  echo keras_rnnreg/app/checkpoint.py ;;
    weight_drop) echo keras_rnnreg/layers/weight_drop.py ;;
    *) echo "unknown module key: $1" >&2; return 1 ;;
  esac
}
tests_of() {
  case $1 in
    averaging)   echo '"tests/test_nt_asgd.py", "tests/test_gradient_noise.py", "tests/test_asgd.py"' ;;
    nt_asgd)     echo '"tests/test_nt_asgd.py"' ;;
    bptt)        echo '"tests/test_bptt.py", "tests/test_padding.py"' ;;
    checkpoint)  echo '"tests/test_checkpoint.py", "tests/test_cli.py"' ;;
    weight_drop) echo '"tests/test_weight_drop.py"' ;;
  esac
}

# Keras's Operation.__new__ reads inspect.getfullargspec(cls.__init__), which
# mutmut's (*args, **kwargs) trampoline breaks (IndexError in every layer
# constructor: the clean run fails), so a Layer's __init__ stays unmutated.
extra_config_of() {
  case $1 in
    weight_drop) cat <<'CFG'
do_not_mutate_patterns = [
  'def __init__\(self, units, weight_dropout=0\.5, seed=None',
  'seed = check_seed\(seed\)',
  'super\(\)\.__init__\(units, seed=seed',
  'self\._init_weight_dropout\(weight_dropout, seed\)',
]
CFG
    ;;
  esac
}

if [ ! -x "$VENV/bin/mutmut" ]; then
  python3.11 -m venv "$VENV" || exit 1
  nice -n 19 "$VENV/bin/pip" install -q torch==2.13.0 || exit 1
  nice -n 19 "$VENV/bin/pip" install -q keras numpy pytest scipy matplotlib mutmut==3.8.1 || exit 1
fi
if (cd / && "$VENV/bin/python" -c "import keras_rnnreg" 2>/dev/null); then
  echo "warning: keras_rnnreg is installed in $VENV; tests might import it instead of mutants/" >&2
fi

export KERAS_BACKEND=torch
export OMP_NUM_THREADS=1        # one core per process on the shared machine
export PYTHONDONTWRITEBYTECODE=1

status=0
for key in "${KEYS[@]}"; do
  module=$(module_of "$key") || exit 2
  dir=$WORK/$key
  [ "${MUTATION_FRESH:-0}" = 1 ] && rm -rf "$dir"
  mkdir -p "$dir"
  # The module's copy of the checkout (re-copied each time; mutants/ is mutmut's cache).
  rm -rf "$dir/keras_rnnreg" "$dir/tests"
  cp -r "$CHECKOUT/keras_rnnreg" "$CHECKOUT/tests" "$dir/"
  find "$dir/keras_rnnreg" "$dir/tests" -name __pycache__ -prune -exec rm -rf {} +
  cp "$CHECKOUT/pyproject.toml" "$dir/pyproject.toml"
  cat >> "$dir/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["keras_rnnreg"]
only_mutate = ["$module"]
pytest_add_cli_args_test_selection = [$(tests_of "$key")]
pytest_add_cli_args = ["-p", "no:cacheprovider"]
# torch is not fork-safe: fork workers from a server that never ran a test.
process_isolation = "forkserver"
$(extra_config_of "$key")
EOF
  mkdir -p "$dir/mutants"   # exists before Python starts, so PYTHONPATH's entry is live
  echo "=== $module ($(tests_of "$key")) ==="
  start=$(date +%s)
  (cd "$dir" && PYTHONPATH="$dir/mutants" timeout -s INT -k 120 "$BUDGET" \
     nice -n 19 "$VENV/bin/mutmut" run --max-children 1 > "$dir/run.log" 2>&1)
  rc=$?
  elapsed=$(( $(date +%s) - start ))
  [ $rc -eq 124 ] && echo "(stopped at the ${BUDGET}s budget: partial results)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && { echo "mutmut run exited $rc; tail of $dir/run.log:"; tail -20 "$dir/run.log" | tr '\r' '\n' | tail -20; status=1; }
  (cd "$dir" && nice -n 19 "$VENV/bin/mutmut" results --all true > "$dir/results-all.txt" 2>/dev/null)
  echo "--- mutmut results ($key, ${elapsed}s) ---"
  grep -v ': killed$' "$dir/results-all.txt"
  echo "--- counts ($key) ---"
  awk -F': ' '{n[$2]++; t++} END {printf "total %d:", t; for (s in n) printf " %s %d,", s, n[s]; print ""}' \
    "$dir/results-all.txt" | sed 's/,$//'
  for s in killed survived timeout "no tests"; do
    printf '%s=%d ' "${s// /_}" "$(grep -c ": $s\$" "$dir/results-all.txt")"
  done
  echo
done
exit $status
