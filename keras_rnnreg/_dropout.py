"""`keras.random.dropout` with one multiply on the torch backend.

Keras's torch dropout returns `where(mask, x / keep, 0)`: a division and a
select over the whole tensor, and both again in the backward pass. Eager
torch runs each as its own pass, and weight drop and locked dropout run
several per training step. Here the mask, drawn exactly as Keras draws it
(the same generator, the same Bernoulli matrix of the noise shape), is
scaled by 1/keep at its own size and multiplied in once. Elsewhere, and
where Keras takes its unseeded path, this is `keras.random.dropout`.
"""

import keras
from keras import ops

from keras_rnnreg._keras_compat import torch_dropout_generator


def dropout(inputs, rate, noise_shape=None, seed=None):
    """`keras.random.dropout(inputs, rate, noise_shape, seed)`: the same
    masks, the same seed-generator steps; cheaper in eager torch."""
    if keras.backend.backend() != "torch" or rate in (0.0, 1.0):
        return keras.random.dropout(inputs, rate, noise_shape=noise_shape, seed=seed)
    import torch

    inputs = ops.convert_to_tensor(inputs)
    if inputs.device.type == "meta":  # symbolic shapes: no generator
        return keras.random.dropout(inputs, rate, noise_shape=noise_shape, seed=seed)
    generator = torch_dropout_generator(seed, noise_shape)
    if generator is None:
        return keras.random.dropout(inputs, rate, noise_shape=noise_shape, seed=seed)
    keep = 1.0 - rate
    shape = tuple(inputs.shape)
    if noise_shape is not None:
        shape = tuple(n if d is None else d for n, d in zip(shape, noise_shape))
    mask = torch.bernoulli(torch.full(shape, keep, device=generator.device), generator=generator)
    return inputs * mask.div_(keep).to(device=inputs.device, dtype=inputs.dtype)
