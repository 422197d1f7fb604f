"""The LSTM on JAX: one scan with a hand-written backward, and cuDNN calls.

Off GPUs Keras's JAX LSTM is its generic cell loop: a `lax.scan` whose
step multiplies both the input and the state by their kernels, and whose
gradient JAX derives by differentiating the scan, accumulating the kernel
gradients step by step inside the backward loop. `scan_lstm` computes the
same LSTM as fused kernels do (cuDNN, oneDNN): the input projections of
all steps in one matmul before the loop (`loop.time_major_loop`), only
h_{t-1} U and the gates in the loop, and a backward loop that carries only
the state gradients, after which the recurrent kernel's gradient is one
matmul over all steps. Keras has no such path off GPUs (its JAX `lstm` is
cuDNN only). With Noisin's ε it serves every device: there is no fused
kernel to keep.

On GPUs, `masked_cudnn_lstm` and `float32_cudnn_lstm` reach cuDNN where
Keras's JAX LSTM would not (a right-padded mask; 16-bit compute).
"""

import functools

from keras import ops
from keras import tree

from keras_rnnreg._keras_compat import autocast_scope, backend_lstm
from keras_rnnreg._lstm.math import backward_step, forward_step


@functools.cache
def scan_lstm():
    """`lstm(projected, recurrent_kernel, h0, c0, mask, noise, zero_output,
    noise_mode)` -> (outputs, h, c), time-major, with its custom VJP. `mask`
    is a float (time, batch, 1) array of 0/1 or None; `noise` None or
    Noisin's ε (time, batch, units), applied to the emitted state as
    `noise_mode` says (ε is a draw: it gets no gradient); `zero_output` and
    `noise_mode` are static."""
    import jax
    import jax.numpy as jnp

    def forward(projected, recurrent_kernel, h0, c0, mask, noise, zero_output, noise_mode):
        def step(carry, inputs):
            return forward_step(carry, inputs, recurrent_kernel, zero_output, noise_mode)

        (h, c), (outputs, gates, h_prev, c_prev) = jax.lax.scan(
            step, (h0, c0), (projected, mask, noise)
        )
        return (outputs, h, c), (recurrent_kernel, mask, noise, gates, h_prev, c_prev)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
    def lstm(projected, recurrent_kernel, h0, c0, mask, noise, zero_output, noise_mode):
        return forward(
            projected, recurrent_kernel, h0, c0, mask, noise, zero_output, noise_mode
        )[0]

    def lstm_bwd(zero_output, noise_mode, residuals, cotangents):
        recurrent_kernel, mask, noise, gates, h_prev, c_prev = residuals
        d_outputs, d_h, d_c = cotangents
        transposed = recurrent_kernel.T

        def step(carry, inputs):
            return backward_step(carry, inputs, transposed, zero_output, noise_mode)

        (d_h0, d_c0), d_z = jax.lax.scan(
            step, (d_h, d_c), (d_outputs, gates, h_prev, c_prev, mask, noise), reverse=True
        )
        # The recurrent kernel's gradient for all steps in one matmul.
        d_kernel = jnp.einsum("tbh,tbg->hg", h_prev, d_z)
        return d_z, d_kernel, d_h0, d_c0, None, None

    lstm.defvjp(forward, lstm_bwd)  # forward: the outputs and the residuals
    return lstm


def on_gpu():
    import jax

    return jax.default_backend() == "gpu"


def masked_cudnn_lstm(layer, sequences, initial_state, mask, recurrent_kernel, fallback):
    """A masked LSTM on JAX GPUs through cuDNN, given the true lengths.

    Keras's JAX LSTM leaves cuDNN for its scan loop whenever there is a
    mask, and padded variable-length BPTT batches (`BPTTSequence(...,
    pad_to_multiple=k)`) always have one. When every row's mask is a run of
    steps followed only by padding (as BPTTSequence pads), cuDNN with those
    lengths (`jax.experimental.rnn.lstm`'s `seq_lengths`) computes exactly
    what Keras's masked loop does: the states at each row's true last step,
    and over padded steps the last output carried (filled in here; cuDNN
    leaves them zero). Any other mask takes `fallback(sequences, h0, c0)`,
    chosen inside the compiled step by `lax.cond`. cuDNN runs in float32.
    """
    import jax
    import jax.numpy as jnp
    from jax.experimental import rnn

    cell = layer.cell
    mask = jnp.asarray(mask, dtype=bool)
    steps = mask.shape[1]
    lengths = jnp.sum(mask, axis=1).astype("int32")
    right_padded = jnp.all(mask == (jnp.arange(steps)[None] < lengths[:, None]))
    right_padded = right_padded & jnp.all(lengths > 0)
    dtype = layer.compute_dtype

    def fused(sequences, h0, c0):
        with autocast_scope("float32"):
            kernel = ops.cast(cell.kernel, "float32")
            bias = ops.cast(cell.bias, "float32")
        weights = jnp.concatenate([
            kernel.T.ravel(), ops.cast(recurrent_kernel, "float32").T.ravel(),
            bias, jnp.zeros_like(bias),
        ])
        y, h, c = rnn.lstm(
            ops.cast(sequences, "float32"), ops.cast(h0, "float32")[None],
            ops.cast(c0, "float32")[None], weights, lengths, input_size=kernel.shape[0],
            hidden_size=layer.units, num_layers=1, dropout=0.0, bidirectional=False,
        )
        h, c = h[0], c[0]
        outputs = jnp.where(mask[..., None], y, h[:, None])
        return tuple(ops.cast(x, dtype) for x in (h, outputs, h, c))

    def loop(sequences, h0, c0):
        last, outputs, (h, c) = fallback(sequences, [h0, c0])
        return tuple(ops.cast(x, dtype) for x in (last, outputs, h, c))

    last, outputs, h, c = jax.lax.cond(
        right_padded, fused, loop, sequences, initial_state[0], initial_state[1]
    )
    return last, outputs, [h, c]


def float32_cudnn_lstm(layer, sequences, initial_state, dropout_mask, recurrent_kernel):
    """Keras's fused LSTM (cuDNN) on float32 tensors, cast back to the
    compute dtype; None where it declines.

    JAX's cuDNN LSTM (`jax.experimental.rnn`, which Keras 3.14+ calls on
    GPUs) accepts only float32: under `mixed_float16`/`mixed_bfloat16` its
    lowering raises "Unknown output type" when the train step is compiled,
    outside the `NotImplementedError` that would make Keras fall back to the
    cell loop (Keras's own LSTM fails the same way). In float32 it keeps
    cuDNN; the per-step loop in 16 bits runs at about half the fused speed
    (docs/gpu.md).
    """
    cell = layer.cell
    with autocast_scope("float32"):  # the float32 weights read unrounded
        sequences = ops.cast(sequences, "float32")
        if dropout_mask is not None:
            sequences = sequences * ops.expand_dims(ops.cast(dropout_mask, "float32"), 1)
        try:
            outputs = backend_lstm(
                sequences,
                ops.cast(initial_state[0], "float32"),
                ops.cast(initial_state[1], "float32"),
                None,
                kernel=ops.cast(cell.kernel, "float32"),
                recurrent_kernel=ops.cast(recurrent_kernel, "float32"),
                bias=ops.cast(cell.bias, "float32"),
                activation=cell.activation,
                recurrent_activation=cell.recurrent_activation,
                return_sequences=layer.return_sequences,
                go_backwards=layer.go_backwards,
                unroll=layer.unroll,
            )
        except NotImplementedError:
            return None
    return tree.map_structure(lambda x: ops.cast(x, layer.compute_dtype), outputs)
