"""Training throughput (tokens/s) of a 2-layer LSTM language model, per regularizer.

Every variant is the same 2-layer LM (vocabulary 10000, embedding 200, two
LSTMs of 200 units, batch 20, BPTT 35) with one more AWD-LSTM piece switched
on than the variant before it:

    plain              Embedding -> LSTM(200) -> LSTM(200) -> Dense(10000),
                         the Dense `language_model`'s decoder (TokenDense),
                         the LSTMs WeightDropLSTM(200, weight_dropout=0)
    weight_drop        both LSTMs -> WeightDropLSTM(200, weight_dropout=0.5)
    locked_dropout     + LockedDropout 0.4 / 0.3 / 0.4 (embedding output,
                         between the LSTMs, after the last LSTM)
    embedding_dropout  + EmbeddingDropout(rate=0.1) instead of Embedding
    artar              + ARTARRegularizer(2, 1) on [h, dropped_h]
    tied               + tied softmax, embedding(h, reverse=True) instead of
                         Dense (with an output bias, as the Dense has)

`keras_lstm` is `plain` with `keras.layers.LSTM` (the same kernel except off
GPUs, where Keras's LSTM runs its generic loop and ours PyTorch's kernel on
torch, its own scan on JAX and its own loop on TensorFlow).
The training-side variants run on the `plain` model: `gradient_noise`
(`GradientNoise` around the same SGD), `gradient_noise_per_variable` (its
first noise: one `keras.random.normal` per variable), `asgd_off`/`asgd_averaging` (ASGD before
and after the trigger), `token_loss` (TokenCrossEntropy).

Training is stateless (no `stateful=True` RNNs, every batch starts from zero
states) on random token ids generated here; SGD and
SparseCategoricalCrossentropy(from_logits=True). Each model is compiled and
warmed up (traced / jit-compiled) first; then, in every repeat, each variant in
turn runs `--batches` timed `train_on_batch` steps (ABCDEF ABCDEF ...), so
slow drifts of a shared machine hit every variant alike. Reported: the median
over repeats of tokens/s per variant and its ratio to "plain" on the same
backend, and two ratios less sensitive to other processes: paired within a
repeat, and by the fastest step (see `report`).

The backend is KERAS_BACKEND. Examples:

    KERAS_BACKEND=jax .venv/bin/python benchmarks/throughput.py
    KERAS_BACKEND=torch .venv/bin/python benchmarks/throughput.py --threads 1
    .venv/bin/python benchmarks/throughput.py --variants plain,tied --repeats 7
    .venv/bin/python benchmarks/throughput.py --quick     # smoke test, ~30 s

(`--threads 1` for torch on a shared machine: see `--help`.)

Adding a variant: register a model builder in `VARIANTS` (name -> function
returning an uncompiled `keras.Model`; `_lm` takes switches and an `rnn`
factory for other recurrent layers), and, where the technique lives in the
optimizer or in a callback, a factory in `OPTIMIZERS` or `CALLBACKS` under the
same name. Callbacks get their `on_train_batch_begin/end` hooks around every
timed step, as `fit` would call them.
"""

import argparse
import datetime
import functools
import os
import platform
import statistics
import sys
import time

import keras
import numpy as np

from keras_rnnreg import (
    ASGD,
    ARTARRegularizer,
    EmbeddingDropout,
    GradientNoise,
    LockedDropout,
    WeightDropLSTM,
)
from keras_rnnreg.layers._projection import TokenDense
from keras_rnnreg.losses import TokenCrossEntropy

VOCAB = 10000
EMBEDDING = 200
HIDDEN = 200
BATCH = 20
BPTT = 35
DATA_BATCHES = 200  # distinct synthetic batches, cycled through
LEARNING_RATE = 1.0
CLIPNORM = 0.25  # AWD-LSTM clips the global gradient norm at 0.25


def _lstm(units):
    # keras_rnnreg's LSTM without weight drop, so that every variant runs the
    # same recurrent kernel: off GPUs ours is not Keras's generic loop
    # (keras.layers.LSTM, the `keras_lstm` variant).
    return WeightDropLSTM(units, weight_dropout=0.0, return_sequences=True)


def _keras_lstm(units):
    return keras.layers.LSTM(units, return_sequences=True)


def _weight_drop_lstm(units):
    return WeightDropLSTM(units, weight_dropout=0.5, return_sequences=True)


