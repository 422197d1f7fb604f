"""ASGD: its SGD steps and its uniform average, against NumPy and Keras's SGD.

The gradients are fed by hand (`apply_gradients`) so that the iterates w_k
can be computed in NumPy, independently of the optimizer. Weights, gradients
and learning rates are small dyadic numbers: an SGD step on them is exact in
float32, so a step can be compared exactly, whatever the backend.
"""

import re

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.optimizers import ASGD

SHAPES = ((3, 2), (2,))
RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 3)).astype("float32")
Y = RNG.normal(size=(32, 2)).astype("float32")


def dyadic(rng, shape, scale):
    """Integers in [-16, 16) times `scale` (a power of two), as float32."""
    return (rng.integers(-16, 16, size=shape) * scale).astype("float32")


def variables_for(optimizer, seed=0):
    """Two variables with dyadic values, the optimizer built on them."""
    rng = np.random.default_rng(seed)
    initial = [dyadic(rng, shape, 1 / 8) for shape in SHAPES]
    variables = [keras.Variable(w) for w in initial]
    optimizer.build(variables)
    return variables, initial


def gradient_steps(steps, seed=1):
    rng = np.random.default_rng(seed)
    return [[dyadic(rng, shape, 1 / 4) for shape in SHAPES] for _ in range(steps)]


def apply(optimizer, variables, gradients):
    optimizer.apply_gradients(
        [(keras.ops.convert_to_tensor(g), v) for g, v in zip(gradients, variables)]
    )


def numpy_sgd(initial, steps, lr, momentum=0.0):
    """The iterates w_0, ..., w_k of Keras's SGD (its `update_step`) in NumPy."""
    w = [np.array(x, "float64") for x in initial]
    m = [np.zeros_like(x) for x in w]
    iterates = [[x.copy() for x in w]]
    for gradients in steps:
        for i, g in enumerate(gradients):
            if momentum:
                m[i] = momentum * m[i] - lr * g
                w[i] = w[i] + m[i]
            else:
                w[i] = w[i] - lr * g
        iterates.append([x.copy() for x in w])
    return iterates


def snapshot(variables):
    return [to_numpy(v) for v in variables]


def dense_model(optimizer, initial=None):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    if initial is not None:
        model.set_weights(initial)
    model.compile(optimizer, "mse")
    return model


