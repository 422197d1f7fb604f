import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.layers import ARTARRegularizer, LockedDropout


def test_mask_is_constant_along_time_and_differs_across_examples():
    x = np.ones((32, 12, 64), "float32")
    y = to_numpy(LockedDropout(0.5, seed=3)(x, training=True))
    # one mask per (example, feature), repeated at every step
    np.testing.assert_array_equal(y, np.repeat(y[:, :1], 12, axis=1))
    masks = y[:, 0] != 0
    assert len({m.tobytes() for m in masks}) == 32


@pytest.mark.parametrize("rate", [0.1, 0.4, 0.65])
def test_dropped_fraction_scaling_and_mean(rate):
    batch, features = 512, 256
    x = np.ones((batch, 3, features), "float32")
    y = to_numpy(LockedDropout(rate, seed=11)(x, training=True))[:, 0]
    n = y.size
    dropped = np.mean(y == 0)
    assert abs(dropped - rate) < 4 * np.sqrt(rate * (1 - rate) / n)
    # inverted scaling: kept units are exactly 1 / (1 - rate)
    np.testing.assert_allclose(y[y != 0], 1 / (1 - rate), rtol=1e-6)
    # the mean is preserved: E[y] = 1, Var[y] = rate / (1 - rate)
    assert abs(y.mean() - 1.0) < 4 * np.sqrt(rate / (1 - rate) / n)


def test_identity_at_inference_and_rate_zero():
    x = np.random.default_rng(0).normal(size=(4, 5, 6)).astype("float32")
    np.testing.assert_array_equal(to_numpy(LockedDropout(0.5)(x, training=False)), x)
    np.testing.assert_array_equal(to_numpy(LockedDropout(0.5)(x)), x)
    np.testing.assert_array_equal(to_numpy(LockedDropout(0.0)(x, training=True)), x)


def test_same_seed_same_mask_and_fresh_mask_per_call():
    x = np.ones((8, 4, 16), "float32")
    a, b = LockedDropout(0.5, seed=5), LockedDropout(0.5, seed=5)
    first_a = to_numpy(a(x, training=True))
    np.testing.assert_array_equal(first_a, to_numpy(b(x, training=True)))
    assert not np.array_equal(first_a, to_numpy(a(x, training=True)))


def test_propagates_keras_mask():
    tokens = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(20, 8, mask_zero=True)(tokens)
    h = LockedDropout(0.3)(h)
    out = keras.layers.LSTM(4)(h)
    model = keras.Model(tokens, out)
    ids = np.array([[3, 5, 7, 0, 0]])
    # with the mask flowing through LockedDropout, padding changes nothing
    np.testing.assert_allclose(
        to_numpy(model(ids)), to_numpy(model(ids[:, :3])), atol=1e-6
    )
    layer = model.layers[2]
    mask = np.array([[True, False]])
    np.testing.assert_array_equal(to_numpy(layer.compute_mask(None, mask)), mask)


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_rate_outside_unit_interval_is_rejected(rate):
    with pytest.raises(ValueError, match=r"`rate`.*\[0, 1\).*" + str(rate)):
        LockedDropout(rate)


def test_rate_of_wrong_type_is_rejected():
    with pytest.raises(TypeError, match="rate"):
        LockedDropout("0.5")


def test_non_3d_input_is_rejected():
    with pytest.raises(ValueError, match="3D"):
        LockedDropout(0.5)(np.ones((4, 5), "float32"), training=True)


def test_config_round_trip():
    layer = LockedDropout(0.25, seed=9, name="locked")
    clone = LockedDropout.from_config(layer.get_config())
    assert (clone.rate, clone.seed, clone.name) == (0.25, 9, "locked")
    assert clone.noise_shape == (None, 1, None)


@pytest.mark.parametrize("make", [
    lambda x: LockedDropout(0.5)(x),
    lambda x: ARTARRegularizer(alpha=1.0)(x),
    lambda x: ARTARRegularizer(alpha=1.0)([x, x]),
], ids=["LockedDropout", "ARTAR(h)", "ARTAR(h, dropped_h)"])
def test_a_2d_input_is_rejected_when_the_model_is_built(make):
    """Not at the first fit: a sequence layer given (batch, features)."""
    with pytest.raises(ValueError, match=r"expects a 3D input .*\(None, 8\) \(2D\)"):
        make(keras.Input((8,)))


@pytest.mark.parametrize("noise_shape", [None, (None, 1, None)])
@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_our_dropout_is_kerass_dropout_in_distribution_and_seed_steps(noise_shape, rate):
    # keras_rnnreg's dropout (cheaper on torch) against keras.random's: the
    # same kept fraction and scaling, the same seed-generator steps, masks
    # reproducible from the seed and fresh at every call.
    from keras_rnnreg._dropout import dropout

    x = np.random.default_rng(1).normal(size=(40, 6, 50)).astype("float32")
    ours, theirs = keras.random.SeedGenerator(11), keras.random.SeedGenerator(11)
    masks = []
    for _ in range(3):
        keras.random.dropout(keras.ops.convert_to_tensor(x), rate, noise_shape, seed=theirs)
        got = to_numpy(dropout(x, rate, noise_shape=noise_shape, seed=ours))
        kept = got != 0
        np.testing.assert_allclose(got[kept], x[kept] / (1 - rate), rtol=1e-6)
        masks.append(kept[:, 0] if noise_shape is not None else kept)
        if noise_shape is not None:  # one mask per sequence and feature
            assert (kept == kept[:, :1]).all()
    np.testing.assert_array_equal(to_numpy(ours.state), to_numpy(theirs.state))
    draws = np.stack(masks)
    # each mask's kept fraction is within 4 standard deviations of 1 - rate
    sd = np.sqrt(rate * (1 - rate) / masks[0].size)
    assert np.abs(draws.mean(axis=tuple(range(1, draws.ndim))) - (1 - rate)).max() < 4 * sd
    assert not np.array_equal(masks[0], masks[1])
    again = keras.random.SeedGenerator(11)
    first = to_numpy(dropout(x, rate, noise_shape=noise_shape, seed=again)) != 0
    np.testing.assert_array_equal(first[:, 0] if noise_shape is not None else first, masks[0])