def _lm(
    *,
    rnn=_lstm,
    locked_dropout=False,
    embedding_dropout=False,
    artar=False,
    tied=False,
):
    """The benchmark LM; each switch adds one AWD-LSTM regularizer."""
    tokens = keras.Input((BPTT,), batch_size=BATCH, dtype="int32", name="tokens")
    if embedding_dropout or tied:
        # `tied` needs a TiedEmbedding; EmbeddingDropout is one.
        embedding = EmbeddingDropout(VOCAB, EMBEDDING, rate=0.1, use_output_bias=tied)
    else:
        embedding = keras.layers.Embedding(VOCAB, EMBEDDING)
    x = embedding(tokens)
    if locked_dropout:
        x = LockedDropout(0.4)(x)
    x = rnn(HIDDEN)(x)
    if locked_dropout:
        x = LockedDropout(0.3)(x)
    # The last recurrent layer's size is the embedding size (AWD-LSTM 4.5),
    # which weight tying requires.
    h = rnn(EMBEDDING)(x)
    dropped_h = LockedDropout(0.4)(h) if locked_dropout else h
    if artar:
        dropped_h = ARTARRegularizer(2.0, 1.0)([h, dropped_h])
    if tied:
        logits = embedding(dropped_h, reverse=True)
    else:
        logits = TokenDense(VOCAB)(dropped_h)  # the decoder language_model builds
    return keras.Model(tokens, logits)


_AWD = dict(rnn=_weight_drop_lstm, locked_dropout=True, embedding_dropout=True)

# name -> function returning an uncompiled keras.Model. Order = table order.
VARIANTS = {
    "plain": functools.partial(_lm),
    "keras_lstm": functools.partial(_lm, rnn=_keras_lstm),
    "weight_drop": functools.partial(_lm, rnn=_weight_drop_lstm),
    "locked_dropout": functools.partial(
        _lm, rnn=_weight_drop_lstm, locked_dropout=True
    ),
    "embedding_dropout": functools.partial(_lm, **_AWD),
    "artar": functools.partial(_lm, **_AWD, artar=True),
    "tied": functools.partial(_lm, **_AWD, artar=True, tied=True),
    # The training-side techniques on the plain model: compare with `plain`
    # (gradient noise, ASGD before the trigger) and with `asgd_off`.
    "gradient_noise": functools.partial(_lm),
    "gradient_noise_per_variable": functools.partial(_lm),
    "asgd_off": functools.partial(_lm),
    "asgd_averaging": functools.partial(_lm),
    # The plain model with keras_rnnreg's TokenCrossEntropy instead of
    # Keras's SparseCategoricalCrossentropy: compare with `plain`.
    "token_loss": functools.partial(_lm),
}


def _sgd():
    return keras.optimizers.SGD(learning_rate=LEARNING_RATE, global_clipnorm=CLIPNORM)


def _asgd():
    return ASGD(learning_rate=LEARNING_RATE, global_clipnorm=CLIPNORM)


class _StartAveraging(keras.callbacks.Callback):
    """Starts ASGD's averaging after the first (warm-up) step, as NT-ASGD's
    trigger would, so every timed step updates the average."""

    def __init__(self):
        super().__init__()
        self.started = False

    def on_train_batch_end(self, batch, logs=None):
        if not self.started:
            self.model.optimizer.start_averaging()
            self.started = True


class _PerVariableGradientNoise(GradientNoise):
    """GradientNoise as it drew its noise first: one `keras.random.normal`
    call per gradient (the same distribution), kept here to measure what the
    single draw and the backends' cheaper generators save (on JAX this is
    the draw before XLA's threefry generator)."""

    def add_noise(self, grads):
        stddev = self.noise_stddev()
        noisy = []
        for index, grad in enumerate(grads):
            grad = keras.ops.convert_to_tensor(grad)
            noise = keras.random.normal(tuple(grad.shape), dtype=grad.dtype, seed=self._seed(index))
            noisy.append(grad + keras.ops.cast(stddev, grad.dtype) * noise)
        return noisy


# name -> function returning an optimizer; variants not listed use plain SGD.
OPTIMIZERS = {
    "gradient_noise": lambda: GradientNoise(_sgd(), eta=0.01, gamma=0.55, seed=0),
    # An explicit name: TensorFlow rejects a scope named after a _private class.
    "gradient_noise_per_variable": lambda: _PerVariableGradientNoise(
        _sgd(), eta=0.01, gamma=0.55, seed=0, name="per_variable_gradient_noise"
    ),
    "asgd_off": _asgd,
    "asgd_averaging": _asgd,
}
# name -> function returning the loss; variants not listed use Keras's
# SparseCategoricalCrossentropy(from_logits=True).
LOSSES = {"token_loss": TokenCrossEntropy}
# name -> function returning a list of callbacks; variants not listed use none.
CALLBACKS = {"asgd_averaging": lambda: [_StartAveraging()]}


