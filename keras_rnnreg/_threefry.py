"""Gaussian draws from Threefry-2x32 written as elementwise `keras.ops`.

`GradientNoise` draws one normal per parameter per step. On JAX and
TensorFlow the draw is the noise's whole cost, so it is built here from
elementwise integer and float ops that XLA fuses with the addition into one
pass over the gradient:

- bits: Threefry-2x32 with 20 rounds (Salmon et al. 2011, *Parallel random
  numbers: as easy as 1, 2, 3*), the generator behind `jax.random`'s default
  keys, bit for bit (`tests/test_threefry.py` checks Random123's known
  answers). One evaluation maps a 64-bit counter to 64 bits, and both of
  its words are used. XLA's own expansion of `RngBitGenerator` and
  `jax.random.bits` compute the same function more slowly on a CPU
  (docs/benchmarks.md);
- uniforms: the top 23 bits of each word, on the midpoints of an even grid
  on (-1, 1);
- normals: z = sqrt(2) erfinv(u), the transform `jax.random.normal` applies,
  with erfinv by Giles (2011), *Approximating the erfinv function*.

Torch keeps its own generator: an eager chain of some hundred integer ops
would be slower there than torch's `normal_`.
"""

import math

import numpy as np
from keras import ops

# Threefry-2x32's rotation constants and key-schedule parity (Salmon et al.
# 2011, Table 4 and section 4.2).
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA
_ROUNDS = 20

# Giles (2011), single precision: erfinv(x) = x p(w), w = -log(1 - x^2),
# p a polynomial in w - 2.5 where w < 5 and in sqrt(w) - 3 beyond
# (highest degree first).
_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06,
            0.00021858087, -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844,
         0.00573950773, -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)

# One evaluation per pair of values, the counter in the low word.
MAX_VALUES = 2**32


def _uint32(value):
    # Every constant a uint32 too: with a Python int, Keras's type promotion
    # widens uint32 to int64 on TensorFlow and torch.
    return ops.convert_to_tensor(np.uint32(value))


def _rotate_left(x, distance):
    return ops.bitwise_or(
        ops.left_shift(x, _uint32(distance)), ops.right_shift(x, _uint32(32 - distance))
    )


def threefry2x32(key, counter):
    """Threefry-2x32-20 of the uint32 `counter` pair (x0, x1) under the
    uint32 `key` pair (k0, k1), elementwise; returns the pair of words."""
    k0, k1 = key
    schedule = (k0, k1, ops.bitwise_xor(ops.bitwise_xor(k0, k1), _uint32(_PARITY)))
    x0, x1 = ops.add(counter[0], k0), ops.add(counter[1], k1)
    for r in range(_ROUNDS):
        x0 = ops.add(x0, x1)
        x1 = ops.bitwise_xor(_rotate_left(x1, _ROTATIONS[r % 8]), x0)
        if r % 4 == 3:  # key injection s = 1..5 after every four rounds
            s = r // 4 + 1
            x0 = ops.add(x0, schedule[s % 3])
            x1 = ops.add(ops.add(x1, schedule[(s + 1) % 3]), _uint32(s))
    return x0, x1


def random_bits(size, seed):
    """`size` uint32 words, the stream of the uint32[2] key `seed`: the
    two words of the evaluations at counters (0, 0), (1, 0), ...,
    first words first."""
    if size > MAX_VALUES:
        raise ValueError(
            f"Threefry draws here support at most {MAX_VALUES} values per "
            f"tensor. Received: a tensor of {size} values"
        )
    seed = ops.cast(seed, "uint32")
    pairs = (size + 1) // 2
    low = ops.cast(ops.arange(pairs, dtype="int32"), "uint32")
    words = threefry2x32((seed[0], seed[1]), (low, ops.zeros_like(low)))
    bits = ops.concatenate(words)
    return bits if 2 * pairs == size else bits[:size]


def grid_uniform(bits):
    """u = (2k + 1 - 2^23) / 2^23 for k the top 23 of 32 random bits: the
    midpoints of 2^23 equal steps on (-1, 1). Integer arithmetic up to one
    exact cast and one exact scaling, so no compiler reassociation can round
    u to ±1, where erfinv is infinite (a float version did, under XLA on
    TensorFlow)."""
    k = ops.cast(ops.right_shift(bits, _uint32(9)), "int32")
    return ops.cast(2 * k + (1 - 2**23), "float32") * (2.0**-23)


def _horner(coefficients, x):
    result = coefficients[0]
    for c in coefficients[1:]:
        result = result * x + c
    return result


def erfinv(u):
    """Giles' single-precision erfinv for float32 u in (-1, 1).

    w is computed as -log((1 - u)(1 + u)), not -log1p(-u²): for u on the
    grid of `grid_uniform` both factors are exact, so one rounding is the
    only error before the log, and XLA's log is cheaper and, near ±1, more
    accurate than its log1p (both compared in docs/benchmarks.md; the
    tests bound the relative error by 1e-6 over the grid).
    """
    w = -ops.log((1.0 - u) * (1.0 + u))
    central = _horner(_CENTRAL, w - 2.5)
    tail = _horner(_TAIL, ops.sqrt(w) - 3.0)
    return ops.where(w < 5.0, central, tail) * u


def standard_normal(shape, seed):
    """float32 N(0, 1) draws of `shape` from the uint32[2] key `seed`."""
    size = math.prod(shape)
    z = np.float32(math.sqrt(2.0)) * erfinv(grid_uniform(random_bits(size, seed)))
    return ops.reshape(z, shape)
