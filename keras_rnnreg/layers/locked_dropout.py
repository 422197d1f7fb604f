import keras

from keras_rnnreg._dropout import dropout
from keras_rnnreg._validation import check_rank, check_rate, check_seed


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class LockedDropout(keras.layers.Dropout):
    """Variational ("locked") dropout for sequences.

    Standard dropout draws a new mask at every time step. Locked dropout
    (Gal & Ghahramani, 2016; AWD-LSTM, Merity et al. 2017, section 4.2) draws
    one Bernoulli keep-mask per example and feature and reuses it at every
    time step of the forward pass:

        y[b, t, f] = x[b, t, f] * m[b, f] / (1 - rate),   m[b, f] ~ Bernoulli(1 - rate)

    This is exactly `keras.layers.Dropout` with `noise_shape=(batch, 1,
    features)`, which is what this layer is: it only fixes the noise shape,
    validates its input and keeps Keras masks flowing. AWD-LSTM uses it on the
    embedding output (0.4), between LSTM layers (0.3) and on the last LSTM
    output (0.4).

    Args:
        rate: Float in [0, 1), the fraction of features dropped (p in the
            paper). Kept features are scaled by `1 / (1 - rate)`.
        seed: Optional int, for reproducible masks.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: A 3D tensor `(batch, time, features)`.
        training: Python bool. Dropout is applied only when True; otherwise
            the input is returned unchanged.

    Example:

    >>> x = keras.ops.ones((2, 5, 3))
    >>> y = LockedDropout(0.5, seed=1)(x, training=True)
    >>> # y[b, :, f] is the same for every time step.
    """

    def __init__(self, rate, seed=None, **kwargs):
        kwargs.pop("noise_shape", None)  # fixed by the technique; tolerated in configs
        super().__init__(
            rate=check_rate("rate", rate),
            noise_shape=(None, 1, None),
            seed=check_seed(seed),
            **kwargs,
        )

    def build(self, input_shape):
        # Checked here, when a model is put together, not at its first fit.
        check_rank(type(self).__name__, "inputs", input_shape, 3)
        super().build(input_shape)

    def call(self, inputs, training=False):
        check_rank(type(self).__name__, "inputs", inputs.shape, 3)
        if training and self.rate > 0:
            return dropout(inputs, self.rate, self.noise_shape, seed=self.seed_generator)
        return inputs

    def get_config(self):
        config = super().get_config()
        config.pop("noise_shape", None)
        return config
