"""Peak memory of one training step of the paper-size AWD-LSTM-MoS on a CPU.

`get_preset("awd-lstm-mos").build(10000)` (3 x 960 LSTM, last 620, embedding
280, 15 softmaxes, 21.5M parameters), compiled with the recipe
(`preset.compile`), trained on random ids (batch 12 x BPTT 70, the
recipe's) for `--steps` steps; printed: the process's peak resident set
size (`resource.getrusage(...).ru_maxrss`) after building and after the
steps, and the seconds per step. One configuration per process (the peak
is per process), given by `--chunk-size`: the mixture's tokens per chunk
(default: the layer's automatic choice, 111 tokens here) or `--chunk-size
840`, the whole batch in one piece (no chunks, no rematerialization), or
`--experts 1` for the same model with a single softmax (last layer 280).

    KERAS_BACKEND=torch .venv/bin/python benchmarks/mos_memory.py
    KERAS_BACKEND=torch .venv/bin/python benchmarks/mos_memory.py --chunk-size 840
    KERAS_BACKEND=torch .venv/bin/python benchmarks/mos_memory.py --experts 1
"""

import argparse
import resource
import time

import keras
import numpy as np

from keras_rnnreg.models import get_preset


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--experts", type=int, default=15)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()

    preset = get_preset("awd-lstm-mos")
    overrides = {"num_experts": args.experts}
    if args.experts == 1:
        overrides["hidden_size"] = [960, 960, 280]  # a single tied softmax
    model = preset.build(10000, **overrides)
    if args.chunk_size is not None:
        model.get_layer("mixture_of_softmaxes").chunk_size = args.chunk_size
    preset.compile(model)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 10000, (preset.batch_size, preset.bptt)).astype("int32")
    y = rng.integers(0, 10000, (preset.batch_size, preset.bptt)).astype("int32")
    built = peak_mib()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = model.train_on_batch(x, y)[0]
        times.append(time.perf_counter() - start)
    print(f"backend={keras.backend.backend()} experts={args.experts} "
          f"chunk_size={args.chunk_size} parameters={model.count_params()} "
          f"peak_after_build_mib={built:.0f} peak_after_steps_mib={peak_mib():.0f} "
          f"seconds_per_step={times[-1]:.1f} first_step={times[0]:.1f} loss={float(loss):.3f}")


if __name__ == "__main__":
    main()
