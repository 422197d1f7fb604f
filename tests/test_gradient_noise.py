import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.optimizers import ASGD, GradientNoise

UNITS = 8192


def zero_gradient_model(optimizer):
    """One weight matrix whose gradient is exactly zero: updates = noise."""
    inputs = keras.Input((2,))
    dense = keras.layers.Dense(UNITS, use_bias=False, kernel_initializer="zeros")
    outputs = keras.layers.Lambda(lambda h: 0.0 * h)(dense(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer, "mse")
    return model, dense


def one_step_update(model, dense):
    before = to_numpy(dense.kernel).copy()
    model.train_on_batch(np.ones((4, 2)), np.zeros((4, UNITS)))
    return to_numpy(dense.kernel) - before


@pytest.mark.parametrize("step", [0, 1000])
def test_update_variance_matches_annealing_schedule(step):
    eta, gamma = 0.3, 0.55
    optimizer = GradientNoise(keras.optimizers.SGD(1.0), eta=eta, gamma=gamma, seed=1)
    model, dense = zero_gradient_model(optimizer)
    model.train_on_batch(np.ones((4, 2)), np.zeros((4, UNITS)))  # builds
    optimizer.iterations.assign(step)
    update = one_step_update(model, dense)
    expected = eta / (1 + step) ** gamma
    n = update.size
    # sample variance of n Gaussian draws: standard error expected * sqrt(2 / n)
    assert abs(np.var(update) - expected) < 4 * expected * np.sqrt(2 / n)
    assert abs(np.mean(update)) < 4 * np.sqrt(expected / n)
    np.testing.assert_allclose(to_numpy(optimizer.noise_stddev()) ** 2,
                               eta / (2 + step) ** gamma, rtol=1e-5)


def test_noise_is_gaussian_and_independent_within_the_draw():
    # One draw covers the kernel: its elements must be N(0, 1) after
    # scaling, and neither its halves nor neighbouring elements related.
    from scipy import stats

    eta = 0.5
    optimizer = GradientNoise(keras.optimizers.SGD(1.0), eta=eta, gamma=0.55, seed=2)
    model, dense = zero_gradient_model(optimizer)
    z = one_step_update(model, dense).ravel() / np.sqrt(eta)  # step 0: variance eta
    assert stats.kstest(z, "norm").pvalue > 1e-3
    half = z.size // 2
    first, second = z[:half], z[half:]
    bound = 4 / np.sqrt(half)
    assert abs(np.corrcoef(first, second)[0, 1]) < bound
    assert abs(np.corrcoef(first**2, second**2)[0, 1]) < bound
    assert abs(np.corrcoef(first[:-1], first[1:])[0, 1]) < bound


def test_noise_is_fresh_at_every_step_and_for_every_seed():
    # The noise's seed is derived from (seed, step): consecutive steps and
    # other seeds must draw unrelated noise, the same (seed, step) the same.
    def updates(seed, steps=2):
        optimizer = GradientNoise(keras.optimizers.SGD(1.0), eta=1.0, gamma=0.0, seed=seed)
        model, dense = zero_gradient_model(optimizer)
        return [one_step_update(model, dense).ravel() for _ in range(steps)]

    first, second = updates(seed=4)
    other, _ = updates(seed=5)
    bound = 4 / np.sqrt(first.size)
    assert abs(np.corrcoef(first, second)[0, 1]) < bound
    assert abs(np.corrcoef(first, other)[0, 1]) < bound
    np.testing.assert_array_equal(updates(seed=4, steps=1)[0], first)


@pytest.mark.parametrize("where", ["inner", "wrapper"])
def test_noise_is_added_after_clipping_not_clipped(where):
    if where == "inner":
        optimizer = GradientNoise(keras.optimizers.SGD(1.0, global_clipnorm=1e-3), eta=1.0)
    else:
        optimizer = GradientNoise(keras.optimizers.SGD(1.0), eta=1.0, global_clipnorm=1e-3)
    model, dense = zero_gradient_model(optimizer)
    update = one_step_update(model, dense)
    # the noise's size (std 1 per entry), not the clip norm's (1e-3 overall)
    assert np.linalg.norm(update) > 0.9 * np.sqrt(update.size)
    # the wrapped optimizer is left as the user made it
    assert optimizer.inner_optimizer.global_clipnorm == (1e-3 if where == "inner" else None)
    assert optimizer.global_clipnorm == 1e-3


def clipped_regression(optimizer):
    keras.utils.set_random_seed(5)
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(inputs))
    model.compile(optimizer, "mse")
    x = np.random.default_rng(0).normal(size=(16, 3)) * 10
    y = np.random.default_rng(1).normal(size=(16, 2))
    for _ in range(3):
        model.train_on_batch(x, y)
    return [to_numpy(w) for w in model.trainable_weights]


@pytest.mark.parametrize("clip", [{"global_clipnorm": 0.1}, {"clipnorm": 0.05},
                                  {"clipvalue": 0.01}])
def test_clipping_applied_exactly_once(clip):
    plain = clipped_regression(keras.optimizers.SGD(0.5, **clip))
    wrapped = clipped_regression(GradientNoise(keras.optimizers.SGD(0.5, **clip), eta=0.0))
    for a, b in zip(plain, wrapped):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    unclipped = clipped_regression(keras.optimizers.SGD(0.5))
    assert not np.allclose(plain[0], unclipped[0])


