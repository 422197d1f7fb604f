import contextlib

import keras
from keras import ops

from keras_rnnreg._dropout import dropout
from keras_rnnreg._keras_compat import autocast_scope, backend_lstm
from keras_rnnreg._validation import check_rate, check_seed
from keras_rnnreg._stateful import CarriedStates
from keras_rnnreg._fused_rnn import NativeTorchGRU, NativeTorchLSTM, keras_would_fuse
from keras_rnnreg._jax_lstm import NativeJaxLSTM
from keras_rnnreg._tf_lstm import NativeTfLSTM

# Seeds the weight mask's generator apart from the cell's input-dropout
# generator: two keras SeedGenerators with one seed yield the same random
# stream, which would correlate the two masks.
_WEIGHT_SEED_OFFSET = 0x5EED


_HALF_FLOATS = ("float16", "bfloat16")


def _jax_on_gpu():
    import jax

    return jax.default_backend() == "gpu"


def _masked_fused_lstm_applies(layer, mask, training):
    """Whether this masked call can go to JAX's cuDNN LSTM with per-sequence
    lengths (`_masked_fused_lstm`): a JAX GPU, an LSTM Keras would fuse but
    for the mask, forwards, without the cell's own input dropout."""
    return (
        mask is not None
        and keras.backend.backend() == "jax"
        and isinstance(layer, keras.layers.LSTM)
        and keras_would_fuse(layer)
        and not layer.go_backwards
        and not (training and layer.cell.dropout)
        and _jax_on_gpu()
    )


def _fused_lstm_needs_float32(layer, mask):
    """Whether this call must hand the fused LSTM float32 tensors.

    JAX's cuDNN LSTM (`jax.experimental.rnn`, which Keras 3.14+ calls on
    GPUs) accepts only float32: under `mixed_float16`/`mixed_bfloat16` its
    lowering raises "Unknown output type" when the train step is compiled,
    outside the `NotImplementedError` that would make Keras fall back to the
    cell loop (Keras's own LSTM fails the same way). Calling the fused kernel
    in float32 keeps cuDNN; the alternative, the per-step loop in 16 bits,
    runs at about half the fused speed on an H100 even in float32
    (docs/gpu.md). Elsewhere (TF, torch, CPUs), and where Keras's JAX
    backend would not try cuDNN anyway (a mask, unrolling, other
    activations), the compute dtype passes as is.
    """
    return (
        keras.backend.backend() == "jax"
        and isinstance(layer, keras.layers.LSTM)
        and keras.backend.standardize_dtype(layer.compute_dtype) in _HALF_FLOATS
        and mask is None
        and keras_would_fuse(layer)
        and _jax_on_gpu()
    )


