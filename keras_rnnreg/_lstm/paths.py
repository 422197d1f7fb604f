"""Which path runs an LSTM or GRU layer's loop: every rule in one place.

`lstm()` and `gru()` are what our layers' `inner_loop` calls, with the
recurrent kernel to use (U, or weight drop's U') and Noisin's noise ε.
`fast_lstm()` and `fast_gru()` choose a fast path or answer None; the
generic loop (`loop.cell_loop`) runs everything else. docs/gpu.md has the
rules as a table.
"""

import keras
from keras import ops
from keras import tree

from keras_rnnreg._keras_compat import backend_gru, backend_lstm
from keras_rnnreg._lstm import jax_core, tf_core, torch_core
from keras_rnnreg._lstm.loop import cell_loop, input_dropout_mask, project_inputs, time_major_loop

FLOATS = ("float32", "float64")
HALF_FLOATS = ("float16", "bfloat16")


def standard_activations(activation, recurrent_activation):
    """Whether a cell's activations are tanh and sigmoid, as fused kernels
    (and the hand-written derivatives of `math.backward_step`) assume."""
    tanh = (keras.activations.tanh, ops.tanh)
    sigmoid = (keras.activations.sigmoid, ops.sigmoid)
    if keras.backend.backend() == "torch":
        import torch

        tanh, sigmoid = tanh + (torch.tanh,), sigmoid + (torch.sigmoid,)
    return activation in tanh and recurrent_activation in sigmoid


def keras_would_fuse(layer):
    """The test Keras's LSTM/GRU `inner_loop` applies before it tries the
    fused kernel (the mask and the device aside): `use_cudnn` "auto" or
    True, no recurrent dropout, not unrolled, a bias, tanh and sigmoid."""
    cell = layer.cell
    return (
        getattr(layer, "_use_cudnn", layer.use_cudnn) in ("auto", True)
        and not cell.recurrent_dropout
        and not layer.unroll
        and cell.use_bias
        and standard_activations(cell.activation, cell.recurrent_activation)
    )


def _keras_fused(layer, sequences, initial_state, mask, dropout_mask, recurrent_kernel):
    """The backend's fused LSTM/GRU as Keras's `inner_loop` calls it, with
    `recurrent_kernel`; None where the backend raises NotImplementedError."""
    cell = layer.cell
    if dropout_mask is not None:
        sequences = sequences * ops.expand_dims(dropout_mask, axis=1)
    options = dict(
        kernel=cell.kernel, recurrent_kernel=recurrent_kernel, bias=cell.bias,
        activation=cell.activation, recurrent_activation=cell.recurrent_activation,
        return_sequences=layer.return_sequences, go_backwards=layer.go_backwards,
        unroll=layer.unroll,
    )
    try:
        if isinstance(layer, keras.layers.LSTM):
            out = backend_lstm(sequences, initial_state[0], initial_state[1], mask, **options)
        else:
            out = backend_gru(sequences, initial_state[0], mask, reset_after=cell.reset_after,
                              **options)
    except NotImplementedError:
        return None
    if keras.backend.backend() == "tensorflow":
        layer.supports_jit = False  # as Keras: cuDNN ops are not XLA ops
    return out


