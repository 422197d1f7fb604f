"""Training throughput of the AWD-LSTM language model: keras_rnnreg against PyTorch.

The same model on both sides, the `awd-lstm-cpu` preset at batch 20 (issue
10 §5): vocabulary 10000, embedding 200, LSTMs of 400, 400 and 200 units,
tied softmax, BPTT 70, stateful (the state carried from batch to batch). Four
variants, interleaved in one process:

    keras_awd      `get_preset("awd-lstm-cpu").build(...)`, compiled by the
                   preset (its ASGD before averaging starts, global clipping
                   0.25, weight decay, TokenCrossEntropy, Perplexity), every
                   regularizer on: weight drop 0.5, embedding dropout 0.1,
                   locked dropout 0.4/0.3/0.4, AR 2 / TAR 1
    keras_plain    the same builder with every regularizer off (rates and
                   AR/TAR 0): the cost of the Keras model and training step
    keras_awd_xla  keras_awd compiled with jit_compile=True (not run by
                   default: Keras's "auto" uses XLA only on GPUs)
    pytorch_awd    benchmarks/reference_awd_lstm.py, the PyTorch AWD-LSTM the
                   reproductions compare against (nn.Embedding, torch's LSTM
                   kernel with a dropped W_hh, SGD, clip_grad_norm_), same
                   hyperparameters, read from the preset
    pytorch_plain  that reference with every regularizer off

Training runs `train_on_batch` on random token ids (the pytorch variants
through the reference's own `train_step`); each model is built and warmed
up first, then every repeat times `--batches` steps of each variant in
turn, so a shared machine's drifts hit all alike. Printed: per variant the
median tokens/s over repeats, its range, and the ratios of medians (the
headline ratios are keras_awd / pytorch_awd and each side's awd / plain).

`--preset awd-lstm --batch-size 40` is the paper-size model (3 x 1150, last
400, embedding 400) for a GPU. The PyTorch side runs on CUDA when torch sees
a GPU, as Keras's torch backend does (on JAX, both frameworks then share
it: `XLA_PYTHON_CLIENT_PREALLOCATE=false`).

The backend is KERAS_BACKEND; the pytorch variants run in the same process
on every backend. Both sides get `--threads` threads (default: one per
core the process may run on), so pin the process for a fair comparison:

    KERAS_BACKEND=jax taskset -c 0 .venv/bin/python benchmarks/awd_vs_pytorch.py
    KERAS_BACKEND=torch .venv/bin/python benchmarks/awd_vs_pytorch.py --quick
"""

import argparse
import datetime
import functools
import os
import platform
import sys

THREADS_HELP = (
    "intra-op threads of torch (both sides) and TensorFlow; JAX's XLA is given "
    "one thread when this is 1. Default: the cores this process may run on."
)


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=4, help="timed steps per variant per repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--preset", default="awd-lstm-cpu", choices=("awd-lstm-cpu", "awd-lstm"))
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument(
        "--vocab", type=int, default=10000,
        help="vocabulary size (default PTB's 10000); a small one leaves the "
        "recurrence alone, to see where a step's time goes",
    )
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help=THREADS_HELP)
    parser.add_argument("--variants", default="keras_awd,keras_plain,pytorch_awd,pytorch_plain")
    parser.add_argument("--quick", action="store_true", help="2 repeats x 1 step: a smoke test")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batches, args.warmup = 2, 1, 1
    return args


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _interleaved import one_xla_thread, print_medians, set_threads, time_interleaved  # noqa: E402

