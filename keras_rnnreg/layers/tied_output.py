import keras
from keras import ops

from keras_rnnreg._validation import check_bool, check_int
from keras_rnnreg.layers._projection import project_tokens


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class TiedEmbedding(keras.layers.Embedding):
    """An `Embedding` whose matrix also serves as the softmax weights.

    Weight tying (Inan et al., 2016; Press & Wolf, 2016; AWD-LSTM section 4.4)
    uses one matrix E (vocabulary x embedding size) both to look words up and
    to score the next word:

        e_t = E[x_t]                    (forward call)
        logits_t = h_t E^T (+ b)        (call with `reverse=True`)

    Call the same layer instance twice, once on token ids and once with
    `reverse=True` on the last recurrent layer's output. The last recurrent
    layer must therefore have `units == output_dim` (AWD-LSTM 4.5: the
    embedding and hidden sizes are independent, only the last layer's size
    is tied to the embedding size).

    This is the `keras_hub.layers.ReversibleEmbedding` API. We write our own
    because keras-hub requires tensorflow-text, tokenizers, sentencepiece and
    kagglehub, which a JAX- or torch-only user of this keras-only library
    should not have to install, and because AWD-LSTM's decoder has a bias.

    Args:
        input_dim: Vocabulary size.
        output_dim: Embedding size (and size of the tied hidden state).
        use_output_bias: Whether the reverse projection adds a learned
            per-word bias b, as AWD-LSTM's decoder does. Default False.
        padding_id: Optional int, an id that marks padding: those steps are
            masked (as `mask_zero=True` masks id 0) and look up row 0 if the
            id is not a word (e.g. -1, what `BPTTSequence(pad_to_multiple=k)`
            pads with by default). None (the default) masks nothing.
        **kwargs: Any `keras.layers.Embedding` argument (`mask_zero`,
            `embeddings_initializer`, `embeddings_regularizer`, ...).

    Call arguments:
        inputs: Integer ids `(batch, time)`, or with `reverse=True` float
            hidden states `(..., output_dim)`.
        reverse: Bool. False: look ids up. True: return logits over the
            vocabulary, `(..., input_dim)`.

    Example:

    ```python
    tokens = keras.Input((None,), dtype="int32")
    embedding = TiedEmbedding(10000, 400)
    h = keras.layers.LSTM(400, return_sequences=True)(embedding(tokens))
    logits = embedding(h, reverse=True)
    ```
    """

    def __init__(self, input_dim, output_dim, use_output_bias=False, padding_id=None, **kwargs):
        self.use_output_bias = check_bool("use_output_bias", use_output_bias)
        if padding_id is not None:
            padding_id = check_int("padding_id", padding_id)
            if kwargs.get("mask_zero"):
                raise ValueError(
                    "Pass either `mask_zero=True` (id 0 is padding) or `padding_id`. "
                    f"Received: mask_zero=True, padding_id={padding_id}"
                )
        self.padding_id = padding_id
        super().__init__(input_dim, output_dim, **kwargs)
        # The reverse call receives hidden states whose mask must flow on.
        self.supports_masking = True

    def build(self, input_shape=None):
        if self.use_output_bias and not hasattr(self, "output_bias"):
            self.output_bias = self.add_weight(
                name="output_bias", shape=(self.input_dim,), initializer="zeros"
            )
        super().build(input_shape)

    def _ids(self, inputs):
        """The ids to look up: padding looks up row 0 (its steps are masked)."""
        if self.padding_id is None or 0 <= self.padding_id < self.input_dim:
            return inputs
        return ops.where(ops.equal(inputs, self.padding_id), ops.zeros_like(inputs), inputs)

    def call(self, inputs, reverse=False):
        if not reverse:
            return super().call(self._ids(inputs))
        embeddings = ops.cast(self.embeddings, self.compute_dtype)
        bias = ops.cast(self.output_bias, self.compute_dtype) if self.use_output_bias else None
        if keras.backend.backend() == "torch":
            # One addmm in eager torch, where a matmul and then the bias
            # would be two passes over the (tokens, vocabulary) logits
            # (measured: docs/benchmarks.md, "The thin torch path").
            import torch

            return torch.nn.functional.linear(inputs, embeddings, bias)
        return project_tokens(inputs, ops.transpose(embeddings), bias)

    def compute_mask(self, inputs, mask=None):
        # In reverse mode the inputs are hidden states: keep their mask rather
        # than recomputing one from token ids.
        if "float" in keras.backend.standardize_dtype(inputs.dtype):
            return mask
        if self.padding_id is not None:
            return ops.not_equal(inputs, self.padding_id)
        return super().compute_mask(inputs, mask)

    def compute_output_shape(self, input_shape, reverse=False):
        if reverse:
            return (*input_shape[:-1], self.input_dim)
        return super().compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, reverse=False, **call_kwargs):
        # **call_kwargs: subclasses' call arguments (`training`) that do not
        # change the output spec.
        if reverse:
            return keras.KerasTensor(
                self.compute_output_shape(inputs.shape, reverse=True),
                dtype=self.compute_dtype,
            )
        return super().compute_output_spec(inputs)

    @property
    def variable_serialization_spec(self):
        # Embedding saves only the variables named here; add ours, where it
        # exists (Keras < 3.15 fails on a listed name the layer lacks).
        if not self.use_output_bias:
            return super().variable_serialization_spec
        return {
            mode: [*names, "output_bias"]
            for mode, names in super().variable_serialization_spec.items()
        }

    def get_config(self):
        return {
            **super().get_config(),
            "use_output_bias": self.use_output_bias,
            "padding_id": self.padding_id,
        }
