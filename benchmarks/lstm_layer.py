"""One LSTM layer's training step: our fused paths against Keras's loop.

Where Keras's LSTM would take cuDNN on a GPU but has no fused kernel,
`WeightDropLSTM` (use_cudnn="auto") runs its own: PyTorch's LSTM kernel on
torch, the engine's scan on JAX and its loop on TensorFlow (`keras_rnnreg/_lstm`), each
with a hand-written or native backward pass. Variants, each a model of one
`WeightDropLSTM(units, weight_dropout=0.5, return_sequences=True)` on
float32 inputs and an MSE loss, trained by `train_on_batch` with SGD:

    own         use_cudnn="auto": the path above
    keras_loop  use_cudnn=False: Keras's generic cell loop

interleaved, medians of `--repeats` x `--batches` steps (tokens/s), the
ratio printed.

    KERAS_BACKEND=tensorflow taskset -c 1 python benchmarks/lstm_layer.py --threads 1
"""

import argparse
import datetime
import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402
from _interleaved import print_medians, set_threads, time_interleaved  # noqa: E402

from keras_rnnreg import WeightDropLSTM  # noqa: E402


def build(use_cudnn, batch, steps, features, units):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((steps, features), batch_size=batch)
    layer = WeightDropLSTM(units, weight_dropout=0.5, return_sequences=True,
                           use_cudnn=use_cudnn, seed=1)
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--steps", type=int, default=70)
    parser.add_argument("--features", type=int, default=200)
    parser.add_argument("--units", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batches", type=int, default=3, help="timed steps per repeat")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for torch and TensorFlow")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 repeats of 1 step")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batches = 2, 1
    set_threads(args.threads)
    backend = keras.backend.backend()
    print(f"date:     {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"command:  KERAS_BACKEND={backend} {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"backend:  {backend} {throughput.backend_version()} ({throughput.accelerator_description()})")
    print(f"machine:  {throughput.machine_description()}; threads {args.threads or 'default'}")
    print(f"layer:    batch {args.batch}, {args.steps} steps, {args.features} -> {args.units}")

    rng = np.random.default_rng(0)
    x = [rng.standard_normal((args.batch, args.steps, args.features)).astype("float32")]
    y = [rng.standard_normal((args.batch, args.steps, args.units)).astype("float32")]
    sizes = (args.batch, args.steps, args.features, args.units)
    builders = {"own": lambda: build("auto", *sizes), "keras_loop": lambda: build(False, *sizes)}
    rates = time_interleaved(builders, x, y, args.batch * args.steps, args.repeats,
                             args.batches, warmup=2)
    median = print_medians(backend, rates)
    print(f"\nown / keras_loop (tokens/s): {median['own'] / median['keras_loop']:.3f}")


if __name__ == "__main__":
    main()
