import math
import os
import re

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.callbacks import NTASGD
from keras_rnnreg._stateful import sync_backend_state
from keras_rnnreg.optimizers import ASGD, GradientNoise

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 3)).astype("float32")
Y = RNG.normal(size=(32, 2)).astype("float32")


class Scripted(keras.callbacks.Callback):
    """Writes a scripted validation value into the logs at each epoch end."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.values[epoch]


class Recorder(keras.callbacks.Callback):
    """Records the kernel after every batch (the iterates w_k)."""

    def __init__(self):
        super().__init__()
        self.iterates = []

    def on_train_batch_end(self, batch, logs=None):
        sync_backend_state(self.model)
        self.iterates.append(to_numpy(self.model.layers[1].kernel).copy())


def regression(optimizer):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer, "mse")
    return model


def force_trigger(model):
    """Logs two perfect validation values: any real one then triggers (n = 1)."""
    model.optimizer.build(model.trainable_variables)
    for _ in range(2):
        model.optimizer.record_validation(0.0, keep_last=1)


def fit(model, values, callbacks=(), epochs=None, **kwargs):
    epochs = len(values) if epochs is None else epochs
    return model.fit(X, Y, batch_size=8, epochs=epochs, verbose=0, shuffle=False,
                     callbacks=[Scripted(values), *callbacks], **kwargs)


@pytest.mark.parametrize(
    "values,nonmono,trigger_epoch",
    [
        # len(logs) > n and v > min(logs[:-n]), checked before appending v
        ([5, 4, 3, 3.5, 3.2, 3.1, 3.3, 2.0], 2, 5),
        ([5, 4, 3, 2, 1, 0.5, 0.4, 0.3], 2, None),  # always improving
        ([5, 6, 7, 8, 9, 10, 11, 12], 5, 6),  # first epoch with 6 values logged
        ([3, 2, 1, 4, 5, 6, 7, 8], 3, 4),  # 5 > min([3]) once 4 values are logged
    ],
)
def test_trigger_epoch_follows_algorithm_1(values, nonmono, trigger_epoch):
    model = regression(ASGD(0.05))
    history = fit(model, values, [NTASGD(nonmono=nonmono, verbose=0)])
    starts = history.history["averaging_start"]
    steps_per_epoch = 4
    if trigger_epoch is None:
        assert starts == [-1.0] * len(values)
    else:
        expected = [-1.0] * trigger_epoch + [
            float((trigger_epoch + 1) * steps_per_epoch)
        ] * (len(values) - trigger_epoch)
        assert starts == expected


def test_final_weights_are_the_mean_of_iterates_from_the_trigger():
    values = [5, 4, 3, 3.5, 3.2, 3.1, 3.0, 2.9, 2.8]  # triggers at epoch 5
    model = regression(GradientNoise(ASGD(0.05), eta=0.01, seed=1))
    recorder = Recorder()
    fit(model, values, [recorder, NTASGD(nonmono=2, verbose=0)])
    trigger_batch = 6 * 4 - 1  # last batch of epoch 5: w_T
    expected = np.mean(recorder.iterates[trigger_batch:], axis=0)
    np.testing.assert_allclose(to_numpy(model.layers[1].kernel), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(recorder.iterates[-1], expected)


def test_validation_uses_averaged_weights_once_averaging_runs():
    class CheckValidation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            optimizer = self.model.optimizer
            kernel, bias = self.model.trainable_weights
            if optimizer.averaging:
                kernel, bias = optimizer.averages
            expected = np.mean((X @ to_numpy(kernel) + to_numpy(bias) - Y) ** 2)
            self.seen = getattr(self, "seen", []) + [optimizer.averaging]
            np.testing.assert_allclose(logs["val_loss"], expected, rtol=1e-4)

    check = CheckValidation()
    model = regression(ASGD(0.05))
    # the real validation loss falls monotonically here, so force a trigger
    nt = NTASGD(nonmono=1, verbose=0)
    force_trigger(model)
    model.fit(X, Y, batch_size=8, epochs=3, verbose=0, shuffle=False,
              validation_data=(X, Y), callbacks=[nt, check])
    assert check.seen == [True, True, True]


def test_nan_counts_as_not_improved_and_never_crashes():
    values = [5, 4, 3, 2, float("nan"), 1, 1]
    model = regression(ASGD(0.05))
    nt = NTASGD(nonmono=2, verbose=0)
    history = fit(model, values, [nt])
    # at epoch 4 (NaN): 3 values > 2 logged and NaN > min([5, 4]) → trigger
    assert history.history["averaging_start"][4] == 20.0
    assert math.isinf(nt.history[4])


def test_finetune_restarts_averaging_and_stops_by_the_criterion():
    model = regression(ASGD(0.05))
    fit(model, [5, 4, 3, 3.5, 3.4, 3.3], [NTASGD(nonmono=2, verbose=0)])
    recorder = Recorder()
    before = to_numpy(model.layers[1].kernel).copy()
    history = fit(model, [5, 4, 3, 3.5, 3.4, 3.3, 3.2, 3.1], [
        recorder, NTASGD(nonmono=2, finetune=True, verbose=0)])
    # averaging from T = 0 of this stage, hot-started from the averaged weights
    assert history.history["averaging_start"][0] == 24.0
    # stopped at epoch 3 (3.5 > min([5])? no: len 3 > 2 and 3.5 > 5 is false) ...
    # ... epoch 4: 3.4 > min([5, 4]) false; epoch 5: 3.3 > min([5, 4, 3]) true
    assert len(history.history["loss"]) == 6
    expected = np.mean([before] + recorder.iterates, axis=0)
    np.testing.assert_allclose(to_numpy(model.layers[1].kernel), expected, rtol=1e-5, atol=1e-6)


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_resume_from_backup_mid_averaging_gives_the_same_final_weights(tmp_path):
    values = [5, 4, 3, 3.5, 3.2, 3.1, 3.0, 2.9, 2.8, 2.7]
    make = lambda: GradientNoise(ASGD(0.05, momentum=0.5), eta=0.01, seed=4)

    reference = regression(make())
    fit(reference, values, [NTASGD(nonmono=2, verbose=0)])

    model = regression(make())
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(model, values, [NTASGD(nonmono=2, verbose=0), backup, Interrupt(7)])
    resumed = regression(make())  # a fresh process would start like this
    fit(resumed, values, [NTASGD(nonmono=2, verbose=0), backup])
    for a, b in zip(reference.trainable_weights, resumed.trainable_weights):
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=1e-6, atol=1e-7)
    assert resumed.optimizer.inner_optimizer.average_count == reference.optimizer.inner_optimizer.average_count


@pytest.mark.parametrize("interrupt_epoch", [3, 7], ids=["before_trigger", "after_trigger"])
def test_resume_gives_the_same_trigger_and_final_weights(tmp_path, interrupt_epoch):
    """The validation log, trigger and average all live in the optimizer."""
    values = [5, 4, 3, 3.5, 3.2, 3.1, 3.0, 2.9, 2.8, 2.7]  # triggers at epoch 5
    reference = regression(ASGD(0.05))
    expected = fit(reference, values, [NTASGD(nonmono=2, verbose=0)])
    model = regression(ASGD(0.05))
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(model, values, [NTASGD(nonmono=2, verbose=0), backup, Interrupt(interrupt_epoch)])
    resumed = regression(ASGD(0.05))
    history = fit(resumed, values, [NTASGD(nonmono=2, verbose=0), backup])
    tail = len(history.history["averaging_start"])
    assert history.history["averaging_start"] == expected.history["averaging_start"][-tail:]
    for a, b in zip(reference.trainable_weights, resumed.trainable_weights):
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=1e-6, atol=1e-7)


def test_full_validation_log_is_compacted_without_changing_the_test():
    model = regression(ASGD(0.05))
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    values = list(np.random.default_rng(0).normal(size=300))
    for v in values:
        optimizer.record_validation(v, keep_last=5)
    history = optimizer.validation_history()
    assert len(history) <= 256 and history[-5:] == pytest.approx(values[-5:])
    assert min(history[:-5]) == pytest.approx(min(values[:-5]))


def test_interval_in_batches_evaluates_the_given_data():
    model = regression(ASGD(0.05))
    nt = NTASGD(nonmono=2, interval=2, validation_data=(X, Y), verbose=0)
    model.fit(X, Y, batch_size=8, epochs=3, verbose=0, callbacks=[nt])
    assert len(nt.history) == 6  # 12 batches / 2
    assert all(np.isfinite(nt.history))


def test_interval_counts_the_optimizer_steps_of_the_whole_run_across_fits():
    # 12 batches in one fit, or 5 + 7 in two (as a resumed run does): the
    # same checks after steps 4, 8 and 12
    model = regression(ASGD(0.05))
    nt = NTASGD(nonmono=2, interval=4, validation_data=(X, Y), verbose=0)
    model.fit(X[:20], Y[:20], batch_size=4, epochs=1, verbose=0, callbacks=[nt])
    assert len(nt.history) == 1
    model.fit(X[:28], Y[:28], batch_size=4, epochs=1, verbose=0, callbacks=[nt])
    assert len(nt.history) == 3


def test_interval_evaluation_uses_averaged_weights():
    model = regression(ASGD(0.05))
    nt = NTASGD(nonmono=1, interval=2, validation_data=(X, Y), verbose=0)
    force_trigger(model)  # at the first check
    model.fit(X, Y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[nt])
    # the second check (after batch 4) saw w̄ = mean(w_2, w_3, w_4)
    kernel, bias = model.trainable_weights  # hold w̄ after fit
    expected = np.mean((X @ to_numpy(kernel) + to_numpy(bias) - Y) ** 2)
    np.testing.assert_allclose(nt.history[-1], expected, rtol=1e-4)


def test_other_optimizers_are_a_type_error_naming_asgd():
    model = regression(keras.optimizers.SGD(0.1))
    with pytest.raises(TypeError, match="ASGD"):
        fit(model, [1.0], [NTASGD()])


def test_missing_monitor_is_reported_once_with_available_keys():
    model = regression(ASGD(0.05))
    with pytest.warns(UserWarning, match=r"'val_accuracy'.*\['loss', 'val_loss'\]") as caught:
        fit(model, [3, 2, 1], [NTASGD(monitor="val_accuracy")])
    assert len([w for w in caught if "val_accuracy" in str(w.message)]) == 1


@pytest.mark.parametrize("kwargs,error", [
    ({"nonmono": 0}, ValueError), ({"nonmono": 2.5}, TypeError),
    ({"nonmono": 256}, ValueError),
    ({"interval": 0, "validation_data": (X, Y)}, ValueError),
    ({"interval": 5}, ValueError),
])
def test_bad_arguments(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        NTASGD(**kwargs)


def test_asgd_state_round_trips(tmp_path):
    model = regression(ASGD(0.05))
    fit(model, [5, 4, 3, 3.5, 3.2, 3.1, 3.0], [NTASGD(nonmono=2, verbose=0)])
    path = str(tmp_path / "asgd.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.optimizer.average_count == model.optimizer.average_count > 0
    for a, b in zip(model.optimizer.averages, restored.optimizer.averages):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_interval_evaluation_keeps_the_training_state_of_stateful_rnns():
    """Evaluating every L batches inside an epoch must not disturb truncated
    BPTT: the batch after an evaluation starts from the state the batch
    before it ended with."""
    from keras_rnnreg.callbacks import BPTTCallback
    from keras_rnnreg.data import BPTTSequence
    from keras_rnnreg.layers import WeightDropLSTM

    rng = np.random.default_rng(0)
    train = BPTTSequence(rng.integers(0, 11, 480), 4, 10, variable_length=False)
    valid = BPTTSequence(rng.integers(0, 11, 200), 4, 10, variable_length=False,
                         token_weights=True)
    tokens = keras.Input(batch_shape=(4, None), dtype="int32")
    lstm = WeightDropLSTM(6, weight_dropout=0.0, return_sequences=True, stateful=True)
    model = keras.Model(tokens, keras.layers.Dense(11)(lstm(keras.layers.Embedding(11, 4)(tokens))))
    model.compile(ASGD(1.0, global_clipnorm=0.25),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ends, starts = {}, {}

    def state():
        sync_backend_state(model)
        return to_numpy(lstm.states[0]).copy()

    record_end = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.__setitem__(batch, state()))
    record_start = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: starts.__setitem__(batch, state()))
    model.fit(train, epochs=1, verbose=0, callbacks=[
        record_end, BPTTCallback(train),
        NTASGD(interval=2, validation_data=valid, verbose=0), record_start,
    ])
    assert len(starts) == train.num_batches >= 10
    for batch in range(1, train.num_batches):
        np.testing.assert_array_equal(starts[batch], ends[batch - 1], err_msg=str(batch))


def test_rnn_states_set_aside_zeroes_then_restores():
    from keras_rnnreg._stateful import rnn_states_set_aside
    from keras_rnnreg.layers import WeightDropLSTM

    tokens = keras.Input(batch_shape=(2, 3, 4))
    lstm = WeightDropLSTM(5, weight_dropout=0.0, stateful=True)
    model = keras.Model(tokens, lstm(tokens))
    model(np.ones((2, 3, 4), "float32"))
    before = to_numpy(lstm.states[0]).copy()
    assert np.abs(before).max() > 0
    with rnn_states_set_aside(model):
        assert not to_numpy(lstm.states[0]).any()
        model(np.full((2, 3, 4), -1.0, "float32"))
    np.testing.assert_array_equal(to_numpy(lstm.states[0]), before)


# -- reads kept across assignments --------------------------------------------
# On TensorFlow and torch, reading a variable does not copy it: a value read
# and then kept across an `assign` to the same variable changes with it. These
# tests hold copies (`snapshot`) and check that what each operation sets aside
# comes back.


def snapshot(variables):
    return [np.array(to_numpy(v), copy=True) for v in variables]


def assert_same(actual, expected):
    for a, b in zip(snapshot(actual), expected, strict=True):
        np.testing.assert_array_equal(a, b)


def averaging_model(steps=3):
    """A model and an ASGD whose weights and average differ (w_k != w̄)."""
    model = regression(ASGD(0.05))
    model.optimizer.build(model.trainable_variables)
    model.optimizer.start_averaging()
    model.fit(X, Y, batch_size=8, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    weights, averages = snapshot(model.trainable_variables), snapshot(model.optimizer.averages)
    assert all(np.abs(w - a).max() > 1e-4 for w, a in zip(weights, averages))
    return model, weights, averages


def test_swapping_twice_gives_back_the_weights_and_the_averages():
    model, weights, averages = averaging_model()
    model.optimizer.swap_average_weights()
    assert_same(model.trainable_variables, averages)
    assert_same(model.optimizer.averages, weights)
    model.optimizer.swap_average_weights()
    assert_same(model.trainable_variables, weights)
    assert_same(model.optimizer.averages, averages)


def test_start_averaging_and_assigning_the_average_keep_their_sources():
    model, weights, averages = averaging_model()
    model.optimizer.assign_average_to_variables()
    assert_same(model.trainable_variables, averages)
    assert_same(model.optimizer.averages, averages)
    model.trainable_variables[0].assign(np.zeros((3, 2), "float32"))
    assert_same(model.optimizer.averages, averages)  # no shared storage
    model.optimizer.start_averaging()  # w̄ = w_T, a copy of it
    model.trainable_variables[0].assign(np.ones((3, 2), "float32"))
    np.testing.assert_array_equal(to_numpy(model.optimizer.averages[0]), 0.0)


def _fit_averaging(validate, interval=None, epochs=3):
    """`fit` with averaging running from the first step, with or without
    NT-ASGD's validation on w̄; returns the training weights and averages."""
    model = regression(ASGD(0.05))
    model.optimizer.build(model.trainable_variables)
    model.optimizer.start_averaging()
    kwargs = {}
    if validate and interval is None:
        kwargs["validation_data"] = (X[:16], Y[:16])
    nt = NTASGD(monitor="loss", nonmono=100, interval=interval, verbose=0, final_average=False,
                validation_data=(X[:16], Y[:16]) if interval else None)
    history = model.fit(X, Y, batch_size=8, epochs=epochs, verbose=0, shuffle=False,
                        callbacks=[nt], **kwargs)
    if validate and interval is None:
        assert len(history.history["val_loss"]) == epochs
    return snapshot(model.trainable_variables), snapshot(model.optimizer.averages)


