"""The run checkpoint (keras_rnnreg.app.checkpoint): what it saves is what
the run held, saving changes nothing, restoring gives every value back."""

import keras
import numpy as np

from conftest import to_numpy
from keras_rnnreg.app.checkpoint import read_checkpoint, restore_variables, save_checkpoint
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
