"""Checkpoints from which a training run continues exactly.

A checkpoint is one `.npz` file, replaced atomically after every epoch: the
values of `model.variables` (the weights, and what training changes besides
them: the seed generators' states that decide the next dropout masks, the
RNN states) and of `model.optimizer.variables` (slots, iteration count,
learning rate, ASGD's average and NT-ASGD's validation log), plus a JSON
record of the epochs done and the state of Keras callbacks that keep some
(`ReduceLROnPlateau`'s best value and patience counter).

Why not `keras.callbacks.BackupAndRestore` alone: it saves the weights, the
optimizer and the epoch, but not the seed generators' states nor the
callbacks' state, so a resumed run would draw other dropout masks and could
decay its learning rate at another epoch than the uninterrupted run; and it
deletes its backup when training ends, which a run directory keeps.
"""

import json
import os

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


def save_checkpoint(model, directory, epochs_done, callbacks=(), extra=None):
    """Writes `directory/checkpoint.npz` atomically (a crash mid-write leaves
    the previous checkpoint whole)."""
    sync_backend_state(model)
    values = {
        f"v{i}": np.asarray(keras.ops.convert_to_numpy(variable.value))
        for i, variable in enumerate(_tracked_variables(model))
    }
    meta = {
        "epochs_done": int(epochs_done),
        "num_variables": len(values),
        "shapes": [list(v.shape) for v in values.values()],
        "plateau": [
            {"best": float(c.best), "wait": int(c.wait), "cooldown_counter": int(c.cooldown_counter)}
            for c in _plateau_callbacks(callbacks)
        ],
        "extra": extra or {},
    }
    path = os.path.join(directory, CHECKPOINT_FILE)
    temporary = path + ".tmp.npz"
    np.savez(temporary, meta=np.array(json.dumps(meta)), **values)
    os.replace(temporary, path)


def read_checkpoint(directory):
    """`(meta, values)` of `directory`'s checkpoint; CheckpointError if none."""
    path = os.path.join(directory, CHECKPOINT_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"Nothing to resume in {directory!r}: no {CHECKPOINT_FILE} (a run "
            "writes it at the end of its first epoch)."
        )
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        values = [data[f"v{i}"] for i in range(meta["num_variables"])]
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
    """Saves a checkpoint after every epoch and restores callback state on resume.

    Put it last in the callback list, so that it saves after every other
    callback has acted on the epoch (NT-ASGD's trigger, the plateau
    schedule, the CSV log), and restores `ReduceLROnPlateau`'s state after
    that callback has reset itself at the start of `fit`.

    Args:
        directory: The run directory.
        callbacks: The run's other callbacks (their state is saved).
        plateau_state: On resume, the checkpoint's `meta["plateau"]`.
        extra: Callable returning a JSON-serializable dict saved with each
            checkpoint (e.g. the training time so far).
    """

    def __init__(self, directory, callbacks=(), plateau_state=None, extra=None):
        super().__init__()
        self.directory = directory
        self.others = list(callbacks)
        self.plateau_state = plateau_state
        self.extra = extra or (lambda: {})

    def on_train_begin(self, logs=None):
        if self.plateau_state:
            for callback, state in zip(_plateau_callbacks(self.others), self.plateau_state):
                callback.best = state["best"]
                callback.wait = state["wait"]
                callback.cooldown_counter = state["cooldown_counter"]

    def on_epoch_end(self, epoch, logs=None):
        save_checkpoint(self.model, self.directory, epoch + 1, self.others, self.extra())
