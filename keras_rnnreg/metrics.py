"""Perplexity: the language-model metric."""

import keras
from keras import ops

from keras_rnnreg._keras_compat import keras_mask
from keras_rnnreg._validation import check_bool
from keras_rnnreg.losses import recalled_token_cross_entropy, token_cross_entropy


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class Perplexity(keras.metrics.MeanMetricWrapper):
    """exp of the mean token cross-entropy over everything seen.

    Perplexity = exp((1/N) Σ_t −log p(y_t)), the measure every table of the
    papers reports (AWD-LSTM, Merity et al. 2017, §5). The mean runs over
    tokens, not batches (Keras's `Mean` would average each row over time
    first, so that batches of different lengths weighed their tokens
    differently): each token's cross-entropy is weighted by its
    `sample_weight` if any, by the Keras mask of `y_pred`, and by 0 where
    the target is negative (`keras_rnnreg.losses.IGNORED_TARGET`, padding),
    the weighted sums are accumulated across batches, and the exponential is
    taken of the final mean. Passed in `metrics=` (unweighted, as Keras
    gives those no sample weights), it is the exact perplexity of the data
    seen, for any batch lengths.

    As a `weighted_metrics=` entry on `BPTTSequence(..., token_weights=True)`
    data, the weights (made for Keras's loss, which averages within each
    batch and then over batches) would give the tokens of a short last
    batch less weight; exp(`val_loss`) and the unweighted metric are exact.

    Args:
        from_logits: Bool, whether `y_pred` are logits (default True).
        name: Optional name (default "perplexity").
        dtype: Optional dtype of the accumulators.

    Example:

    >>> metric = Perplexity()
    >>> metric.update_state([[1, 0]], keras.ops.zeros((1, 2, 4)))  # uniform
    >>> float(metric.result())  # the vocabulary size
    4.0
    """

    def __init__(self, from_logits=True, name="perplexity", dtype=None):
        super().__init__(
            token_cross_entropy,
            name=name,
            dtype=dtype,
            from_logits=check_bool("from_logits", from_logits),
        )
        self.from_logits = from_logits
        self._direction = "down"

    def update_state(self, y_true, y_pred, sample_weight=None):
        # Keras's Mean averages each row over time before summing rows, so a
        # batch of 35 tokens would count as much as one of 70, and padding
        # would change the weights; the sums here run over tokens.
        values = recalled_token_cross_entropy(y_true, y_pred, self.from_logits)
        if values is None:
            # No gradient is needed: on torch the metric would otherwise
            # record its own autograd graph in the train step.
            values = token_cross_entropy(
                y_true,
                ops.stop_gradient(ops.convert_to_tensor(y_pred)),
                from_logits=self.from_logits,
            )
        values = ops.cast(values, self.dtype)
        # Padded steps (target < 0) never count, whether or not their mask
        # arrived (on JAX a train step's metrics get none).
        weights = ops.cast(
            ops.greater_equal(ops.reshape(ops.convert_to_tensor(y_true), ops.shape(values)), 0),
            self.dtype,
        )
        mask = keras_mask(y_pred)
        if mask is not None:
            weights = weights * ops.cast(ops.reshape(mask, ops.shape(values)), self.dtype)
        if sample_weight is not None:
            sample_weight = ops.cast(sample_weight, self.dtype)
            while len(sample_weight.shape) < len(values.shape):
                sample_weight = ops.expand_dims(sample_weight, -1)
            if len(sample_weight.shape) > len(values.shape):  # (batch, time, 1)
                sample_weight = ops.reshape(sample_weight, ops.shape(values))
            weights = weights * sample_weight
        self.total.assign_add(ops.sum(values * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.exp(super().result())

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "from_logits": self.from_logits}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
