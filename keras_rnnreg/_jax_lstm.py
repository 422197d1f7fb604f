"""The LSTM on JAX where Keras would loop: one scan, a hand-written backward.

Off GPUs Keras's JAX LSTM is its generic cell loop: a `lax.scan` whose
step multiplies both the input and the state by their kernels, and whose
gradient JAX derives by differentiating the scan, accumulating the kernel
gradients step by step inside the backward loop. `NativeJaxLSTM` computes
the same LSTM as fused kernels do (cuDNN, oneDNN): the input projections
x_t W + b of all steps in one matmul before the loop, only h_{t-1} U and the
gates in the loop, and a backward loop that carries only the state
gradients, after which the recurrent kernel's gradient is one matmul over
all steps. On a CPU that trains markedly faster than Keras's loop
(docs/benchmarks.md, "JAX off GPUs"). It is written here because Keras has
no such path off GPUs (its JAX `lstm` is cuDNN only).

Same equations, gate order (i, f, c, o), masks (a masked step carries the
states, and outputs the previous output or, with `zero_output_for_mask`,
zeros), `go_backwards` (outputs in processing order) and input dropout
(one mask for all steps) as Keras's loop; tests/test_weight_drop.py trains
both side by side. The step functions (`forward_step`, `backward_step`)
are `keras.ops`, shared with the TensorFlow loop of `_tf_lstm`.
"""

import functools

import keras
from keras import ops

from keras_rnnreg._fused_rnn import _FLOATS, keras_would_fuse
from keras_rnnreg.layers._projection import project_tokens


def forward_step(carry, inputs, recurrent_kernel, zero_output, noise_mode):
    """One LSTM step of the scan, in `keras.ops` (JAX and TensorFlow share
    it): carry (h, c), inputs (projected x_t W + b, mask, noise) ->
    (new carry, (output, gates [i, f, g, o], h, c)); the last three are
    what the backward step needs."""
    h, c = carry
    p, m, e = inputs
    z = p + ops.matmul(h, recurrent_kernel)
    z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
    i, f, o = ops.sigmoid(z_i), ops.sigmoid(z_f), ops.sigmoid(z_o)
    g = ops.tanh(z_c)
    c_new = f * c + i * g
    h_new = o * ops.tanh(c_new)
    if e is not None:
        h_new = h_new * e if noise_mode == "multiplicative" else h_new + e
    if m is None:
        out, h_next, c_next = h_new, h_new, c_new
    else:
        kept = m > 0
        h_next = ops.where(kept, h_new, h)
        c_next = ops.where(kept, c_new, c)
        out = ops.where(kept, h_new, 0.0) if zero_output else h_next
    return (h_next, c_next), (out, ops.concatenate([i, f, g, o], axis=-1), h, c)


def backward_step(carry, inputs, transposed_kernel, zero_output, noise_mode):
    """The gradient of `forward_step`, backwards: carry (dL/dh, dL/dc) of
    the states the step passed on, inputs (dL/d output, gates, h, c, mask,
    noise) -> (the gradients of the states it received, dL/dz)."""
    d_h, d_c = carry
    d_out, gates_t, h_t, c_t, m, e = inputs
    i, f, g, o = ops.split(gates_t, 4, axis=-1)
    tanh_c = ops.tanh(f * c_t + i * g)
    if m is None:
        d_h_new, d_c_new, d_h_kept, d_c_kept = d_h + d_out, d_c, 0.0, 0.0
    else:
        # A masked step passes the incoming state gradients through.
        kept = m > 0
        d_h_all = d_h + d_out
        d_h_new = ops.where(kept, d_h_all, 0.0)
        d_h_kept = ops.where(kept, 0.0, d_h if zero_output else d_h_all)
        d_c_new = ops.where(kept, d_c, 0.0)
        d_c_kept = ops.where(kept, 0.0, d_c)
    if e is not None and noise_mode == "multiplicative":
        d_h_new = d_h_new * e  # the gradient of o ⊙ tanh(c) before the noise
    d_cell = d_c_new + d_h_new * o * (1.0 - tanh_c * tanh_c)
    d_z = ops.concatenate([
        d_cell * g * i * (1.0 - i),
        d_cell * c_t * f * (1.0 - f),
        d_cell * i * (1.0 - g * g),
        d_h_new * tanh_c * o * (1.0 - o),
    ], axis=-1)
    return (ops.matmul(d_z, transposed_kernel) + d_h_kept, d_cell * f + d_c_kept), d_z


