"""The LSTM and GRU steps, written once in `keras.ops`.

`lstm_cell` and `gru_cell` are the cells' equations (Keras's `LSTMCell`
and `GRUCell`, gate orders i, f, c, o and z, r, h) with the recurrent
kernel, the activations and Noisin's noise as arguments: the generic loop
(`loop.cell_loop`) runs them for any configuration. `forward_step` and
`backward_step` are one step of the fast LSTM cores and its hand-written
gradient (tanh and sigmoid), which the JAX scan and the TensorFlow loop
share; `project_tokens` is the one 2-D matmul over all steps (or
tokens) that the input and output projections use.
"""

from keras import ops


def apply_noise(h, eps, mode):
    """Noisin's emitted state (Dieng et al. 2018, Algorithm 1): h ⊙ ε
    ("multiplicative", Eq. 14) or h + ε ("additive", Eq. 13), computed in
    ε's dtype (float32 under mixed precision) and cast back to h's."""
    if eps.dtype != h.dtype:
        return ops.cast(apply_noise(ops.cast(h, eps.dtype), eps, mode), h.dtype)
    return h * eps if mode == "multiplicative" else h + eps


def lstm_gates(z, c, activation, recurrent_activation):
    """i, f, c̃, o and the new (h, c) from the pre-activations
    z = x_t W + h_{t-1} U + b."""
    z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
    i, f, o = recurrent_activation(z_i), recurrent_activation(z_f), recurrent_activation(z_o)
    g = activation(z_c)
    c_new = f * c + i * g
    return (i, f, g, o), o * activation(c_new), c_new


def _recurrent_product(h, recurrent_kernel, recurrent_mask, gates):
    """h_{t-1} U with the cell's recurrent dropout: one mask on h, or (Keras's
    `implementation=1`, which recurrent dropout selects) one per gate block."""
    if recurrent_mask is None:
        return ops.matmul(h, recurrent_kernel)
    if not isinstance(recurrent_mask, (list, tuple)):
        return ops.matmul(h * recurrent_mask, recurrent_kernel)
    blocks = ops.split(recurrent_kernel, gates, axis=-1)
    return ops.concatenate([ops.matmul(h * m, u) for m, u in zip(recurrent_mask, blocks)], -1)


def lstm_cell(projected, h, c, recurrent_kernel, activation, recurrent_activation,
              recurrent_mask=None, noise=None, noise_mode=None):
    """One step of Keras's `LSTMCell` with U and ε as arguments: `projected`
    is x_t W + b (input dropout applied); `recurrent_mask` the cell's
    recurrent dropout mask(s) on h_{t-1}; `noise` ε_t. Returns (h_t, c_t)."""
    z = projected + _recurrent_product(h, recurrent_kernel, recurrent_mask, 4)
    _, h_new, c_new = lstm_gates(z, c, activation, recurrent_activation)
    if noise is not None:
        h_new = apply_noise(h_new, noise, noise_mode)
    return h_new, c_new


def gru_cell(projected, h, recurrent_kernel, recurrent_bias, reset_after, activation,
             recurrent_activation, recurrent_mask=None, noise=None, noise_mode=None):
    """One step of Keras's `GRUCell` with U and ε as arguments: `projected`
    is x_t W + b (the input bias; input dropout applied), `recurrent_bias`
    the recurrent bias row with `reset_after` (else None), `recurrent_mask`
    as for `lstm_cell`. Returns h_t."""
    masks = recurrent_mask if isinstance(recurrent_mask, (list, tuple)) else [recurrent_mask] * 3
    h_z, h_r, h_h = (h if m is None else h * m for m in masks)
    u_z, u_r, u_h = ops.split(recurrent_kernel, 3, axis=-1)
    x_z, x_r, x_h = ops.split(projected, 3, axis=-1)
    b_z, b_r, b_h = (0.0, 0.0, 0.0) if recurrent_bias is None else ops.split(recurrent_bias, 3)
    z = recurrent_activation(x_z + ops.matmul(h_z, u_z) + b_z)
    r = recurrent_activation(x_r + ops.matmul(h_r, u_r) + b_r)
    if reset_after:
        candidate = x_h + r * (ops.matmul(h_h, u_h) + b_h)
    else:
        candidate = x_h + ops.matmul(r * h_h, u_h)
    h_new = z * h + (1 - z) * activation(candidate)
    if noise is not None:
        h_new = apply_noise(h_new, noise, noise_mode)
    return h_new


def forward_step(carry, inputs, recurrent_kernel, zero_output, noise_mode):
    """One step of the fast cores (tanh/sigmoid): carry (h, c), inputs
    (projected x_t W + b, mask, noise) -> (new carry, (output, gates
    [i, f, c̃, o], h, c)); the last three are what `backward_step` needs."""
    h, c = carry
    p, m, e = inputs
    (i, f, g, o), h_new, c_new = lstm_gates(
        p + ops.matmul(h, recurrent_kernel), c, ops.tanh, ops.sigmoid
    )
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


def project_tokens(inputs, kernel, bias=None):
    """`inputs @ kernel + bias` over the last axis, as one 2-D matmul.

    The leading axes (batch, time) are flattened into one before the matmul
    and restored after it. Same values as `ops.matmul` on the 3-D hidden
    states; but for the 3-D form XLA on a CPU computes the kernel's gradient
    from a transposed copy of the logits' gradient, which made a language
    model's train step markedly slower on JAX (docs/benchmarks.md,
    "Flattened output projection"); on TensorFlow and torch both cost the
    same.

    Args:
        inputs: Hidden states `(..., features)`.
        kernel: `(features, units)`.
        bias: Optional `(units,)`.

    Returns:
        `(..., units)`.
    """
    shape = ops.shape(inputs)
    outputs = ops.matmul(ops.reshape(inputs, (-1, shape[-1])), kernel)
    if bias is not None:
        outputs = ops.add(outputs, bias)
    return ops.reshape(outputs, (*shape[:-1], ops.shape(kernel)[-1]))
