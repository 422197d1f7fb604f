"""The run checkpoint (keras_rnnreg.app.checkpoint): what it saves is what
the run held, saving changes nothing, restoring gives every value back."""

import json

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.app import checkpoint as checkpoint_module
from keras_rnnreg.app.checkpoint import (
    CheckpointError,
    RunCheckpoint,
    read_checkpoint,
    restore_variables,
    save_checkpoint,
)
from keras_rnnreg.optimizers import ASGD

X = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
Y = np.random.default_rng(1).normal(size=(16, 2)).astype("float32")


def trained(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dropout(0.5, seed=3)(inputs)))
    model.compile(ASGD(0.5, momentum=0.9), "mse")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.start_averaging()
    model.fit(X, Y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    return model


def tracked(model):
    return list(model.variables) + list(model.optimizer.variables)


def test_saving_with_the_unscaled_rate_saves_it_and_changes_nothing(tmp_path):
    model = trained()
    model.optimizer.learning_rate = 0.125  # a batch's scaled rate (BPTTCallback)
    before = [to_numpy(v) for v in tracked(model)]
    save_checkpoint(model, str(tmp_path), epochs_done=1, learning_rate=0.5)
    # The model goes on with the batch's rate and every value it had.
    for variable, value in zip(tracked(model), before, strict=True):
        np.testing.assert_array_equal(to_numpy(variable), value)
    meta, values = read_checkpoint(str(tmp_path))
    assert meta["epochs_done"] == 1
    index = next(i for i, v in enumerate(tracked(model)) if v is model.optimizer._learning_rate)
    assert float(values[index]) == 0.5
    for i, (saved, value) in enumerate(zip(values, before, strict=True)):
        if i != index:
            np.testing.assert_array_equal(saved, value)


def test_restoring_gives_a_fresh_model_every_value(tmp_path):
    model = trained()
    save_checkpoint(model, str(tmp_path), epochs_done=1)
    expected = [to_numpy(v) for v in tracked(model)]
    fresh = trained(seed=5)
    _, values = read_checkpoint(str(tmp_path))
    restore_variables(fresh, values)
    for variable, value in zip(tracked(fresh), expected, strict=True):
        np.testing.assert_array_equal(to_numpy(variable), value)
    # Restored values are the model's own: training on changes them, not the
    # arrays they came from.
    kept = [np.array(v, copy=True) for v in values]
    fresh.fit(X, Y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    for value, copy in zip(values, kept):
        np.testing.assert_array_equal(value, copy)
    # ... and the two models continue alike (weights, average, seed state).
    model.fit(X, Y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(tracked(model), tracked(fresh), strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-7)


# ------------------------------------------------- RunCheckpoint within fit
X10 = np.random.default_rng(2).normal(size=(10, 3)).astype("float32")  # 5 batches of 2
Y10 = np.random.default_rng(3).normal(size=(10, 2)).astype("float32")


def small_model(units=2, hidden=False):
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4)(inputs) if hidden else inputs
    model = keras.Model(inputs, keras.layers.Dense(units)(h))
    model.compile(keras.optimizers.SGD(0.1), "mse", metrics=["mae"])
    return model


def fit(model, checkpoint, callbacks=(), epochs=1, x=X10, y=Y10, **kwargs):
    """Batches of 2, in order; `callbacks` run before the checkpoint, as a
    run puts it last."""
    return model.fit(x, y, batch_size=2, epochs=epochs, verbose=0, shuffle=False,
                     callbacks=[*callbacks, checkpoint], **kwargs)


@pytest.fixture
def saves(monkeypatch):
    """Every save_checkpoint call RunCheckpoint makes, as (epochs_done,
    batches_done, extra, learning_rate); the file is still written."""
    calls = []
    save = checkpoint_module.save_checkpoint

    def spy(model, directory, epochs_done, callbacks=(), extra=None, batches_done=0,
            learning_rate=None):
        calls.append((epochs_done, batches_done, extra, learning_rate))
        return save(model, directory, epochs_done, callbacks, extra, batches_done=batches_done,
                    learning_rate=learning_rate)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", spy)
    return calls


def positions(calls):
    return [(epochs, batches) for epochs, batches, *_ in calls]


@pytest.mark.parametrize("every_seconds, mid_epoch", [(1e-9, [1, 2, 3, 4]), (1e9, [])],
                         ids=["tiny", "large"])
def test_time_based_saves_before_every_later_batch_or_none(tmp_path, saves, every_seconds,
                                                           mid_epoch):
    fit(small_model(), RunCheckpoint(str(tmp_path), every_seconds=every_seconds))
    # mid-epoch saves come before batches 1.. (after at least one batch), the
    # epoch's own at its end
    assert positions(saves) == [(0, b) for b in mid_epoch] + [(1, 0)]
    meta, _ = checkpoint_module.read_checkpoint(str(tmp_path))
    assert (meta["epochs_done"], meta["batches_done"]) == (1, 0)


def test_every_batches_saves_after_each_multiple(tmp_path, saves):
    fit(small_model(), RunCheckpoint(str(tmp_path), every_batches=2), epochs=2)
    assert positions(saves) == [(0, 2), (0, 4), (1, 0), (1, 2), (1, 4), (2, 0)]


class FakeClock:
    """time.monotonic for the checkpoint module, set by a callback listed
    before RunCheckpoint: 100 * epoch + 10 * batch at each batch start,
    100 * epoch + 95 at each epoch end."""

    def __init__(self):
        self.now = -1000.0  # when RunCheckpoint is made: train begin must reset

    def monotonic(self):
        return self.now


def test_every_seconds_counts_from_the_last_save_and_train_begin(tmp_path, saves, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(checkpoint_module, "time", clock)

    class Tick(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            clock.now = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            clock.now = 100.0 * epoch

        def on_train_batch_begin(self, batch, logs=None):
            clock.now = 100.0 * self.epoch + 10.0 * batch

        def on_epoch_end(self, epoch, logs=None):
            clock.now = 100.0 * epoch + 95.0

    fit(small_model(), RunCheckpoint(str(tmp_path), every_seconds=20.0), [Tick()], epochs=2)
    # epoch 0: 20 s after train begin (batch 2), 20 s after that (batch 4);
    # epoch 1: its end at 95 resets the count, so 110 is 15 s on (no save),
    # 120 is 25 s on (save), 140 exactly 20 s after that (save)
    assert positions(saves) == [(0, 2), (0, 4), (1, 0), (1, 2), (1, 4), (2, 0)]


def test_stop_before_the_first_batch_raises_without_saving(tmp_path, saves):
    model = small_model()
    before = [to_numpy(w) for w in model.weights]
    checkpoint = RunCheckpoint(str(tmp_path), every_batches=1)
    checkpoint.stop_requested = True
    with pytest.raises(KeyboardInterrupt) as info:
        fit(model, checkpoint, epochs=3, initial_epoch=1)
    assert str(info.value) == "stopped before batch 1 of epoch 2"
    assert saves == [] and not (tmp_path / checkpoint_module.CHECKPOINT_FILE).exists()
    for weight, value in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(to_numpy(weight), value)


class UnscaledRate(keras.callbacks.Callback):
    """Stands for BPTTCallback: the optimizer holds a batch's scaled rate."""

    def __init__(self, base):
        super().__init__()
        self.base_learning_rate = base


def learning_rate_index(model):
    return next(i for i, v in enumerate(tracked(model)) if v is model.optimizer._learning_rate)


def test_stop_mid_epoch_saves_the_batches_done_then_raises(tmp_path, saves):
    model = small_model()
    checkpoint = RunCheckpoint(str(tmp_path), callbacks=[UnscaledRate(None), UnscaledRate(0.025)],
                               extra=lambda: {"wall_seconds": 12.5, "note": "mid"})

    class StopAtBatchTwo(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                checkpoint.stop_requested = True  # as the SIGINT handler does

    with pytest.raises(KeyboardInterrupt) as info:
        fit(model, checkpoint, [StopAtBatchTwo()])
    assert str(info.value) == "stopped in epoch 1 after batch 2, checkpoint saved"
    assert positions(saves) == [(0, 2)]
    meta, values = checkpoint_module.read_checkpoint(str(tmp_path))
    assert (meta["epochs_done"], meta["batches_done"]) == (0, 2)
    assert meta["extra"] == {"wall_seconds": 12.5, "note": "mid"}
    # the running metrics of the two batches trained, as the model holds them
    running = [to_numpy(v) for v in model.metrics_variables]
    assert len(meta["metrics_values"]) == len(running) > 0
    assert max(float(np.abs(v).max()) for v in running) > 0
    for saved, value in zip(meta["metrics_values"], running, strict=True):
        np.testing.assert_allclose(saved, value, rtol=1e-6)
    # the unscaled rate another callback reports is the one saved
    assert float(values[learning_rate_index(model)]) == pytest.approx(0.025)
    assert float(to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.1)


def test_stop_at_an_epoch_end_saves_the_epoch_then_raises(tmp_path, saves):
    model = small_model()
    checkpoint = RunCheckpoint(str(tmp_path), extra=lambda: {"wall_seconds": 3.0})

    class StopAtEpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            checkpoint.stop_requested = True

    with pytest.raises(KeyboardInterrupt) as info:
        fit(model, checkpoint, [StopAtEpochEnd()], epochs=3)
    assert str(info.value) == "stopped after epoch 1, checkpoint saved"
    assert positions(saves) == [(1, 0)]
    meta, _ = checkpoint_module.read_checkpoint(str(tmp_path))
    assert (meta["epochs_done"], meta["batches_done"]) == (1, 0)
    assert meta["extra"] == {"wall_seconds": 3.0}
    assert meta["metrics_values"] == []  # an epoch's end keeps no running metrics


def test_resumed_epoch_counts_batches_from_where_it_resumes(tmp_path, saves):
    model = small_model()
    fit(model, keras.callbacks.Callback())  # the metrics' variables exist (TensorFlow)
    resume_from = (
        {"epochs_done": 0, "batches_done": 3, "extra": {},
         "metrics_values": [to_numpy(v) for v in model.metrics_variables]},
        [to_numpy(v) for v in model.variables],
    )
    checkpoint = RunCheckpoint(str(tmp_path), resume_from=resume_from)
    checkpoint.stop_requested = True
    with pytest.raises(KeyboardInterrupt) as info:
        fit(model, checkpoint, x=X10[:4], y=Y10[:4])  # the epoch's batches 4 and 5
    assert str(info.value) == "stopped before batch 4 of epoch 1"
    assert saves == []

    checkpoint = RunCheckpoint(str(tmp_path), resume_from=resume_from)

    class StopAtBatchOne(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            checkpoint.stop_requested = batch == 1

    with pytest.raises(KeyboardInterrupt) as info:
        fit(model, checkpoint, [StopAtBatchOne()], x=X10[:4], y=Y10[:4])
    assert str(info.value) == "stopped in epoch 1 after batch 4, checkpoint saved"
    assert positions(saves) == [(0, 4)]


def test_extra_record_is_called_at_each_save_and_read_back(tmp_path, saves):
    counter = iter(range(1, 100))
    checkpoint = RunCheckpoint(str(tmp_path), every_batches=2,
                               extra=lambda: {"saves": next(counter)})
    fit(small_model(), checkpoint)
    assert [(e, b, extra) for e, b, extra, _ in saves] == [
        (0, 2, {"saves": 1}), (0, 4, {"saves": 2}), (1, 0, {"saves": 3})
    ]
    meta, _ = checkpoint_module.read_checkpoint(str(tmp_path))
    assert meta["extra"] == {"saves": 3}
    # without `extra`, an empty record
    fit(small_model(), RunCheckpoint(str(tmp_path), every_batches=2))
    assert [extra for *_, extra, _ in saves[3:]] == [{}, {}, {}]
    assert checkpoint_module.read_checkpoint(str(tmp_path))[0]["extra"] == {}


def test_a_checkpoint_without_batches_done_reads_as_an_epoch_end(tmp_path):
    # as written before checkpoints held positions within epochs
    meta = {"epochs_done": 2, "num_variables": 1, "shapes": [[3]], "plateau": [], "extra": {}}
    np.savez(tmp_path / checkpoint_module.CHECKPOINT_FILE, meta=np.array(json.dumps(meta)),
             v0=np.arange(3.0))
    read, values = checkpoint_module.read_checkpoint(str(tmp_path))
    assert read["batches_done"] == 0 and read["metrics_values"] == []
    np.testing.assert_array_equal(values[0], np.arange(3.0))
    assert checkpoint_module.checkpoint_position(str(tmp_path)) == (2, 0)


@pytest.mark.parametrize("other", ["wider", "deeper"])
def test_restore_refuses_another_configuration_naming_both_counts(tmp_path, other):
    model = small_model()
    fit(model, keras.callbacks.Callback())
    save_checkpoint(model, str(tmp_path), epochs_done=1)
    _, values = read_checkpoint(str(tmp_path))
    # the same number of variables of other shapes, or more variables
    different = small_model(units=3) if other == "wider" else small_model(hidden=True)
    different.optimizer.build(different.trainable_variables)
    expected_counts = (len(tracked(model)), len(tracked(different)))
    assert (expected_counts[0] == expected_counts[1]) == (other == "wider")
    before = [to_numpy(v) for v in tracked(different)]
    with pytest.raises(CheckpointError) as info:
        restore_variables(different, values)
    message = str(info.value)
    assert message.startswith("The checkpoint comes from a different configuration")
    assert f"it holds {expected_counts[0]} variables" in message
    assert f"have {expected_counts[1]} (or their shapes differ)" in message
    for variable, value in zip(tracked(different), before, strict=True):  # nothing assigned
        np.testing.assert_array_equal(to_numpy(variable), value)
