"""Where our LSTM and GRU layers reach a fused kernel.

`keras_would_fuse` is the test Keras's own LSTM/GRU `inner_loop` applies
before it tries the backend's fused kernel; the weight-dropped layers ask it
on every path that goes to one (JAX's float32 and masked cuDNN calls, and
the torch kernels below).

Keras's torch backend sends `keras.layers.LSTM` to `torch._VF.lstm` (the
kernel behind `torch.nn.LSTM`, and the GRU to `torch._VF.gru`) only on
CUDA; elsewhere it runs a Python loop over the time steps (the torch
backend's `_fallback_lstm`), issuing every step's matmul and gate
operations, forward and backward, from Python. On a CPU that loop costs
2.5x the native kernel at AWD-LSTM's CPU size (docs/benchmarks.md), and it
is most of the gap between a Keras-torch language model and the same model
in PyTorch. `torch._VF.lstm` computes the same LSTM (gates in the same order
i, f, c, o; the same equations) in C++ on every device, and `torch._VF.gru`
Keras's `reset_after=True` GRU (gates reordered from Keras's z, r, h to
torch's r, z, n), so our layers call them wherever Keras's own fused path
would apply but for the device. It is written here rather than taken from
Keras because Keras keeps its call to it behind the CUDA check.
"""

import keras

_FLOATS = ("float32", "float64")


def torch_is_tracing():
    """Whether torch is tracing (TorchScript) or compiling (Dynamo) rather
    than running eagerly."""
    import torch

    compiling = getattr(torch.compiler, "is_compiling", None)
    return torch.jit.is_tracing() or bool(compiling and compiling())


def standard_activations(activation, recurrent_activation):
    """Whether an RNN cell's activations are tanh and sigmoid, as fused
    kernels (and our JAX scan's hand-written derivatives) assume."""
    tanh = (keras.activations.tanh, keras.ops.tanh)
    sigmoid = (keras.activations.sigmoid, keras.ops.sigmoid)
    if keras.backend.backend() == "torch":
        import torch

        tanh, sigmoid = tanh + (torch.tanh,), sigmoid + (torch.sigmoid,)
    return activation in tanh and recurrent_activation in sigmoid


def keras_would_fuse(layer):
    """Whether Keras's LSTM/GRU `inner_loop` would try the backend's fused
    kernel for `layer`, the mask and the device aside: `use_cudnn` "auto" or
    True, no recurrent dropout, not unrolled, a bias, tanh and sigmoid."""
    cell = layer.cell
    return (
        # WeightDropLSTM's `use_cudnn` reads False outside its loop.
        getattr(layer, "_use_cudnn", layer.use_cudnn) in ("auto", True)
        and not layer.recurrent_dropout
        and not layer.unroll
        and cell.use_bias
        and standard_activations(cell.activation, cell.recurrent_activation)
    )


class _NativeTorchRNN:
    """What the LSTM and GRU mixins share: where the torch kernel applies,
    and the input dropout Keras's fused path applies (one mask, all steps)."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if keras.tree.is_nested(mask):
            mask = mask[0]
        if self._native_torch_applies(sequences, mask):
            return self._native_torch_call(sequences, initial_state, training)
        return super().inner_loop(sequences, initial_state, mask=mask, training=training)

    def _native_torch_applies(self, sequences, mask):
        if keras.backend.backend() != "torch" or mask is not None:
            return False
        import torch

        # Not while tracing, as Keras's cuDNN path: TorchScript/Dynamo traces
        # record the weight transposes as device transfers that fail
        # validation downstream.
        return (
            keras_would_fuse(self)
            and keras.backend.standardize_dtype(self.compute_dtype) in _FLOATS
            and hasattr(torch._VF, self._native_kernel)
            and self._native_layout_ok()
            and not torch_is_tracing()
            and keras.ops.convert_to_tensor(sequences).device.type != "cuda"
        )

    def _native_layout_ok(self):
        return True

    def _native_inputs(self, sequences, training):
        import torch

        cell = self.cell
        x = keras.ops.cast(sequences, self.compute_dtype)
        if training and cell.dropout:
            x = x * keras.ops.expand_dims(cell.get_dropout_mask(x[:, 0, :]), axis=1)
        if self.go_backwards:
            x = torch.flip(x, dims=[1])
        return x


class NativeTorchLSTM(_NativeTorchRNN):
    """Mixin for `keras.layers.LSTM` subclasses: the torch kernel on every device.

    Applies where Keras's fused path would (`use_cudnn` "auto" or True, no
    recurrent dropout, no mask, not unrolled, tanh/sigmoid, a bias) on the
    torch backend with float32/float64 inputs on a device other than CUDA
    (where Keras calls the same kernel itself). Input dropout is applied as
    `keras.layers.LSTM.inner_loop` applies it for its fused path: one mask
    for all steps. Everything else goes to Keras's `inner_loop` unchanged.
    """

    _native_kernel = "lstm"

    def _native_torch_call(self, sequences, initial_state, training):
        import torch

        cell = self.cell
        dtype = self.compute_dtype
        x = self._native_inputs(sequences, training)
        # Keras's layout (in, 4H) is torch's (4H, in) transposed; the kernel
        # adds two biases, so the second is a constant zero.
        kernel = keras.ops.cast(cell.kernel, dtype)
        recurrent_kernel = keras.ops.cast(cell.recurrent_kernel, dtype)
        bias = keras.ops.cast(cell.bias, dtype)
        weights = [kernel.T, recurrent_kernel.T, bias, torch.zeros_like(bias)]
        h0, c0 = (keras.ops.cast(s, dtype)[None] for s in initial_state[:2])
        outputs, h, c = torch._VF.lstm(
            x, (h0, c0), weights, True, 1, 0.0, torch.is_grad_enabled(), False, True
        )
        h, c = h[0], c[0]
        if not self.return_sequences:
            outputs = h[:, None]
        return h, outputs, [h, c]


class NativeTorchGRU(_NativeTorchRNN):
    """Mixin for `keras.layers.GRU` subclasses: `torch._VF.gru` on every device.

    As `NativeTorchLSTM`, for the `reset_after=True` GRU (Keras's default
    and the formulation torch's kernel computes):
    n_t = tanh(W_n x_t + b_n + r_t ⊙ (U_n h_{t-1} + b'_n)).
    """

    _native_kernel = "gru"

    def _native_layout_ok(self):
        return self.cell.reset_after

    def _native_torch_call(self, sequences, initial_state, training):
        import torch

        cell = self.cell
        dtype = self.compute_dtype
        x = self._native_inputs(sequences, training)

        def torch_order(w, dim):  # Keras's gate blocks z, r, h -> torch's r, z, n
            z, r, h = w.chunk(3, dim=dim)
            return torch.cat([r, z, h], dim=dim)

        kernel = keras.ops.cast(cell.kernel, dtype)
        recurrent_kernel = keras.ops.cast(cell.recurrent_kernel, dtype)
        bias = keras.ops.cast(cell.bias, dtype)  # (2, 3H): input, recurrent
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
        if not self.return_sequences:
            outputs = h[:, None]
        return h, outputs, [h]