class _RecurrentKernelDropConnect:
    """DropConnect on the recurrent kernel U of a Keras LSTM or GRU layer.

    Shared by `WeightDropLSTM` and `WeightDropGRU`. Once per forward pass the
    recurrent kernel is masked, U' = U ⊙ M / (1 - p) with one Bernoulli(1 - p)
    mask M for the whole batch and every time step, and the unmodified Keras
    layer runs with U' in place of U. Swapping the attribute for the length
    of `inner_loop` (as the reference AWD-LSTM `WeightDrop` does with
    `setattr`) sends U' wherever Keras would send U: the backend's fused
    `lstm`/`gru` (cuDNN; PyTorch's own LSTM kernel on torch) and, when that raises
    `NotImplementedError`, the generic cell loop. Nothing of Keras's RNN code
    is copied, so every option of the parent layer keeps working.
    """

    def _init_weight_dropout(self, weight_dropout, seed):
        self.weight_dropout = check_rate("weight_dropout", weight_dropout)
        self.weight_dropout_seed_generator = keras.random.SeedGenerator(
            None if seed is None else seed + _WEIGHT_SEED_OFFSET
        )
        self._inside_inner_loop = False

    # `keras.layers.Bidirectional` calls the backend's fused bidirectional
    # kernel with `cell.recurrent_kernel` itself, outside `inner_loop`, where
    # the weight mask would be silently skipped. A built layer therefore
    # reports `use_cudnn=False` to readers outside `inner_loop`: Bidirectional
    # then runs each direction through this layer (each still fused), so
    # weight drop always applies. Unbuilt, it reports the real setting, which
    # is what Bidirectional copies into its forward and backward layers.
    @property
    def use_cudnn(self):
        if self.weight_dropout > 0 and self.built and not self._inside_inner_loop:
            return False
        return self._use_cudnn

    @use_cudnn.setter
    def use_cudnn(self, value):
        self._use_cudnn = value

    def dropped_recurrent_kernel(self, dtype=None):
        """U' = U ⊙ M / (1 - p), a fresh mask M at each call, in `dtype`
        (default: the cell's compute dtype)."""
        kernel = ops.cast(self.cell.recurrent_kernel, dtype or self.cell.compute_dtype)
        return dropout(kernel, self.weight_dropout, seed=self.weight_dropout_seed_generator)

    @contextlib.contextmanager
    def _recurrent_kernel_replaced(self, kernel):
        cell = self.cell
        raw_kernel = cell.recurrent_kernel
        # object.__setattr__: a transient tensor, not a new weight to track.
        object.__setattr__(cell, "recurrent_kernel", kernel)
        try:
            yield
        finally:
            object.__setattr__(cell, "recurrent_kernel", raw_kernel)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        self._inside_inner_loop = True
        try:
            if keras.tree.is_nested(mask):
                mask = mask[0]
            if _masked_fused_lstm_applies(self, mask, training):
                return self._masked_fused_lstm(sequences, initial_state, mask, training)
            if _fused_lstm_needs_float32(self, mask):
                outputs = self._float32_fused_lstm(sequences, initial_state, training)
                if outputs is not None:
                    return outputs
            if not training or self.weight_dropout == 0:
                return super().inner_loop(
                    sequences, initial_state, mask=mask, training=training
                )
            with self._recurrent_kernel_replaced(self.dropped_recurrent_kernel()):
                return super().inner_loop(
                    sequences, initial_state, mask=mask, training=training
                )
        finally:
            self._inside_inner_loop = False

    def _masked_fused_lstm(self, sequences, initial_state, mask, training):
        """A masked LSTM on JAX GPUs through cuDNN, given the true lengths.

        Keras's JAX LSTM leaves cuDNN for its scan loop whenever there is a
        mask, and padded variable-length BPTT batches (`BPTTSequence(...,
        pad_to_multiple=k)`) always have one. When every row's mask is a
        run of steps followed only by padding (as BPTTSequence pads), cuDNN
        with those lengths (`jax.experimental.rnn.lstm`'s `seq_lengths`)
        computes exactly what Keras's masked loop does: the states at each
        row's true last step, and over padded steps the last output carried
        (filled in here; cuDNN leaves them zero). Any other mask takes
        Keras's loop, chosen inside the compiled step by `lax.cond`. As in
        `_float32_fused_lstm`, cuDNN runs in float32.
        """
        import jax
        import jax.numpy as jnp
        from jax.experimental import rnn

        cell = self.cell
        if training and self.weight_dropout > 0:
            recurrent_kernel = self.dropped_recurrent_kernel()
        else:
            recurrent_kernel = ops.convert_to_tensor(cell.recurrent_kernel)
        mask = jnp.asarray(mask, dtype=bool)
        steps = mask.shape[1]
        lengths = jnp.sum(mask, axis=1).astype("int32")
        right_padded = jnp.all(mask == (jnp.arange(steps)[None] < lengths[:, None]))
        right_padded = right_padded & jnp.all(lengths > 0)
        dtype = self.compute_dtype

        def fused(sequences, h0, c0, recurrent_kernel):
            with autocast_scope("float32"):
                kernel = ops.cast(cell.kernel, "float32")
                bias = ops.cast(cell.bias, "float32")
            weights = jnp.concatenate([
                kernel.T.ravel(), ops.cast(recurrent_kernel, "float32").T.ravel(),
                bias, jnp.zeros_like(bias),
            ])
            y, h, c = rnn.lstm(
                ops.cast(sequences, "float32"),
                ops.cast(h0, "float32")[None],
                ops.cast(c0, "float32")[None],
                weights,
                lengths,
                input_size=kernel.shape[0],
                hidden_size=self.units,
                num_layers=1,
                dropout=0.0,
                bidirectional=False,
            )
            h, c = h[0], c[0]
            outputs = jnp.where(mask[..., None], y, h[:, None])
            return tuple(ops.cast(x, dtype) for x in (h, outputs, h, c))

        def loop(sequences, h0, c0, recurrent_kernel):
            with self._recurrent_kernel_replaced(recurrent_kernel):
                last, outputs, (h, c) = super(_RecurrentKernelDropConnect, self).inner_loop(
                    sequences, [h0, c0], mask=mask, training=training
                )
            return tuple(ops.cast(x, dtype) for x in (last, outputs, h, c))

        last, outputs, h, c = jax.lax.cond(
            right_padded, fused, loop, sequences, initial_state[0], initial_state[1],
            recurrent_kernel,
        )
        return last, outputs, [h, c]

    def _float32_fused_lstm(self, sequences, initial_state, training):
        """The backend's fused LSTM on float32 tensors, cast back to the
        compute dtype; None where the backend declines (then the usual path
        runs, in the compute dtype). As `keras.layers.LSTM.inner_loop` calls
        it, with one input-dropout mask for all steps."""
        cell = self.cell
        # Inside the scope the float32 weights read unrounded.
        with autocast_scope("float32"):
            sequences = ops.cast(sequences, "float32")
            if training and cell.dropout:
                step_mask = ops.cast(cell.get_dropout_mask(sequences[:, 0, :]), "float32")
                sequences = sequences * ops.expand_dims(step_mask, axis=1)
            if training and self.weight_dropout > 0:
                recurrent_kernel = self.dropped_recurrent_kernel("float32")
            else:
                recurrent_kernel = ops.cast(cell.recurrent_kernel, "float32")
            try:
                outputs = backend_lstm(
                    sequences,
                    ops.cast(initial_state[0], "float32"),
                    ops.cast(initial_state[1], "float32"),
                    None,
                    kernel=ops.cast(cell.kernel, "float32"),
                    recurrent_kernel=recurrent_kernel,
                    bias=ops.cast(cell.bias, "float32"),
                    activation=cell.activation,
                    recurrent_activation=cell.recurrent_activation,
                    return_sequences=self.return_sequences,
                    go_backwards=self.go_backwards,
                    unroll=self.unroll,
                )
            except NotImplementedError:
                return None
        return keras.tree.map_structure(lambda x: ops.cast(x, self.compute_dtype), outputs)

    def get_config(self):
        return {**super().get_config(), "weight_dropout": self.weight_dropout}


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class WeightDropLSTM(
    _RecurrentKernelDropConnect, CarriedStates, NativeTorchLSTM, NativeJaxLSTM, NativeTfLSTM,
    keras.layers.LSTM,
):
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
    the LSTM itself is unchanged: the dropped kernel goes to the backend's
    fused implementation (cuDNN on GPUs; on the torch backend PyTorch's own
    LSTM kernel on every device, where Keras's LSTM loops in Python off
    CUDA) and only falls back to the per-step cell loop where Keras's own
    LSTM would.
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
        super().__init__(units, seed=seed, **lstm_kwargs)
        self._init_weight_dropout(weight_dropout, seed)


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class WeightDropGRU(
    _RecurrentKernelDropConnect, CarriedStates, NativeTorchGRU, keras.layers.GRU
):
    """A GRU with DropConnect on its hidden-to-hidden weights.

    The weight-drop technique of AWD-LSTM (Merity et al. 2017, section 2: "also
    applicable to ... the recurrent weight matrices of other RNN cells")
    applied to the GRU's recurrent matrices [U^z, U^r, U^h] (all three gate
    blocks of Keras's `recurrent_kernel`), once per forward pass:

        U' = U ⊙ M / (1 - p),   M_jk ~ Bernoulli(1 - p)

    with one mask for the whole batch and every time step. As for
    `WeightDropLSTM`, the dropped kernel goes to the backend's fused GRU
    where Keras would use it (on the torch backend PyTorch's own GRU kernel
    on every device, for `reset_after=True`), else to the cell loop;
    inference uses the raw kernel.

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
        super().__init__(units, seed=seed, **gru_kwargs)
        self._init_weight_dropout(weight_dropout, seed)
