"""`keras-rnnreg`: train, evaluate, generate from, list and tune the papers'
language models from the command line (also `python -m keras_rnnreg`).

    keras-rnnreg train                          # the embedded synthetic corpus
    keras-rnnreg train --dataset ptb --manual-dir ../shared/data/ptb --preset awd-lstm-cpu
    keras-rnnreg train --resume runs/awd        # continues exactly
    keras-rnnreg evaluate runs/awd [--cache] [--dynamic]
    keras-rnnreg generate runs/awd --length 40 --temperature 0.8
    keras-rnnreg presets
    keras-rnnreg tune --dataset synthetic --tuner random --max-trials 4

Errors are one line on stderr and a non-zero exit (2 for bad usage, 1
otherwise, 130 on Ctrl-C); `--debug` shows the traceback instead.

Importing this module imports no Keras: `main` first sets `KERAS_BACKEND`
from `--backend` (Keras reads it once, when first imported) and imports
TensorFlow quietly (see `_quiet_start`). In a process that has Keras loaded
already (`main` called from Python), `--backend` must name the loaded
backend.
"""

import argparse
import contextlib
import difflib
import importlib.util
import json
import os
import sys
import warnings

BACKENDS = ("tensorflow", "jax", "torch")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


@contextlib.contextmanager
def _descriptor_2_silenced():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _quiet_start():
    """Starts TensorFlow, where installed, with its start-up lines unwritten.

    TensorFlow's C++ runtime writes lines such as "Could not find cuda
    drivers on your machine" straight to file descriptor 2 while it is
    imported and lists its devices, before any logging setting applies
    (TF_CPP_MIN_LOG_LEVEL does not stop them); to a user of the command on
    a CPU machine they are noise. Keras (or `keras.utils.set_random_seed`,
    on any backend) would import TensorFlow next, noisily, so the command
    imports it first with descriptor 2 pointed at /dev/null. That import
    imports Keras too: the backend is chosen by now. Nothing is done where
    Keras is loaded already: the start-up was the caller's.
    """
    # For what TensorFlow logs later; a user who wants it sets the variable.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    if "keras" in sys.modules or "tensorflow" in sys.modules:
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    with _descriptor_2_silenced():
        import tensorflow

        # Device discovery is where "failed call to cuInit" is written.
        tensorflow.config.list_physical_devices()


# ------------------------------------------------------------ overrides
def _override_names():
    from keras_rnnreg.models.builder import DEFAULT_ARGUMENTS

    # padding_id follows length_bucket (the preset sets both).
    model = sorted(set(DEFAULT_ARGUMENTS) - {"name", "batch_size", "seed", "padding_id"})
    recipe = ["optimizer", "learning_rate", "schedule", "decay_start", "decay_factor",
              "clipnorm", "weight_decay", "batch_size", "bptt", "variable_bptt", "nonmono",
              "length_bucket"]
    return model + recipe


