#!/usr/bin/env bash
# Issue #8 §4 on a lent GPU machine (no TensorFlow there): starts, detached,
# every reproduction run of docs/benchmarks.md "Reproduction on a GPU" at
# once, each stopping before its time budget ($1 seconds), logs in $2.
# Runs share the GPU (time-sliced), so their tokens/s are not speed figures;
# their per-epoch validation perplexities are the measurement.
#   usage: bash benchmarks/gpu_reproductions.sh BUDGET_SECONDS LOGDIR [DATA]
set -u
budget=$1 logs=$2 data=${3:-.data/ptb}
mkdir -p "$logs"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
launch() {  # name backend args...
  local name=$1 backend=$2; shift 2
  KERAS_BACKEND=$backend setsid python3 benchmarks/reproduce.py --data "$data" \
    --time-budget "$budget" --epochs 100 --json "$logs/$name.json" "$@" \
    >"$logs/$name.log" 2>&1 </dev/null &
}
# Paper size (24M parameters): reference and Keras on torch and JAX.
launch paper-reference torch --side reference --preset awd-lstm
launch paper-keras-torch torch --side keras --preset awd-lstm
launch paper-keras-jax jax --side keras --preset awd-lstm
# CPU scale (awd-lstm-cpu): both initializations, and the ablations.
launch cpu-reference torch --side reference
launch cpu-keras-torch torch --side keras
launch cpu-keras-jax jax --side keras
launch cpu-keras-jax-kerasinit jax --side keras --initialization keras
for v in no-weight-drop no-artar no-embedding-dropout; do
  launch "cpu-reference-$v" torch --side reference --variant "$v"
done
for v in no-weight-drop no-artar no-embedding-dropout standard-dropout noisin; do
  launch "cpu-keras-torch-$v" torch --side keras --variant "$v"
done
echo "launched $(jobs -p | wc -l) runs"
