"""The torch data path of `fit`: BPTT batches as device slices against NumPy batches.

Issue 10 §3. Keras's torch trainer converts every NumPy batch a data adapter
yields into a tensor on its device; on a GPU that is a copy from pageable
host memory per batch, after which the host waits for the GPU to finish
the step before. So is a learning rate written as a Python float
(`BPTTCallback`'s per-batch rate with variable lengths). Three variants of
the same training, interleaved in one process, each timed over whole
`fit` epochs of the `awd-lstm-cpu` preset (every regularizer, variable
lengths, stateful) on random token ids:

    device_batches  the library: `BPTTSequence` hands the trainer slices of
                    one device copy of its rows, `BPTTCallback` assigns each
                    batch's rate from a device tensor of the epoch's rates
    batch_end_hook  the library, but with the unscaled rate restored in an
                    `on_train_batch_end` (as `BPTTCallback` did before):
                    any such hook makes Keras run the batch-end callbacks in
                    the training loop, turning each step's logs into Python
                    floats (a wait for the device) before the next step,
                    instead of in a background thread
    numpy_batches   as before issue 10 §3: NumPy batches (converted by
                    Keras, one host-to-device copy each), rates written
                    as Python floats, and the batch-end hook

On a CPU both are the same work (the "device" is host memory), so the
ratio should be 1 within noise; the difference is a GPU's. Printed: the
median tokens/s over repeats and the ratios.

    KERAS_BACKEND=torch taskset -c 0 .venv/bin/python benchmarks/torch_data_path.py --threads 1
    KERAS_BACKEND=torch python benchmarks/torch_data_path.py --preset awd-lstm --batch-size 40
"""

import argparse
import datetime
import functools
import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _interleaved import print_medians, set_threads, time_interleaved  # noqa: E402

from keras_rnnreg._keras_compat import torch_dataloader  # noqa: E402
from keras_rnnreg.callbacks import BPTTCallback  # noqa: E402
from keras_rnnreg.data import BPTTSequence  # noqa: E402
from keras_rnnreg.models import get_preset  # noqa: E402


class _NumPyBatches(BPTTSequence):
    """The data path before: NumPy batches, each converted by Keras."""

    def get_torch_dataloader(self):
        return torch_dataloader(self._batches())


class _BatchEndRestore(BPTTCallback):
    """The restore before: in `on_train_batch_end` after the last batch."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.sequence.num_batches - 1:
            self._restore_after_last_batch()


class _FloatRates(_BatchEndRestore):
    """The rate writes before: a Python float per batch."""

    def on_train_batch_begin(self, batch, logs=None):
        if self.scale_learning_rate:
            self._set(self._base * self._scales[batch])


class FitEpochs:
    """One `fit` epoch per `train_on_batch` call (the shared timing loop's
    unit); x and y are ignored, the epoch reads the sequence."""

    def __init__(self, preset, tokens, vocab, sequence_class, callback_class):
        self.model = preset.compile(preset.build(vocab))
        self.sequence = sequence_class(
            tokens, preset.batch_size, preset.bptt, variable_length=preset.variable_bptt, seed=0
        )
        self.callback = callback_class(self.sequence)
        self.epoch = 0

    def train_on_batch(self, x, y):
        history = self.model.fit(
            self.sequence, initial_epoch=self.epoch, epochs=self.epoch + 1,
            verbose=0, callbacks=[self.callback],
        )
        self.epoch += 1
        return history.history["loss"][-1]


VARIANTS = {
    "device_batches": (BPTTSequence, BPTTCallback),
    "batch_end_hook": (BPTTSequence, _BatchEndRestore),
    "numpy_batches": (_NumPyBatches, _FloatRates),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per variant")
    parser.add_argument("--preset", default="awd-lstm-cpu", choices=("awd-lstm-cpu", "awd-lstm"))
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--batches-per-epoch", type=int, default=10)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of torch (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="2 repeats of 2-batch epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batches_per_epoch = 2, 2
    if keras.backend.backend() != "torch":
        raise SystemExit("error: this benchmark is for the torch backend (KERAS_BACKEND=torch)")
    set_threads(args.threads)
    keras.utils.set_random_seed(0)
    preset = get_preset(args.preset).replace(batch_size=args.batch_size)
    tokens_per_epoch = args.batch_size * preset.bptt * args.batches_per_epoch
    tokens = np.random.default_rng(0).integers(0, args.vocab, tokens_per_epoch + args.batch_size)
    import torch

    device = keras.ops.convert_to_tensor(0).device
    print(
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  "
        f"keras {keras.__version__}  torch {torch.__version__}  device: {device}  "
        f"threads: {args.threads or 'torch default'}"
    )
    print(
        f"model: {args.preset}, vocab {args.vocab}, batch {args.batch_size}, bptt {preset.bptt} "
        f"(variable), {args.batches_per_epoch} batches per epoch; "
        f"{args.repeats} epochs per variant, interleaved"
    )
    builders = {
        name: functools.partial(FitEpochs, preset, tokens, args.vocab, *classes)
        for name, classes in VARIANTS.items()
    }
    rates = time_interleaved(builders, [None], [None], tokens_per_epoch, args.repeats, 1, 1)
    median = print_medians("torch", rates)
    print()
    for other in ("batch_end_hook", "numpy_batches"):
        print(f"device_batches / {other} = {median['device_batches'] / median[other]:.3f}")


if __name__ == "__main__":
    main()