@pytest.mark.parametrize("interval", [None, 3], ids=["epoch_end", "every_3_batches"])
def test_validating_with_the_average_leaves_training_unchanged(interval):
    """AWD-LSTM Algorithm 1 validates w̄ and trains on w_k: a fit that
    validates after the trigger has the same w_k and w̄ as one that does not."""
    weights, averages = _fit_averaging(validate=True, interval=interval)
    reference_weights, reference_averages = _fit_averaging(validate=False)
    for actual, expected in zip(weights + averages, reference_weights + reference_averages):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(weights[0], averages[0])


# -- gaps found by mutation testing -------------------------------------------
TRIGGERS_AT_EPOCH_5 = [5, 4, 3, 3.5, 3.2, 3.1, 3.0]  # nonmono=2: 3.1 > min([5, 4, 3])
STOPS_AT_EPOCH_5 = [5, 4, 3, 3.5, 3.4, 3.3, 3.2]  # finetune, nonmono=2: 3.3 > min([5, 4, 3])


def test_fit_that_never_triggers_keeps_the_trained_weights():
    """Ending before the trigger, `fit` leaves w_k, not the (never filled)
    averages: the same weights as plain SGD."""
    values = [5, 4, 3, 2, 1]  # always improving
    model = regression(ASGD(0.05))
    fit(model, values, [NTASGD(nonmono=2, verbose=0)])
    assert not model.optimizer.averaging
    reference = regression(keras.optimizers.SGD(0.05))
    fit(reference, values)
    for actual, expected in zip(snapshot(model.trainable_weights),
                                snapshot(reference.trainable_weights)):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
        assert np.abs(expected).max() > 0.1