def fast_lstm(layer, sequences, initial_state, mask, training, recurrent_kernel=None,
              noise=None, noise_mode=None):
    """An LSTM layer's loop on a fast path, or None where none applies.

    Args:
        layer: A built `keras.layers.LSTM` (or subclass); its options
            (`use_cudnn`, `go_backwards`, `return_sequences`, ...) and its
            cell's weights, activations and dropout.
        sequences, initial_state, mask, training: As `inner_loop` gets them
            (mask unnested, states a list).
        recurrent_kernel: U' to use in place of the cell's U (None: U).
        noise, noise_mode: Noisin's ε `(batch, time, units)` on the emitted
            state at every step, and "multiplicative" or "additive".

    Returns:
        `(last_output, outputs, [h, c])` as `inner_loop` returns them, or None.
    """
    cell = layer.cell
    if not keras_would_fuse(layer):
        return None
    dropout_mask = input_dropout_mask(cell, sequences, training)
    if isinstance(dropout_mask, (list, tuple)):  # implementation=1: a mask per gate
        return None
    kernel = cell.recurrent_kernel if recurrent_kernel is None else recurrent_kernel
    backend = keras.backend.backend()
    dtype = keras.backend.standardize_dtype(layer.compute_dtype)
    if noise is None:
        if backend == "torch" and dtype in FLOATS and torch_core.native_kernel_applies(sequences, mask):
            return torch_core.native_lstm(layer, sequences, initial_state, dropout_mask, kernel)
        if backend == "jax" and jax_core.on_gpu():
            if mask is not None and not layer.go_backwards and dropout_mask is None:
                def fallback(sequences, states):
                    return cell_loop(layer, sequences, states, mask, training, recurrent_kernel)
                return jax_core.masked_cudnn_lstm(layer, sequences, initial_state, mask, kernel,
                                                  fallback)
            if mask is None and dtype in HALF_FLOATS:
                out = jax_core.float32_cudnn_lstm(layer, sequences, initial_state, dropout_mask,
                                                  kernel)
                if out is not None:
                    return out
    if dtype in FLOATS and (noise is None or keras.backend.standardize_dtype(noise.dtype) == dtype):
        loop_args = (layer, sequences, initial_state, mask, training, recurrent_kernel, noise,
                     noise_mode)
        if backend == "jax" and (noise is not None or not jax_core.on_gpu()):
            return time_major_loop(jax_core.scan_lstm(), *loop_args)
        if backend == "tensorflow" and (noise is not None or not tf_core.has_gpu()):
            return time_major_loop(tf_core.tf_lstm, *loop_args)
        if backend == "torch" and noise is not None and mask is None and not torch_core.is_tracing():
            projected = project_inputs(cell, ops.cast(sequences, dtype), dropout_mask, dtype)
            return torch_core.noisy_lstm(layer, projected, initial_state, kernel, noise, noise_mode)
    if noise is None:  # where Keras's LSTM would try it: cuDNN, or NotImplementedError
        return _keras_fused(layer, sequences, initial_state, mask, dropout_mask, kernel)
    return None


def fast_gru(layer, sequences, initial_state, mask, training, recurrent_kernel=None):
    """A GRU layer's loop on a fast path (torch's kernel off CUDA, Keras's
    fused GRU on GPUs), or None; arguments as `fast_lstm`'s."""
    cell = layer.cell
    if not keras_would_fuse(layer):
        return None
    dropout_mask = input_dropout_mask(cell, sequences, training)
    if isinstance(dropout_mask, (list, tuple)):
        return None
    kernel = cell.recurrent_kernel if recurrent_kernel is None else recurrent_kernel
    dtype = keras.backend.standardize_dtype(layer.compute_dtype)
    if (keras.backend.backend() == "torch" and cell.reset_after and dtype in FLOATS
            and torch_core.native_kernel_applies(sequences, mask)):
        return torch_core.native_gru(layer, sequences, initial_state, dropout_mask, kernel)
    return _keras_fused(layer, sequences, initial_state, mask, dropout_mask, kernel)


def _prepare(layer, mask, initial_state):
    if tree.is_nested(mask):
        mask = mask[0]
    if not tree.is_nested(initial_state):
        initial_state = [initial_state]
    if layer.stateful and keras.backend.backend() == "torch":
        # Keras assigns the new state into the state variables' tensors in
        # place afterwards, which would break the backward pass.
        initial_state = [ops.copy(state) for state in initial_state]
    return mask, list(initial_state)


def _no_fast_path(layer):
    if getattr(layer, "_use_cudnn", None) is True:
        raise ValueError(
            "use_cudnn=True was specified, but no fused implementation supports this "
            f"layer configuration with this backend (layer {layer.name!r}). Pass "
            "use_cudnn='auto' to fall back to the generic loop."
        )


def lstm(layer, sequences, initial_state, mask, training, recurrent_kernel=None, noise=None,
         noise_mode=None):
    """An LSTM layer's `inner_loop`: `fast_lstm`, else the generic loop."""
    mask, initial_state = _prepare(layer, mask, initial_state)
    out = fast_lstm(layer, sequences, initial_state, mask, training, recurrent_kernel, noise,
                    noise_mode)
    if out is not None:
        return out
    _no_fast_path(layer)
    return cell_loop(layer, sequences, initial_state, mask, training, recurrent_kernel, noise,
                     noise_mode)


