"""Truncated BPTT over one token stream, with AWD-LSTM's variable lengths."""

import math

import numpy as np

from keras_rnnreg._keras_compat import DataAdapter, torch_dataloader
from keras_rnnreg._validation import (
    check_bool,
    check_non_negative,
    check_positive_int,
    check_probability,
    check_real,
    check_seed,
)

_INT32_MAX = np.iinfo(np.int32).max
# Bounds on the work spent drawing one epoch's lengths (see `_draw_bounds`).
_CANDIDATE_DRAWS = 2**20
_MAX_CANDIDATE_BLOCKS = 10_000


def _token_array(tokens):
    array = np.asarray(tokens)
    if array.ndim != 1:
        raise ValueError(
            "Argument `tokens` must be a 1D sequence of token ids (one stream). "
            f"Received: tokens with shape {array.shape} ({array.ndim}D)"
        )
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            "Argument `tokens` must hold integer token ids. "
            f"Received: tokens of dtype {array.dtype}"
        )
    if array.size and (array.min() < 0 or array.max() > _INT32_MAX):
        raise ValueError(
            f"Argument `tokens` must hold ids in [0, {_INT32_MAX}]. "
            f"Received: ids from {array.min()} to {array.max()}"
        )
    return array


def batchify(tokens, batch_size):
    """Cut one token stream into `batch_size` contiguous rows.

    Row `b` is the `b`-th of `batch_size` equal slices of the stream,

        rows[b, j] = tokens[b * n + j],   n = len(tokens) // batch_size,

    and the last `len(tokens) % batch_size` tokens are dropped, as in the
    AWD-LSTM reference (Merity et al. 2017). Batch `i` of truncated BPTT is
    then a column block `rows[:, t_i:t_i + L_i]`: each row of the batch
    continues the same row of the batch before it, so the state a stateful RNN
    keeps for row `b` at the end of one batch is the right initial state for
    row `b` of the next, and reading the rows in pieces equals one pass over
    each row with gradients truncated at the piece boundaries.

    Args:
        tokens: 1D array-like of non-negative integer token ids.
        batch_size: Int >= 1, the number of rows (the batch dimension).

    Returns:
        An int32 NumPy array of shape `(batch_size, len(tokens) // batch_size)`.

    Example:

    >>> batchify(np.arange(10), 3)
    array([[0, 1, 2],
           [3, 4, 5],
           [6, 7, 8]], dtype=int32)
    """
    batch_size = check_positive_int("batch_size", batch_size)
    array = _token_array(tokens)
    row_length = array.size // batch_size
    if row_length < 1:
        raise ValueError(
            f"Argument `tokens` is too short for batch_size={batch_size}: "
            f"{array.size} tokens cannot fill {batch_size} rows of at least "
            f"one token. Pass at least {batch_size} tokens or a smaller "
            "`batch_size`."
        )
    rows = array[: row_length * batch_size].reshape(batch_size, row_length)
    return rows.astype("int32")


