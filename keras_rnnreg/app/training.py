"""A training run: a preset on a dataset, written to a run directory that
`--resume` continues exactly.

Run directory:

    config.json      the run's configuration (dataset, preset, overrides, seed,
                     epochs, backend, versions): what `--resume` rebuilds from
    vocab.json       the vocabulary (id order), for `evaluate` and `generate`
    checkpoint.npz   after every epoch and every `checkpoint_every` within one
                     (keras_rnnreg.app.checkpoint)
    history.csv      one row per epoch (Keras's CSVLogger): perplexities, losses,
                     the AR/TAR terms, learning rate, NT-ASGD's trigger
    perplexity.png   train/valid perplexity per epoch, NT-ASGD's trigger, the oracle
    model.keras      the final model (averaged weights once NT-ASGD triggered)
    summary.json     valid/test perplexity, oracle, tokens/s, wall time
    tensorboard/     with --tensorboard
"""

import csv
import dataclasses
import json
import math
import os
import platform
import signal
import threading
import time

import keras

from keras_rnnreg._stateful import reset_rnn_states
from keras_rnnreg.callbacks import NTASGD
from keras_rnnreg.callbacks.nt_asgd import find_asgd
from keras_rnnreg.app.checkpoint import (
    CheckpointError,
    RunCheckpoint,
    checkpoint_position,
    read_checkpoint,
    restore_variables,
)
from keras_rnnreg.app.data import load_dataset
from keras_rnnreg.models import get_preset

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
PLOT_FILE = "perplexity.png"
MODEL_FILE = "model.keras"
SUMMARY_FILE = "summary.json"
VOCAB_FILE = "vocab.json"

#: The run with no flags (`make demo`): awd-lstm-cpu's recipe and
#: regularizers, sized for the embedded synthetic corpus.
SYNTHETIC_DEFAULT = {
    "preset": "awd-lstm-cpu",
    # Every AWD-LSTM regularizer, at rates for a 2 x 128 model, trained with
    # Adam: on this corpus SGD at AWD-LSTM's rate 30 plateaus for ~18 epochs
    # (1.8x the oracle after 8), while Adam 0.005 reaches ~1.25x in 16 epochs
    # (benchmarks/synthetic_calibration.py). Fixed-length BPTT: one compiled
    # train step on JAX (the short last batch padded: `default_length_bucket`).
    "overrides": {
        "embedding_size": 128,
        "hidden_size": 128,
        "num_layers": 2,
        "batch_size": 32,
        "bptt": 35,
        "variable_bptt": False,
        "weight_dropout": 0.3,
        "embedding_dropout": 0.1,
        "input_dropout": 0.3,
        "hidden_dropout": 0.2,
        "output_dropout": 0.3,
        "optimizer": "adam",
        "learning_rate": 0.005,
        "weight_decay": 0.0,
        "schedule": "plateau",
        "decay_factor": 2.0,
        "nonmono": None,
        "finetune": False,
    },
    "epochs": 12,
}
DEFAULT_PRESET = "awd-lstm-cpu"
#: What `train` pads variable-length batches to a multiple of, where it pays
#: (`default_length_bucket`); `--length-bucket 0` turns it off.
DEFAULT_LENGTH_BUCKET = 8


def default_length_bucket(preset):
    """What `train` pads `preset`'s training batches to a multiple of on
    JAX without a GPU (None elsewhere, and None means no padding).

    JAX compiles the train step once per batch shape. Variable lengths:
    `DEFAULT_LENGTH_BUCKET`, as AWD-LSTM's ~90 lengths would cost ~90
    compilations, padded to multiples of 8 they take 12. Fixed length:
    `preset.bptt`, as every batch is `bptt` long except the last, whose
    own length would cost a compilation of its own; padded, it reuses the
    step (one padded batch an epoch against a compilation:
    docs/benchmarks.md). On a CPU JAX has no fused LSTM, so the mask that
    padding needs costs nothing there; on a GPU the mask keeps Keras's LSTM
    off cuDNN, and TensorFlow and torch do not compile per shape at all.
    """
    if keras.backend.backend() != "jax":
        return None
    import jax

    if any(device.platform != "cpu" for device in jax.devices()):
        return None
    return DEFAULT_LENGTH_BUCKET if preset.variable_bptt else preset.bptt


def drop_finetuning_without_nonmono(preset, overrides):
    """Adds `finetune=False` to `overrides` where they turn NT-ASGD off
    (`nonmono=None`) on a recipe with AWD-LSTM's fine-tuning stage, which
    stops by NT-ASGD's test: the command runs no fine-tuning stage (the
    field's only use), so `--nonmono none` does what it says rather than
    fail on a field no flag sets."""
    if "nonmono" in overrides and overrides["nonmono"] is None and preset.finetune:
        overrides["finetune"] = False
    return overrides


