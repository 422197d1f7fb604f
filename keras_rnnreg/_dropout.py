"""`keras.random.dropout` at lower cost on the torch backend.

Keras's torch dropout draws its mask with `torch.bernoulli` and returns
`where(mask, x / keep, 0)`: a division and a select over the whole tensor,
and both again in the backward pass, each its own pass in eager torch;
weight drop and locked dropout run several per training step. Here the
mask is `u < keep` for uniform u (Bernoulli(keep) exactly, and on a CPU
cheaper than `torch.bernoulli`: docs/benchmarks.md, "The thin torch
path"), scaled by 1/keep at its own size and multiplied in once. The
seed handling is Keras's: the same generator from the same seed-generator
step, or torch's global generator where Keras would use it (unseeded, no
noise shape). Elsewhere this is `keras.random.dropout`.
"""

import keras
from keras import ops

from keras_rnnreg._keras_compat import torch_dropout_generator


def dropout(inputs, rate, noise_shape=None, seed=None):
    """`keras.random.dropout(inputs, rate, noise_shape, seed)`: the same
    distribution and the same seed-generator steps; cheaper in eager torch."""
    if keras.backend.backend() != "torch" or rate in (0.0, 1.0):
        return keras.random.dropout(inputs, rate, noise_shape=noise_shape, seed=seed)
    import torch

    inputs = ops.convert_to_tensor(inputs)
    if inputs.device.type == "meta":  # symbolic shapes: no generator
        return keras.random.dropout(inputs, rate, noise_shape=noise_shape, seed=seed)
    generator = torch_dropout_generator(seed, noise_shape)
    keep = 1.0 - rate
    shape = tuple(inputs.shape)
    if noise_shape is not None:
        shape = tuple(n if d is None else d for n, d in zip(shape, noise_shape))
    device = inputs.device if generator is None else generator.device
    scale = torch.rand(shape, generator=generator, device=device).lt_(keep).div_(keep)
    return inputs * scale.to(device=inputs.device, dtype=inputs.dtype)