def test_final_average_false_leaves_the_last_iterate():
    model = regression(ASGD(0.05))
    recorder = Recorder()
    fit(model, TRIGGERS_AT_EPOCH_5, [recorder, NTASGD(nonmono=2, verbose=0, final_average=False)])
    assert model.optimizer.averaging
    np.testing.assert_array_equal(to_numpy(model.layers[1].kernel), recorder.iterates[-1])
    assert not np.allclose(to_numpy(model.optimizer.averages[0]), recorder.iterates[-1])


def test_test_hooks_swap_the_average_in_once_and_back_out():
    model, weights, averages = averaging_model()
    early = NTASGD(verbose=0)
    early.set_model(model)
    early.on_test_begin()  # before on_train_begin: no optimizer yet, nothing happens
    assert_same(model.trainable_variables, weights)
    early.on_test_end()
    assert_same(model.trainable_variables, weights)

    nt = NTASGD(verbose=0)
    nt.set_model(model)
    nt.on_train_begin()
    nt.on_test_begin()
    assert_same(model.trainable_variables, averages)
    nt.on_test_begin()  # a second begin must not swap w_k back in
    assert_same(model.trainable_variables, averages)
    nt.on_test_end()
    assert_same(model.trainable_variables, weights)
    assert_same(model.optimizer.averages, averages)
    nt.on_test_end()  # nothing left to swap back
    assert_same(model.trainable_variables, weights)
    assert_same(model.optimizer.averages, averages)

    model.optimizer.stop_averaging()  # not averaging: validation uses w_k
    nt.on_test_begin()
    assert_same(model.trainable_variables, weights)
    nt.on_test_end()
    assert_same(model.trainable_variables, weights)