def _value(text):
    """A flag's value: int, float, bool, none, or the string itself."""
    lowered = text.lower()
    if lowered in ("true", "yes"):
        return True
    if lowered in ("false", "no"):
        return False
    if lowered in ("none", "off"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _float_names():
    """The overridable fields and model arguments that hold floats: `--learning-rate 30`
    is 30.0 there (Keras refuses an int learning rate)."""
    import dataclasses

    from keras_rnnreg.models.builder import DEFAULT_ARGUMENTS
    from keras_rnnreg.models.presets import Preset

    recipe = {f.name for f in dataclasses.fields(Preset) if "float" in str(f.type)}
    return recipe | {name for name, value in DEFAULT_ARGUMENTS.items() if isinstance(value, float)}


# What `keras-rnnreg tune` searches (LanguageModelHyperModel's space, where
# `noise_level` is one entry per distribution): such a flag centres the
# search, every other override flag fixes its value in every trial.
SEARCHED = ("learning_rate", "hidden_size", "embedding_dropout", "input_dropout",
            "hidden_dropout", "output_dropout", "weight_dropout", "alpha", "beta",
            "num_experts", "latent_dropout", "noise", "noise_level")


def _add_override_flags(group):
    # Not given: no attribute (SUPPRESS), so that "none" can say None.
    for name in _override_names():
        group.add_argument("--" + name.replace("_", "-"), dest=f"override_{name}", type=_value,
                           metavar="VALUE", help=argparse.SUPPRESS, default=argparse.SUPPRESS)


def _overrides(args):
    """The override flags given, by name; `none`/`off` as None."""
    floats = _float_names()
    given = {name: getattr(args, f"override_{name}") for name in _override_names()
             if hasattr(args, f"override_{name}")}
    return {name: float(value) if name in floats and type(value) is int else value
            for name, value in given.items()}


# ------------------------------------------------------------ parser
class _Parser(argparse.ArgumentParser):
    """argparse, with no abbreviated flags and a usage error as one line
    (after the program's name) that names the closest real flags of an
    unknown one.

    Abbreviations are off for every parser (the subcommands' too, which
    `add_subparsers(parser_class=_Parser)` makes with this class): an
    abbreviation would be read as whatever flag it starts (`--dropout` as
    `--dropout-type`), and `--backe jax` would be parsed but not seen by
    `_select_backend`.
    """

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message):
        if message.startswith("unrecognized arguments:"):
            known = sorted({option for parser in _all_parsers(self)
                            for action in parser._actions for option in action.option_strings
                            if option.startswith("--")})
            hints = []
            for flag in message.split(":", 1)[1].split():
                if flag.startswith("--"):
                    name = flag.split("=")[0]
                    # difflib's closest, then every flag holding the name
                    # (--dropout: each *-dropout), however far.
                    close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
                    close += [k for k in known if name[2:] in k and k not in close]
                    if close:
                        hints.append(f"{name}: did you mean {', '.join(close[:10])}?")
            message = "; ".join([message] + hints)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _all_parsers(parser):
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                parsers += _all_parsers(child)
    return parsers


def _wrapped(text):
    import textwrap

    return textwrap.fill(text, 79, break_on_hyphens=False)


