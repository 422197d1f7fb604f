"""The LSTM on TensorFlow where Keras would loop: `_jax_lstm`'s scan.

Keras's TensorFlow LSTM is cuDNN's on a GPU and elsewhere its generic cell
loop, a `tf.while_loop` that multiplies both the input and the state by
their kernels at every step and that TensorFlow differentiates by
accumulating the kernel gradients step by step. `NativeTfLSTM` runs the
same computation as `_jax_lstm.NativeJaxLSTM` (whose module docstring has
the why): the input projections of all steps in one matmul, a loop of the
recurrent matmul and the gates (`_jax_lstm.forward_step`), and a backward
loop of the state gradients only (`_jax_lstm.backward_step`), as a
`tf.custom_gradient`, the recurrent kernel's gradient one matmul after it.
"""

import functools

import keras
from keras import ops

from keras_rnnreg._fused_rnn import _FLOATS, keras_would_fuse
from keras_rnnreg._jax_lstm import backward_step, forward_step, loop_arguments, time_major_loop


def _scan(step, carry, xs, num_outputs, dtype, reverse=False):
    """`jax.lax.scan`'s contract as a `tf.while_loop`: `step(carry, x) ->
    (carry, ys)` over the leading axis of the tensors in `xs` (None entries
    passed as None; the first is a tensor), `ys` (`num_outputs` tensors of
    `dtype`) stacked."""
    import tensorflow as tf

    length = tf.shape(xs[0])[0]
    arrays = [tf.TensorArray(dtype, size=length) for _ in range(num_outputs)]

    def body(t, carry, arrays):
        index = length - 1 - t if reverse else t
        carry, ys = step(carry, tuple(None if x is None else x[index] for x in xs))
        return t + 1, carry, [array.write(index, y) for array, y in zip(arrays, ys)]

    _, carry, arrays = tf.while_loop(
        lambda t, *_: t < length, body, (tf.constant(0), carry, arrays)
    )
    return carry, tuple(array.stack() for array in arrays)


def _lstm(projected, recurrent_kernel, h0, c0, mask, noise, zero_output, noise_mode):
    """(outputs, h, c) of the time-major `projected`, with the hand-written
    gradient; `mask` a float (time, batch, 1) tensor of 0/1 or None, `noise`
    None or Noisin's ε (time, batch, units), a draw that gets no gradient."""
    import tensorflow as tf

    dtype = projected.dtype

    @tf.custom_gradient
    def lstm(projected, recurrent_kernel, h0, c0):
        def step(carry, inputs):
            return forward_step(carry, inputs, recurrent_kernel, zero_output, noise_mode)

        (h, c), (outputs, gates, h_prev, c_prev) = _scan(
            step, (h0, c0), (projected, mask, noise), 4, dtype
        )

        def gradient(d_outputs, d_h, d_c):
            # An output nothing depends on may get no gradient.
            d_outputs, d_h, d_c = (
                tf.zeros_like(value) if grad is None else grad
                for grad, value in ((d_outputs, outputs), (d_h, h), (d_c, c))
            )
            transposed = tf.transpose(recurrent_kernel)

            def back(carry, inputs):
                carry, d_z = backward_step(carry, inputs, transposed, zero_output, noise_mode)
                return carry, (d_z,)

            (d_h0, d_c0), (d_z,) = _scan(
                back, (d_h, d_c), (d_outputs, gates, h_prev, c_prev, mask, noise), 1, dtype,
                reverse=True,
            )
            # The recurrent kernel's gradient for all steps in one matmul.
            d_kernel = tf.einsum("tbh,tbg->hg", h_prev, d_z)
            return d_z, d_kernel, d_h0, d_c0

        return (outputs, h, c), gradient

    return lstm(projected, recurrent_kernel, h0, c0)


def lstm_loop(inputs, kernel, recurrent_kernel, bias, initial_state, mask=None,
              go_backwards=False, zero_output_for_mask=False, noise=None, noise_mode=None):
    """An LSTM layer's loop on TensorFlow, as Keras's `RNN.inner_loop`
    returns it; arguments as `_jax_lstm.lstm_scan`'s."""
    return time_major_loop(_lstm, inputs, kernel, recurrent_kernel, bias, initial_state, mask,
                           go_backwards, zero_output_for_mask, noise, noise_mode)


@functools.cache
def _has_gpu():
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


class NativeTfLSTM:
    """Mixin for `keras.layers.LSTM` subclasses: `lstm_loop` on TensorFlow
    without a GPU, where Keras's LSTM would take cuDNN on one (as
    `NativeJaxLSTM`'s conditions); with a GPU Keras's paths are left as
    they are."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if keras.tree.is_nested(mask):
            mask = mask[0]
        if self._native_tf_applies():
            return lstm_loop(*loop_arguments(self, sequences, initial_state, mask, training))
        return super().inner_loop(sequences, initial_state, mask=mask, training=training)

    def _native_tf_applies(self):
        return (
            keras.backend.backend() == "tensorflow"
            and keras_would_fuse(self)
            and keras.backend.standardize_dtype(self.compute_dtype) in _FLOATS
            and not _has_gpu()
        )
