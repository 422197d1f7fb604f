"""AWD-LSTM's variable BPTT lengths as pure functions of a NumPy generator.

Merity et al. 2017, section 4.1. Every draw comes from the `rng` argument, so
the same generator state gives the same lengths, whatever else runs; nothing
here reads NumPy's global generator or keeps state between calls.
`BPTTSequence` builds its epochs from these functions and its own generator.
"""

import math

import numpy as np

from keras_rnnreg._validation import (
    check_non_negative,
    check_positive_int,
    check_probability,
    check_real,
)

# AWD-LSTM's floor on drawn lengths (section 5 and the reference code).
_AWD_MIN_LENGTH = 5
# Bounds on the work spent drawing one epoch's lengths (see `draw_epoch_bounds`).
_CANDIDATE_DRAWS = 2**20
_MAX_CANDIDATE_BLOCKS = 10_000


def _check_distribution(bptt, p, s, min_length, max_length):
    """Validates the length distribution's parameters (shared with
    `BPTTSequence`, so its errors read the same).

    Returns `(bptt, p, s, min_length, max_length)`, with `min_length=None`
    resolved to AWD-LSTM's floor of 5, or `bptt` if that is smaller.
    """
    bptt = check_positive_int("bptt", bptt)
    p = check_probability("p", p)
    s = check_non_negative("s", check_real("s", s))
    if min_length is None:
        min_length = min(_AWD_MIN_LENGTH, bptt)
    min_length = check_positive_int("min_length", min_length)
    if min_length > bptt:
        raise ValueError(
            f"Argument `min_length` must be <= bptt={bptt} (a floor "
            f"under lengths drawn around bptt). Received: min_length={min_length}"
        )
    if max_length is not None:
        max_length = check_positive_int("max_length", max_length)
        if max_length < bptt:
            raise ValueError(
                f"Argument `max_length` must be None or >= bptt={bptt} "
                f"(a ceiling above the base length). Received: "
                f"max_length={max_length}"
            )
    return bptt, p, s, min_length, max_length


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            "Argument `rng` must be a numpy.random.Generator (e.g. "
            "np.random.default_rng(seed)); the lengths depend on nothing else. "
            f"Received: rng={rng!r} of type {type(rng).__name__}"
        )
    return rng


def _check_size(size):
    dims = size if isinstance(size, tuple) else (size,)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise ValueError(
            "Argument `size` must be an int >= 0 or a tuple of them (the "
            f"shape of the array of lengths). Received: size={size!r}"
        )
    return size


def _draw(rng, size, bptt, p, s, min_length, max_length):
    # The unchecked draw: `draw_lengths` and the epoch samplers share it, so
    # one generator state always maps to the same lengths.
    base = np.where(rng.random(size) < p, bptt, bptt / 2)
    lengths = np.rint(rng.normal(base, s))
    lengths = np.maximum(lengths, min_length)
    if max_length is not None:
        lengths = np.minimum(lengths, max_length)
    return lengths.astype(np.int64)


def draw_lengths(rng, size, bptt, p=0.95, s=5.0, min_length=None, max_length=None):
    """Independent BPTT lengths drawn as in AWD-LSTM.

    Each length is drawn in two steps (Merity et al. 2017, section 4.1):

        base = bptt        with probability p,   bptt / 2   otherwise
        L    = max(min_length, round(N(base, s)))             (a floor)
        L    = min(L, max_length)        (only if `max_length` is given)

    Away from the floor and ceiling, `E[L] = p bptt + (1 - p) bptt / 2` and
    `Var[L] = s^2 + 1/12 + p (1 - p) (bptt / 2)^2` (1/12 from rounding; the
    reference truncates toward zero instead, lowering the mean by about 1/2).
    No end-of-stream cut: see `draw_epoch_bounds` for a whole epoch.

    Pure: the draws come from `rng` alone (it advances; nothing else is read
    or changed), so equal generator states give equal lengths.

    Args:
        rng: A `numpy.random.Generator`, the only source of randomness.
        size: Int >= 0 or tuple of them, the shape of the result.
        bptt: Int >= 1, the base sequence length.
        p: Float in [0, 1], the probability of the base `bptt` (else
            `bptt / 2`). AWD-LSTM uses 0.95.
        s: Float >= 0, the standard deviation around the base. AWD-LSTM
            uses 5.
        min_length: Int in [1, bptt], the floor. None is AWD-LSTM's 5, or
            `bptt` if that is smaller.
        max_length: Optional int >= bptt, a ceiling; None leaves the
            normal's tail uncut, as AWD-LSTM does.

    Returns:
        An int64 NumPy array of shape `size`.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> lengths = draw_lengths(rng, 1000, bptt=70)
    >>> bool(lengths.min() >= 5), round(float(lengths.mean()))
    (True, 68)
    """
    return _draw(
        _check_rng(rng),
        _check_size(size),
        *_check_distribution(bptt, p, s, min_length, max_length),
    )