def build_parser():
    parser = _Parser(
        prog="keras-rnnreg", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from keras_rnnreg import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # Epilogs wrapped here: argparse's wrapping breaks flags at their hyphens.
    raw = argparse.RawDescriptionHelpFormatter
    train = commands.add_parser("train", help="train a preset on a dataset (or resume a run)",
                                formatter_class=raw)
    data = train.add_argument_group("data")
    data.add_argument("--dataset", choices=("synthetic", "ptb", "wikitext2"), default=None,
                      help="default: synthetic (the embedded corpus)")
    data.add_argument("--data-dir", help="your corpus: a directory of train/valid/test text files")
    for split in ("train", "valid", "test"):
        data.add_argument(f"--{split}-file", help=f"--data-dir's {split} file name")
    data.add_argument("--manual-dir", help="ptb/wikitext2: a directory holding the split files (offline)")
    data.add_argument("--tfds-dir", help="ptb/wikitext2: where TensorFlow Datasets keeps its data")
    data.add_argument("--synthetic-seed", type=int, help="seed of the synthetic corpus (default: 0)")
    model = train.add_argument_group("model and recipe")
    model.add_argument("--preset", help="a preset name (keras-rnnreg presets)")
    model.add_argument("--preset-file", help="a preset file written by `keras-rnnreg tune`")
    _add_override_flags(model)
    run = train.add_argument_group("run")
    run.add_argument("--epochs", type=int, help="default: the preset's")
    run.add_argument("--seed", type=int, help="default: the preset's (else 0)")
    run.add_argument("--output", help="the run directory (default: runs/<preset>-<dataset>)")
    run.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly")
    run.add_argument("--backend", choices=BACKENDS, help="the Keras backend (default: KERAS_BACKEND)")
    run.add_argument("--checkpoint-every", default="10m", metavar="N|DURATION",
                     help="also checkpoint within epochs: every N batches, or every "
                          "90s/10m/1h (default: 10m; 0: at epoch ends only)")
    run.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    train.epilog = _wrapped("Any model argument or recipe field is a flag: " +
                    ", ".join("--" + n.replace("_", "-") for n in _override_names()))

    evaluate = commands.add_parser("evaluate", help="test perplexity of a trained run")
    evaluate.add_argument("run", help="a run directory (keras-rnnreg train --output)")
    evaluate.add_argument("--split", choices=("valid", "test"), default="test")
    evaluate.add_argument("--batch-size", type=_evaluation_batch_size, metavar="N|paper",
                          help="read the split in N rows, the trained weights copied into a "
                               "model built for N (a stateful model's batch is fixed); paper: "
                               "the preset's paper's (AWD-LSTM: valid 10, test 1). Default: "
                               "the training batch size")
    evaluate.add_argument("--cache", action="store_true",
                          help="also with the neural cache pointer (AWD-LSTM §7)")
    evaluate.add_argument("--window", type=int, help="cache window (default: the dataset's tuned one)")
    evaluate.add_argument("--lambd", type=float, help="cache mixture weight λ")
    evaluate.add_argument("--theta", type=float, help="cache flatness θ")
    evaluate.add_argument("--dynamic", action="store_true",
                          help="also with dynamic evaluation (Krause et al. 2018): the weights "
                               "adapt to each segment after scoring it, steps normalized by "
                               "RMS gradients gathered on the run's whole training split "
                               "(every token, in 100 rows); one stream unless --batch-size")
    evaluate.add_argument("--dynamic-lr", type=float,
                          help="dynamic evaluation's learning rate η (default: 5e-05, "
                               "Krause et al.'s PTB value)")
    evaluate.add_argument("--dynamic-decay", type=float,
                          help="dynamic evaluation's decay λ towards the trained weights "
                               "(default: 0.002)")
    evaluate.add_argument("--segment-length", type=int,
                          help="dynamic evaluation's tokens per update (default: 5)")
    evaluate.add_argument("--backend", choices=BACKENDS)

    generate = commands.add_parser("generate", help="sample text from a trained run")
    generate.add_argument("run")
    generate.add_argument("--length", type=int, default=50)
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--prompt", default="", help="words to start from")
    generate.add_argument("--seed", type=int)
    generate.add_argument("--allow-unk", action="store_true")
    generate.add_argument("--allow-eos", action="store_true")
    generate.add_argument("--backend", choices=BACKENDS)

    presets = commands.add_parser("presets", help="list the presets")
    presets.add_argument("--markdown", action="store_true",
                         help="the table of docs/models.md: each preset's model, recipe, "
                              "reported results and parameter count")

    tune = commands.add_parser("tune", help="keras-tuner search; writes a preset file",
                               formatter_class=raw)
    tune.add_argument("--dataset", choices=("synthetic", "ptb", "wikitext2"), default=None,
                      help="default: synthetic")
    tune.add_argument("--data-dir")
    tune.add_argument("--manual-dir")
    tune.add_argument("--tfds-dir")
    tune.add_argument("--preset", default=None)
    tune.add_argument("--tuner", choices=("random", "bayesian", "hyperband"), default="random")
    tune.add_argument("--max-trials", type=int,
                      help="trials of a random or bayesian search (default: 4); hyperband "
                           "sizes its own from --epochs")
    tune.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    tune.add_argument("--output", default="tuning", help="directory of the search and the preset file")
    tune.add_argument("--backend", choices=BACKENDS)
    _add_override_flags(tune)
    searched = [n for n in _override_names() if n in SEARCHED]
    fixed = [n for n in _override_names() if n not in SEARCHED]
    tune.epilog = _wrapped(
        "Model arguments and recipe fields are flags, as for train. These centre the "
        "search (it samples around the value given, or the preset's): "
        + ", ".join("--" + n.replace("_", "-") for n in searched)
        + "; gradient noise is searched too (off or on, its eta). These fix their value "
        "in every trial: " + ", ".join("--" + n.replace("_", "-") for n in fixed) + ".")
    return parser


# ------------------------------------------------------------ commands
def _dataset_spec(args):
    """The dataset the flags name; CLIError for a flag that the chosen
    dataset would not use."""
    files = [f"--{s}-file" for s in ("train", "valid", "test") if getattr(args, f"{s}_file", None)]
    tfds = [f for f in ("--manual-dir", "--tfds-dir") if getattr(args, f[2:].replace("-", "_"), None)]
    if getattr(args, "synthetic_seed", None) is not None and (
            args.data_dir or (args.dataset or "synthetic") != "synthetic"):
        raise CLIError("--synthetic-seed is for the synthetic corpus (--dataset synthetic).")
    if files and not args.data_dir:
        raise CLIError(f"{', '.join(files)}: name files in --data-dir, which is not given.")
    if tfds and (args.data_dir or (args.dataset or "synthetic") == "synthetic"):
        raise CLIError(f"{', '.join(tfds)}: for --dataset ptb or wikitext2 (TensorFlow "
                       "Datasets), not for " + ("--data-dir." if args.data_dir else
                                                "the synthetic corpus."))
    if args.data_dir:
        if args.dataset:
            raise CLIError("Give --dataset or --data-dir, not both.")
        files = [getattr(args, f"{s}_file", None) for s in ("train", "valid", "test")]
        if any(files) and not all(files):
            raise CLIError("--train-file, --valid-file and --test-file go together.")
        return {"name": "directory", "path": os.path.abspath(args.data_dir),
                "files": files if all(files) else None}
    name = args.dataset or "synthetic"
    if name == "synthetic":
        seed = getattr(args, "synthetic_seed", None)
        return {"name": "synthetic", "seed": 0 if seed is None else seed}
    _require("tensorflow_datasets", f"--dataset {name}")
    return {"name": name, "manual_dir": args.manual_dir and os.path.abspath(args.manual_dir),
            "tfds_dir": args.tfds_dir and os.path.abspath(args.tfds_dir)}


def _train_config(args):
    from keras_rnnreg.app import training

    dataset = _dataset_spec(args)
    overrides = _overrides(args)
    if args.preset and args.preset_file:
        raise CLIError("Give --preset or --preset-file, not both.")
    epochs = args.epochs
    if args.preset_file:
        try:
            with open(args.preset_file) as file:
                record = json.load(file)
            preset, file_overrides = record["preset"], dict(record.get("overrides") or {})
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CLIError(f"--preset-file {args.preset_file!r} is not a preset file "
                           f"written by `keras-rnnreg tune` ({error}).") from None
        overrides = {**file_overrides, **overrides}
        epochs = epochs or record.get("epochs")
    elif args.preset:
        preset = args.preset
    elif dataset["name"] == "synthetic":
        preset = training.SYNTHETIC_DEFAULT["preset"]
        overrides = {**training.SYNTHETIC_DEFAULT["overrides"], **overrides}
        epochs = epochs or training.SYNTHETIC_DEFAULT["epochs"]
    else:
        preset = training.DEFAULT_PRESET
    from keras_rnnreg.models import get_preset

    resolved = get_preset(preset)  # ValueError lists the valid names
    training.drop_finetuning_without_nonmono(resolved, overrides)
    config = {"dataset": dataset, "preset": preset, "overrides": overrides,
              "seed": args.seed, "epochs": epochs or resolved.epochs}
    if overrides.get("length_bucket") == 0:  # off, as `none` says too
        overrides["length_bucket"] = None
    chosen = training.resolve_preset(config)  # validates the overrides now, not after loading data
    from keras_rnnreg.models.builder import resolve_arguments

    resolve_arguments(**chosen.arguments())  # and the model's, before anything is written
    if "length_bucket" not in overrides and chosen.length_bucket is None:
        bucket = training.default_length_bucket(chosen)
        if bucket is not None:
            overrides["length_bucket"] = bucket  # in config.json: a resume pads alike
    if config["epochs"] < 1:
        raise CLIError(f"--epochs must be >= 1. Received: {config['epochs']}")
    return config


def cmd_train(args):
    import keras

    from keras_rnnreg.app import training
    from keras_rnnreg.app.compile_cache import run_compilation_cache
    from keras_rnnreg.app.checkpoint import CHECKPOINT_FILE, checkpoint_position
    from keras_rnnreg.app.data import load_dataset

    dataset = None
    if args.epochs is not None and args.epochs < 1:
        raise CLIError(f"--epochs must be >= 1. Received: {args.epochs}")
    if args.tensorboard:
        _require("tensorflow", "--tensorboard (Keras writes the logs with tf.summary)")
    try:  # a bad value fails before any work
        training.parse_checkpoint_every(args.checkpoint_every)
    except ValueError as error:
        raise CLIError(str(error).replace("checkpoint_every", "--checkpoint-every")) from None
    if args.resume:
        directory = args.resume
        config = training.read_config(directory)
        given = [a for a in ("dataset", "data_dir", "train_file", "valid_file", "test_file",
                             "manual_dir", "tfds_dir", "synthetic_seed", "preset",
                             "preset_file", "seed", "output")
                 if getattr(args, a, None) is not None]
        given += list(_overrides(args))
        if given:
            raise CLIError("--resume continues the run's own configuration; drop "
                           + ", ".join("--" + g.replace("_", "-") for g in given)
                           + " (only --epochs may change).")
        if config.get("backend") and config["backend"] != keras.backend.backend():
            raise CLIError(f"The run in {directory!r} was trained on the {config['backend']} "
                           f"backend; resume it with --backend {config['backend']}.")
        done, batches = checkpoint_position(directory)
        if args.epochs is not None:
            if args.epochs < done + (1 if batches else 0):
                raise CLIError(f"--epochs {args.epochs} is fewer than the run in {directory!r} "
                               f"has trained ({done} epochs"
                               + (f" and {batches} batches" if batches else "") + ").")
            config["epochs"] = args.epochs
        if args.epochs in (None, done) and training.run_is_finished(directory, done, batches):
            # Resuming must not overwrite the saved (averaged) model.
            print(f"keras-rnnreg: the run in {directory} has finished its {done} epochs; "
                  f"nothing to do (pass --epochs N with N > {done} to train on).")
            return 0
        # Before training: a resume of this resume continues to these epochs.
        training.write_config(directory, config)
    else:
        config = _train_config(args)
        directory = args.output or os.path.join(
            "runs", f"{config['preset']}-{config['dataset']['name']}")
        args.output = directory  # named in the Ctrl-C hint
        # A run is what can be resumed: a directory whose run failed before
        # its first checkpoint holds none, and is started afresh.
        if os.path.exists(os.path.join(directory, CHECKPOINT_FILE)):
            raise CLIError(f"{directory!r} already holds a run: continue it with "
                           f"--resume {directory}, or choose another --output.")
        # The data is read (and checked) before the run directory exists.
        dataset = load_dataset(config["dataset"])
        os.makedirs(directory, exist_ok=True)
        config["backend"] = keras.backend.backend()
        config["keras"] = keras.__version__
        training.write_config(directory, config)
    if not args.quiet:
        print(f"keras-rnnreg: {config['preset']} on {config['dataset']['name']}, "
              f"{config['epochs']} epochs, {keras.backend.backend()} backend -> {directory}")
    # Off a terminal the epoch line alone (Keras's verbose=2 line repeats it).
    verbose = 1 if sys.stdout.isatty() and not args.quiet else 0
    with run_compilation_cache(directory):
        summary = training.train_run(config, directory, resume=bool(args.resume),
                                     verbose=verbose, tensorboard=args.tensorboard,
                                     dataset=dataset, checkpoint_every=args.checkpoint_every)
    training.write_config(directory, config)
    print(training.summary_line(summary))
    print(f"wrote {directory}/: model.keras, history.csv, {training.PLOT_FILE}, summary.json")
    return 0


def _evaluation_batch_size(text):
    if text == "paper":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a batch size >= 1 or 'paper'. Received: {text!r}")
    return value


def _load_run(directory):
    import keras

    import keras_rnnreg
    from keras_rnnreg.app import training

    if not os.path.isfile(os.path.join(directory, training.CONFIG_FILE)):
        raise CLIError(f"There is no run in {directory!r}" + (
            f" (no {training.CONFIG_FILE}): give the --output of a keras-rnnreg train run."
            if os.path.isdir(directory) else ": no such directory."))
    config = training.read_config(directory)
    path = os.path.join(directory, training.MODEL_FILE)
    if not os.path.isfile(path):
        raise CLIError(f"{directory!r} has no {training.MODEL_FILE}: the run has not finished "
                       f"(continue it with keras-rnnreg train --resume {directory}).")
    keras_rnnreg._register_with_keras()  # the classes load_model looks up
    model = keras.saving.load_model(path)
    with open(os.path.join(directory, training.VOCAB_FILE)) as file:
        vocab = json.load(file)
    return config, model, vocab


def cmd_evaluate(args):
    from keras_rnnreg.app.compile_cache import run_compilation_cache

    unused = [f"--{k}" for k in ("window", "lambd", "theta") if getattr(args, k) is not None]
    if unused and not args.cache:
        raise CLIError(f"{', '.join(unused)}: settings of the neural cache; add --cache.")
    unused = [f"--{k.replace('_', '-')}" for k in ("dynamic_lr", "dynamic_decay", "segment_length")
              if getattr(args, k) is not None]
    if unused and not args.dynamic:
        raise CLIError(f"{', '.join(unused)}: settings of dynamic evaluation; add --dynamic.")
    config, model, vocab = _load_run(args.run)
    with run_compilation_cache(args.run):
        return _evaluate(args, config, model, len(vocab))


def _evaluate(args, config, model, vocab_size):
    from keras_rnnreg.app import training
    from keras_rnnreg.app.data import load_dataset

    corpus, oracle = load_dataset(config["dataset"])
    preset = training.resolve_preset(config)
    tokens = corpus.test if args.split == "test" else corpus.valid
    batch_size = getattr(args, "batch_size", None) or preset.batch_size
    if batch_size == "paper":
        batch_size = training.protocol_batch_size(preset, args.split)
    model, preset = training.rebatched(model, preset, vocab_size, batch_size)
    _, sequence = preset.sequences(corpus.train, tokens)
    perplexity = training.evaluate_perplexity(model, sequence)
    line = f"{args.split} perplexity {perplexity:.2f} (batch {batch_size}"
    if oracle:
        import math

        line += f"; oracle {math.exp(oracle[args.split]):.2f}"
    print(line + ")")
    if args.cache:
        from keras_rnnreg import evaluation

        name = config["dataset"]["name"]
        defaults = dict(evaluation.NEURAL_CACHE_DEFAULTS.get(
            name, evaluation.NEURAL_CACHE_DEFAULTS["ptb"]))
        for key in ("window", "lambd", "theta"):
            if getattr(args, key) is not None:
                defaults[key] = getattr(args, key)
        result = evaluation.evaluate_with_cache(model, tokens, batch_size=preset.batch_size,
                                                bptt=preset.bptt, **defaults)
        print(f"{args.split} perplexity with the neural cache "
              f"({', '.join(f'{k}={v}' for k, v in defaults.items())}): "
              f"{result.cache_perplexity:.2f} (without: {result.perplexity:.2f})")
    if args.dynamic:
        _evaluate_dynamic(args, model, tokens, corpus.train,
                          batch_size if getattr(args, "batch_size", None) else 1)
    return 0


def _evaluate_dynamic(args, model, tokens, training_tokens, batch_size):
    """Prints the split's perplexity with dynamic evaluation, its settings
    (Krause et al.'s PTB ones unless flags say otherwise) and the time taken."""
    import time

    from keras_rnnreg import evaluation

    settings = dict(evaluation.DYNAMIC_EVALUATION_DEFAULTS["ptb"], batch_size=batch_size)
    for key, flag in (("learning_rate", "dynamic_lr"), ("decay", "dynamic_decay"),
                      ("segment_length", "segment_length")):
        if getattr(args, flag) is not None:
            settings[key] = getattr(args, flag)
    start = time.perf_counter()
    result = evaluation.evaluate_dynamic(model, tokens, training_tokens=training_tokens,
                                         **settings)
    seconds = time.perf_counter() - start
    shown = ", ".join(f"{k}={v}" for k, v in settings.items())
    print(f"{args.split} perplexity with dynamic evaluation ({shown}; RMS statistics from "
          f"{result.statistics_tokens} training tokens): {result.perplexity:.2f} "
          f"(without: {result.static_perplexity:.2f}; {seconds:.0f} s)")


def cmd_generate(args):
    from keras_rnnreg.app.compile_cache import run_compilation_cache
    from keras_rnnreg.app.generate import sample_text

    _, model, vocab = _load_run(args.run)
    with run_compilation_cache(args.run):
        words = sample_text(model, vocab, prompt=args.prompt.split(), length=args.length,
                            temperature=args.temperature, seed=args.seed,
                            allow_unk=args.allow_unk, allow_eos=args.allow_eos)
    text = " ".join(words).replace(" <eos> ", "\n").replace("<eos>", "\n")
    print((args.prompt + " " if args.prompt else "") + text)
    return 0


def cmd_presets(args):
    from keras_rnnreg.models import PRESETS

    if args.markdown:
        print(_markdown_presets(PRESETS))
        return 0
    print(f"{'preset':24s} {'valid/test ppl':>15s}  model — paper")
    for name, preset in PRESETS.items():
        reported = (f"{preset.reported_valid_perplexity}/{preset.reported_test_perplexity}"
                    if preset.reported_test_perplexity else
                    (f"(twin of {preset.twin_of})" if preset.twin_of else "—"))
        print(f"{name:24s} {reported:>15s}  {preset.description} — "
              f"{preset.paper.split(',')[0]} {preset.section}")
    return 0


def _number(value):
    return f"{value:g}".replace("e-0", "e-")


def _model_cell(arguments):
    sizes = arguments["hidden_sizes"]
    if len(set(sizes[:-1])) > 1:
        layers = " / ".join(map(str, sizes))
    else:  # AWD-LSTM's: all alike but (tied) the last
        layers = f"{len(sizes)} × {sizes[0]}"
        if sizes[-1] != sizes[0]:
            layers += f" (last {sizes[-1]})"
    parts = [f"{layers} {arguments['cell'].upper()}", f"embedding {arguments['embedding_size']}",
             "tied" if arguments["tie_weights"] else "untied"]
    if arguments["num_experts"] > 1:
        parts.append(f"mixture of {arguments['num_experts']} softmaxes")
    if arguments["noise"]:
        parts.append(f"{arguments['noise']} noise γ {_number(arguments['noise_level'])}")
    rates = [f"{part} {_number(arguments[part + '_dropout'])}"
             for part in ("embedding", "input", "hidden", "output", "latent")
             if arguments[part + "_dropout"]]
    parts.append(f"{arguments['dropout_type']} dropout: {', '.join(rates)}" if rates
                 else "no dropout")
    for name, label in (("weight_dropout", "weight drop"), ("alpha", "AR α"), ("beta", "TAR β")):
        if arguments[name]:
            parts.append(f"{label} {_number(arguments[name])}")
    if arguments["initialization"] != "paper":
        scale = arguments["initialization"]
        parts.append(f"init U(±{_number(scale)})" if isinstance(scale, float) else f"{scale} init")
    return ", ".join(parts)


def _recipe_cell(preset):
    optimizer = {"sgd": "SGD", "asgd": "ASGD", "adam": "Adam"}[preset.optimizer]
    if preset.nonmono:
        optimizer += f" + NT-ASGD (n {preset.nonmono})"
    parts = [f"{optimizer} lr {_number(preset.learning_rate)}"
             + (" (loss summed over time)" if preset.loss_sums_over_time else "")]
    factor = _number(preset.decay_factor or 0)
    parts += {"epoch_decay": [f"÷{factor} per epoch after {preset.decay_start}"],
              "plateau": [f"÷{factor} when validation does not improve"]}.get(preset.schedule, [])
    parts.append(f"{preset.epochs} epochs" + (" + fine-tuning" if preset.finetune else ""))
    parts.append(f"clip {_number(preset.clipnorm)}")
    if preset.weight_decay:
        parts.append(f"weight decay {_number(preset.weight_decay)}")
    parts.append(f"batch {preset.batch_size}")
    parts.append(("variable " if preset.variable_bptt else "") + f"BPTT {preset.bptt}")
    if preset.seed is not None:
        parts.append(f"seed {preset.seed}")
    return ", ".join(parts)


def _markdown_presets(presets):
    """The preset table of docs/models.md, from the registry; the parameter
    counts are those of each model built for the preset's dataset."""
    from keras_rnnreg.models import presets as registry
    from keras_rnnreg.models.builder import resolve_arguments

    papers = {registry.ZAREMBA: "Zaremba", registry.ARTAR: "AR/TAR",
              registry.NOISIN: "Noisin", registry.AWD: "AWD-LSTM", registry.MOS: "MoS"}
    lines = ["| preset | paper, section | model | recipe | reported valid / test "
             "| parameters (reported / ours) |", "| --- " * 6 + "|"]
    for name, preset in presets.items():
        count = preset.build(preset.reference_vocab_size).count_params()
        if preset.reported_test_perplexity:
            reported = (f"{_number(preset.reported_valid_perplexity)} / "
                        f"{_number(preset.reported_test_perplexity)} ({preset.dataset})")
        else:
            reported = f"– (twin of `{preset.twin_of}`)" if preset.twin_of else "–"
        parameters = (f"{_number(preset.reported_parameters / 1e6)}M"
                      if preset.reported_parameters else "–")
        cells = [f"`{name}`", f"{papers.get(preset.paper, preset.paper)} {preset.section}",
                 _model_cell(resolve_arguments(**preset.arguments())), _recipe_cell(preset),
                 reported, f"{parameters} / {count / 1e6:.2f}M"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_tune(args):
    from keras_rnnreg.app.tune import run_search, search_size

    try:  # before the data is read
        search_size(args.tuner, args.max_trials, args.epochs)
    except ValueError as error:
        raise CLIError(str(error)) from None
    dataset = _dataset_spec(args)
    _require("keras_tuner", "`tune`")
    path, score = run_search(args, dataset, _overrides(args))
    print(f"best trial: validation perplexity {score:.2f}; its configuration is {path} "
          f"(train it with keras-rnnreg train --preset-file {path})")
    return 0


# The extra (pyproject.toml) that brings each optional package the commands
# import. Keras's TensorBoard callback writes with TensorFlow's tf.summary,
# whatever the backend.
_EXTRAS = {"tensorflow_datasets": "data", "matplotlib": "plot", "keras_tuner": "tuner",
           "tensorboard": "tuner", "tensorflow": "tensorflow"}


def _require(module, purpose):
    """Fails now, naming the extra to install, where `purpose` would import
    the optional `module` later (after the run directory is written)."""
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"{purpose} needs {module}, which is not installed",
                                  name=module)


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "generate": cmd_generate,
            "presets": cmd_presets, "tune": cmd_tune}


