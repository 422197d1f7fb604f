"""Token-level cross-entropy for language-model logits."""

import weakref

import keras
from keras import ops

from keras_rnnreg._lstm.torch_core import is_tracing as torch_is_tracing
from keras_rnnreg._validation import check_bool


#: The target id of a step that is not a token (padding): its loss is 0 and
#: `Perplexity` leaves it out. `BPTTSequence(pad_to_multiple=k)` pads with it.
IGNORED_TARGET = -1


@keras.saving.register_keras_serializable(package="keras_rnnreg")
def token_cross_entropy(y_true, y_pred, from_logits=True):
    """Per-token cross-entropy −log p(y_t), shape `y_true.shape`.

    Equal to `keras.losses.sparse_categorical_crossentropy` over the last
    axis, but computed on the logits flattened to `(tokens, vocabulary)`:
    with (batch, time, vocabulary) logits Keras's torch backend otherwise
    runs its log-softmax over a non-contiguous view, which made a paper-size
    language model train markedly slower on a GPU (measured:
    docs/benchmarks.md, "Token loss").

    A negative target (`IGNORED_TARGET`, padding) gets loss 0; the model's
    mask of padded steps then makes Keras average over the real tokens.

    Args:
        y_true: Integer targets of shape `S` (or `S + (1,)`).
        y_pred: Scores of shape `S + (vocabulary,)`: logits, or
            probabilities with `from_logits=False`.
        from_logits: Bool, whether `y_pred` are logits.

    Returns:
        A float tensor of shape `S`.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.convert_to_tensor(y_true)
    shape = ops.shape(y_pred)
    # (batch, time, 1) targets flatten like (batch, time) ones.
    flat_true = ops.reshape(y_true, (-1,))
    flat_pred = ops.reshape(y_pred, (-1, shape[-1]))
    # TensorFlow rejects an out-of-range class: compute padding's loss for
    # class 0 and zero it.
    ignored = ops.less(flat_true, 0)
    losses = ops.sparse_categorical_crossentropy(
        ops.where(ignored, ops.zeros_like(flat_true), flat_true),
        flat_pred,
        from_logits=from_logits,
    )
    losses = ops.where(ignored, ops.zeros_like(losses), losses)
    return ops.reshape(losses, shape[:-1])


# The per-token losses of the last `TokenCrossEntropy` call, for `Perplexity`
# on the same (y_true, y_pred) objects: in an eager torch train step the
# metric would otherwise run a second full log-softmax over the vocabulary
# (measured: docs/benchmarks.md, "The thin torch path"). Compiled
# backends merge the two computations themselves, and their traced tensors
# must not outlive the trace, so nothing is kept there.
_last_losses = None


def _eager_torch():
    return keras.backend.backend() == "torch" and not torch_is_tracing()


def _remember(y_true, y_pred, from_logits, losses):
    global _last_losses
    try:
        refs = (weakref.ref(y_true), weakref.ref(y_pred))
    except TypeError:  # lists and other inputs without weak references
        _last_losses = None
        return
    _last_losses = (*refs, from_logits, ops.stop_gradient(losses))


def recalled_token_cross_entropy(y_true, y_pred, from_logits):
    """The last `TokenCrossEntropy` call's per-token losses (no gradient) if
    it was given these very objects `y_true` and `y_pred`, else None."""
    if _last_losses is None:
        return None
    true_ref, pred_ref, logits, losses = _last_losses
    if true_ref() is y_true and pred_ref() is y_pred and logits == from_logits:
        return losses
    return None


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class TokenCrossEntropy(keras.losses.Loss):
    """Cross-entropy of next-token logits, averaged over tokens.

    The negative log-likelihood per token of a language model, as in all the
    papers this library reproduces (AWD-LSTM, Merity et al. 2017, §5; its
    exponential is the perplexity). `y_pred` holds `(batch, time,
    vocabulary)` scores and `y_true` `(batch, time)` integer targets. The
    value equals `keras.losses.SparseCategoricalCrossentropy` with the same
    arguments, `sample_weight` and Keras masks included; only the layout of
    the computation differs (see `token_cross_entropy`).

    Args:
        from_logits: Bool, whether `y_pred` are logits (default True, what
            the language models of `keras_rnnreg.models` output).
        reduction: As for any Keras loss (default `"sum_over_batch_size"`:
            the mean over tokens).
        name: Optional name.
        dtype: The dtype the loss is computed in (default float32, also
            under mixed precision).

    Example:

    ```python
    model.compile(optimizer="sgd", loss=TokenCrossEntropy(),
                  metrics=[keras_rnnreg.metrics.Perplexity()])
    ```
    """

    def __init__(
        self,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="token_cross_entropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = check_bool("from_logits", from_logits)

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Keras converts both before `call`; the metric sees the originals.
        self._given = (y_true, y_pred) if _eager_torch() else None
        try:
            return super().__call__(y_true, y_pred, sample_weight=sample_weight)
        finally:
            self._given = None

    def call(self, y_true, y_pred):
        losses = token_cross_entropy(y_true, y_pred, from_logits=self.from_logits)
        if getattr(self, "_given", None) is not None:
            _remember(*self._given, self.from_logits, losses)
        return losses

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}
