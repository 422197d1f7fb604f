"""Epoch times of variable-length BPTT with and without padding (issue 10 §1).

JAX compiles the train step once per batch shape, so AWD-LSTM's lengths cost
one compilation each in the first epochs. `BPTTSequence(pad_to_multiple=8)`
(the preset field `length_bucket`, what `keras-rnnreg train` picks on JAX
without a GPU) pads them to multiples of 8 and the model masks the padding.

The model and data are `make demo`'s (the embedded synthetic corpus,
awd-lstm-cpu's regularizers at 2 x 128, batch 32, BPTT 35), with AWD-LSTM's
variable lengths turned on. Variants:

    fixed       variable_bptt=False: every batch BPTT long but the last
                  (two shapes)
    fixed_pad   fixed, the last batch padded to BPTT (length_bucket=bptt,
                  the command line's choice there): one shape, the floor
    unpadded    length_bucket=None: one shape per distinct length
    pad8        length_bucket=8 (the command line's choice)
    pad16       length_bucket=16 (fewer shapes, more padded steps)

Each variant trains a fresh model for `--epochs` epochs (validation off),
in the order given and back (`--rounds`
times), in one process; a callback times every epoch. Reported per variant: the median of
epoch 1 (compilations included), of the later epochs, and their ratio, plus
the distinct shapes served in epoch 1, and the ratio of last epochs (by
then the unpadded run has compiled most of its lengths). Target: epoch 1 <= 1.5 x epoch 2 on
JAX on a CPU.

On TensorFlow one traced train function serves every length, unless XLA
compiles it (`--jit-compile`: Keras's "auto" picks XLA only on a GPU, and
not for a model whose LSTMs take cuDNN), which compiles per shape as JAX does.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/bptt_compile.py
    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/bptt_compile.py --jit-compile
"""

import argparse
import datetime
import platform
import statistics
import time

import keras

from keras_rnnreg.app.training import SYNTHETIC_DEFAULT
from keras_rnnreg.datasets import make_synthetic_corpus
from keras_rnnreg.models import get_preset


class EpochTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def train(corpus, bucket, epochs, seed, jit_compile="auto", variable=True):
    if bucket == "bptt":
        bucket = get_preset(SYNTHETIC_DEFAULT["preset"]).replace(
            **SYNTHETIC_DEFAULT["overrides"]).bptt
    keras.utils.set_random_seed(seed)
    overrides = {**SYNTHETIC_DEFAULT["overrides"], "variable_bptt": variable,
                 "length_bucket": bucket, "seed": seed}
    preset = get_preset(SYNTHETIC_DEFAULT["preset"]).replace(**overrides)
    model = preset.compile(preset.build(len(corpus.vocab)), jit_compile=jit_compile)
    (sequence,) = preset.sequences(corpus.train)
    shapes = {x.shape[1] for x, _ in sequence}
    lengths = set(sequence.lengths.tolist())
    timer = EpochTimes()
    model.fit(sequence, epochs=epochs, verbose=0, callbacks=[*preset.callbacks(sequence), timer])
    return timer.times, len(shapes), len(lengths)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--variants", default=None,
                        help="comma-separated subset of fixed,fixed_pad,unpadded,pad8,pad16")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: 2 epochs of a 10,000-token corpus")
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile with jit_compile=True (XLA on TensorFlow)")
    args = parser.parse_args()
    if args.quick:
        args.epochs = 2
    corpus = make_synthetic_corpus(seed=0, train_tokens=10_000 if args.quick else 60_000)
    buckets = {"fixed": None, "fixed_pad": "bptt", "unpadded": None, "pad8": 8, "pad16": 16}
    if args.variants:
        buckets = {name: buckets[name] for name in args.variants.split(",")}
    results = {name: [] for name in buckets}
    shapes = {}
    for round_ in range(args.rounds):
        for name in (*buckets, *reversed(buckets)):
            times, n_shapes, n_lengths = train(
                corpus, buckets[name], args.epochs, seed=round_,
                jit_compile=True if args.jit_compile else "auto", variable=not name.startswith("fixed"),
            )
            results[name].append(times)
            shapes[name] = (n_shapes, n_lengths)
            print(f"{name:9s} epochs: " + ", ".join(f"{t:.1f}s" for t in times), flush=True)
    print(f"\nbackend {keras.backend.backend()}, jit_compile {args.jit_compile or 'auto'}, "
          f"keras {keras.__version__}, "
          f"{platform.node()} ({platform.processor() or platform.machine()}), "
          f"{datetime.date.today()}; {len(corpus.train):,} training tokens")
    print("| variant | shapes in epoch 1 (distinct lengths) | epoch 1 | later epochs | epoch 1 / later |")
    print("| --- | ---: | ---: | ---: | ---: |")
    later_medians = {}
    for name, runs in results.items():
        first = statistics.median(times[0] for times in runs)
        later = statistics.median(t for times in runs for t in times[1:])
        later_medians[name] = later
        print(f"| {name} | {shapes[name][0]} ({shapes[name][1]}) | {first:.1f} s | "
              f"{later:.1f} s | {first / later:.2f} |")
    last = {name: statistics.median(times[-1] for times in runs) for name, runs in results.items()}
    for name in ("pad8", "pad16"):
        if name in last and "unpadded" in last:
            print(f"last epoch, {name} / unpadded: {last[name] / last['unpadded']:.3f}")


if __name__ == "__main__":
    main()