def build_model(variant):
    """The uncompiled model of `variant` (a key of VARIANTS)."""
    if variant not in VARIANTS:
        raise ValueError(
            f"Unknown variant {variant!r}. Known: {', '.join(VARIANTS)}"
        )
    return VARIANTS[variant]()


def _keras_sparse_cross_entropy():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build_compiled(variant):
    model = build_model(variant)
    model.compile(
        optimizer=OPTIMIZERS.get(variant, _sgd)(),
        loss=LOSSES.get(variant, _keras_sparse_cross_entropy)(),
    )
    callbacks = keras.callbacks.CallbackList(
        list(CALLBACKS.get(variant, list)()), model=model
    )
    callbacks.on_train_begin()
    return model, callbacks


def synthetic_batches(n_batches, seed=0):
    """Random token ids: inputs (n, BATCH, BPTT) and next-token targets."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, VOCAB, size=(n_batches, BATCH, BPTT + 1), dtype=np.int32)
    return data[:, :, :-1], data[:, :, 1:]


def run_steps(model, callbacks, x, y, start, n_steps, step_times=None):
    """`n_steps` train_on_batch calls; returns the last loss.

    `train_on_batch` returns the loss as a NumPy value, which waits for the
    step to finish on every backend, so each step's wall time (s) can be
    appended to `step_times`.
    """
    loss = None
    for i in range(n_steps):
        j = (start + i) % len(x)
        start_time = time.perf_counter()
        callbacks.on_train_batch_begin(i)
        loss = model.train_on_batch(x[j], y[j])
        callbacks.on_train_batch_end(i, {"loss": loss})
        if step_times is not None:
            step_times.append(time.perf_counter() - start_time)
    return float(np.asarray(loss).reshape(-1)[0])


def load_average():
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "unknown"


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return f"{cpu}; {os.cpu_count()} CPUs ({usable} usable by this process); {platform.platform()}"


def backend_version():
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module is None:
        return "?"
    return __import__(module).__version__


def accelerator_description():
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return f"{len(gpus)} GPU(s)" if gpus else "CPU only"
        if backend == "jax":
            import jax

            return ", ".join(sorted({d.platform for d in jax.devices()}))
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    except Exception as error:  # noqa: BLE001 - informational only
        return f"unknown ({error})"
    return "?"


def configure_threads(backend, threads):
    """Apply --threads where the backend allows it; describe the setting."""
    if backend == "torch":
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        return f"torch intra-op {torch.get_num_threads()}"
    if backend == "tensorflow":
        import tensorflow as tf

        if threads is not None:
            # Must run before TensorFlow executes its first op.
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        intra = tf.config.threading.get_intra_op_parallelism_threads()
        inter = tf.config.threading.get_inter_op_parallelism_threads()
        return f"tensorflow intra-op {intra or 'default'}, inter-op {inter or 'default'}"
    if threads is not None:
        return f"{backend} default (--threads {threads} ignored on this backend)"
    return f"{backend} default"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=15,
        help="timed rounds; each round runs every variant once (default 15)",
    )
    parser.add_argument(
        "--batches", type=int, default=3,
        help="timed train_on_batch steps per variant per round (default 3)",
    )
    parser.add_argument(
        "--warmup", type=int, default=3,
        help="untimed steps per variant before timing (default 3)",
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS),
        help=f"comma-separated subset of: {', '.join(VARIANTS)} (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke test: 2 repeats of 3 batches, 1 warm-up step",
    )
    parser.add_argument(
        "--threads", type=int, default=None,
        help="intra-op threads for torch (torch.set_num_threads) and "
        "TensorFlow (tf.config.threading); default: the framework's own. "
        "On a shared machine torch's OpenMP pool can stall for whole "
        "time slices when a core is busy; --threads 1 avoids that. JAX has "
        "no runtime setting and ignores it.",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batches, args.warmup = 2, 3, 1
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    if "plain" not in args.variants:
        # Ratios are to "plain" measured in the same run.
        args.variants.insert(0, "plain")
    if args.repeats < 1 or args.batches < 1 or args.warmup < 1:
        parser.error("--repeats, --batches and --warmup must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    backend = keras.backend.backend()
    threads = configure_threads(backend, args.threads)
    keras.utils.set_random_seed(args.seed)
    if backend == "tensorflow":
        import tensorflow as tf

        # One tf.function per model: TF's "N out of the last N calls
        # triggered retracing" warning counts them together. Not a retrace.
        tf.get_logger().setLevel("ERROR")
    tokens_per_step = BATCH * BPTT

    print(f"date:     {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"backend:  {backend} {backend_version()} ({accelerator_description()})")
    print(f"keras:    {keras.__version__}; python {platform.python_version()}")
    print(f"machine:  {machine_description()}")
    print(f"threads:  {threads}")
    print(f"load:     {load_average()} at the start")
    print(f"command:  KERAS_BACKEND={backend} {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(
        f"model:    vocab {VOCAB}, embedding {EMBEDDING}, 2 x LSTM {HIDDEN}, "
        f"batch {BATCH}, bptt {BPTT}; SGD(lr={LEARNING_RATE}, "
        f"global_clipnorm={CLIPNORM}); train_on_batch"
    )
    print(
        f"timing:   {args.repeats} repeats x {args.batches} batches per variant "
        f"({args.warmup} warm-up steps each), variants interleaved per repeat"
    )

    x, y = synthetic_batches(DATA_BATCHES, seed=args.seed)

    models = {}
    for name in args.variants:
        start = time.perf_counter()
        model, callbacks = build_compiled(name)
        loss = run_steps(model, callbacks, x, y, 0, args.warmup)
        models[name] = (model, callbacks)
        jit = getattr(model, "jit_compile", None)
        print(
            f"  warm-up {name:<18} {time.perf_counter() - start:6.1f} s  "
            f"loss {loss:.3f}  params {model.count_params():,}  jit_compile={jit}",
            flush=True,
        )

    rates = {name: [] for name in args.variants}  # tokens/s of each repeat
    steps = {name: [] for name in args.variants}  # seconds of each timed step
    position = args.warmup
    for repeat in range(args.repeats):
        line = []
        for name in args.variants:
            model, callbacks = models[name]
            start = time.perf_counter()
            loss = run_steps(
                model, callbacks, x, y, position, args.batches, steps[name]
            )
            elapsed = time.perf_counter() - start
            if not np.isfinite(loss):
                print(f"  warning: {name} loss is {loss}", flush=True)
            rates[name].append(args.batches * tokens_per_step / elapsed)
            line.append(f"{name} {rates[name][-1]:,.0f}")
        position += args.batches
        print(f"  repeat {repeat + 1}/{args.repeats}: " + ", ".join(line), flush=True)

    for model, callbacks in models.values():
        callbacks.on_train_end()
    print(f"load average at the end: {load_average()}")
    report(backend, args, rates, steps, tokens_per_step)


def report(backend, args, rates, steps, tokens_per_step):
    """The Markdown table: median tokens/s and three ratios to "plain".

    - x plain: the variant's median tokens/s over repeats divided by plain's
      (the headline number).
    - x plain, paired: the median over repeats of variant / plain within the
      same repeat; the two ran seconds apart, so slow drifts in the machine's
      load cancel.
    - x plain, fastest step: plain's fastest timed step over the variant's.
      Other processes only ever add time, so the fastest of many steps is the
      closest to the uncontended cost, and this ratio the best estimate of
      the regularizer's own overhead on a shared machine.
    """

    def fastest(name):
        return min(steps[name])

    plain = rates["plain"]
    plain_median = statistics.median(plain)
    spread = (max(plain) - min(plain)) / plain_median
    print()
    print(
        f"Backend `{backend}` (keras {keras.__version__}): training tokens/s, "
        f"median of {args.repeats} repeats x {args.batches} batches; "
        f"plain's range is {spread:.0%} of its median; plain's fastest step "
        f"{fastest('plain') * 1e3:.0f} ms ({tokens_per_step / fastest('plain'):,.0f} tokens/s)"
    )
    print()
    print(
        "| variant | median tokens/s | min - max | × plain | "
        "× plain, paired | × plain, fastest step |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.variants:
        r = rates[name]
        paired = statistics.median(a / b for a, b in zip(r, plain))
        print(
            f"| {name} | {statistics.median(r):,.0f} | {min(r):,.0f} - {max(r):,.0f} "
            f"| {statistics.median(r) / plain_median:.3f} | {paired:.3f} "
            f"| {fastest('plain') / fastest(name):.3f} |"
        )


if __name__ == "__main__":
    main()
