"""The LSTM and GRU on torch off CUDA: PyTorch's own kernels, and Noisin's loop.

Keras's torch backend sends `keras.layers.LSTM` to `torch._VF.lstm` (the
kernel behind `torch.nn.LSTM`, and the GRU to `torch._VF.gru`) only on
CUDA; elsewhere it runs a Python loop over the time steps, issuing every
step's matmul and gate operations, forward and backward, from Python. On a
CPU that loop is markedly slower than the native kernel at AWD-LSTM's
CPU size (measured: docs/benchmarks.md, "The thin torch path").
`torch._VF.lstm` computes the same LSTM (gates i, f,
c, o) in C++ on every device, and `torch._VF.gru` Keras's `reset_after=True`
GRU (gates reordered from Keras's z, r, h to torch's r, z, n). Keras keeps
its call to them behind the CUDA check, so it is written here.

With Noisin's noise no kernel applies; `noisy_lstm` is the loop a
hand-written PyTorch LSTM would run (one addmm and the gates per step),
without `keras.ops`' conversions around each of its operations.
"""

import keras


def is_tracing():
    """Whether torch is tracing (TorchScript) or compiling (Dynamo) rather
    than running eagerly."""
    import torch

    compiling = getattr(torch.compiler, "is_compiling", None)
    return torch.jit.is_tracing() or bool(compiling and compiling())


def native_kernel_applies(sequences, mask):
    """Off CUDA, eager, no mask: where Keras would have used the kernel on
    CUDA. (Not while tracing, as Keras's own cuDNN path: traces record the
    weight transposes as device transfers that fail validation.)"""
    return (
        mask is None
        and not is_tracing()
        and keras.ops.convert_to_tensor(sequences).device.type != "cuda"
    )


def _inputs(layer, sequences, dropout_mask):
    import torch

    x = keras.ops.cast(sequences, layer.compute_dtype)
    if dropout_mask is not None:
        x = x * keras.ops.expand_dims(dropout_mask, axis=1)
    return torch.flip(x, dims=[1]) if layer.go_backwards else x


def native_lstm(layer, sequences, initial_state, dropout_mask, recurrent_kernel):
    """`torch._VF.lstm` with U' as the recurrent weights."""
    import torch

    cell = layer.cell
    dtype = layer.compute_dtype
    x = _inputs(layer, sequences, dropout_mask)
    # Keras's layout (in, 4H) is torch's (4H, in) transposed; the kernel
    # adds two biases, so the second is a constant zero.
    kernel, recurrent_kernel, bias = (
        keras.ops.cast(w, dtype) for w in (cell.kernel, recurrent_kernel, cell.bias)
    )
    weights = [kernel.T, recurrent_kernel.T, bias, torch.zeros_like(bias)]
    h0, c0 = (keras.ops.cast(s, dtype)[None] for s in initial_state[:2])
    outputs, h, c = torch._VF.lstm(
        x, (h0, c0), weights, True, 1, 0.0, torch.is_grad_enabled(), False, True
    )
    h, c = h[0], c[0]
    if not layer.return_sequences:
        outputs = h[:, None]
    return h, outputs, [h, c]


def native_gru(layer, sequences, initial_state, dropout_mask, recurrent_kernel):
    """`torch._VF.gru` with U' as the recurrent weights, for `reset_after`:
    n_t = tanh(W_n x_t + b_n + r_t ⊙ (U_n h_{t-1} + b'_n))."""
    import torch

    cell = layer.cell
    dtype = layer.compute_dtype
    x = _inputs(layer, sequences, dropout_mask)

    def torch_order(w, dim):  # Keras's gate blocks z, r, h -> torch's r, z, n
        z, r, h = w.chunk(3, dim=dim)
        return torch.cat([r, z, h], dim=dim)

    kernel, recurrent_kernel, bias = (
        keras.ops.cast(w, dtype) for w in (cell.kernel, recurrent_kernel, cell.bias)
    )
    weights = [
        torch_order(kernel, 1).T, torch_order(recurrent_kernel, 1).T,
        torch_order(bias[0], 0), torch_order(bias[1], 0),
    ]
    state = initial_state[0] if keras.tree.is_nested(initial_state) else initial_state
    outputs, h = torch._VF.gru(
        x, keras.ops.cast(state, dtype)[None], weights, True, 1, 0.0,
        torch.is_grad_enabled(), False, True,
    )
    h = h[0]
    if not layer.return_sequences:
        outputs = h[:, None]
    return h, outputs, [h]


def noisy_lstm(layer, projected, initial_state, recurrent_kernel, noise, noise_mode):
    """Noisin's LSTM as plain torch calls: per step one addmm
    (x_t W + b + h_{t-1} U), the gates and the noise; outputs in processing
    order with `go_backwards`, as Keras's loop returns them."""
    import torch

    recurrent_kernel = keras.ops.cast(recurrent_kernel, projected.dtype)
    h, c = (keras.ops.cast(s, projected.dtype) for s in initial_state[:2])
    if layer.stateful:  # Keras later writes the new state into these
        h, c = h.clone(), c.clone()
    # unbind: one backward node for all steps; indexing step t would make
    # each step's backward write a zero tensor of the whole sequence.
    projected_steps, noise_steps = projected.unbind(1), noise.unbind(1)
    steps = len(projected_steps)
    order = range(steps - 1, -1, -1) if layer.go_backwards else range(steps)
    multiplicative = noise_mode == "multiplicative"
    outputs = []
    for t in order:
        z = torch.addmm(projected_steps[t], h, recurrent_kernel)
        z_i, z_f, z_c, z_o = z.chunk(4, dim=-1)
        c = torch.sigmoid(z_f) * c + torch.sigmoid(z_i) * torch.tanh(z_c)
        h = torch.sigmoid(z_o) * torch.tanh(c)
        h = h * noise_steps[t] if multiplicative else h + noise_steps[t]
        outputs.append(h)
    sequence = torch.stack(outputs, dim=1) if layer.return_sequences else h[:, None]
    return h, sequence, [h, c]