class BPTTSequence(DataAdapter):
    """Language-model batches for truncated BPTT, fixed or variable length.

    The stream is cut into `batch_size` contiguous rows (`batchify`) and read
    left to right in column blocks; batch `i` is

        inputs  = rows[:, t_i     : t_i + L_i]
        targets = rows[:, t_i + 1 : t_i + L_i + 1]    (the next token)

    with `t_0 = 0` and `t_{i+1} = t_i + L_i`, so an epoch predicts every token
    of every row after the first exactly once, in order; a stateful RNN
    carries its state from one batch to the next (see `BPTTCallback`, which
    also resets it at each epoch start).

    Variable length (AWD-LSTM, Merity et al. 2017, section 4.1; hyper-
    parameters from section 5). A fixed window of `bptt` steps starts every
    window at a multiple of `bptt`, so the token at such a position never gets
    gradient from the steps before it. Each batch's length is drawn instead:

        base  = bptt        with probability p,   bptt / 2   otherwise
        L     = max(min_length, round(N(base, s)))             (a floor)
        L     = min(L, max_length)        (only if `max_length` is given)

    and the last batch of an epoch ends at the end of the rows (it is cut to
    what is left, which may be shorter than `min_length`). AWD-LSTM uses
    bptt = 70, p = 0.95, s = 5 and a floor of 5. The reference truncates the
    normal draw toward zero; rounding keeps E[L] = p bptt + (1 - p) bptt / 2.
    Lengths are redrawn at the end of every epoch (`on_epoch_end`). With
    `variable_length=False` every batch is `bptt` long except the last, which
    is what is left: the fixed-length pipeline used for validation and test.
    Pair variable lengths with `BPTTCallback`, which scales the learning rate
    of batch `i` by `L_i / bptt`.

    A fixed number of batches per epoch. Keras reads `num_batches` once per
    `fit`, while the number of draws needed to cover the rows varies from
    epoch to epoch. So `num_batches` is fixed when the sequence is made (the
    most frequent count over simulated epochs) and each epoch's lengths are
    AWD draws conditioned on covering the rows in exactly that many batches:
    whole epochs are drawn until one ends within batch `num_batches`, and its
    last batch is cut at the end of the rows. The conditioning is on one
    statistic of the whole epoch; single lengths keep the distribution above
    (tested for its mean and spread).

    Why a Keras `DataAdapter` and not a `keras.utils.PyDataset`: Keras adapts
    a PyDataset for TensorFlow by inferring the tensor spec from its first two
    batches, which fixes the time axis when those happen to have the same
    length and then fails on the first batch that does not (always, for
    fixed-length BPTT's shorter last batch; see keras-team/keras#19124); and
    `fit` shuffles a PyDataset's batches unless told `shuffle=False`, which
    would break the state carry. This class declares the time axis open
    (one traced train function on TensorFlow) and always yields batches in
    order, whatever `fit`'s `shuffle` says.

    Retracing and compilation. TensorFlow traces the train function once for
    all lengths (the time axis is `None` in the dataset's spec). JAX compiles
    the train step once per distinct length and caches it; lengths are
    integers in [1, longest draw], so the count is bounded and stops growing:
    for PTB (batch 40, bptt 70, s 5) 38 compilations in the first epoch, 66
    by epoch 20, 94 by epoch 750 (every length from 1 to 94). `max_length`
    makes the bound hard. PyTorch runs eagerly. See docs/bptt.md.

    Args:
        tokens: 1D array-like of non-negative integer token ids (one stream,
            e.g. a corpus split with an end-of-sentence id after each line).
        batch_size: Int >= 1, the number of contiguous rows.
        bptt: Int >= 1, the (base) sequence length.
        variable_length: Bool. True draws lengths as above; False makes every
            batch `bptt` long except the last.
        p: Float in [0, 1], the probability of the full base length `bptt`
            (else `bptt / 2`). Used only when `variable_length` is True.
        s: Float >= 0, the standard deviation of the length around its base.
        min_length: Int in [1, bptt], the floor on drawn lengths. None (the
            default) is AWD-LSTM's 5, or `bptt` if that is smaller.
        max_length: Optional int >= bptt, a ceiling on drawn lengths; None
            (the default, as in AWD-LSTM) leaves the normal's tail uncut.
        seed: Optional int for reproducible lengths. None takes a seed from
            NumPy's global generator, so `keras.utils.set_random_seed` makes
            runs reproducible.
        token_weights: Bool. True adds per-token sample weights
            `L_i * num_batches / (row_length - 1)`, under which the loss and
            metrics `evaluate` reports are means over tokens (exp of the loss
            is the exact perplexity); without them Keras weighs a short last
            batch as much as a full one. Meant for evaluation sequences: in
            training the weights would scale the gradient, the job
            `BPTTCallback` does on the step.

    Attributes:
        rows: The batchified stream, int32 `(batch_size, row_length)`.
        num_batches: Batches per epoch (fixed for the life of the sequence).
        lengths: The current epoch's batch lengths (int array, sums to
            `row_length - 1`).

    Example:

    >>> train = BPTTSequence(train_ids, batch_size=40, bptt=70, seed=0)
    >>> valid = BPTTSequence(valid_ids, 40, 70, variable_length=False,
    ...                      token_weights=True)
    >>> model.fit(train, validation_data=valid, epochs=10,
    ...           callbacks=[BPTTCallback(train)])
    """

    def __init__(
        self,
        tokens,
        batch_size,
        bptt,
        variable_length=True,
        p=0.95,
        s=5.0,
        min_length=None,
        max_length=None,
        seed=None,
        token_weights=False,
    ):
        self._batch_size = check_positive_int("batch_size", batch_size)
        self.bptt = check_positive_int("bptt", bptt)
        self.variable_length = check_bool("variable_length", variable_length)
        self.p = check_probability("p", p)
        self.s = check_non_negative("s", check_real("s", s))
        if min_length is None:
            min_length = min(5, self.bptt)
        self.min_length = check_positive_int("min_length", min_length)
        if self.min_length > self.bptt:
            raise ValueError(
                f"Argument `min_length` must be <= bptt={self.bptt} (a floor "
                f"under lengths drawn around bptt). Received: min_length={min_length}"
            )
        if max_length is not None:
            max_length = check_positive_int("max_length", max_length)
            if max_length < self.bptt:
                raise ValueError(
                    f"Argument `max_length` must be None or >= bptt={self.bptt} "
                    f"(a ceiling above the base length). Received: "
                    f"max_length={max_length}"
                )
        self.max_length = max_length
        self.seed = check_seed(seed)
        self.token_weights = check_bool("token_weights", token_weights)

        array = _token_array(tokens)
        if array.size < 2 * self._batch_size:
            raise ValueError(
                f"Argument `tokens` is too short for batch_size={self._batch_size}: "
                f"each of the {self._batch_size} rows needs at least 2 tokens "
                f"(an input and its next-token target), so at least "
                f"{2 * self._batch_size} tokens are needed. Received: "
                f"{array.size} tokens"
            )
        self.rows = batchify(array, self._batch_size)
        # Positions with a next-token target in each row: what an epoch covers.
        self._steps = self.rows.shape[1] - 1

        if seed is None:
            seed = int(np.random.randint(2**31 - 1))
        self._rng = np.random.default_rng(seed)
        if self.variable_length:
            self._num_batches = self._most_frequent_count(
                np.random.default_rng([seed, 1])  # apart from the epochs' stream
            )
        else:
            self._num_batches = math.ceil(self._steps / self.bptt)
        self._set_bounds(self._draw_bounds())

    # ------------------------------------------------------------- lengths
    def _draw(self, rng, size):
        """Independent AWD lengths (no end-of-stream cut), shape `size`."""
        if not self.variable_length:
            return np.full(size, self.bptt, dtype=np.int64)
        base = np.where(rng.random(size) < self.p, self.bptt, self.bptt / 2)
        lengths = np.rint(rng.normal(base, self.s))
        lengths = np.maximum(lengths, self.min_length)
        if self.max_length is not None:
            lengths = np.minimum(lengths, self.max_length)
        return lengths.astype(np.int64)

    def _most_frequent_count(self, rng, epochs=64):
        """The mode over simulated epochs of the number of draws covering a row."""
        counts = np.zeros(epochs, np.int64)
        covered = np.zeros(epochs, np.int64)
        active = np.arange(epochs)
        chunk = min(2**16, 2 * math.ceil(self._steps / self.bptt) + 16)
        while active.size:
            ends = covered[active, None] + np.cumsum(
                self._draw(rng, (active.size, chunk)), axis=1
            )
            done = ends[:, -1] >= self._steps
            first = np.argmax(ends >= self._steps, axis=1)
            counts[active] += np.where(done, first + 1, chunk)
            covered[active] = ends[:, -1]
            active = active[~done]
        return int(np.bincount(counts).argmax())

    def _draw_bounds(self):
        """One epoch's batch boundaries `[0, t_1, ..., steps]`.

        Rejection sampling: whole epochs of `num_batches` draws are drawn in
        blocks until one covers the rows with its last draw and not before;
        that draw is then cut at the end. `num_batches` is the most frequent
        count, so a block of candidates almost always holds one.
        """
        n, steps = self.num_batches, self._steps
        if not self.variable_length:
            return np.minimum(np.arange(n + 1) * self.bptt, steps)
        block = max(1, min(256, _CANDIDATE_DRAWS // n))
        for _ in range(_MAX_CANDIDATE_BLOCKS):
            ends = np.cumsum(self._draw(self._rng, (block, n)), axis=1)
            before_last = ends[:, -2] if n > 1 else np.zeros(block, np.int64)
            hits = np.flatnonzero((before_last < steps) & (ends[:, -1] >= steps))
            if hits.size:
                bounds = np.concatenate([[0], ends[hits[0]]])
                bounds[-1] = steps
                return bounds
        raise RuntimeError(  # unreachable unless the count estimate is broken
            f"Could not draw {n} batch lengths covering {steps} steps "
            f"after {_MAX_CANDIDATE_BLOCKS * block} tries."
        )

    def _set_bounds(self, bounds):
        # One object swapped at once: a batch generator that is still running
        # (tf.data prefetches) keeps reading the epoch it started with.
        self._bounds = bounds

    @property
    def num_batches(self):
        return self._num_batches

    @property
    def lengths(self):
        return np.diff(self._bounds)

    @property
    def learning_rate_scales(self):
        """The current epoch's `L_i / bptt`, the factors `BPTTCallback` applies."""
        return self.lengths / self.bptt

    # ----------------------------------------------------------- batches
    def _batch(self, bounds, index):
        start, end = int(bounds[index]), int(bounds[index + 1])
        inputs = np.ascontiguousarray(self.rows[:, start:end])
        targets = np.ascontiguousarray(self.rows[:, start + 1 : end + 1])
        if not self.token_weights:
            return inputs, targets
        # Keras averages a batch's per-token losses, then averages batches
        # with equal weight; w_i = L_i * num_batches / steps turns that into
        # sum_i L_i loss_i / steps, the mean over the epoch's tokens.
        weight = (end - start) * self.num_batches / self._steps
        return inputs, targets, np.full(targets.shape, weight, "float32")

    def _batches(self):
        bounds = self._bounds
        for index in range(len(bounds) - 1):
            yield self._batch(bounds, index)

    def __len__(self):
        return self.num_batches

    def __getitem__(self, index):
        """`(inputs, targets)` of batch `index` of the current epoch (and the
        sample weights, with `token_weights=True`)."""
        if not 0 <= index < self.num_batches:
            raise IndexError(
                f"Batch index {index} out of range for {self.num_batches} batches"
            )
        return self._batch(self._bounds, index)

    def __iter__(self):
        return self._batches()

    def on_epoch_end(self):
        """Draws the next epoch's lengths (Keras calls it after every epoch
        and once before the first). A no-op for fixed-length sequences."""
        if self.variable_length:
            self._set_bounds(self._draw_bounds())

    # ------------------------------------------------ Keras DataAdapter API
    def get_numpy_iterator(self):
        return self._batches()

    def get_jax_iterator(self):
        return self._batches()  # NumPy arrays are what JAX's trainer prefers

    def get_torch_dataloader(self):
        return torch_dataloader(self._batches())

    def get_tf_dataset(self):
        import tensorflow as tf

        # Both axes open: the batch axis as Keras leaves it for distribution,
        # the time axis so that every length runs through one trace.
        spec = tf.TensorSpec(shape=(None, None), dtype=tf.int32)
        signature = (spec, spec)
        if self.token_weights:
            signature += (tf.TensorSpec(shape=(None, None), dtype=tf.float32),)
        dataset = tf.data.Dataset.from_generator(
            self._batches, output_signature=signature
        )
        return dataset.prefetch(tf.data.AUTOTUNE)

    @property
    def batch_size(self):
        return self._batch_size

    @property
    def has_partial_batch(self):
        return False  # along the batch axis; the time axis is what varies

    @property
    def partial_batch_size(self):
        return None
