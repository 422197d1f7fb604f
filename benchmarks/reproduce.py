"""Reproduction at CPU scale: keras_rnnreg's `awd-lstm-cpu` vs a PyTorch reference.

Trains, on PTB, either keras_rnnreg's `awd-lstm-cpu` preset on the current
KERAS_BACKEND (`--side keras`) or the PyTorch reference written from the
paper (`--side reference`, benchmarks/reference_awd_lstm.py), with the same
hyperparameters (read from the preset), and prints one line per epoch
(epoch, validation perplexity, training tokens/s, wall time), then the
rows of a Markdown table.

Examples:

    # smoke tests
    KERAS_BACKEND=jax python benchmarks/reproduce.py --side keras --train-tokens 20000 --epochs 1
    python benchmarks/reproduce.py --side reference --train-tokens 20000 --epochs 1
    # one epoch of full PTB
    python benchmarks/reproduce.py --side reference --epochs 1
    KERAS_BACKEND=jax python benchmarks/reproduce.py --side keras --epochs 1
    KERAS_BACKEND=jax python benchmarks/reproduce.py --side keras --initialization keras --epochs 1
    # ablations (issue #8 §4); --ablation lists them
    KERAS_BACKEND=jax python benchmarks/reproduce.py --side keras --variant no-weight-drop

Both sides validate after every epoch on the whole validation split with
fixed-length windows (bptt 70) and the training batch size (40), the state
reset at the start of validation; tokens/s counts training tokens over
training time only (validation excluded; on Keras the first epoch includes
tracing/compilation, one per distinct BPTT length on JAX).
"""

import argparse
import datetime
import math
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "data", "ptb")
PRESET_NAME = "awd-lstm-cpu"

#: --variant NAME: model-argument overrides of the preset (issue #8 §4 ablations).
VARIANTS = {
    "full": {},
    "no-weight-drop": {"weight_dropout": 0.0},
    "no-artar": {"alpha": 0.0, "beta": 0.0},
    "no-embedding-dropout": {"embedding_dropout": 0.0},
    # Zaremba-style dropout: a fresh mask per step, no weight drop.
    "standard-dropout": {"dropout_type": "standard", "weight_dropout": 0.0},
    # Noisin instead of weight drop; "noisin-weight-drop" keeps both (the
    # Noisin paper's AWD-LSTM + Noisin).
    "noisin": {"noise": "bernoulli", "noise_level": 0.8, "weight_dropout": 0.0},
    "noisin-weight-drop": {"noise": "bernoulli", "noise_level": 0.8},
}
#: Variants the PyTorch reference implements.
REFERENCE_VARIANTS = ("full", "no-weight-drop", "no-artar", "no-embedding-dropout")


def _parse(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--side", choices=("keras", "reference"), default="keras",
                        help="keras_rnnreg on $KERAS_BACKEND, or the PyTorch reference")
    parser.add_argument("--preset", default=PRESET_NAME, choices=("awd-lstm-cpu", "awd-lstm"),
                        help="awd-lstm-cpu (CPU scale) or the paper-size awd-lstm (GPU)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds: start no epoch that would end after this "
                             "(judged by the last epoch's wall time)")
    parser.add_argument("--json", default=None,
                        help="also write the per-epoch records to this JSON file")
    parser.add_argument("--train-tokens", type=int, default=None,
                        help="train on this prefix of the training split (smoke tests)")
    parser.add_argument("--initialization", default="paper",
                        help="keras side only: 'paper' (the preset's), 'keras' or a float")
    parser.add_argument("--variant", default="full", choices=tuple(VARIANTS),
                        help="ablation variant (see --ablation)")
    parser.add_argument("--ablation", action="store_true",
                        help="list the ablation variants and exit")
    parser.add_argument("--data", default=DEFAULT_DATA, help="PTB directory")
    parser.add_argument("--seed", type=int, default=None,
                        help="default: the preset's seed (1111)")
    parser.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity")
    args = parser.parse_args(argv)
    if args.initialization not in ("paper", "keras"):
        try:
            args.initialization = float(args.initialization)
        except ValueError:
            parser.error("--initialization must be 'paper', 'keras' or a float")
    if args.side == "reference":
        if args.initialization != "paper":
            parser.error("--initialization applies to --side keras only")
        if args.variant not in REFERENCE_VARIANTS:
            parser.error(f"the reference implements only {', '.join(REFERENCE_VARIANTS)}")
    return args


def _accelerator():
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return str(jax.devices()[0])
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def _list_variants():
    print("Ablation variants (--variant NAME), overrides of the awd-lstm-cpu preset:")
    for name, overrides in VARIANTS.items():
        sides = "keras, reference" if name in REFERENCE_VARIANTS else "keras"
        print(f"  {name:22s} {overrides or '(the preset as is)'}  [{sides}]")