# -- the SGD step --------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {},
    {"momentum": 0.9, "weight_decay": 0.05},
    {"momentum": 0.5, "nesterov": True},
    {"global_clipnorm": 0.1},
], ids=["plain", "momentum_weight_decay", "nesterov", "global_clipnorm"])
def test_steps_equal_keras_sgd_with_the_same_arguments(kwargs):
    """ASGD(lr, **kwargs) takes SGD's steps: the rate and every SGD argument
    reach `keras.optimizers.SGD` (averaging is off, so it is plain SGD)."""
    reference = dense_model(keras.optimizers.SGD(0.3, **kwargs))
    initial = [np.array(w) for w in reference.get_weights()]
    model = dense_model(ASGD(0.3, **kwargs), initial)
    for m in (reference, model):
        m.fit(X, Y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for actual, expected, start in zip(model.get_weights(), reference.get_weights(), initial):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
        assert np.abs(expected - start).max() > 1e-3  # the steps did move the weights


def test_default_learning_rate_is_sgds():
    assert float(to_numpy(ASGD().learning_rate)) == pytest.approx(0.01)
    assert float(to_numpy(ASGD().learning_rate)) == float(
        to_numpy(keras.optimizers.SGD().learning_rate))


def test_config_round_trip_keeps_the_sgd_arguments():
    optimizer = ASGD(0.3, momentum=0.9, nesterov=True, weight_decay=0.01, global_clipnorm=0.25)
    restored = ASGD.from_config(optimizer.get_config())
    assert isinstance(restored, ASGD)
    assert float(to_numpy(restored.learning_rate)) == pytest.approx(0.3)
    assert (restored.momentum, restored.nesterov, restored.weight_decay,
            restored.global_clipnorm) == (0.9, True, 0.01, 0.25)


def test_momentum_free_step_is_w_minus_lr_g_exactly():
    """torch's fast path (`addcmul_`, value=-1) and Keras's SGD elsewhere:
    each step is w - lr·g, exact in float32 on these dyadic numbers."""
    optimizer = ASGD(0.5)
    variables, initial = variables_for(optimizer)
    steps = gradient_steps(3)
    expected = numpy_sgd(initial, steps, lr=0.5)
    for k, gradients in enumerate(steps, 1):
        apply(optimizer, variables, gradients)
        for actual, w in zip(snapshot(variables), expected[k]):
            np.testing.assert_array_equal(actual, w.astype("float32"))
    assert not optimizer.averaging


def test_momentum_step_equals_keras_sgd_and_numpy():
    """With momentum the update is SGD's (torch's fast path must not apply)."""
    optimizer = ASGD(0.5, momentum=0.5)
    sgd = keras.optimizers.SGD(0.5, momentum=0.5)
    variables, initial = variables_for(optimizer)
    sgd_variables = [keras.Variable(w) for w in initial]
    steps = gradient_steps(3)
    expected = numpy_sgd(initial, steps, lr=0.5, momentum=0.5)
    for k, gradients in enumerate(steps, 1):
        apply(optimizer, variables, gradients)
        apply(sgd, sgd_variables, gradients)
        for actual, reference, w in zip(snapshot(variables), snapshot(sgd_variables), expected[k]):
            np.testing.assert_array_equal(actual, reference)
            np.testing.assert_array_equal(actual, w.astype("float32"))
    # with momentum the steps differ from momentum-free ones from step 2 on
    plain = numpy_sgd(initial, steps, lr=0.5)
    assert not np.allclose(expected[-1][0], plain[-1][0])


# -- the uniform average -------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.5], ids=["momentum_0", "momentum_0.5"])
@pytest.mark.parametrize("start", [0, 2], ids=["from_step_0", "from_step_2"])
def test_average_is_the_mean_of_the_iterates_since_the_start(start, momentum):
    """w̄ = mean(w_T, ..., w_k), T = the iteration of `start_averaging()`;
    T = 0 (started before the first step) included."""
    optimizer = ASGD(0.5, momentum=momentum)
    variables, initial = variables_for(optimizer)
    steps = gradient_steps(5)
    iterates = numpy_sgd(initial, steps, lr=0.5, momentum=momentum)
    for k, gradients in enumerate(steps):
        if k == start:
            optimizer.start_averaging()
            assert int(to_numpy(optimizer.averaging_start)) == start
            assert int(to_numpy(optimizer.iterations)) == start
            assert optimizer.average_count == 1
        apply(optimizer, variables, gradients)
        # after step k + 1, w̄ averages w_T..w_{k+1}
        if k >= start:
            expected = [np.mean([w[i] for w in iterates[start:k + 2]], axis=0)
                        for i in range(len(SHAPES))]
            for actual, mean in zip(snapshot(optimizer.averages), expected):
                np.testing.assert_allclose(actual, mean, rtol=1e-6, atol=1e-7)
            assert optimizer.average_count == k + 2 - start
    for actual, w in zip(snapshot(variables), iterates[-1]):  # averaging leaves w_k alone
        np.testing.assert_array_equal(actual, w.astype("float32"))
    assert not np.allclose(to_numpy(optimizer.averages[0]), iterates[-1][0])


def test_a_fresh_optimizer_is_not_averaging():
    optimizer = ASGD(0.5)
    assert not optimizer.averaging and optimizer.average_count == 0  # before build
    variables_for(optimizer)
    assert int(to_numpy(optimizer.averaging_start)) == -1
    assert not optimizer.averaging and optimizer.average_count == 0
    assert optimizer.validation_history() == []


def test_stop_averaging_turns_it_off_and_keeps_the_average():
    optimizer = ASGD(0.5)
    variables, initial = variables_for(optimizer)
    steps = gradient_steps(4)
    iterates = numpy_sgd(initial, steps, lr=0.5)
    optimizer.start_averaging()
    for gradients in steps[:2]:
        apply(optimizer, variables, gradients)
    assert optimizer.averaging and optimizer.average_count == 3
    averages = snapshot(optimizer.averages)
    optimizer.stop_averaging()
    assert not optimizer.averaging
    assert optimizer.average_count == 0
    assert int(to_numpy(optimizer.averaging_start)) == -1
    for gradients in steps[2:]:  # SGD goes on, the average stays
        apply(optimizer, variables, gradients)
    for actual, kept in zip(snapshot(optimizer.averages), averages):
        np.testing.assert_array_equal(actual, kept)
    for actual, mean in zip(averages, [np.mean([w[i] for w in iterates[:3]], axis=0)
                                       for i in range(len(SHAPES))]):
        np.testing.assert_allclose(actual, mean, rtol=1e-6, atol=1e-7)
    for actual, w in zip(snapshot(variables), iterates[-1]):
        np.testing.assert_array_equal(actual, w.astype("float32"))


# -- the validation log ----------------------------------------------------------


@pytest.mark.parametrize("keep_last", [1, 5])
def test_full_log_is_the_min_of_the_older_values_and_the_last_n(keep_last):
    optimizer = ASGD(0.5)
    variables_for(optimizer)
    rng = np.random.default_rng(5)
    values = [float(v) for v in rng.uniform(1.0, 2.0, size=300).astype("float32")]
    values[100] = 0.25  # the minimum: an old value, compacted away
    values[300 - keep_last] = 0.5  # in the kept tail (after the compaction)
    for count, value in enumerate(values, 1):
        optimizer.record_validation(value, keep_last=keep_last)
        if count == 256:  # full, not yet compacted
            assert optimizer.validation_history() == values[:256]
    # compacted once, when the 257th value came: the older 256 became
    # [min(values[:256 - n])] + values[256 - n:256]; 43 values came since
    expected = [min(values[:256 - keep_last])] + values[256 - keep_last:]
    assert expected[0] == 0.25
    assert optimizer.validation_history() == expected


def test_clear_validation_history_empties_the_log():
    optimizer = ASGD(0.5)
    variables_for(optimizer)
    for value in (3.0, 2.0, 1.0):
        optimizer.record_validation(value, keep_last=1)
    assert optimizer.validation_history() == [3.0, 2.0, 1.0]
    optimizer.clear_validation_history()
    assert optimizer.validation_history() == []
    optimizer.record_validation(7.0, keep_last=1)
    assert optimizer.validation_history() == [7.0]


# -- before build ----------------------------------------------------------------


@pytest.mark.parametrize("method", [
    "start_averaging", "stop_averaging", "validation_history",
    "clear_validation_history", "swap_average_weights", "assign_average_to_variables",
])
def test_methods_before_build_raise_naming_the_method(method):
    with pytest.raises(ValueError, match=re.escape(
            f"ASGD.{method}() needs the optimizer's variables: build it first")):
        getattr(ASGD(0.5), method)()


def test_record_validation_before_build_raises():
    with pytest.raises(ValueError, match=re.escape("needs the optimizer's variables")):
        ASGD(0.5).record_validation(1.0, keep_last=1)
