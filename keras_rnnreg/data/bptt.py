"""Truncated BPTT over one token stream, with AWD-LSTM's variable lengths."""

import math
import weakref

import numpy as np
from keras import ops

from keras_rnnreg._keras_compat import DataAdapter, torch_dataloader
from keras_rnnreg._validation import check_bool, check_int, check_positive_int, check_seed
from keras_rnnreg.data.lengths import (
    _check_distribution,
    draw_epoch_bounds,
    most_frequent_batch_count,
)
from keras_rnnreg.losses import IGNORED_TARGET

_INT32_MAX = np.iinfo(np.int32).max
#: The input id `BPTTSequence(pad_to_multiple=k)` pads with unless told
#: otherwise: no word has it.
DEFAULT_PADDING_ID = -1


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
    return _batchify_validated(_token_array(tokens), batch_size)


def _batchify_validated(array, batch_size):
    """`batchify` of an array `_token_array` has already checked."""
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
    carries its state from one batch to the next (see
    `keras_rnnreg.callbacks.BPTTCallback`, which also resets it at each epoch
    start and scales the learning rate of batch `i` by `L_i / bptt`).

    Variable length (AWD-LSTM, Merity et al. 2017, section 4.1). A fixed
    window never gives the token at a multiple of `bptt` gradient from the
    steps before it, so each batch's length is drawn instead
    (`keras_rnnreg.data.draw_lengths`):

        base  = bptt        with probability p,   bptt / 2   otherwise
        L     = max(min_length, round(N(base, s)))             (a floor)
        L     = min(L, max_length)        (only if `max_length` is given)

    AWD-LSTM uses bptt = 70, p = 0.95, s = 5 and a floor of 5 (section 5).
    The number of batches per epoch is fixed when the sequence is made (the
    most frequent count, `most_frequent_batch_count`), and each epoch's
    lengths are draws conditioned on covering the rows in exactly that many
    batches (`draw_epoch_bounds`), the last one cut at the end of the rows.
    Lengths are redrawn at the end of every epoch (`on_epoch_end`), from the
    sequence's own generator. With `variable_length=False` every batch is
    `bptt` long except the last, which is what is left: the pipeline for
    validation and test.

    Padding (`pad_to_multiple=k`). JAX compiles the train step once per
    input shape, so every distinct length costs a compilation (up to about
    90 in an AWD-LSTM run). With `k`, a batch of length `L_i` is padded at
    its end to the next multiple of `k`: inputs with `padding_id`, targets
    with -1, which `TokenCrossEntropy` and `Perplexity` ignore. The lengths,
    their distribution and `learning_rate_scales` are unchanged; only the
    shapes are bucketed. The model must mask the padding
    (an embedding with the same `padding_id`, e.g.
    `language_model(..., padding_id=-1)`, or `mask_zero=True` with
    `padding_id=0` when id 0 is reserved): masked steps then add no loss,
    count in no metric, AR/TAR term or gradient, and leave a stateful RNN's
    state as it was at step `L_i`, so training is the unpadded training.

    Design notes (why a Keras `DataAdapter` rather than a `PyDataset`, the
    fixed batch count, retracing and compilation per backend): docs/bptt.md.

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
            It also bounds the number of compilations on JAX.
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
        pad_to_multiple: Optional int >= 1; pads each batch's time axis to
            the next multiple of it (see Padding above). None (the default)
            pads nothing.
        padding_id: Int, the input id of padded steps (default -1, which
            no word has; what `language_model(padding_id=-1)` masks). Used
            only with `pad_to_multiple`.

    Attributes:
        rows: The batchified stream, int32 `(batch_size, row_length)`.
        num_batches: Batches per epoch (fixed for the life of the sequence),
            or in an epoch resumed with `resume_at`, the batches left in it.
        lengths: The current epoch's batch lengths (int array, sums to
            `row_length - 1`; from the resumed batch on, after `resume_at`).
        learning_rate_scales: The current epoch's `lengths / bptt`.

    Example:

    >>> train = BPTTSequence(train_ids, batch_size=40, bptt=70, seed=0)
    >>> valid = BPTTSequence(valid_ids, 40, 70, variable_length=False,
    ...                      token_weights=True)
    >>> model.fit(train, validation_data=valid, epochs=10,
    ...           callbacks=[BPTTCallback(train)])
    """

    def __init__(
        self, tokens, batch_size, bptt, variable_length=True, p=0.95, s=5.0,
        min_length=None, max_length=None, seed=None, token_weights=False,
        pad_to_multiple=None, padding_id=DEFAULT_PADDING_ID,
    ):
        self._batch_size = check_positive_int("batch_size", batch_size)
        self.variable_length = check_bool("variable_length", variable_length)
        self.bptt, self.p, self.s, self.min_length, self.max_length = (
            _check_distribution(bptt, p, s, min_length, max_length)
        )
        self.seed = check_seed(seed)
        self.token_weights = check_bool("token_weights", token_weights)
        if pad_to_multiple is not None:
            pad_to_multiple = check_positive_int("pad_to_multiple", pad_to_multiple)
        self.pad_to_multiple = pad_to_multiple
        self.padding_id = check_int("padding_id", padding_id)

        array = _token_array(tokens)
        if array.size < 2 * self._batch_size:
            raise ValueError(
                f"Argument `tokens` is too short for batch_size={self._batch_size}: "
                f"each of the {self._batch_size} rows needs at least 2 tokens "
                f"(an input and its next-token target), so at least "
                f"{2 * self._batch_size} tokens are needed. Received: "
                f"{array.size} tokens"
            )
        self.rows = _batchify_validated(array, self._batch_size)
        # Positions with a next-token target in each row: what an epoch covers.
        self._steps = self.rows.shape[1] - 1

        if seed is None:
            seed = int(np.random.randint(2**31 - 1))
        self._seed = seed
        self._epoch = 0
        self._resume = None  # (epoch, first batch) after resume_at
        self._epoch_end_listeners = []  # weak references to callables
        if self.variable_length:
            self._num_batches = most_frequent_batch_count(
                np.random.default_rng([seed, 1]),  # apart from the epochs' stream
                self._steps,
                *self._distribution,
            )
        else:
            self._num_batches = math.ceil(self._steps / self.bptt)
        self._set_bounds(self._draw_bounds(0))

    # ------------------------------------------------------------- lengths
    @property
    def _distribution(self):
        return self.bptt, self.p, self.s, self.min_length, self.max_length

    def _draw_bounds(self, epoch):
        """Epoch `epoch`'s boundaries `[0, t_1, ..., steps]`."""
        if not self.variable_length:
            return np.minimum(np.arange(self._num_batches + 1) * self.bptt, self._steps)
        # One generator per epoch, seeded [seed, 2, epoch]: an epoch's lengths
        # depend on its index alone, so a run resumed at epoch k draws what
        # the uninterrupted run drew.
        return draw_epoch_bounds(
            np.random.default_rng([self._seed, 2, epoch]),
            self._steps,
            self._num_batches,
            *self._distribution,
        )

    def _set_bounds(self, bounds):
        # One object swapped at once: a batch generator that is still running
        # (tf.data prefetches) keeps reading the epoch it started with.
        self._bounds = bounds

    def _serve_epoch(self, epoch):
        bounds = self._draw_bounds(epoch)
        if self._resume is not None and self._resume[0] == epoch:
            bounds = bounds[self._resume[1]:]
        self._set_bounds(bounds)

    @property
    def num_batches(self):
        return len(self._bounds) - 1

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
        if self.pad_to_multiple is not None:
            padding = ((0, 0), (0, -(end - start) % self.pad_to_multiple))
            inputs = np.pad(inputs, padding, constant_values=self.padding_id)
            # -1 rather than relying on the model's mask alone: on JAX the
            # mask does not reach a train step's metrics.
            targets = np.pad(targets, padding, constant_values=IGNORED_TARGET)
        if not self.token_weights:
            return inputs, targets
        return inputs, targets, np.full(targets.shape, self._token_weight(start, end), "float32")

    def _token_weight(self, start, end):
        # Keras averages a batch's per-token losses, then averages batches
        # with equal weight; w_i = L_i * num_batches / steps turns that into
        # sum_i L_i loss_i / steps, the mean over the epoch's tokens.
        return (end - start) * self._num_batches / self._steps

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

    @property
    def epoch(self):
        """The index of the epoch whose lengths the sequence now serves."""
        return self._epoch

    def set_epoch(self, epoch):
        """Serves epoch `epoch`'s lengths (a function of the seed and the
        epoch alone). `BPTTCallback` calls it at each epoch start, so that a
        `fit(initial_epoch=k)` resuming a run reads the lengths of epoch k."""
        epoch = check_positive_int("epoch", epoch, minimum=0)
        if epoch != self._epoch:
            self._epoch = epoch
            if self.variable_length or self._resume is not None:
                self._serve_epoch(epoch)

    def resume_at(self, epoch, batch):
        """Serves epoch `epoch` from its batch `batch` on: a run resumed in
        the middle of an epoch reads the rest of that epoch, batch for batch
        what the uninterrupted run read, and `num_batches`, `lengths` and
        `learning_rate_scales` describe the batches left. Other epochs are
        served whole. Pass it to a `fit(initial_epoch=epoch, epochs=epoch + 1)`
        (Keras fixes the batch count of a `fit`), then train on from
        `epoch + 1` in a second `fit`; `keras-rnnreg train --resume` does so.

        Args:
            epoch: Int >= 0, the epoch to resume.
            batch: Int in [0, batches per epoch), the first batch to serve.
        """
        epoch = check_positive_int("epoch", epoch, minimum=0)
        batch = check_positive_int("batch", batch, minimum=0)
        if batch >= self._num_batches:
            raise ValueError(
                f"Argument `batch` must be in [0, {self._num_batches}) (the "
                f"batches per epoch). Received: batch={batch}"
            )
        self._resume = (epoch, batch)
        self._epoch = epoch
        self._serve_epoch(epoch)

    def on_epoch_end(self):
        """Moves to the next epoch's lengths (Keras calls it after every
        epoch). Fixed-length sequences keep theirs."""
        self._notify_epoch_end()
        self.set_epoch(self._epoch + 1)

    def _add_epoch_end_listener(self, method):
        """Calls the bound method `method` at every `on_epoch_end` while its
        object lives. Keras's epoch iterator calls `on_epoch_end` right
        after an epoch's last step, before validation and the callbacks'
        `on_epoch_end`: `BPTTCallback` restores the unscaled rate there
        without an `on_train_batch_end` (which would turn off Keras's
        asynchronous batch-end callbacks)."""
        self._epoch_end_listeners.append(weakref.WeakMethod(method))

    def _notify_epoch_end(self):
        alive = [ref for ref in self._epoch_end_listeners if ref() is not None]
        self._epoch_end_listeners = alive
        for ref in alive:
            ref()()

    # ------------------------------------------------ Keras DataAdapter API
    def get_numpy_iterator(self):
        return self._batches()

    def get_jax_iterator(self):
        return self._batches()  # NumPy arrays are what JAX's trainer prefers

    def get_torch_dataloader(self):
        return torch_dataloader(self._device_batches())

    def _device_batches(self):
        """The batches as torch tensors, each a slice of one copy of `rows`
        on Keras's device (made once per epoch).

        Keras's torch trainer would convert each NumPy batch on its own: on
        a GPU, a copy from pageable host memory per batch, which makes the
        host wait for the GPU to finish the step before it. Slicing a copy
        already on the device is queued like the step's own kernels. The
        same batches as `_batch` (tests/test_bptt.py compares them).
        """
        import torch

        rows = ops.convert_to_tensor(self.rows)
        bounds = self._bounds
        for index in range(len(bounds) - 1):
            start, end = int(bounds[index]), int(bounds[index + 1])
            inputs = rows[:, start:end]
            targets = rows[:, start + 1 : end + 1]
            if self.pad_to_multiple is not None:
                padding = (0, -(end - start) % self.pad_to_multiple)
                inputs = torch.nn.functional.pad(inputs, padding, value=self.padding_id)
                targets = torch.nn.functional.pad(targets, padding, value=IGNORED_TARGET)
            else:
                inputs, targets = inputs.contiguous(), targets.contiguous()
            if not self.token_weights:
                yield inputs, targets
                continue
            weight = self._token_weight(start, end)
            yield inputs, targets, torch.full(
                targets.shape, weight, dtype=torch.float32, device=targets.device
            )

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