def resolve_preset(config):
    """The run's `Preset`: the named preset (or a preset file's), its
    overrides applied, the run's seed."""
    preset = get_preset(config["preset"])
    overrides = dict(config.get("overrides") or {})
    if config.get("seed") is not None:
        overrides["seed"] = config["seed"]
    return preset.replace(**overrides) if overrides else preset


def preset_record(preset):
    """A JSON-serializable record of a preset (its fields, model arguments)."""
    record = dataclasses.asdict(preset)
    record["model_arguments"] = dict(preset.model_arguments)
    return record


class LogLearningRate(keras.callbacks.Callback):
    """Adds the epoch's (base) learning rate to the logs, so that history.csv
    and TensorBoard record it; place it before them. At an epoch's end
    `BPTTCallback` has put the base rate back."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )


class EpochLine(keras.callbacks.Callback):
    """One line per epoch: perplexities beside the oracle, tokens/s, ETA."""

    def __init__(self, epochs, sequence, oracle_perplexity=None, print_fn=print):
        super().__init__()
        self.epochs, self.sequence = epochs, sequence
        self.oracle = oracle_perplexity
        self.print_fn = print_fn
        self.train_seconds = 0.0
        self.tokens_trained = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.train_end = None
        # The epoch's tokens (fewer in an epoch resumed mid-way), read after
        # BPTTCallback has set the epoch's lengths.
        self.tokens = int(self.sequence.lengths.sum()) * self.sequence.batch_size

    def on_test_begin(self, logs=None):
        if self.train_end is None:
            self.train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        end = time.perf_counter()
        train = (self.train_end or end) - self.start
        self.train_seconds += train
        self.tokens_trained += self.tokens
        left = (self.epochs - epoch - 1) * (end - self.start)
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        if "perplexity" in logs:
            parts.append(f"train ppl {logs['perplexity']:.2f}")
        if "val_perplexity" in logs:
            valid = f"valid ppl {logs['val_perplexity']:.2f}"
            if self.oracle:
                valid += f" (oracle {self.oracle:.2f})"
            parts.append(valid)
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.3g}")
        parts.append(f"{self.tokens / train:,.0f} tokens/s")
        if logs.get("averaging_start", -1) >= 0:  # -1: not started
            parts.append("averaging (NT-ASGD)")
        if left > 0:
            parts.append(f"ETA {_duration(left)}")
        self.print_fn(" | ".join(parts))

    @property
    def tokens_per_second(self):
        return self.tokens_trained / self.train_seconds if self.train_seconds else None


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _truncate_history(path, epochs_done):
    """Keeps the CSV rows of the epochs a checkpoint holds (a process killed
    after logging an epoch but before checkpointing it logs it again)."""
    if not os.path.isfile(path):
        return
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < epochs_done]
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows(kept)


def evaluate_perplexity(model, sequence):
    """exp of the token-mean cross-entropy over `sequence` (fixed windows,
    token weights), states reset at the start and carried through."""
    reset_rnn_states(model)
    results = model.evaluate(sequence, verbose=0, return_dict=True)
    return math.exp(results["loss"]) if "perplexity" not in results else float(results["perplexity"])


def rebatched(model, preset, vocab_size, batch_size):
    """`(model, preset)` for reading evaluation streams in `batch_size` rows:
    the preset with that batch size and its model, built and compiled, with
    `model`'s weights copied in (`set_weights`: the RNN states, which have
    the batch dimension, are not weights). A stateful model's batch size is
    fixed when it is built, so this is how a model trained at batch 40 is
    evaluated at the papers' batch 10 or 1 (`Preset.evaluation_batch_sizes`).
    The model and preset themselves where `batch_size` is the preset's."""
    if batch_size == preset.batch_size:
        return model, preset
    preset = preset.replace(batch_size=batch_size)
    copy = preset.build(vocab_size)
    copy.set_weights(model.get_weights())
    preset.compile(copy)
    return copy, preset


def protocol_batch_size(preset, split):
    """The batch size the preset's paper evaluates `split` ("valid" or
    "test") at (`Preset.evaluation_batch_sizes`); the training batch size
    where the preset names none."""
    if preset.evaluation_batch_sizes is None:
        return preset.batch_size
    return preset.evaluation_batch_sizes[0 if split == "valid" else 1]


