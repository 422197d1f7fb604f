"""The LSTM engine before and after a rewrite (issue 25), in one interleaved run.

The BEFORE package is a git revision (`--before`, default 3c7e156, the
commit before the engine rewrite) exported with `git archive` into
runs/engine_before_after/ and renamed `keras_rnnreg_before` (every
`keras_rnnreg` in its .py files rewritten, its Keras registrations
included), so that both packages load in this one process. AFTER is the
working tree's `keras_rnnreg`, or `--after REV` exported the same way as
`keras_rnnreg_after`. Variants, each trained by `train_on_batch`:

    wd_before, wd_after          one WeightDropLSTM(units, weight_dropout=0.5,
                                 return_sequences=True), as
                                 benchmarks/lstm_layer.py builds it (float32
                                 inputs, MSE, SGD 0.01)
    noisin_before, noisin_after  the same with one NoisinLSTM(units,
                                 noise="bernoulli", noise_level=0.5,
                                 return_sequences=True)
    keras_loop                   the same with keras.layers.LSTM(units,
                                 use_cudnn=False, return_sequences=True):
                                 Keras's generic cell loop
    awd_before, awd_after        the `awd-lstm-cpu` AWD-LSTM of
                                 benchmarks/awd_vs_pytorch.py (`keras_awd`):
                                 each package's `get_preset(...).build` and
                                 `.compile`, every regularizer on, stateful
    pytorch_awd                  the PyTorch reference of that benchmark
                                 (benchmarks/reference_awd_lstm.py)

Layers are batch x bptt x features -> units (20 x 70 x 200 -> 400), the
language models batch x bptt (20 x 70), so every step is batch x bptt
tokens and all variants share one interleaved loop (benchmarks/
_interleaved.py): built and warmed up first, then each repeat times
`--batches` steps of every variant in turn. Printed: medians and ranges of
tokens/s, the ratios after / before, and each layer against keras_loop and
each AWD-LSTM against pytorch_awd (of the medians, and the median of the
ratios within a repeat, which a shared machine's drifts disturb less).
`--threads 1` also gives JAX's XLA one thread, as awd_vs_pytorch.py does.
Pin the process to one core:

    KERAS_BACKEND=tensorflow taskset -c 1 .venv/bin/python benchmarks/engine_before_after.py --threads 1
    KERAS_BACKEND=jax taskset -c 1 .venv/bin/python benchmarks/engine_before_after.py --threads 1
    KERAS_BACKEND=torch taskset -c 1 .venv/bin/python benchmarks/engine_before_after.py --threads 1
    KERAS_BACKEND=torch .venv/bin/python benchmarks/engine_before_after.py --quick --after HEAD
"""

import argparse
import datetime
import importlib
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORTS = os.path.join(REPO, "runs", "engine_before_after")
VARIANTS = ("wd_before", "wd_after", "keras_loop", "noisin_before", "noisin_after",
            "awd_before", "awd_after", "pytorch_awd")


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="3c7e156", help="git revision of the BEFORE package")
    parser.add_argument("--after", default=None,
                        help="git revision of the AFTER package (default: the working tree)")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=70, help="time steps of every variant")
    parser.add_argument("--features", type=int, default=200, help="the layers' input size")
    parser.add_argument("--units", type=int, default=400, help="the layers' units")
    parser.add_argument("--vocab", type=int, default=10000, help="the AWD-LSTM's vocabulary")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batches", type=int, default=3, help="timed steps per variant per repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for torch and TensorFlow; 1 also for JAX's XLA")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 repeats of 1 step")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batches, args.warmup = 2, 1, 1
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    return args


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _interleaved import one_xla_thread, print_medians, set_threads, time_interleaved  # noqa: E402

