"""The LSTM on TensorFlow where Keras would loop: `jax_core`'s scan as a
`tf.while_loop`.

Keras's TensorFlow LSTM is cuDNN's on a GPU and elsewhere its generic cell
loop, which TensorFlow differentiates by accumulating the kernel gradients
step by step. `tf_lstm` runs what `jax_core.scan_lstm` runs (see its
module docstring for the why): a loop of `math.forward_step`, and a
backward loop of the state gradients only (`math.backward_step`) as a
`tf.custom_gradient`, the recurrent kernel's gradient one matmul after it.
"""

import functools

from keras_rnnreg._lstm.math import backward_step, forward_step


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
        new, ys = step(carry, tuple(None if x is None else x[index] for x in xs))
        # A carry of batch 1 (a stateful model's state at batch size 1) meets
        # inputs of unknown batch, and the broadcast has an unknown batch:
        # the loop needs the carry's shape unchanged, which it is at run time.
        carry = tf.nest.map_structure(
            lambda n, c: n if n.shape == c.shape else tf.ensure_shape(n, c.shape), new, carry)
        return t + 1, carry, [array.write(index, y) for array, y in zip(arrays, ys)]

    _, carry, arrays = tf.while_loop(
        lambda t, *_: t < length, body, (tf.constant(0), carry, arrays)
    )
    return carry, tuple(array.stack() for array in arrays)


def tf_lstm(projected, recurrent_kernel, h0, c0, mask, noise, zero_output, noise_mode):
    """(outputs, h, c) of the time-major `projected`, with the hand-written
    gradient; arguments as `jax_core.scan_lstm`'s."""
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
            d_kernel = tf.einsum("tbh,tbg->hg", h_prev, d_z)
            return d_z, d_kernel, d_h0, d_c0

        return (outputs, h, c), gradient

    return lstm(projected, recurrent_kernel, h0, c0)


@functools.cache
def has_gpu():
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))
