"""`BPTTCallback`: per-batch learning-rate scaling and state resets for
`keras_rnnreg.data.BPTTSequence` (AWD-LSTM section 4.1)."""

import keras
import numpy as np
from keras import ops

from keras_rnnreg._keras_compat import nested_layers
from keras_rnnreg._stateful import reset_rnn_states, warn_if_states_are_not_carried
from keras_rnnreg._validation import check_bool
from keras_rnnreg.data.bptt import BPTTSequence


def _learning_rate(optimizer):
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _check_masks_padding(model, padding_id):
    """ValueError unless an embedding of `model` masks `padding_id`: padded
    steps would otherwise advance the RNN state and count in the loss."""
    for layer in nested_layers(model):
        if not isinstance(layer, keras.layers.Embedding):
            continue
        if getattr(layer, "padding_id", None) == padding_id or (
            padding_id == 0 and layer.mask_zero
        ):
            return
    raise ValueError(
        f"The training sequence pads its batches with id {padding_id} "
        f"(pad_to_multiple), but no embedding of model {model.name!r} masks "
        "that id, so padded steps would advance the RNN state and add to the "
        f"loss. Build the model with padding_id={padding_id} (language_model, "
        "TiedEmbedding, EmbeddingDropout), use mask_zero=True with "
        "padding_id=0, or train without pad_to_multiple."
    )