def test_a_tie_with_the_older_minimum_does_not_trigger():
    """AWD-LSTM: `val_loss > min(best_val_loss[:-nonmono])`, strictly."""
    values = [3, 4, 5, 3, 3, 3.5]
    # epochs 3 and 4: v = 3 == min(logs[:-2]) = 3, no trigger;
    # epoch 5: 3.5 > min([3, 4, 5]) triggers, after 6 * 4 steps
    history = fit(regression(ASGD(0.05)), values, [NTASGD(nonmono=2, verbose=0)])
    assert history.history["averaging_start"] == [-1.0] * 5 + [24.0]


class Batches(keras.utils.PyDataset):
    """`validation_data` that is not a tuple: one batch (x, y)."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return self.x, self.y


VALID_RNG = np.random.default_rng(7)
X_VALID = VALID_RNG.normal(size=(16, 3)).astype("float32")
Y_VALID = VALID_RNG.normal(size=(16, 2)).astype("float32")
W_VALID = np.where(np.arange(16) % 2, 0.0, VALID_RNG.uniform(0.5, 3.0, 16)).astype("float32")


@pytest.mark.parametrize("monitor", ["val_loss", "loss"])
@pytest.mark.parametrize("data", ["weighted_tuple", "dataset"])
def test_interval_logs_the_loss_of_the_validation_data(monitor, data):
    """With `interval` NTASGD evaluates `validation_data` itself: the value it
    logs is that data's loss (sample-weighted when a weight is given), read
    under "loss" whether `monitor` has the val_ prefix or not."""
    model = regression(ASGD(0.05))
    validation_data = ((X_VALID, Y_VALID, W_VALID) if data == "weighted_tuple"
                       else Batches(X_VALID, Y_VALID))
    nt = NTASGD(monitor=monitor, nonmono=2, interval=4, validation_data=validation_data,
                verbose=0)
    model.fit(X, Y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[nt])
    assert not model.optimizer.averaging  # the model holds the w_4 evaluated
    kernel, bias = snapshot(model.trainable_weights)
    per_sample = np.mean((X_VALID @ kernel + bias - Y_VALID) ** 2, axis=-1)
    # Keras's "sum_over_batch_size": Σ w_i·loss_i / batch size
    weights = W_VALID if data == "weighted_tuple" else np.ones(16)
    expected = np.sum(weights * per_sample) / len(per_sample)
    assert len(nt.history) == 1
    np.testing.assert_allclose(nt.history[0], expected, rtol=1e-5)
    if data == "weighted_tuple":
        assert abs(per_sample.mean() - expected) > 1e-2 * expected  # the weights matter


def test_interval_evaluates_after_every_lth_step_of_the_run():
    model = regression(ASGD(0.05))
    steps = []
    evaluate = model.evaluate

    def recording_evaluate(*args, **kwargs):
        steps.append(int(to_numpy(model.optimizer.iterations)))
        return evaluate(*args, **kwargs)

    model.evaluate = recording_evaluate
    nt = NTASGD(nonmono=2, interval=4, validation_data=(X, Y), verbose=0)
    model.fit(X[:20], Y[:20], batch_size=4, epochs=1, verbose=0, callbacks=[nt])
    model.fit(X[:28], Y[:28], batch_size=4, epochs=1, verbose=0, callbacks=[nt])
    assert steps == [4, 8, 12]


def algorithm_1_trigger(values, n):
    """The index of the first value that triggers, on the full (uncompacted) log."""
    for i, v in enumerate(values):
        if i > n and v > min(values[:i - n]):
            return i
    return None


def test_a_compacted_log_gives_algorithm_1s_decision():
    """Past 256 values the log is compacted with n = nonmono; the next
    decisions are still those of Algorithm 1 on the whole log."""
    nonmono = 3
    improving = [1000.0 - i for i in range(257)]  # fills and compacts the log
    for last, triggers in [(747.0, False), (747.5, True)]:  # min(values[:254]) = 747
        values = improving + [last]
        assert (algorithm_1_trigger(values, nonmono) == len(improving)) == triggers
        model = regression(ASGD(0.05))
        nt = NTASGD(nonmono=nonmono, verbose=0)
        nt.set_model(model)
        nt.on_train_begin()
        for value in values:
            assert not model.optimizer.averaging
            nt._check(value, {})
        assert model.optimizer.averaging == triggers
        assert len(nt.history) < 256


def test_awd_lstm_n_5_triggers_at_the_7th_validation_at_the_earliest():
    """With n = 5 (the default) the earliest trigger is the 7th validation:
    the test needs more than n logged values before the check. Every value
    after the first is worse than it, the fastest possible trigger."""
    values = [1.0] + [2.0] * 7
    assert algorithm_1_trigger(values, 5) == 6  # index 6: the 7th value
    model = regression(ASGD(0.05))
    nt = NTASGD(verbose=0)
    nt.set_model(model)
    nt.on_train_begin()
    started = []
    for value in values:
        nt._check(value, {})
        started.append(bool(model.optimizer.averaging))
    assert started == [False] * 6 + [True] * 2


def test_get_config_recreates_the_callback():
    cb = NTASGD(monitor="val_perplexity", nonmono=7, finetune=True, verbose=0,
                final_average=False)
    config = cb.get_config()
    assert config == {"monitor": "val_perplexity", "nonmono": 7, "interval": None,
                      "finetune": True, "verbose": 0, "final_average": False}
    clone = NTASGD(**config)
    assert clone.get_config() == config
    with_interval = NTASGD(interval=3, validation_data=(X, Y), verbose=2)
    config = with_interval.get_config()
    assert (config["interval"], config["verbose"]) == (3, 2)
    assert NTASGD(**config, validation_data=(X, Y)).get_config() == config
    assert keras.saving.serialize_keras_object(cb)["registered_name"] == "keras_rnnreg>NTASGD"


def test_from_config_round_trips():
    cb = NTASGD(monitor="val_perplexity", nonmono=7, finetune=True, verbose=0,
                final_average=False)
    clone = NTASGD.from_config(cb.get_config())
    assert (clone.monitor, clone.nonmono, clone.interval, clone.finetune, clone.verbose,
            clone.final_average) == ("val_perplexity", 7, None, True, 0, False)


def test_keras_serialization_round_trips():
    cb = NTASGD(monitor="loss", nonmono=3, verbose=0)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cb))
    assert isinstance(clone, NTASGD)
    assert clone.get_config() == cb.get_config()


def test_defaults_follow_awd_lstm():
    assert NTASGD().get_config() == {
        "monitor": "val_loss", "nonmono": 5, "interval": None, "finetune": False,
        "verbose": 1, "final_average": True,
    }


def test_verbose_prints_the_trigger_and_the_fine_tuning_stop(capsys):
    model = regression(ASGD(0.05))
    fit(model, TRIGGERS_AT_EPOCH_5, [NTASGD(nonmono=2)])
    # triggered at the end of epoch 5: 6 epochs of 32 / 8 steps
    assert capsys.readouterr().out.splitlines() == [
        "NTASGD: averaging started at iteration 24 "
        "(val_loss=3.1000 > min of all but the last 2)."
    ]
    fit(model, STOPS_AT_EPOCH_5, [NTASGD(nonmono=2, finetune=True)])
    assert capsys.readouterr().out.splitlines() == [
        "NTASGD: fine-tuning stopped (validation no longer improving)."
    ]


def test_verbose_0_prints_nothing(capsys):
    model = regression(ASGD(0.05))
    fit(model, TRIGGERS_AT_EPOCH_5, [NTASGD(nonmono=2, verbose=0)])
    assert model.optimizer.averaging
    history = fit(model, STOPS_AT_EPOCH_5, [NTASGD(nonmono=2, finetune=True, verbose=0)])
    assert len(history.history["loss"]) == 6
    for data in [(X, Y), Batches(X, Y)]:  # its own evaluations are silent too
        model.fit(X, Y, batch_size=8, epochs=1, verbose=0, callbacks=[
            NTASGD(nonmono=1, interval=2, validation_data=data, verbose=0)])
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("kwargs,error,message", [
    ({"monitor": 3}, TypeError, "Argument `monitor` must be a str. Received: monitor=3"),
    ({"nonmono": 0}, ValueError, "Argument `nonmono` must be an int >= 1. Received: nonmono=0"),
    ({"interval": 0, "validation_data": (X, Y)}, ValueError,
     "Argument `interval` must be an int >= 1. Received: interval=0"),
    ({"interval": 5}, ValueError,
     "NTASGD with `interval` (batches) evaluates the model itself and needs "
     "`validation_data`. Received: interval=5, validation_data=None"),
    ({"final_average": 1}, TypeError,
     "Argument `final_average` must be a bool. Received: final_average=1"),
])
def test_bad_arguments_name_the_argument(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        NTASGD(**kwargs)


def test_other_optimizers_error_says_how_to_compile():
    model = regression(keras.optimizers.SGD(0.1))
    with pytest.raises(TypeError, match=re.escape(
            "NTASGD needs the model compiled with keras_rnnreg.optimizers.ASGD "
            "(optionally inside GradientNoise or LossScaleOptimizer), e.g. "
            "model.compile(optimizer=ASGD(30.0, global_clipnorm=0.25), ...). "
            "Received: optimizer of type SGD")):
        fit(model, [1.0], [NTASGD()])


def test_finetune_on_a_fresh_model_averages_from_its_first_weights():
    """finetune=True builds an unbuilt optimizer and averages from T = 0."""
    model = regression(ASGD(0.05))
    assert not model.optimizer.built
    before = to_numpy(model.layers[1].kernel)
    recorder = Recorder()
    history = fit(model, [5, 4, 3, 2], [recorder, NTASGD(nonmono=2, finetune=True, verbose=0)])
    assert history.history["averaging_start"] == [0.0] * 4
    expected = np.mean([before] + recorder.iterates, axis=0)
    np.testing.assert_allclose(to_numpy(model.layers[1].kernel), expected, rtol=1e-5, atol=1e-6)
