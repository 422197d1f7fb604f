#!/usr/bin/env bash
# Issue 10's GPU measurements in one command, for a lent GPU machine (no
# TensorFlow there: torch and JAX only). Each step runs under its own time
# limit and writes its output to OUTDIR/<step>.txt; a step that fails or
# runs out of time does not stop the others.
#
#   usage: bash benchmarks/gpu_issue10.sh OUTDIR [STEP ...]
#   steps (default all, in this order):
#     awd-torch awd-jax   benchmarks/awd_vs_pytorch.py at paper size (awd-lstm,
#                         batch 40, BPTT 70): Keras vs the PyTorch reference
#     noisin-torch noisin-jax   benchmarks/noisin_throughput.py
#     train-torch train-jax     benchmarks/throughput.py: every regularizer
#                         and gradient noise against plain
#     bptt-jax            benchmarks/bptt_compile.py: padding vs compilations
#     resume-jax          benchmarks/resume_compile.py --variable-bptt: a resumed
#                         run with and without the run directory's compile cache
#     projection-jax      benchmarks/output_projection.py: 3-D vs flattened softmax
#     data-torch          benchmarks/torch_data_path.py at paper size: fit with
#                         device-slice batches vs a batch-end hook vs NumPy batches
#     tests-torch tests-jax     the test suite, TF32 off
#
# Keras is not installed there: carry its wheels (docs/gpu.md, "On a GPU
# machine without Keras") and put them on PYTHONPATH before calling this. Set
# BENCH_ARGS=--quick for a smoke test of the whole script (on a CPU too).
set -u
out=$1; shift
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(awd-torch awd-jax noisin-torch noisin-jax
  train-torch train-jax bptt-jax resume-jax projection-jax data-torch tests-torch tests-jax)
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Both frameworks share the GPU in the Keras-vs-PyTorch runs on JAX.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
bench=${BENCH_ARGS:-}
variants=plain,weight_drop,locked_dropout,embedding_dropout,artar,tied,gradient_noise,asgd_off

step() {  # name limit_seconds backend command...
  local name=$1 limit=$2 backend=$3; shift 3
  echo "== $name ($(date -u +%H:%M:%S) UTC, limit ${limit}s)"
  KERAS_BACKEND=$backend timeout "$limit" "$@" >"$out/$name.txt" 2>&1
  echo "   exit $? after $SECONDS s in all; last line: $(tail -n 1 "$out/$name.txt")"
}

for s in "${steps[@]}"; do
  case $s in
    awd-torch|awd-jax)
      step "$s" 240 "${s#awd-}" python3 benchmarks/awd_vs_pytorch.py --preset awd-lstm \
        --batch-size 40 --bptt 70 $bench ;;
    noisin-torch|noisin-jax)
      step "$s" 180 "${s#noisin-}" python3 benchmarks/noisin_throughput.py $bench ;;
    train-torch|train-jax)
      step "$s" 180 "${s#train-}" python3 benchmarks/throughput.py --variants "$variants" $bench ;;
    bptt-jax)
      step "$s" 300 jax python3 benchmarks/bptt_compile.py --epochs 3 $bench ;;
    resume-jax)
      step "$s" 300 jax python3 benchmarks/resume_compile.py --variable-bptt --rounds 2 $bench ;;
    projection-jax)
      step "$s" 120 jax python3 benchmarks/output_projection.py $bench ;;
    data-torch)
      step "$s" 240 torch python3 benchmarks/torch_data_path.py --preset awd-lstm \
        --batch-size 40 --batches-per-epoch 30 $bench ;;
    tests-torch|tests-jax)
      # Exactness tests compare against float32 references: no TF32.
      NVIDIA_TF32_OVERRIDE=0 step "$s" 420 "${s#tests-}" python3 -m pytest -q -p no:cacheprovider tests ;;
    *) echo "unknown step $s" >&2 ;;
  esac
done
