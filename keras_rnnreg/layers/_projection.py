"""The output projection of a language model, shared by its two layers."""

import keras

from keras_rnnreg._lstm.math import project_tokens


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