def test_each_variable_gets_independent_noise():
    inputs = keras.Input((2,))
    a = keras.layers.Dense(512, use_bias=False, kernel_initializer="zeros")
    b = keras.layers.Dense(512, use_bias=False, kernel_initializer="zeros")
    outputs = keras.layers.Lambda(lambda h: 0.0 * h)(keras.layers.Add()([a(inputs), b(inputs)]))
    model = keras.Model(inputs, outputs)
    model.compile(GradientNoise(keras.optimizers.SGD(1.0), eta=1.0, seed=3), "mse")
    model.train_on_batch(np.ones((2, 2)), np.zeros((2, 512)))
    first, second = to_numpy(a.kernel).ravel(), to_numpy(b.kernel).ravel()
    assert abs(np.corrcoef(first, second)[0, 1]) < 4 / np.sqrt(first.size)


def test_forwards_learning_rate_and_iterations():
    inner = keras.optimizers.Adam(0.01)
    optimizer = GradientNoise(inner, eta=0.01)
    model, _ = zero_gradient_model(optimizer)
    model.fit(np.ones((8, 2)), np.zeros((8, UNITS)), batch_size=4, epochs=1, verbose=0)
    assert int(to_numpy(optimizer.iterations)) == int(to_numpy(inner.iterations)) == 2
    optimizer.learning_rate = 0.5
    np.testing.assert_allclose(to_numpy(inner.learning_rate), 0.5)


def test_round_trip_preserves_step_and_continues_identically(tmp_path):
    optimizer = GradientNoise(keras.optimizers.SGD(1.0, momentum=0.9), eta=0.1, seed=7)
    model, dense = zero_gradient_model(optimizer)
    for _ in range(3):
        one_step_update(model, dense)
    path = str(tmp_path / "noise.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=False)  # the test's Lambda
    clone = restored.optimizer
    assert isinstance(clone, GradientNoise) and isinstance(clone.inner_optimizer, keras.optimizers.SGD)
    assert int(to_numpy(clone.iterations)) == 3
    assert (clone.eta, clone.gamma) == (0.1, 0.55)
    restored_dense = restored.layers[1]
    np.testing.assert_array_equal(
        one_step_update(restored, restored_dense), one_step_update(model, dense)
    )


def test_mixed_precision_compile_wraps_it_in_loss_scaling():
    keras.mixed_precision.set_global_policy("mixed_float16")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, dtype="float32")(keras.layers.Dense(8)(inputs)))
    model.compile(GradientNoise(keras.optimizers.SGD(0.1), eta=0.01), "mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(np.ones((20, 4)), np.ones((20, 1)), batch_size=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # the loss scaler skips the first steps if 2**15 overflows float16; the
    # rest are applied through GradientNoise to the SGD it wraps
    assert 5 <= int(to_numpy(model.optimizer.iterations)) <= 10


def test_wraps_asgd():
    optimizer = GradientNoise(ASGD(0.1), eta=0.01)
    model, dense = zero_gradient_model(optimizer)
    one_step_update(model, dense)
    assert optimizer.inner_optimizer.averages[0].shape == dense.kernel.shape


@pytest.mark.parametrize("argument", ["eta", "gamma"])
def test_negative_eta_or_gamma_is_rejected(argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*>= 0"):
        GradientNoise(keras.optimizers.SGD(1.0), **{argument: -0.1})


def test_bad_optimizers_are_rejected():
    with pytest.raises(TypeError, match="keras.optimizers.Optimizer"):
        GradientNoise("sgd")
    with pytest.raises(TypeError, match="LossScaleOptimizer\\(GradientNoise"):
        GradientNoise(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1.0)))
    with pytest.raises(ValueError, match="not both"):
        GradientNoise(keras.optimizers.SGD(1.0, clipnorm=1.0), clipvalue=1.0)


@pytest.mark.parametrize("where", ["inner", "wrapper"])
def test_round_trip_keeps_clipping_where_it_was_set(where, tmp_path):
    clip = {"global_clipnorm": 0.5}
    inner = keras.optimizers.SGD(1.0, **(clip if where == "inner" else {}))
    optimizer = GradientNoise(inner, eta=0.1, seed=3, **(clip if where == "wrapper" else {}))
    clone = GradientNoise.from_config(optimizer.get_config())
    assert clone.global_clipnorm == 0.5
    assert clone.inner_optimizer.global_clipnorm == inner.global_clipnorm


def test_wrapping_one_optimizer_twice_gives_the_same_updates():
    """The given optimizer is not changed by wrapping it, so a second wrapper
    (a tuner trial, a rebuilt model) sees the same clipping as the first."""
    inner = keras.optimizers.SGD(1.0, clipnorm=0.05)
    first = clipped_regression(GradientNoise(inner, eta=0.0))
    assert inner.clipnorm == 0.05 and inner.loss_scale_factor is None
    second = clipped_regression(GradientNoise(keras.optimizers.SGD(1.0, clipnorm=0.05), eta=0.0))
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=1e-6)