ARGS = _parse(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None:
    one_xla_thread(ARGS.threads)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import throughput  # noqa: E402


def export_package(rev, name):
    """Imports `keras_rnnreg` at git revision `rev` as package `name`:
    exported once into runs/engine_before_after/<name>-<commit>/ (ignored by
    git; the index is not touched), with `keras_rnnreg` renamed in its .py
    files. Returns (module, commit)."""
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    root = os.path.join(EXPORTS, f"{name}-{commit[:12]}")
    if not os.path.isdir(os.path.join(root, name)):
        archive = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", commit, "keras_rnnreg"],
                                 check=True, capture_output=True).stdout
        staging = f"{root}.partial-{os.getpid()}"
        os.makedirs(EXPORTS, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(staging, filter="data")
        for folder, _, files in os.walk(os.path.join(staging, "keras_rnnreg")):
            for file in (f for f in files if f.endswith(".py")):
                path = os.path.join(folder, file)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                with open(path, "w", encoding="utf-8") as f:
                    f.write(re.sub(r"\bkeras_rnnreg\b", name, text))
        os.rename(os.path.join(staging, "keras_rnnreg"), os.path.join(staging, name))
        os.rename(staging, root)  # fails if another process got there first: run again
    sys.path.insert(0, root)
    return importlib.import_module(name), commit


def layer_model(make_layer, batch, steps, features):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((steps, features), batch_size=batch)
    model = keras.Model(inputs, make_layer()(inputs))
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def submodule(package, name):
    return importlib.import_module(f"{package.__name__}.{name}")


def awd_preset(package, args):
    get_preset = submodule(package, "models").get_preset
    return get_preset("awd-lstm-cpu").replace(batch_size=args.batch, bptt=args.bptt)


def awd_model(package, args):
    keras.utils.set_random_seed(0)
    preset = awd_preset(package, args)
    model = preset.build(args.vocab)
    preset.compile(model)
    return model


class Fed:
    """A model with its own batches: `train_on_batch(j, _)` trains on its
    batch j, so that layers and language models share one timing loop."""

    def __init__(self, model, x, y):
        self.model, self.x, self.y = model, x, y

    def train_on_batch(self, j, _):
        return self.model.train_on_batch(self.x[j % len(self.x)], self.y[j % len(self.y)])


def pytorch_awd(packages, args):
    """awd_vs_pytorch.py's `pytorch_awd`. The reference reads the recipe
    through `keras_rnnreg.models`, which points meanwhile at the first of
    `packages` whose API this working tree's reference understands (the
    recipe is the same in both; the working tree may be mid-rewrite)."""
    for package in packages:
        preset = awd_preset(package, args)
        names = {"keras_rnnreg": package, "keras_rnnreg.models": submodule(package, "models"),
                 "keras_rnnreg.models.builder": submodule(package, "models.builder")}
        saved = {name: sys.modules.get(name) for name in names}
        sys.modules.update(names)
        try:
            import awd_vs_pytorch

            return awd_vs_pytorch.PyTorchLM(preset, {}, args.vocab)
        except (AttributeError, ImportError, TypeError) as error:
            print(f"  pytorch_awd: the recipe from {package.__name__} failed ({error!r}); "
                  "--variants without pytorch_awd leaves it out")
            if package is packages[-1]:
                raise
        finally:
            for name, module in saved.items():
                if module is None:
                    del sys.modules[name]
                else:
                    sys.modules[name] = module


def main(args):
    set_threads(args.threads)
    backend = keras.backend.backend()
    before, before_commit = export_package(args.before, "keras_rnnreg_before")
    if args.after is None:
        sys.path.insert(0, REPO)
        import keras_rnnreg as after

        after_label = f"working tree of {REPO} ({after.__file__})"
    else:
        after, after_commit = export_package(args.after, "keras_rnnreg_after")
        after_label = f"{args.after} = {after_commit[:12]}"
    print(f"date:     {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"command:  KERAS_BACKEND={backend} {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"backend:  {backend} {throughput.backend_version()} ({throughput.accelerator_description()}), "
          f"keras {keras.__version__}")
    print(f"machine:  {throughput.machine_description()}; threads {args.threads or 'default'}")
    print(f"before:   {args.before} = {before_commit[:12]}; after: {after_label}")
    print(f"sizes:    batch {args.batch}, bptt {args.bptt}; layers {args.features} -> {args.units}; "
          f"awd-lstm-cpu, vocab {args.vocab}; {args.repeats} repeats x {args.batches} steps, interleaved")

    rng = np.random.default_rng(0)
    shape = (args.batch, args.bptt)
    floats = ([rng.standard_normal((*shape, args.features)).astype("float32")],
              [rng.standard_normal((*shape, args.units)).astype("float32")])
    data = rng.integers(0, args.vocab, size=(20, args.batch, args.bptt + 1), dtype=np.int32)
    tokens = (data[:, :, :-1], data[:, :, 1:])
    units = args.units

    def layer(make):
        return lambda: Fed(layer_model(make, args.batch, args.bptt, args.features), *floats)

    def weight_drop(package):
        return layer(lambda: package.WeightDropLSTM(units, weight_dropout=0.5, return_sequences=True,
                                                    seed=1))

    def noisin(package):
        return layer(lambda: package.NoisinLSTM(units, noise="bernoulli", noise_level=0.5,
                                                return_sequences=True, seed=1))

    def awd(package):
        return lambda: Fed(awd_model(package, args), *tokens)

    builders = {
        "wd_before": weight_drop(before),
        "wd_after": weight_drop(after),
        "keras_loop": layer(lambda: keras.layers.LSTM(units, use_cudnn=False, return_sequences=True)),
        "noisin_before": noisin(before),
        "noisin_after": noisin(after),
        "awd_before": awd(before),
        "awd_after": awd(after),
        "pytorch_awd": lambda: Fed(pytorch_awd((after, before), args), *tokens),
    }
    builders = {name: builders[name] for name in args.variants}
    batches = list(range(20))
    rates = time_interleaved(builders, batches, batches, args.batch * args.bptt,
                             args.repeats, args.batches, args.warmup)
    median = print_medians(backend, rates)
    ratios = [(f"{kind}_after", f"{kind}_before") for kind in ("wd", "noisin", "awd")]
    ratios += [(f"{kind}_{side}", "keras_loop") for kind in ("wd", "noisin") for side in ("before", "after")]
    ratios += [(f"awd_{side}", "pytorch_awd") for side in ("before", "after")]
    print("\n| ratio | of medians | median of per-repeat ratios |\n| --- | ---: | ---: |")
    for a, b in ratios:
        if a in median and b in median:
            paired = statistics.median(p / q for p, q in zip(rates[a], rates[b]))
            print(f"| {a} / {b} | {median[a] / median[b]:.3f} | {paired:.3f} |")


if __name__ == "__main__":
    main(ARGS)