def parse_checkpoint_every(value):
    """`checkpoint_every` as `(batches, seconds)`: an int is a number of
    batches, a string ending in s, m or h a duration, 0 or None never
    (checkpoints at epoch ends only)."""
    if value is None:
        return None, None
    text = str(value).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text[-1:] in units:
            seconds = float(text[:-1]) * units[text[-1]]
            if seconds > 0:
                return None, seconds
        else:
            batches = int(text)
            if batches >= 0:
                return (batches or None), None
    except ValueError:
        pass
    raise ValueError(
        "checkpoint_every must be a number of batches (an int >= 0; 0: only at "
        "epoch ends) or a duration such as 90s, 10m or 1h. Received: "
        f"checkpoint_every={value!r}"
    )


def _stop_on_first_interrupt(checkpoint, print_fn):
    """A SIGINT handler: the first Ctrl-C lets the batch under way finish,
    saves a checkpoint and stops; a second one stops at once."""

    def handler(signum, frame):
        if checkpoint.stop_requested:
            raise KeyboardInterrupt
        checkpoint.stop_requested = True
        print_fn("\nkeras-rnnreg: stopping after this batch, saving a checkpoint "
                 "(Ctrl-C again to stop at once)")

    return handler


def train_run(config, directory, resume=False, print_fn=print, verbose=1, tensorboard=False,
              dataset=None, checkpoint_every="10m"):
    """Trains (or resumes) the run `config` in `directory`; returns the summary dict.

    `dataset`: the `(corpus, oracle)` of `load_dataset(config["dataset"])`
    if already loaded. `checkpoint_every`: checkpoints within an epoch, as
    `parse_checkpoint_every` reads it (besides the one at every epoch end)."""
    every_batches, every_seconds = parse_checkpoint_every(checkpoint_every)
    started = time.perf_counter()
    corpus, oracle = dataset or load_dataset(config["dataset"])
    oracle_perplexity = math.exp(oracle["test"]) if oracle else None
    oracle_valid = math.exp(oracle["valid"]) if oracle else None
    preset = resolve_preset(config)
    epochs = config["epochs"]
    keras.utils.set_random_seed(preset.seed if preset.seed is not None else 0)

    model = preset.build(len(corpus.vocab))
    preset.compile(model)
    train, valid, test = preset.sequences(corpus.train, corpus.valid, corpus.test)

    initial_epoch, plateau_state, elapsed, resume_from = 0, None, 0.0, None
    if resume:
        meta, values = read_checkpoint(directory)
        restore_variables(model, values)
        initial_epoch = meta["epochs_done"]
        plateau_state = meta["plateau"]
        elapsed = meta["extra"].get("wall_seconds", 0.0)
        _truncate_history(os.path.join(directory, HISTORY_FILE), initial_epoch)
        if meta["batches_done"] and initial_epoch < epochs:
            # The epoch under way resumes at its next batch, in a fit of its own.
            train.resume_at(initial_epoch, meta["batches_done"])
            resume_from = (meta, values)
            # The running metrics are put back at the epoch's start, but
            # TensorFlow's trainer creates their variables only in the first
            # step: one test step creates them now. (What it changes, the
            # states, comes back from the checkpoint at the epoch's start.)
            x, y, *weights = valid[0]
            model.test_on_batch(x, y, sample_weight=weights[0] if weights else None)
            print_fn(f"Resuming epoch {initial_epoch + 1} at batch {meta['batches_done'] + 1}.")
        if initial_epoch > epochs or (initial_epoch == epochs and meta["batches_done"]):
            raise CheckpointError(
                f"The run in {directory!r} is past epoch {epochs}: its checkpoint "
                f"holds {initial_epoch} epochs and {meta['batches_done']} batches."
            )
    else:
        with open(os.path.join(directory, VOCAB_FILE), "w") as file:
            json.dump(list(corpus.vocab), file)

    line = EpochLine(epochs, train, oracle_valid, print_fn)
    callbacks = preset.callbacks(train) + [LogLearningRate()]
    callbacks.append(keras.callbacks.CSVLogger(os.path.join(directory, HISTORY_FILE), append=True))
    callbacks.append(line)
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(directory, "tensorboard")))
    checkpoint = RunCheckpoint(
        directory,
        callbacks=list(callbacks),
        plateau_state=plateau_state,
        extra=lambda: {"wall_seconds": elapsed + time.perf_counter() - started},
        every_batches=every_batches,
        every_seconds=every_seconds,
        resume_from=resume_from,
    )
    callbacks.append(checkpoint)
    # A process started with SIGINT ignored (`nohup cmd &`, a background
    # job) keeps ignoring it, as Python itself does.
    catch_interrupt = (threading.current_thread() is threading.main_thread()
                       and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN)
    if catch_interrupt:
        previous = signal.signal(signal.SIGINT, _stop_on_first_interrupt(checkpoint, print_fn))
    try:
        stages = [(initial_epoch, epochs)]
        if resume_from is not None:
            stages = [(initial_epoch, initial_epoch + 1), (initial_epoch + 1, epochs)]
        averaging = [c for c in callbacks if isinstance(c, NTASGD)]
        for first, last in stages:
            # Only the run's last fit leaves the model holding NT-ASGD's average.
            for callback in averaging:
                callback.final_average = last == epochs
            if first < last:
                model.fit(
                    train,
                    validation_data=valid,
                    epochs=last,
                    initial_epoch=first,
                    callbacks=callbacks,
                    verbose=verbose,
                )
    finally:
        if catch_interrupt:
            signal.signal(signal.SIGINT, previous)
    if initial_epoch >= epochs:
        # A run stopped after its last epoch's checkpoint but before its
        # model was saved: no fit ran, so do what NT-ASGD does when fit ends.
        asgd = find_asgd(model.optimizer)
        if asgd is not None and asgd.averaging and any(c.final_average for c in averaging):
            asgd.assign_average_to_variables()
    valid_perplexity = evaluate_perplexity(model, valid)
    test_perplexity = evaluate_perplexity(model, test)
    model.save(os.path.join(directory, MODEL_FILE))
    # The test perplexity as the paper measured it (AWD-LSTM: batch 1, where
    # the rows of a larger batch each start from a zero state).
    protocol_batch = protocol_batch_size(preset, "test")
    protocol_test = test_perplexity
    if protocol_batch != preset.batch_size:
        paper_model, paper_preset = rebatched(model, preset, len(corpus.vocab), protocol_batch)
        _, paper_test = paper_preset.sequences(corpus.train, corpus.test)
        protocol_test = evaluate_perplexity(paper_model, paper_test)
    wall = elapsed + time.perf_counter() - started
    summary = {
        "dataset": config["dataset"]["name"],
        "preset": preset.name,
        "epochs": epochs,
        # Fewer than `epochs` where a callback stopped training early.
        "epochs_trained": checkpoint_position(directory)[0],
        "valid_perplexity": valid_perplexity,
        "test_perplexity": test_perplexity,
        "batch_size": preset.batch_size,
        # Under the paper's protocol (Preset.evaluation_batch_sizes).
        "protocol_test_batch_size": protocol_batch,
        "protocol_test_perplexity": protocol_test,
        "oracle_test_perplexity": oracle_perplexity,
        "tokens_per_second": line.tokens_per_second,
        "wall_seconds": wall,
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
    }
    with open(os.path.join(directory, SUMMARY_FILE), "w") as file:
        json.dump(summary, file, indent=1)
    from keras_rnnreg.app.plot import plot_history

    plot_history(os.path.join(directory, HISTORY_FILE), os.path.join(directory, PLOT_FILE),
                 oracle_perplexity=oracle_valid, title=f"{preset.name} on {summary['dataset']}")
    return summary