def most_frequent_batch_count(
    rng, steps, bptt, p=0.95, s=5.0, min_length=None, max_length=None, epochs=64
):
    """The most frequent number of AWD-LSTM lengths it takes to cover `steps`.

    Simulates `epochs` epochs: in each, lengths are drawn as in
    `draw_lengths` (Merity et al. 2017, section 4.1) until their sum reaches
    `steps`; the count of draws that took is recorded, and the most frequent
    count (the smallest, on a tie) is returned. Keras reads a data source's
    number of batches once per `fit`, so a variable-length epoch needs one
    fixed count: this is the one `BPTTSequence` conditions every epoch on
    (see `draw_epoch_bounds`), which makes each epoch's rejection sampling
    cheap.

    Pure: all draws come from `rng` (it advances; nothing else is read or
    changed).

    Args:
        rng: A `numpy.random.Generator`, the only source of randomness.
        steps: Int >= 1, the positions an epoch covers in each row (the row
            length minus one: the last token is only a target).
        bptt: The base length, as in `draw_lengths`.
        p: The probability of the full base length, as in `draw_lengths`.
        s: The standard deviation, as in `draw_lengths`.
        min_length: The floor, as in `draw_lengths`.
        max_length: The ceiling, as in `draw_lengths`.
        epochs: Int >= 1, the number of simulated epochs.

    Returns:
        An int >= 1, the number of batches per epoch.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> most_frequent_batch_count(rng, steps=23_238, bptt=70)  # PTB, batch 40
    342
    """
    rng = _check_rng(rng)
    steps = check_positive_int("steps", steps)
    epochs = check_positive_int("epochs", epochs)
    distribution = _check_distribution(bptt, p, s, min_length, max_length)
    bptt = distribution[0]
    counts = np.zeros(epochs, np.int64)
    covered = np.zeros(epochs, np.int64)
    active = np.arange(epochs)
    # Enough draws per round that most epochs finish in one.
    chunk = min(2**16, 2 * math.ceil(steps / bptt) + 16)
    while active.size:
        ends = covered[active, None] + np.cumsum(
            _draw(rng, (active.size, chunk), *distribution), axis=1
        )
        done = ends[:, -1] >= steps
        first = np.argmax(ends >= steps, axis=1)
        counts[active] += np.where(done, first + 1, chunk)
        covered[active] = ends[:, -1]
        active = active[~done]
    return int(np.bincount(counts).argmax())


def draw_epoch_bounds(
    rng, steps, num_batches, bptt, p=0.95, s=5.0, min_length=None, max_length=None
):
    """One epoch's batch boundaries `[0, t_1, ..., steps]`, AWD-LSTM lengths.

    The lengths `L_i = t_{i+1} - t_i` are AWD-LSTM draws (Merity et al. 2017,
    section 4.1; see `draw_lengths`) conditioned on covering `steps` in
    exactly `num_batches` batches: the first `num_batches - 1` draws sum to
    less than `steps` and all `num_batches` reach it. The last draw is then
    cut at `steps`, so the last batch may be shorter than `min_length`.
    Rejection sampling: whole epochs of `num_batches` draws are drawn in
    blocks until one qualifies. With `num_batches` from
    `most_frequent_batch_count` a block almost always holds one, and single
    lengths keep `draw_lengths`' distribution (only one statistic of the
    whole epoch is conditioned on).

    Pure: all draws come from `rng` (it advances; nothing else is read or
    changed).

    Args:
        rng: A `numpy.random.Generator`, the only source of randomness.
        steps: Int >= 1, the positions an epoch covers in each row.
        num_batches: Int >= 1, the number of batches. It must be reachable:
            `(num_batches - 1) * min_length < steps`, and with `max_length`,
            `num_batches * max_length >= steps`.
        bptt: The base length, as in `draw_lengths`.
        p: The probability of the full base length, as in `draw_lengths`.
        s: The standard deviation, as in `draw_lengths`.
        min_length: The floor, as in `draw_lengths`.
        max_length: The ceiling, as in `draw_lengths`.

    Returns:
        An int64 NumPy array of `num_batches + 1` increasing boundaries, from
        0 to `steps`.

    Raises:
        RuntimeError: If no qualifying epoch turns up within the sampling
            budget (at most about 10^10 draws): `num_batches` is then far from
            the most frequent count, or the spread `s` is too small to reach it.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> bounds = draw_epoch_bounds(rng, steps=1000, num_batches=15, bptt=70)
    >>> len(bounds), int(bounds[0]), int(bounds[-1])
    (16, 0, 1000)
    """
    rng = _check_rng(rng)
    steps = check_positive_int("steps", steps)
    n = check_positive_int("num_batches", num_batches)
    distribution = _check_distribution(bptt, p, s, min_length, max_length)
    _, _, _, min_length, max_length = distribution
    most = math.ceil(steps / min_length)  # more, and n - 1 floors already cover
    least = 1 if max_length is None else math.ceil(steps / max_length)
    if not least <= n <= most:
        raise ValueError(
            f"Argument `num_batches` must be in [{least}, {most}]: lengths in "
            f"[min_length={min_length}, max_length={max_length}] cannot cover "
            f"steps={steps} in another number of batches. Received: "
            f"num_batches={num_batches}"
        )
    block = max(1, min(256, _CANDIDATE_DRAWS // n))
    for _ in range(_MAX_CANDIDATE_BLOCKS):
        ends = np.cumsum(_draw(rng, (block, n), *distribution), axis=1)
        before_last = ends[:, -2] if n > 1 else np.zeros(block, np.int64)
        hits = np.flatnonzero((before_last < steps) & (ends[:, -1] >= steps))
        if hits.size:
            bounds = np.concatenate([[0], ends[hits[0]]])
            bounds[-1] = steps
            return bounds
    raise RuntimeError(
        f"Could not draw {n} batch lengths covering steps={steps} after "
        f"{_MAX_CANDIDATE_BLOCKS * block} candidate epochs: num_batches={n} is "
        "too improbable for this length distribution. Use "
        "`most_frequent_batch_count` for num_batches."
    )
