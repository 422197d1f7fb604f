"""Checkpoints from which a training run continues exactly.

A checkpoint is one `.npz` file, replaced atomically after every epoch and,
within an epoch, every `every_batches` batches or `every_seconds` seconds
(and when a first Ctrl-C asks the run to stop): the values of
`model.variables` (the weights, and what training changes besides them: the
seed generators' states that decide the next dropout masks, the RNN states
carried to the next batch), of `model.optimizer.variables` (slots, iteration
count, the unscaled learning rate, ASGD's average and NT-ASGD's validation
log) and of `model.metrics_variables` (the epoch's running loss and
perplexity), plus a JSON record of the position (epochs done, batches done
in the epoch under way) and the state of Keras callbacks that keep some
(`ReduceLROnPlateau`'s best value and patience counter).

A layer's seed generator decides its masks only when the layer has a seed:
on torch, Keras's dropout without one draws from torch's global generator,
which no checkpoint holds (`language_model` seeds every layer).

Why not `keras.callbacks.BackupAndRestore` alone: it saves the weights, the
optimizer and the epoch, but not the seed generators' states nor the
callbacks' state, so a resumed run would draw other dropout masks and could
decay its learning rate at another epoch than the uninterrupted run; and it
deletes its backup when training ends, which a run directory keeps.
"""

import json
import os
import time

import keras
import numpy as np

from keras_rnnreg._stateful import sync_backend_state