ARGS = _parse(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None:
    one_xla_thread(ARGS.threads)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import reference_awd_lstm as reference  # noqa: E402

from keras_rnnreg.models import get_preset  # noqa: E402

REGULARIZERS_OFF = {
    "weight_dropout": 0.0,
    "embedding_dropout": 0.0,
    "input_dropout": 0.0,
    "hidden_dropout": 0.0,
    "output_dropout": 0.0,
    "alpha": 0.0,
    "beta": 0.0,
}


class KerasLM:
    def __init__(self, preset, overrides, vocab, jit_compile="auto"):
        self.model = preset.compile(preset.build(vocab, **overrides), jit_compile=jit_compile)

    def train_on_batch(self, x, y):
        return self.model.train_on_batch(x, y)


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class PyTorchLM:
    """The reference AWD-LSTM with a Keras-like `train_on_batch` on
    (batch, time) arrays, carrying its state as the reference's loop does."""

    def __init__(self, preset, overrides, vocab):
        self.config = reference.preset_hyperparameters(preset, **overrides)
        self.model = reference.AWDLSTM(vocab, self.config).to(DEVICE)
        self.model.train()
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=self.config["learning_rate"],
            weight_decay=self.config["weight_decay"],
        )
        self.state = self.model.init_state(self.config["batch_size"])

    def train_on_batch(self, x, y):
        # The reference is time-major; the transposes are part of its data path.
        inputs = torch.from_numpy(x.T.astype(np.int64)).to(DEVICE)
        targets = torch.from_numpy(y.T.astype(np.int64)).to(DEVICE)
        loss, self.state = reference.train_step(
            self.model, self.optimizer, self.config, inputs, targets, self.state
        )
        return loss.detach()


BUILDERS = {
    "keras_awd": lambda preset, vocab: KerasLM(preset, {}, vocab),
    "keras_plain": lambda preset, vocab: KerasLM(preset, REGULARIZERS_OFF, vocab),
    "keras_awd_xla": lambda preset, vocab: KerasLM(preset, {}, vocab, jit_compile=True),
    "pytorch_awd": lambda preset, vocab: PyTorchLM(preset, {}, vocab),
    "pytorch_plain": lambda preset, vocab: PyTorchLM(preset, REGULARIZERS_OFF, vocab),
}


def _ratio(median, a, b):
    if a in median and b in median:
        return f"{a} / {b} = {median[a] / median[b]:.3f}"
    return None


def main(args):
    backend = keras.backend.backend()
    set_threads(args.threads)
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(names) - set(BUILDERS))
    if unknown:
        raise SystemExit(f"error: --variants: unknown {', '.join(unknown)}; known: {', '.join(BUILDERS)}")
    keras.utils.set_random_seed(args.seed)
    preset = get_preset(args.preset).replace(batch_size=args.batch_size, bptt=args.bptt)
    rng = np.random.default_rng(args.seed)
    data = rng.integers(0, args.vocab, size=(20, args.batch_size, args.bptt + 1), dtype=np.int32)
    x, y = data[:, :, :-1], data[:, :, 1:]
    tokens_per_step = args.batch_size * args.bptt
    print(
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  "
        f"backend: {backend}  keras {keras.__version__}  torch {torch.__version__}  "
        f"python {platform.python_version()}  threads: {args.threads}  "
        f"cores allowed: {len(os.sched_getaffinity(0))}"
    )
    print(
        f"model: {args.preset} (vocab {args.vocab}, embedding {preset.model_arguments['embedding_size']}, "
        f"{preset.model_arguments['num_layers']} LSTM layers, hidden {preset.model_arguments['hidden_size']}, tied), "
        f"PyTorch side on {DEVICE}, "
        f"batch {args.batch_size}, bptt {args.bptt}; "
        f"{args.repeats} repeats x {args.batches} steps, interleaved"
    )
    builders = {name: functools.partial(BUILDERS[name], preset, args.vocab) for name in names}
    rates = time_interleaved(
        builders, x, y, tokens_per_step, args.repeats, args.batches, args.warmup
    )
    median = print_medians(backend, rates)
    ratios = [
        _ratio(median, "keras_awd", "pytorch_awd"),
        _ratio(median, "keras_plain", "pytorch_plain"),
        _ratio(median, "keras_awd", "keras_plain"),
        _ratio(median, "pytorch_awd", "pytorch_plain"),
    ]
    print("\n" + "; ".join(r for r in ratios if r))


if __name__ == "__main__":
    main(ARGS)