class BPTTCallback(keras.callbacks.Callback):
    """Per-batch learning-rate scaling and state resets for `BPTTSequence`.

    Learning rate (AWD-LSTM, Merity et al. 2017, section 4.1). With the loss
    averaged over the tokens of a batch, a fixed learning rate gives every
    token of a short batch more weight than a token of a long one. The rate of
    batch `i` is therefore scaled by its length,

        lr_i = lr * L_i / bptt,

    so each token's step weight is `lr / (batch_size * bptt)` whatever the
    length (AWD-LSTM's linear rule, after Goyal et al. 2017). The step is
    scaled, not the loss: Keras clips gradients (`clipnorm`,
    `global_clipnorm`, `clipvalue`) before the learning rate multiplies them,
    so clipping sees the unscaled gradient, as in the reference, and
    `step = lr_i * clip(g)` for SGD. For an epoch's last batch, cut short at
    the end of the stream, the scale uses its actual length (the reference
    uses the drawn one), keeping every token's weight the same.

    The rate is written into `optimizer.learning_rate` (an assignment to the
    optimizer's variable, so compiled train steps are not retraced; wrappers
    such as `LossScaleOptimizer` forward it to the inner optimizer) before
    each batch whose scale differs from the previous one, and restored after
    the last batch of each epoch (when the sequence's epoch ends, before
    validation and every callback's `on_epoch_end`), so callbacks that act
    between epochs (LR schedules, `ReduceLROnPlateau`, NT-ASGD) see and set
    the unscaled rate, which is re-read at each epoch start. The callback
    has no batch-end hook, so Keras keeps running the batch-end callbacks
    (progress bar, history) off the training loop where it does so (torch,
    JAX). The rate cannot be scaled if it is a
    `LearningRateSchedule`. One Python float product and at most one variable
    assignment per batch, from a tensor of the epoch's rates made at its
    start (no host-to-device copy per batch); on JAX the assignment makes
    Keras write its functional training state back to the variables first
    (what every callback that touches `self.model` mid-epoch costs).

    States. Keras does not reset stateful RNNs between epochs. This callback
    resets them (`reset_rnn_states`) at every epoch start, so each epoch reads
    the stream from a zero state, and before every evaluation or prediction
    it is passed to (including `fit`'s validation), whose batches then carry
    state among themselves. Stateful layers need the batch size of their
    `Input`, so a validation sequence must have the training batch size.
    On the JAX backend Keras (3.15)'s own stateful RNNs do not carry their
    states across `fit`/`evaluate` batches (the states are not part of the
    functional state its compiled steps pass on); the callback warns when it
    sees such a layer. `WeightDropLSTM`/`WeightDropGRU` carry them everywhere.

    Requirements: `steps_per_execution=1` (one learning rate per train step)
    and no `steps_per_epoch` in `fit` (batch `i` of the epoch must be batch
    `i` of the sequence); with a padded sequence (`pad_to_multiple`), an
    embedding that masks its `padding_id` (checked at the start of `fit`).

    Args:
        sequence: The training `BPTTSequence` passed to `fit`.
        scale_learning_rate: Bool, scale the rate per batch (default True).
        reset_states: Bool, reset stateful RNN states (default True).

    Example:

    >>> train = BPTTSequence(train_ids, batch_size=40, bptt=70)
    >>> model.compile(keras.optimizers.SGD(30.0, global_clipnorm=0.25), loss)
    >>> model.fit(train, epochs=10, callbacks=[BPTTCallback(train)])
    """

    def __init__(self, sequence, scale_learning_rate=True, reset_states=True):
        super().__init__()
        if not isinstance(sequence, BPTTSequence):
            raise TypeError(
                "Argument `sequence` must be a BPTTSequence (the training data "
                f"passed to fit). Received: sequence of type {type(sequence).__name__}"
            )
        self.sequence = sequence
        self.scale_learning_rate = check_bool("scale_learning_rate", scale_learning_rate)
        self.reset_states = check_bool("reset_states", reset_states)
        self._base = self._current = None
        self._in_epoch = False  # rates scaled since the epoch began
        sequence._add_epoch_end_listener(self._restore_after_last_batch)

    @property
    def base_learning_rate(self):
        """The unscaled learning rate of the epoch under way (None when the
        rate is not scaled or training has not begun): what a checkpoint
        taken between two batches should save."""
        return self._base if self.scale_learning_rate else None

    def on_train_begin(self, logs=None):
        model = self.model
        if getattr(model, "steps_per_execution", 1) != 1:
            raise ValueError(
                "BPTTCallback sets one learning rate per train step, so the "
                "model must be compiled with steps_per_execution=1. Received: "
                f"steps_per_execution={model.steps_per_execution}"
            )
        if self.reset_states:
            warn_if_states_are_not_carried(model)
        if self.sequence.pad_to_multiple is not None:
            _check_masks_padding(model, self.sequence.padding_id)
        if self.scale_learning_rate:
            optimizer = model.optimizer
            base = _learning_rate(optimizer)
            try:
                optimizer.learning_rate = base
            except (TypeError, AttributeError) as error:
                raise TypeError(
                    "BPTTCallback scales the optimizer's learning rate per "
                    "batch, so it must be a settable float, not a "
                    f"LearningRateSchedule or callable. ({error})"
                ) from error
            self._base = self._current = base

    def on_epoch_begin(self, epoch, logs=None):
        model = self.model
        if hasattr(self.sequence, "set_epoch"):
            # Keras's epoch index decides the lengths, also in a resumed fit.
            self.sequence.set_epoch(epoch)
        steps = (self.params or {}).get("steps")
        if steps is not None and steps != self.sequence.num_batches:
            raise ValueError(
                f"BPTTCallback needs each epoch to be one pass over its sequence "
                f"({self.sequence.num_batches} batches), but fit runs {steps} "
                "steps per epoch. Do not pass `steps_per_epoch`, and train on "
                "the sequence given to the callback."
            )
        if self.reset_states:
            reset_rnn_states(model)
        if self.scale_learning_rate:
            self._base = self._current = _learning_rate(model.optimizer)
            self._in_epoch = True
            self._scales = tuple(float(x) for x in self.sequence.learning_rate_scales)
            # The epoch's rates as one tensor on the device: a batch's rate is
            # assigned from it, where a Python float would be copied from host
            # memory at each batch (on a GPU, a wait for the previous step).
            rate = model.optimizer.learning_rate
            self._rates = ops.convert_to_tensor(
                np.array([self._base * scale for scale in self._scales]),
                dtype=getattr(rate, "dtype", "float32"),
            )

    def on_train_batch_begin(self, batch, logs=None):
        if self.scale_learning_rate:
            self._set(self._base * self._scales[batch], batch)

    # No on_train_batch_end: with one, Keras would run every callback's
    # batch-end hooks in the training loop, each step waiting for the
    # device to report its logs, instead of in a background thread.
    def _restore_after_last_batch(self):
        # The sequence calls this when Keras has run an epoch's last step.
        if self._in_epoch:
            self._in_epoch = False
            self._set(self._base)

    def on_epoch_end(self, epoch, logs=None):
        self._restore_after_last_batch()  # if fit stopped early or read another sequence

    def on_train_end(self, logs=None):
        self._in_epoch = False
        if self.scale_learning_rate and self._base is not None:
            self._set(self._base)

    def on_test_begin(self, logs=None):
        if self.reset_states:
            warn_if_states_are_not_carried(self.model)
            reset_rnn_states(self.model)

    def on_predict_begin(self, logs=None):
        if self.reset_states:
            reset_rnn_states(self.model)

    def _set(self, learning_rate, batch=None):
        """Writes `learning_rate` (a float); that of batch `batch` of the
        epoch from the epoch's tensor of rates."""
        # Fixed-length epochs change the rate only around the last batch, and
        # on JAX every write costs a state sync, so skip writes of the same value.
        if learning_rate != self._current:
            value = learning_rate if batch is None else self._rates[batch]
            self.model.optimizer.learning_rate = value
            self._current = learning_rate