def _run_keras(args, corpus, log):
    import keras

    from keras_rnnreg.models import get_preset

    preset = get_preset(args.preset)
    if args.seed is not None:
        preset = preset.replace(seed=args.seed)
    keras.utils.set_random_seed(preset.seed if preset.seed is not None else 0)
    overrides = dict(VARIANTS[args.variant])
    if args.initialization != "paper":
        overrides["initialization"] = args.initialization
    train_ids = corpus.train[: args.train_tokens] if args.train_tokens else corpus.train
    model = preset.build(len(corpus.vocab), **overrides)
    preset.compile(model)
    train, valid = preset.sequences(train_ids, corpus.valid)
    tokens_per_epoch = train.rows.shape[0] * (train.rows.shape[1] - 1)
    history = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()
            self.train_end = None

        def on_test_begin(self, logs=None):
            if self.train_end is None:
                self.train_end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            end = time.perf_counter()
            train_seconds = (self.train_end or end) - self.start
            record = {
                "epoch": epoch + 1,
                "valid_perplexity": float(logs["val_perplexity"]),
                "valid_perplexity_from_loss": math.exp(float(logs["val_loss"])),
                "tokens_per_second": tokens_per_epoch / train_seconds,
                "train_seconds": train_seconds,
                "wall_seconds": end - self.start,
                "train_perplexity": float(logs.get("perplexity", float("nan"))),
            }
            history.append(record)
            _dump(args, history)
            if _out_of_time(args, record["wall_seconds"]):
                self.model.stop_training = True
            log(
                f"epoch {record['epoch']}: valid ppl {record['valid_perplexity']:.2f} "
                f"(exp val_loss {record['valid_perplexity_from_loss']:.2f}), "
                f"{record['tokens_per_second']:.0f} tokens/s, wall "
                f"{record['wall_seconds']:.1f} s (train ppl {record['train_perplexity']:.2f})"
            )

    callbacks = preset.callbacks(train) + [Timer()]
    model.fit(train, validation_data=valid, epochs=args.epochs, callbacks=callbacks,
              verbose=args.verbose)
    return history


def _run_reference(args, corpus, log):
    sys.path.insert(0, HERE)
    import torch
    from reference_awd_lstm import train

    from keras_rnnreg.models import get_preset

    history = []

    def stop(record):
        history.append(record)
        _dump(args, history)
        return _out_of_time(args, record["wall_seconds"])

    return train(
        args.epochs,
        train_ids=corpus.train,
        valid_ids=corpus.valid,
        vocab_size=len(corpus.vocab),
        train_tokens=args.train_tokens,
        seed=args.seed,
        preset=get_preset(args.preset),
        device="cuda" if torch.cuda.is_available() else "cpu",
        log=log,
        stop=stop,
        **VARIANTS[args.variant],
    )


_START = time.perf_counter()


def _out_of_time(args, last_epoch_seconds):
    if args.time_budget is None:
        return False
    return time.perf_counter() - _START + last_epoch_seconds > args.time_budget


def _dump(args, history):
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "side": args.side, "variant": args.variant,
                       "initialization": args.initialization,
                       "backend": os.environ.get("KERAS_BACKEND"),
                       "history": history}, f, indent=1)


def main(argv=None):
    args = _parse(argv)
    if args.ablation:
        _list_variants()
        return 0
    if args.side == "reference":
        # keras_rnnreg (imported for PTB and the preset) imports Keras: let it
        # load the torch backend rather than TensorFlow beside the reference.
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import torch

        where = (torch.cuda.get_device_name() if torch.cuda.is_available()
                 else f"{torch.get_num_threads()} threads")
        side = f"reference (torch {torch.__version__}, {where})"
    else:
        import keras

        side = f"keras_rnnreg ({keras.backend.backend()} backend, keras {keras.__version__}, {_accelerator()})"
    from keras_rnnreg.data import load_ptb

    corpus = load_ptb(args.data)
    tokens = args.train_tokens or len(corpus.train)
    init = args.initialization if args.side == "keras" else "paper"
    print(
        f"# {args.preset} on PTB: {side}; variant {args.variant}; init {init}; "
        f"{min(tokens, len(corpus.train))} training tokens; {args.epochs} epoch(s); "
        f"{platform.node()} {os.cpu_count()} CPUs; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        flush=True,
    )

    def log(line):
        print(line, flush=True)

    start = time.perf_counter()
    run = _run_reference if args.side == "reference" else _run_keras
    history = run(args, corpus, log)
    print(f"# total {time.perf_counter() - start:.1f} s")
    label = "reference (torch)" if args.side == "reference" else f"keras ({side.split('(')[1].split()[0]})"
    print()
    print("| side | init | variant | train tokens | epoch | valid ppl | tokens/s | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in history:
        print(
            f"| {label} | {init} | {args.variant} | {min(tokens, len(corpus.train))} | "
            f"{r['epoch']} | {r['valid_perplexity']:.2f} | {r['tokens_per_second']:.0f} | "
            f"{r['wall_seconds']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
