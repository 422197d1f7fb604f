"""The output projection of a language model, shared by its two layers."""

import keras
from keras import ops


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


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class TokenDense(keras.layers.Dense):
    """`keras.layers.Dense` that projects every token in one 2-D matmul.

    The untied decoder of `keras_rnnreg.models.language_model`: the same
    layer, weights and values as `Dense`, with its matmul over the
    flattened tokens (`project_tokens`). Saved models name it
    `keras_rnnreg>TokenDense`; weights load into a plain `Dense` and back.
    """

    def call(self, inputs, training=None):
        # torch's matmul flattens the tokens itself; LoRA and quantized
        # kernels keep Dense's own call.
        if (
            keras.backend.backend() == "torch"
            or len(inputs.shape) < 3
            or getattr(self, "lora_enabled", False)
            or getattr(self, "quantization_mode", None)
        ):
            return super().call(inputs, training=training)
        outputs = project_tokens(inputs, self.kernel, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