CHECKPOINT_FILE = "checkpoint.npz"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed (missing, or another configuration)."""


def _tracked_variables(model):
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return list(model.variables) + list(model.optimizer.variables)


def _plateau_callbacks(callbacks):
    return [c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau)]


def _plateau_state(callbacks):
    return [
        {"best": None if c.best is None else float(c.best), "wait": int(c.wait),
         "cooldown_counter": int(c.cooldown_counter)}
        for c in _plateau_callbacks(callbacks)
    ]


def _values(variables, prefix):
    # Copies: the values must not follow an assignment made before the file
    # is written (the learning rate put back below). Keras 3.15's
    # convert_to_numpy copies on every backend, but no release promises it
    # (a CPU torch tensor's .numpy() is a view).
    return {
        f"{prefix}{i}": np.array(keras.ops.convert_to_numpy(variable.value), copy=True)
        for i, variable in enumerate(variables)
    }


def save_checkpoint(model, directory, epochs_done, callbacks=(), extra=None,
                    batches_done=0, learning_rate=None):
    """Writes `directory/checkpoint.npz` atomically (a crash mid-write leaves
    the previous checkpoint whole).

    `batches_done`: batches of epoch `epochs_done` already trained (0 at an
    epoch's end). `learning_rate`: the value to save for the optimizer's
    learning rate, when the variable holds a per-batch scaled one."""
    sync_backend_state(model)
    values = _values(_tracked_variables(model), "v")
    if learning_rate is not None:
        # Save the unscaled rate: set it, read it, give the batch's back.
        scaled = model.optimizer.learning_rate
        scaled = float(keras.ops.convert_to_numpy(scaled))
        model.optimizer.learning_rate = learning_rate
        values = _values(_tracked_variables(model), "v")
        model.optimizer.learning_rate = scaled
    metrics = _values(model.metrics_variables, "m") if batches_done else {}
    meta = {
        "epochs_done": int(epochs_done),
        "batches_done": int(batches_done),
        "num_variables": len(values),
        "num_metrics_variables": len(metrics),
        "shapes": [list(v.shape) for v in values.values()],
        "plateau": _plateau_state(callbacks),
        "extra": extra or {},
    }
    path = os.path.join(directory, CHECKPOINT_FILE)
    temporary = path + ".tmp.npz"
    np.savez(temporary, meta=np.array(json.dumps(meta)), **values, **metrics)
    os.replace(temporary, path)


def _checkpoint_path(directory):
    path = os.path.join(directory, CHECKPOINT_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"Nothing to resume in {directory!r}: no {CHECKPOINT_FILE} (a run "
            "writes it at the end of its first epoch)."
        )
    return path


def checkpoint_position(directory):
    """`(epochs_done, batches_done)` of `directory`'s checkpoint, without
    reading its values; CheckpointError if none."""
    with np.load(_checkpoint_path(directory)) as data:
        meta = json.loads(str(data["meta"]))
    return meta["epochs_done"], meta.get("batches_done", 0)


def read_checkpoint(directory):
    """`(meta, values)` of `directory`'s checkpoint; CheckpointError if none."""
    with np.load(_checkpoint_path(directory)) as data:
        meta = json.loads(str(data["meta"]))
        values = [data[f"v{i}"] for i in range(meta["num_variables"])]
        meta["metrics_values"] = [
            data[f"m{i}"] for i in range(meta.get("num_metrics_variables", 0))
        ]
    meta.setdefault("batches_done", 0)
    return meta, values


def restore_variables(model, values):
    """Assigns a checkpoint's values to `model`'s variables and optimizer's."""
    variables = _tracked_variables(model)
    shapes = [tuple(v.shape) for v in variables]
    if len(variables) != len(values) or shapes != [tuple(v.shape) for v in values]:
        raise CheckpointError(
            "The checkpoint comes from a different configuration: it holds "
            f"{len(values)} variables, the model and optimizer built from the "
            f"run's configuration have {len(variables)} (or their shapes differ)."
        )
    for variable, value in zip(variables, values):
        variable.assign(value)


class RunCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint after every epoch, and within epochs, and restores
    callback state on resume.

    Put it last in the callback list, so that it saves after every other
    callback has acted on the epoch (NT-ASGD's trigger, the plateau
    schedule, the CSV log), restores `ReduceLROnPlateau`'s state after that
    callback has reset itself at the start of `fit`, and restores a resumed
    epoch's carried RNN states after `BPTTCallback` has zeroed them.

    Args:
        directory: The run directory.
        callbacks: The run's other callbacks (their state is saved).
        plateau_state: On resume, the checkpoint's `meta["plateau"]`.
        extra: Callable returning a JSON-serializable dict saved with each
            checkpoint (e.g. the training time so far).
        every_batches: Optional int >= 1: also save after every this many
            batches of an epoch (before the next batch begins).
        every_seconds: Optional float > 0: also save before the first batch
            that begins this long after the last save.
        resume_from: On a resume in the middle of an epoch, the checkpoint's
            `(meta, values)`: the model's variables (the carried states) and
            the running metrics are put back at the start of that epoch.
    """

    def __init__(self, directory, callbacks=(), plateau_state=None, extra=None,
                 every_batches=None, every_seconds=None, resume_from=None):
        super().__init__()
        self.directory = directory
        self.others = list(callbacks)
        self.plateau_state = plateau_state
        self.extra = extra or (lambda: {})
        self.every_batches = every_batches
        self.every_seconds = every_seconds
        self.resume_from = resume_from
        #: Set (e.g. by a SIGINT handler) to save after the batch under way
        #: (or at the epoch's end, after its last batch) and stop the run
        #: with KeyboardInterrupt.
        self.stop_requested = False
        self._epoch = 0
        self._first_batch = 0
        self._last_save = time.monotonic()

    def on_train_begin(self, logs=None):
        if self.plateau_state:
            for callback, state in zip(_plateau_callbacks(self.others), self.plateau_state):
                callback.best = state["best"]
                callback.wait = state["wait"]
                callback.cooldown_counter = state["cooldown_counter"]
        self._last_save = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._first_batch = epoch, 0
        if self.resume_from is not None and self.resume_from[0]["epochs_done"] == epoch:
            meta, values = self.resume_from
            self.resume_from = None
            self._first_batch = meta["batches_done"]
            model_variables = list(self.model.variables)
            for variable, value in zip(model_variables, values):
                variable.assign(value)
            metrics = self.model.metrics_variables
            if len(metrics) != len(meta["metrics_values"]):
                raise CheckpointError(
                    f"The checkpoint holds {len(meta['metrics_values'])} metric "
                    f"values, the run's compiled model has {len(metrics)}."
                )
            for variable, value in zip(metrics, meta["metrics_values"]):
                variable.assign(value)

    def on_train_batch_begin(self, batch, logs=None):
        # Before batch `batch`, rather than after the one before: a callback
        # with an `on_train_batch_end` makes Keras run every callback's
        # batch-end hooks in the training loop, waiting for each step's
        # logs, instead of in a background thread (torch, JAX).
        done = self._first_batch + batch  # batches of the epoch trained
        if batch == 0:  # nothing trained in this fit yet
            if self.stop_requested:
                raise KeyboardInterrupt(f"stopped before batch {done + 1} of epoch {self._epoch + 1}")
            return
        due = self.stop_requested
        if self.every_batches and batch % self.every_batches == 0:
            due = True
        if self.every_seconds and time.monotonic() - self._last_save >= self.every_seconds:
            due = True
        if due:
            self._save_mid_epoch(done)
        if self.stop_requested:
            raise KeyboardInterrupt(
                f"stopped in epoch {self._epoch + 1} after batch {done}, checkpoint saved"
            )

    def _save_mid_epoch(self, batches_done):
        learning_rate = None
        for callback in self.others:
            base = getattr(callback, "base_learning_rate", None)
            if base is not None:
                learning_rate = base  # BPTTCallback's unscaled rate
        save_checkpoint(self.model, self.directory, self._epoch, self.others, self.extra(),
                        batches_done=batches_done, learning_rate=learning_rate)
        self._last_save = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        save_checkpoint(self.model, self.directory, epoch + 1, self.others, self.extra())
        self._last_save = time.monotonic()
        if self.stop_requested:
            raise KeyboardInterrupt(f"stopped after epoch {epoch + 1}, checkpoint saved")

    def on_train_end(self, logs=None):
        # A resumed epoch is trained in a fit of its own; the next fit starts
        # from the callbacks' state now.
        self.plateau_state = _plateau_state(self.others)
