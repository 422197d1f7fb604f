"""Noisin on Keras's LSTM and GRU: fresh unbiased noise on the emitted state at every step.

Dieng, Ranganath, Altosaar & Blei (2018), *Noisin: Unbiased Regularization for
Recurrent Neural Networks*, sections 3-5 and Algorithm 1. The noise of the
whole sequence is drawn before the loop, one `keras.random` call of shape
(batch, time, units) (on JAX a draw inside the loop's scan would repeat at
every step; see `noisin_cell`), and the LSTM engine applies its slice ε_t
at step t.
"""

import keras

from keras_rnnreg._lstm import EngineRNN
from keras_rnnreg._validation import check_rate
from keras_rnnreg.layers.noisin_cell import _check_noisin_arguments


def _check(noise, noise_level, mode, weight_dropout, seed, kwargs):
    """The validated Noisin settings, seed and weight dropout of `NoisinLSTM`
    and `NoisinGRU`; the noise's shape parameters are popped from `kwargs`."""
    noise, noise_level, mode, seed, noise_params = _check_noisin_arguments(
        noise, noise_level, mode, seed, kwargs
    )
    if kwargs.get("use_cudnn") is True:
        raise ValueError(
            "Noisin draws fresh noise at every time step, which no cuDNN kernel "
            "computes, so a Noisin layer cannot promise use_cudnn=True. Received: "
            "use_cudnn=True; pass 'auto' (the fast paths that apply; docs/gpu.md) "
            "or False (the per-step loop)."
        )
    rate = check_rate("weight_dropout", weight_dropout)
    return (noise, noise_level, mode, noise_params), seed, rate


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class NoisinLSTM(EngineRNN, keras.layers.LSTM):
    """An LSTM trained with Noisin, optionally weight-dropped (AWD-LSTM + Noisin).

    Noisin (Dieng et al. 2018, Algorithm 1) replaces the LSTM's emitted state
    h_t = o_t ⊙ tanh(c_t) at every step by

        z_t = o_t ⊙ tanh(c_t) ⊙ ε_t,  E[ε_t] = 1    (multiplicative, Eq. 14)
        z_t = o_t ⊙ tanh(c_t) + ε_t,  E[ε_t] = 0    (additive, Eq. 13)

    with fresh ε_t for every step, example and unit; z_t is the output and
    the next step's hidden state; the memory cell c is not noised. With
    `weight_dropout` p > 0 the recurrent kernel is also weight-dropped as in
    `WeightDropLSTM` (Merity et al. 2017, section 2): one mask per forward
    pass, U' = U ⊙ M / (1 - p), which is the Noisin paper's best PTB system
    (an AWD-LSTM with Noisin, Table 5). At inference (`training=False`) the
    layer is exactly `keras.layers.LSTM` with the same weights (same names
    and shapes: `set_weights(get_weights())` moves between them).

    Args:
        units: Positive int, dimensionality of the output space.
        noise: The distribution of ε: "bernoulli", "gaussian", "gamma",
            "gumbel", "laplace", "logistic", "beta" or "chi_square"
            (`keras_rnnreg.noise.sample_noise`, the paper's Table 2).
        noise_level: γ, the spread of the noise: Bernoulli's keep
            probability in (0, 1], else a value > 0 (see `NoisinCell`). The
            paper's best PTB models use Bernoulli γ = 0.41 (medium) / 0.33
            (large) without dropout and 0.80 / 0.50 with it.
        mode: "multiplicative" (the paper's choice) or "additive".
        weight_dropout: Float in [0, 1), p, the fraction of recurrent
            weights dropped at each forward pass (default 0: none).
        seed: Optional int; seeds the noise, the weight mask and Keras's own
            `dropout`/`recurrent_dropout` masks.
        **kwargs: `alpha` (the gamma and beta distributions' shape) and any
            `keras.layers.LSTM` argument (`return_sequences`, `stateful`,
            `go_backwards`, `dropout`, `recurrent_dropout`, initializers,
            `use_cudnn` "auto" or False, ...).

    Call arguments:
        Those of `keras.layers.LSTM`; noise and weight drop apply only when
        `training=True`.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((70,), dtype="int32"),
        keras.layers.Embedding(10000, 400),
        NoisinLSTM(1150, noise="bernoulli", noise_level=0.8,
                   weight_dropout=0.5, return_sequences=True),
        keras.layers.Dense(10000),
    ])
    ```
    """

    def __init__(self, units, noise="bernoulli", noise_level=0.5, mode="multiplicative",
                 weight_dropout=0.0, seed=None, **kwargs):
        noisin, seed, rate = _check(noise, noise_level, mode, weight_dropout, seed, kwargs)
        super().__init__(units, seed=seed, **kwargs)
        self._init_engine(seed, weight_dropout=rate, noisin=noisin)


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class NoisinGRU(EngineRNN, keras.layers.GRU):
    """A GRU trained with Noisin, optionally weight-dropped.

    The GRU's emitted state h_t is noised at every step, z_t = h_t ⊙ ε_t
    (or h_t + ε_t; Dieng et al. 2018, Algorithm 1), and fed back; with
    `weight_dropout` its recurrent kernel is weight-dropped once per forward
    pass as in `WeightDropGRU`. At inference it is exactly
    `keras.layers.GRU` with the same weights. No fused kernel computes a
    noised GRU, so training runs the per-step loop.

    Args:
        units: Positive int, dimensionality of the output space.
        noise: As for `NoisinLSTM`.
        noise_level: As for `NoisinLSTM`.
        mode: As for `NoisinLSTM`.
        weight_dropout: As for `NoisinLSTM`.
        seed: As for `NoisinLSTM`.
        **kwargs: `alpha` and any `keras.layers.GRU` argument.

    Call arguments:
        Those of `keras.layers.GRU`.

    Example:

    >>> layer = NoisinGRU(64, noise="gaussian", noise_level=0.5,
    ...                   return_sequences=True)
    >>> y = layer(keras.ops.ones((2, 7, 16)), training=True)
    """

    def __init__(self, units, noise="bernoulli", noise_level=0.5, mode="multiplicative",
                 weight_dropout=0.0, seed=None, **kwargs):
        noisin, seed, rate = _check(noise, noise_level, mode, weight_dropout, seed, kwargs)
        super().__init__(units, seed=seed, **kwargs)
        self._init_engine(seed, weight_dropout=rate, noisin=noisin)