def gru(layer, sequences, initial_state, mask, training, recurrent_kernel=None, noise=None,
        noise_mode=None):
    """A GRU layer's `inner_loop`: `fast_gru` (never with noise), else the
    generic loop."""
    mask, initial_state = _prepare(layer, mask, initial_state)
    out = None
    if noise is None:
        out = fast_gru(layer, sequences, initial_state, mask, training, recurrent_kernel)
    if out is not None:
        return out
    _no_fast_path(layer)
    return cell_loop(layer, sequences, initial_state, mask, training, recurrent_kernel, noise,
                     noise_mode)


def fused_only_inside_the_engine():
    """A `use_cudnn` property for our LSTM/GRU layers.

    `keras.layers.Bidirectional` calls the backend's fused bidirectional
    kernel with the cells' raw kernels when both layers report `use_cudnn`
    "auto" or True, outside `inner_loop`, where weight drop and noise would
    be silently skipped. A built layer whose technique is on
    (`_technique_on()`) therefore reports False: Bidirectional then runs
    each direction through the layer's own `inner_loop` (each still on a
    fast path, which reads the real setting, `_use_cudnn`). Unbuilt it
    reports the real setting, which Bidirectional copies into its forward
    and backward layers.
    """

    def getter(layer):
        if layer.built and layer._technique_on():
            return False
        return layer._use_cudnn

    def setter(layer, value):
        layer._use_cudnn = value

    return property(getter, setter)


# The rules above as a table, in the order `fast_lstm`/`fast_gru` try them;
# docs/gpu.md shows it (tests/test_engine.py holds the page equal to it).
COMMON = (
    "Paths 1-7 need what Keras's own fused path needs: `use_cudnn` \"auto\" "
    "(or True), no `recurrent_dropout`, no `unroll`, `use_bias`, tanh and "
    "sigmoid, and one input-dropout mask (`implementation=2`, Keras's "
    "default). All paths take `go_backwards`, `stateful`, `return_sequences` "
    "and the cell's input dropout; `use_cudnn=True` where only path 8 applies "
    "raises a ValueError, as Keras does."
)
PATHS = (
    ("PyTorch's LSTM/GRU kernel (`torch._VF.lstm`/`gru`)", "torch, off CUDA",
     "no noise, no mask, float32/float64, eager (not tracing); GRU: `reset_after=True`"),
    ("cuDNN with each row's length (`jax.experimental.rnn`)", "JAX, GPU",
     "LSTM, no noise, a mask, forwards, no input dropout in training; a mask that is "
     "not right-padded takes path 8 inside the compiled step"),
    ("Keras's fused LSTM in float32, cast back", "JAX, GPU",
     "LSTM, no noise, no mask, a 16-bit compute dtype (mixed precision)"),
    ("one `lax.scan`, hand-written backward (`jax_core`)", "JAX, off GPU; with noise every device",
     "LSTM, float32/float64 (the noise too), masks"),
    ("one `tf.while_loop`, hand-written backward (`tf_core`)",
     "TensorFlow, no GPU; with noise every device", "LSTM, float32/float64 (the noise too), masks"),
    ("Noisin's loop in plain torch (`torch_core.noisy_lstm`)", "torch, every device",
     "LSTM with noise, no mask, float32/float64, eager"),
    ("Keras's fused kernel (its backend's `lstm`/`gru`: cuDNN)",
     "TensorFlow with a GPU; torch on CUDA; JAX GPUs from Keras 3.14 (its GRU: a "
     "scan on every device)",
     "no noise; where the backend declines (NotImplementedError), path 8"),
    ("the generic loop (`loop.cell_loop`: the cell's equations with U' and ε "
     "through Keras's backend scan)", "every backend and device", "everything else"),
)


def paths_markdown():
    """`PATHS` as the Markdown table of docs/gpu.md."""
    rows = ["| | path | backend, device | when |", "| --- | --- | --- | --- |"]
    rows += [f"| {i} | {path} | {where} | {when} |"
             for i, (path, where, when) in enumerate(PATHS, 1)]
    return "\n".join(rows)
