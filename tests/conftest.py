import os

# The suite compares against NumPy references at float32 precision. On
# Ampere/Hopper GPUs cuBLAS and cuDNN (torch's cuDNN RNNs, JAX's matmuls)
# default to TF32, whose 10-bit mantissa misses those tolerances by orders of
# magnitude; this turns it off for every CUDA library before any is loaded.
# It does nothing on a CPU. The per-backend switches below say the same to
# the frameworks themselves.
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _full_float32_precision():
    """Turns TF32 (and other reduced-precision float32 math) off per backend."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    elif backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)


_full_float32_precision()


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the same seeds and the default dtype policy."""
    keras.utils.set_random_seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")
    # free_memory=False: skips a gc.collect() that costs ~0.5 s a test on JAX
    keras.backend.clear_session(free_memory=False)


def to_numpy(x):
    # A copy, whatever the backend's convert_to_numpy does (a CPU torch
    # tensor's .numpy() is a view): a "before" kept across an `assign` must
    # not follow it.
    return np.array(keras.ops.convert_to_numpy(x), copy=True)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm(x, kernel, recurrent_kernel, bias, h0=None, c0=None,
               eps=None, mode="multiplicative", mask=None):
    """Keras's LSTM recurrence (gate order i, f, c, o) in NumPy.

    With `eps` (batch, time, units) it is Noisin's Algorithm 1: the emitted
    state z_t = h_t ⊙ ε_t (or h_t + ε_t with mode="additive") is both the
    output and the state fed back; c is not noised. With `mask` (batch, time)
    a masked step carries the previous (z, c) forward, as Keras does.
    Returns all outputs (batch, time, units) and the final (h, c).
    """
    batch, steps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((batch, units)) if h0 is None else h0
    c = np.zeros((batch, units)) if c0 is None else c0
    outputs = []
    for t in range(steps):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = np.split(z, 4, axis=-1)
        c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h_new = sigmoid(o) * np.tanh(c_new)
        if eps is not None:
            h_new = h_new * eps[:, t] if mode == "multiplicative" else h_new + eps[:, t]
        if mask is not None:
            keep = mask[:, t : t + 1].astype(bool)
            h_new, c_new = np.where(keep, h_new, h), np.where(keep, c_new, c)
        h, c = h_new, c_new
        outputs.append(h)
    return np.stack(outputs, axis=1), h, c


def numpy_gru(x, kernel, recurrent_kernel, bias):
    """Keras's GRU recurrence with reset_after=True (gate order z, r, h)."""
    batch, steps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((batch, units))
    outputs = []
    for t in range(steps):
        x_z, x_r, x_h = np.split(x[:, t] @ kernel + bias[0], 3, axis=-1)
        h_z, h_r, h_h = np.split(h @ recurrent_kernel + bias[1], 3, axis=-1)
        z = sigmoid(x_z + h_z)
        r = sigmoid(x_r + h_r)
        candidate = np.tanh(x_h + r * h_h)
        h = z * h + (1 - z) * candidate
        outputs.append(h)
    return np.stack(outputs, axis=1)