def _select_backend(argv):
    """Sets KERAS_BACKEND from --backend, read before the parser (which
    imports Keras for the model arguments' flags).

    Keras reads the variable once, when it is first imported; where it is
    loaded already with another backend (`main` called in a Python process
    that imported Keras) the flag cannot be honoured: a CLIError.
    """
    backend = None
    for index, arg in enumerate(argv):  # `--backend X` or `--backend=X`; the last counts
        if arg == "--backend":
            backend = argv[index + 1] if index + 1 < len(argv) else None
        elif arg.startswith("--backend="):
            backend = arg.partition("=")[2]
    if backend not in BACKENDS:
        return  # no flag, or argparse reports it
    keras = sys.modules.get("keras")
    if keras is None:
        os.environ["KERAS_BACKEND"] = backend
    elif keras.backend.backend() != backend:
        raise CLIError(f"--backend {backend}: this Python process has Keras loaded with the "
                       f"{keras.backend.backend()} backend already; run keras-rnnreg in a new "
                       "process, or leave --backend out.")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _select_backend(argv)
    except CLIError as error:
        print(f"keras-rnnreg: error: {error}", file=sys.stderr)
        return 2
    _quiet_start()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as interrupt:
        where = getattr(args, "resume", None) or getattr(args, "output", None)
        hint = f"; continue with keras-rnnreg train --resume {where}" if args.command == "train" and where else ""
        how = f" ({interrupt})" if str(interrupt) else ""
        print(f"keras-rnnreg: interrupted{how}{hint}", file=sys.stderr)
        return 130
    except CLIError as error:
        if args.debug:
            raise
        print(f"keras-rnnreg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, ImportError) as error:
        if args.debug:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        extra = _EXTRAS.get((getattr(error, "name", None) or "").split(".")[0])
        if isinstance(error, ImportError) and extra:
            message += f' (install it with: pip install "keras-rnnreg[{extra}]")'

        print(f"keras-rnnreg {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
