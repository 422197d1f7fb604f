"""Weight drop (DropConnect on the recurrent kernel) for Keras's LSTM and GRU."""

import keras

from keras_rnnreg._lstm import EngineRNN
from keras_rnnreg._validation import check_rate, check_seed


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class WeightDropLSTM(EngineRNN, keras.layers.LSTM):
    """The weight-dropped LSTM of AWD-LSTM: DropConnect on hidden-to-hidden weights.

    Merity, Keskar & Socher (2017), *Regularizing and Optimizing LSTM Language
    Models*, section 2. DropConnect (Wan et al., 2013) is applied to the
    recurrent matrices [U^i, U^f, U^c, U^o] (Keras's `recurrent_kernel`, all
    four gate blocks) once per forward pass:

        U' = U ⊙ M / (1 - p),   M_jk ~ Bernoulli(1 - p)
        i_t = σ(W^i x_t + U'^i h_{t-1}),  f_t = σ(W^f x_t + U'^f h_{t-1}),
        o_t = σ(W^o x_t + U'^o h_{t-1}),  c̃_t = tanh(W^c x_t + U'^c h_{t-1}),
        c_t = i_t ⊙ c̃_t + f_t ⊙ c_{t-1},  h_t = o_t ⊙ tanh(c_t)

    The same dropped weights serve the whole batch and every time step, so
    the LSTM itself is unchanged and U' goes to the fast paths of the LSTM
    engine (cuDNN on GPUs, PyTorch's LSTM kernel on torch, a scan with a
    hand-written backward pass on JAX and TensorFlow; docs/gpu.md), else
    to the per-step loop, where Keras's own LSTM would loop.
    At inference (`training=False`) the raw kernel is used. Gradients flow to
    the raw kernel through the mask.

    The weights have the same names and shapes as `keras.layers.LSTM`, so a
    trained `WeightDropLSTM` and an `LSTM` can exchange weights.

    Args:
        units: Positive int, dimensionality of the output space.
        weight_dropout: Float in [0, 1), p, the fraction of recurrent weights
            dropped at each forward pass. AWD-LSTM uses 0.5.
        seed: Optional int; seeds both the weight mask and Keras's own
            `dropout`/`recurrent_dropout` masks.
        **lstm_kwargs: Any `keras.layers.LSTM` argument: `return_sequences`,
            `return_state`, `stateful`, `go_backwards`, `dropout`,
            `recurrent_dropout` (which, as in Keras, disables the fused path),
            initializers, regularizers, `use_cudnn`, ...

    Call arguments:
        Those of `keras.layers.LSTM`: `sequences`, `initial_state`, `mask`,
        `training`.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(10000, 400),
        WeightDropLSTM(1150, weight_dropout=0.5, return_sequences=True),
        keras.layers.Dense(10000),
    ])
    ```
    """

    def __init__(self, units, weight_dropout=0.5, seed=None, **lstm_kwargs):
        seed = check_seed(seed)
        rate = check_rate("weight_dropout", weight_dropout)
        super().__init__(units, seed=seed, **lstm_kwargs)
        self._init_engine(seed, weight_dropout=rate)


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class WeightDropGRU(EngineRNN, keras.layers.GRU):
    """A GRU with DropConnect on its hidden-to-hidden weights.

    The weight-drop technique of AWD-LSTM (Merity et al. 2017, section 2: "also
    applicable to ... the recurrent weight matrices of other RNN cells")
    applied to the GRU's recurrent matrices [U^z, U^r, U^h] (all three gate
    blocks of Keras's `recurrent_kernel`), once per forward pass:

        U' = U ⊙ M / (1 - p),   M_jk ~ Bernoulli(1 - p)

    with one mask for the whole batch and every time step. As for
    `WeightDropLSTM`, U' goes to the fused GRU where Keras would use it (on
    the torch backend PyTorch's own GRU kernel on every device, for
    `reset_after=True`), else to the per-step loop; inference uses the raw
    kernel.

    Args:
        units: Positive int, dimensionality of the output space.
        weight_dropout: Float in [0, 1), p, the fraction of recurrent weights
            dropped at each forward pass.
        seed: Optional int for reproducible masks.
        **gru_kwargs: Any `keras.layers.GRU` argument.

    Call arguments:
        Those of `keras.layers.GRU`.

    Example:

    >>> layer = WeightDropGRU(64, weight_dropout=0.3, return_sequences=True)
    >>> y = layer(keras.ops.ones((2, 7, 16)), training=True)
    """

    def __init__(self, units, weight_dropout=0.5, seed=None, **gru_kwargs):
        seed = check_seed(seed)
        rate = check_rate("weight_dropout", weight_dropout)
        super().__init__(units, seed=seed, **gru_kwargs)
        self._init_engine(seed, weight_dropout=rate)
