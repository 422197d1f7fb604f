"""GradientNoise's generator on JAX and TensorFlow (keras_rnnreg._threefry):
Threefry-2x32-20 bit for bit, Giles's erfinv, and the normals they make,
against a NumPy reference written from Salmon et al. (2011)."""

import keras
import numpy as np
import pytest
from scipy import special

from conftest import to_numpy
from keras_rnnreg import _threefry

# Random123's known answers for Threefry-2x32-20: (key, counter) -> output.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]

needs_uint32_ops = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="torch draws GradientNoise's noise with torch's own generator; "
    "this one needs uint32 arithmetic, which torch's CPU ops lack",
)


def numpy_threefry(key, x0, x1):
    """Threefry-2x32, 20 rounds, in NumPy uint32 arithmetic (wraps mod 2^32)."""
    rotations = (13, 15, 26, 6, 17, 29, 16, 24)
    with np.errstate(over="ignore"):
        k = [np.uint32(key[0]), np.uint32(key[1])]
        k.append(k[0] ^ k[1] ^ np.uint32(0x1BD11BDA))
        x0, x1 = np.uint32(x0) + k[0], np.uint32(x1) + k[1]
        for r in range(20):
            x0 = x0 + x1
            d = rotations[r % 8]
            x1 = ((x1 << np.uint32(d)) | (x1 >> np.uint32(32 - d))) ^ x0
            if r % 4 == 3:
                s = r // 4 + 1
                x0 = x0 + k[s % 3]
                x1 = x1 + k[(s + 1) % 3] + np.uint32(s)
    return x0, x1


def numpy_normal(size, key):
    """What `_threefry.standard_normal` draws, from float64 erfinv."""
    pairs = (size + 1) // 2
    y0, y1 = numpy_threefry(key, np.arange(pairs, dtype=np.uint32), np.zeros(pairs, np.uint32))
    bits = np.concatenate([y0, y1])[:size]
    u = (2.0 * (bits >> 9).astype(np.int64) + 1 - 2**23) / 2**23
    return bits, np.sqrt(2.0) * special.erfinv(u)


def test_numpy_reference_gives_random123_known_answers():
    for key, counter, expected in KNOWN_ANSWERS:
        assert tuple(int(w) for w in numpy_threefry(key, *counter)) == expected


@needs_uint32_ops
def test_threefry_gives_random123_known_answers():
    for key, counter, expected in KNOWN_ANSWERS:
        words = _threefry.threefry2x32(
            [keras.ops.convert_to_tensor(np.uint32(k)) for k in key],
            [keras.ops.convert_to_tensor(np.array([c], np.uint32)) for c in counter],
        )
        assert tuple(int(to_numpy(w)[0]) for w in words) == expected


@needs_uint32_ops
@pytest.mark.parametrize("shape", [(64,), (37, 5), (1,)])
@pytest.mark.parametrize("key", [(0, 0), (12345, 7), (2**31 + 5, 2**32 - 1)])
def test_standard_normal_matches_the_numpy_reference(shape, key):
    size = int(np.prod(shape))
    bits, expected = numpy_normal(size, key)
    seed = keras.ops.convert_to_tensor(np.array(key, np.uint32))
    np.testing.assert_array_equal(to_numpy(_threefry.random_bits(size, seed)), bits)
    z = to_numpy(_threefry.standard_normal(shape, seed))
    assert z.shape == shape and z.dtype == np.float32
    np.testing.assert_allclose(z.ravel(), expected, rtol=1e-6, atol=1e-7)


@needs_uint32_ops
def test_erfinv_is_accurate_on_the_whole_grid():
    # Every 13th grid point and both ends: the tail branch (|u| > 0.9966)
    # and the last points before ±1, where erfinv is steepest.
    k = np.concatenate([np.arange(0, 2**23, 13), [2**23 - 2, 2**23 - 1]])
    u = ((2 * k + 1 - 2**23) / 2**23).astype(np.float32)
    got = to_numpy(_threefry.erfinv(keras.ops.convert_to_tensor(u))).astype(np.float64)
    expected = special.erfinv(u.astype(np.float64))
    assert np.all(np.isfinite(got))
    assert np.max(np.abs(got - expected) / np.abs(expected)) < 1e-6


@needs_uint32_ops
def test_standard_normal_tails_have_the_normal_frequencies():
    # The erfinv tail branch covers |z| > 2.93; 2^22 draws, counts against
    # the normal's tail probabilities within 5 binomial standard deviations.
    n = 2**22
    seed = keras.ops.convert_to_tensor(np.array([3, 9], np.uint32))
    z = np.abs(to_numpy(_threefry.standard_normal((n,), seed)))
    for threshold in (1.0, 2.0, 3.0, 4.0, 4.5):
        p = special.erfc(threshold / np.sqrt(2.0))
        count = np.count_nonzero(z > threshold)
        assert abs(count - n * p) < 5 * np.sqrt(n * p * (1 - p)) + 1, threshold


def test_more_values_than_the_counter_covers_are_rejected():
    with pytest.raises(ValueError, match="at most 4294967296 values"):
        _threefry.random_bits(2**32 + 1, np.array([0, 0], np.uint32))


@needs_uint32_ops
def test_gradient_noise_adds_exactly_this_draw():
    # A zero gradient: SGD(1)'s update is -σ_0 z, z the draw of the key
    # (seed, step) for the first gradient.
    from keras_rnnreg.optimizers import GradientNoise

    eta = 0.25
    inputs = keras.Input((2,))
    dense = keras.layers.Dense(33, use_bias=False, kernel_initializer="zeros")
    model = keras.Model(inputs, keras.layers.Lambda(lambda h: 0.0 * h)(dense(inputs)))
    model.compile(GradientNoise(keras.optimizers.SGD(1.0), eta=eta, seed=11), "mse")
    model.train_on_batch(np.ones((2, 2)), np.zeros((2, 33)))
    _, z = numpy_normal(2 * 33, (11, 0))
    np.testing.assert_allclose(to_numpy(dense.kernel).ravel(), -np.sqrt(eta) * z,
                               rtol=1e-5, atol=1e-7)