@functools.cache
def _scan_lstm():
    """`lstm(projected, recurrent_kernel, h0, c0, mask, noise, zero_output,
    noise_mode)` -> (outputs, h, c), time-major, with its custom VJP. `mask`
    is a float (time, batch, 1) array of 0/1 or None; `noise` None or
    Noisin's ε (time, batch, units), applied to the emitted state as
    `noise_mode` ("multiplicative" or "additive") says (Noisin Algorithm 1;
    ε is a draw: it gets no gradient); `zero_output` and `noise_mode` are
    static."""
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


def lstm_scan(inputs, kernel, recurrent_kernel, bias, initial_state, mask=None,
              go_backwards=False, zero_output_for_mask=False, noise=None, noise_mode=None):
    """An LSTM layer's loop on JAX, as Keras's `RNN.inner_loop` returns it.

    Args:
        inputs: `(batch, time, features)`, input dropout already applied.
        kernel, recurrent_kernel, bias: The cell's weights (`bias` None
            without one), in the inputs' dtype.
        initial_state: `[h0, c0]`.
        mask: Optional boolean `(batch, time)`.
        go_backwards, zero_output_for_mask: As for `keras.layers.RNN`.
        noise, noise_mode: Optional Noisin noise ε `(batch, time, units)`
            and its mode (`NoisinLSTM`).

    Returns:
        `(last_output, outputs, [h, c])`, outputs in processing order.
    """
    return time_major_loop(_scan_lstm(), inputs, kernel, recurrent_kernel, bias, initial_state,
                           mask, go_backwards, zero_output_for_mask, noise, noise_mode)


def time_major_loop(core, inputs, kernel, recurrent_kernel, bias, initial_state, mask,
                    go_backwards, zero_output_for_mask, noise, noise_mode):
    """`lstm_scan`'s work around the backend's `core(projected,
    recurrent_kernel, h0, c0, mask, noise, zero_output, noise_mode)`: the
    input projections of all steps in one matmul, time-major; the mask as a
    float (time, batch, 1) array; reversed steps for `go_backwards`; and
    Keras's `inner_loop` results back batch-major."""
    dtype = inputs.dtype
    projected = project_tokens(ops.swapaxes(inputs, 0, 1), kernel, bias)  # (time, batch, 4H)
    if mask is not None:
        mask = ops.expand_dims(ops.swapaxes(ops.cast(mask, dtype), 0, 1), -1)
    if noise is not None:
        noise = ops.swapaxes(noise, 0, 1)
    if go_backwards:
        projected, mask, noise = (
            None if t is None else ops.flip(t, 0) for t in (projected, mask, noise)
        )
    h0, c0 = (ops.cast(state, dtype) for state in initial_state[:2])
    outputs, h, c = core(
        projected, recurrent_kernel, h0, c0, mask, noise, bool(zero_output_for_mask), noise_mode
    )
    outputs = ops.swapaxes(outputs, 0, 1)
    return outputs[:, -1], outputs, [h, c]


class NativeJaxLSTM:
    """Mixin for `keras.layers.LSTM` subclasses: `lstm_scan` on JAX off GPUs.

    Applies where Keras's JAX LSTM would take cuDNN on a GPU (`use_cudnn`
    "auto" or True, no recurrent dropout, not unrolled, tanh/sigmoid, a
    bias) but runs its generic loop instead, in float32 or float64, with or
    without a mask. On GPUs Keras's (and `WeightDropLSTM`'s) cuDNN paths
    are left as they are.
    """

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if keras.tree.is_nested(mask):
            mask = mask[0]
        if self._native_jax_applies():
            return self._native_jax_call(sequences, initial_state, mask, training)
        return super().inner_loop(sequences, initial_state, mask=mask, training=training)

    def _native_jax_applies(self):
        if keras.backend.backend() != "jax":
            return False
        import jax

        return (
            keras_would_fuse(self)
            and keras.backend.standardize_dtype(self.compute_dtype) in _FLOATS
            and jax.default_backend() != "gpu"
        )

    def _native_jax_call(self, sequences, initial_state, mask, training):
        return lstm_scan(*loop_arguments(self, sequences, initial_state, mask, training))


def loop_arguments(layer, sequences, initial_state, mask, training):
    """The arguments of `lstm_scan` (and `_tf_lstm.lstm_loop`) for an
    LSTM layer's `inner_loop` call: inputs in the compute dtype with the
    cell's input dropout (one mask for all steps, as Keras's), its
    weights, and the layer's options."""
    cell = layer.cell
    dtype = layer.compute_dtype
    x = ops.cast(sequences, dtype)
    if training and cell.dropout:
        x = x * ops.expand_dims(cell.get_dropout_mask(x[:, 0, :]), axis=1)
    weights = (ops.cast(w, dtype) for w in (cell.kernel, cell.recurrent_kernel, cell.bias))
    return (x, *weights, initial_state, mask, layer.go_backwards, layer.zero_output_for_mask)