def summary_line(summary):
    parts = [f"valid ppl {summary['valid_perplexity']:.2f}",
             f"test ppl {summary['test_perplexity']:.2f}"]
    protocol = summary.get("protocol_test_batch_size")
    protocol = protocol if protocol != summary.get("batch_size") else None
    if protocol is not None:
        parts[-1] += f" at batch {summary['batch_size']}"
    if summary.get("oracle_test_perplexity"):
        parts[-1] += f" (oracle {summary['oracle_test_perplexity']:.2f}, "
        parts[-1] += f"{summary['test_perplexity'] / summary['oracle_test_perplexity']:.3f}x)"
    if protocol is not None:
        parts.append(f"test ppl {summary['protocol_test_perplexity']:.2f} at batch {protocol} "
                     "(the paper's protocol)")
    if summary.get("tokens_per_second"):
        parts.append(f"{summary['tokens_per_second']:,.0f} tokens/s")
    parts.append(f"wall {_duration(summary['wall_seconds'])}")
    return f"{summary['preset']} on {summary['dataset']}: " + ", ".join(parts)


def run_is_finished(directory, epochs_done, batches_done):
    """Whether `directory` holds the saved model and summary of the training
    its checkpoint, at (`epochs_done`, `batches_done`), ends: then there is
    nothing to resume (a run killed after its last checkpoint but before its
    model was saved is not finished)."""
    if batches_done or not os.path.isfile(os.path.join(directory, MODEL_FILE)):
        return False
    try:
        with open(os.path.join(directory, SUMMARY_FILE)) as file:
            summary = json.load(file)
    except (OSError, ValueError):
        return False
    return summary.get("epochs_trained", summary.get("epochs")) == epochs_done


def read_config(directory):
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"Nothing to resume in {directory!r}: no {CONFIG_FILE}.")
    with open(path) as file:
        return json.load(file)


def write_config(directory, config):
    with open(os.path.join(directory, CONFIG_FILE), "w") as file:
        json.dump(config, file, indent=1)
