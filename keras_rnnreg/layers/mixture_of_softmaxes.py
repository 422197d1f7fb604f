import keras
from keras import ops

from keras_rnnreg._dropout import dropout
from keras_rnnreg._lstm.math import project_tokens
from keras_rnnreg._validation import check_positive_int, check_rank, check_rate, check_seed

#: The automatic chunk size keeps the (tokens, experts, vocabulary) logits of
#: one chunk at or below this many values (64 MiB in float32).
CHUNK_VALUES = 2**24


def _check_optional_size(name, value, minimum=1):
    return None if value is None else check_positive_int(name, value, minimum=minimum)


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class MixtureOfSoftmaxes(keras.layers.Layer):
    """A mixture of K softmaxes over the vocabulary (MoS), as log-probabilities.

    Yang, Dai, Salakhutdinov & Cohen (2018), *Breaking the Softmax
    Bottleneck: A High-Rank RNN Language Model*, §3. A softmax over logits
    h W^T can only produce log-probability matrices (contexts × words) of
    rank at most d + 1, d the size of h; natural language, they argue, needs
    more. MoS mixes K softmaxes, each over its own latent context:

        π_k        = softmax(h W_π)_k                       (prior, no bias)
        g_k        = tanh(h W_h + b_h)_k                    (K latent contexts of size d)
        P(w | h)   = Σ_k π_k softmax(g_k E^T + b)_w

    computed here in log space, which stays finite where a probability
    underflows:

        log P(w | h) = logsumexp_k (log π_k + log_softmax(g_k E^T + b)_w)

    E (vocabulary × d) is a `TiedEmbedding`'s matrix when `embedding` is
    given (weight tying, AWD-LSTM §4.4; the embedding's output bias, if it
    has one, is b), else the layer's own decoder. The latent contexts are
    dropped with locked dropout, one mask per sequence and latent feature
    reused at every step (the MoS code's `dropoutl`), during training only.

    The output is log-probabilities, which are valid logits (their softmax
    is themselves): `TokenCrossEntropy`, Keras's
    `SparseCategoricalCrossentropy(from_logits=True)`, the `Perplexity`
    metric and the neural cache (`keras_rnnreg.cache`) take it unchanged.
    It is float32 whatever the compute dtype: the softmaxes and the
    logsumexp run in float32 (the projections run in the compute dtype).

    Memory. The (tokens, K, vocabulary) logits dominate; at the MoS paper's
    PTB size (12 × 70 tokens, K = 15, 10,000 words) they are 126M values.
    The layer therefore computes the mixture over chunks of `chunk_size`
    tokens (`keras.ops.map`), each rematerialized (`keras.remat`) in the
    backward pass, so that only one chunk's logits are alive at a time;
    see docs/mixture-of-softmaxes.md for the measured peak.

    Args:
        num_experts: Int >= 1, K. With K = 1 the layer is one softmax over
            one latent context (there is no prior).
        vocab_size: Int >= 2, the vocabulary size; taken from `embedding`
            when given (then it must be None or equal).
        embedding: Optional `keras.layers.Embedding` (usually a
            `TiedEmbedding`, e.g. the model's `EmbeddingDropout`) whose
            matrix projects the latent contexts onto the vocabulary. It is
            a tracked sublayer: saved with the model in a `.keras` file,
            where Keras keeps it the same object as the model's embedding.
        latent_size: Int >= 1, d, the size of each latent context. With
            `embedding` it is the embedding size (None or equal); without,
            None takes the input's feature size.
        latent_dropout: Float in [0, 1), the locked dropout rate on the
            latent contexts (the MoS code's `dropoutl`). Default 0.
        chunk_size: Optional int >= 1, the tokens (batch × time positions)
            per chunk. None (the default) picks the largest chunk whose
            logits hold at most `CHUNK_VALUES` (2^24) values.
        kernel_initializer: For the prior's and the latent projection's
            kernels (Glorot-uniform).
        bias_initializer: For the latent projection's bias (zeros).
        decoder_initializer: For the layer's own decoder kernel, without
            `embedding` (Glorot-uniform).
        decoder_bias_initializer: For that decoder's bias (zeros).
        seed: Optional int, for reproducible dropout masks.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: The last recurrent layer's (dropped) output,
            `(batch, time, features)`.
        training: Python bool; the latent dropout is applied only when True.
        mask: A Keras mask, passed on unchanged.

    Returns:
        Log-probabilities `(batch, time, vocab_size)`, float32.

    Example:

    ```python
    tokens = keras.Input((None,), dtype="int32")
    embedding = TiedEmbedding(10000, 280, use_output_bias=True)
    h = keras.layers.LSTM(620, return_sequences=True)(embedding(tokens))
    log_probs = MixtureOfSoftmaxes(15, embedding=embedding, latent_dropout=0.29)(h)
    model = keras.Model(tokens, log_probs)
    ```
    """

    def __init__(
        self,
        num_experts,
        vocab_size=None,
        *,
        embedding=None,
        latent_size=None,
        latent_dropout=0.0,
        chunk_size=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        decoder_initializer="glorot_uniform",
        decoder_bias_initializer="zeros",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = check_positive_int("num_experts", num_experts)
        vocab_size = _check_optional_size("vocab_size", vocab_size, minimum=2)
        latent_size = _check_optional_size("latent_size", latent_size)
        if embedding is not None:
            if not isinstance(embedding, keras.layers.Embedding):
                raise TypeError(
                    "Argument `embedding` must be None or a keras.layers.Embedding "
                    "(e.g. a keras_rnnreg TiedEmbedding) whose matrix is the "
                    f"softmax's. Received: embedding={embedding!r} of type "
                    f"{type(embedding).__name__}"
                )
            for name, value, own in (("vocab_size", vocab_size, embedding.input_dim),
                                     ("latent_size", latent_size, embedding.output_dim)):
                if value is not None and value != own:
                    raise ValueError(
                        f"Argument `{name}` must be None or the embedding's "
                        f"{'input_dim' if name == 'vocab_size' else 'output_dim'} "
                        f"({own}) when `embedding` is given. Received: {name}={value}"
                    )
            vocab_size, latent_size = embedding.input_dim, embedding.output_dim
        elif vocab_size is None:
            raise ValueError(
                "Pass `vocab_size` (int >= 2), or `embedding` to tie the softmax "
                "to an embedding. Received: vocab_size=None, embedding=None"
            )
        self.embedding = embedding
        self.vocab_size = vocab_size
        self.latent_size = latent_size
        self.latent_dropout = check_rate("latent_dropout", latent_dropout)
        self.chunk_size = _check_optional_size("chunk_size", chunk_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.decoder_initializer = keras.initializers.get(decoder_initializer)
        self.decoder_bias_initializer = keras.initializers.get(decoder_bias_initializer)
        self.seed = check_seed(seed)
        if self.latent_dropout > 0:
            self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    # ---------------------------------------------------------------- build
    def build(self, input_shape):
        check_rank(type(self).__name__, "inputs", input_shape, 3)
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                f"{type(self).__name__} needs a known feature size. "
                f"Received: inputs with shape {tuple(input_shape)}"
            )
        if self.latent_size is None:
            self.latent_size = features
        experts, latent = self.num_experts, self.latent_size
        if experts > 1:
            self.prior_kernel = self.add_weight(
                name="prior_kernel", shape=(features, experts),
                initializer=self.kernel_initializer,
            )
        self.latent_kernel = self.add_weight(
            name="latent_kernel", shape=(features, experts * latent),
            initializer=self.kernel_initializer,
        )
        self.latent_bias = self.add_weight(
            name="latent_bias", shape=(experts * latent,), initializer=self.bias_initializer
        )
        if self.embedding is None:
            self.decoder_kernel = self.add_weight(
                name="decoder_kernel", shape=(latent, self.vocab_size),
                initializer=self.decoder_initializer,
            )
            self.decoder_bias = self.add_weight(
                name="decoder_bias", shape=(self.vocab_size,),
                initializer=self.decoder_bias_initializer,
            )
        elif not self.embedding.built:
            self.embedding.build((None, None))

    def _decoder(self):
        """The (latent, vocabulary) projection and its bias, in the compute dtype."""
        dtype = self.compute_dtype
        if self.embedding is None:
            return ops.cast(self.decoder_kernel, dtype), ops.cast(self.decoder_bias, dtype)
        kernel = ops.transpose(ops.cast(self.embedding.embeddings, dtype))
        bias = getattr(self.embedding, "output_bias", None)
        if not getattr(self.embedding, "use_output_bias", False) or bias is None:
            return kernel, None
        return kernel, ops.cast(bias, dtype)

    # ----------------------------------------------------------------- call
    def call(self, inputs, training=False, mask=None):
        check_rank(type(self).__name__, "inputs", inputs.shape, 3)
        dtype = self.compute_dtype
        experts, latent_size = self.num_experts, self.latent_size
        shape = ops.shape(inputs)
        latent = ops.tanh(project_tokens(
            inputs, ops.cast(self.latent_kernel, dtype), ops.cast(self.latent_bias, dtype)))
        if training and self.latent_dropout > 0:
            # Locked: one mask per sequence and latent feature (all K contexts).
            latent = dropout(latent, self.latent_dropout, (None, 1, None),
                             seed=self.seed_generator)
        latent = ops.reshape(latent, (-1, experts, latent_size))
        if experts > 1:
            prior_logits = project_tokens(inputs, ops.cast(self.prior_kernel, dtype))
            log_prior = ops.log_softmax(ops.cast(prior_logits, "float32"), axis=-1)
            log_prior = ops.reshape(log_prior, (-1, experts))
        else:
            log_prior = ops.zeros((ops.shape(latent)[0], 1), "float32")
        kernel, bias = self._decoder()
        log_probs = self._mix_in_chunks(latent, log_prior, kernel, bias)
        return ops.reshape(log_probs, (shape[0], shape[1], self.vocab_size))

    def _tokens_per_chunk(self):
        if self.chunk_size is not None:
            return self.chunk_size
        return max(1, CHUNK_VALUES // (self.num_experts * self.vocab_size))

    def _mix_in_chunks(self, latent, log_prior, kernel, bias):
        """`_mix` over chunks of tokens, each recomputed in the backward pass."""

        weights = (kernel,) if bias is None else (kernel, bias)
        tokens = latent.shape[0]
        chunk = self._tokens_per_chunk()
        if tokens is not None and tokens <= chunk:
            return _mix(latent, log_prior, *weights)
        count = ops.shape(latent)[0]
        padding = (chunk - count % chunk) % chunk
        latent = ops.pad(latent, [[0, padding], [0, 0], [0, 0]])
        log_prior = ops.pad(log_prior, [[0, padding], [0, 0]])
        chunks = (ops.reshape(latent, (-1, chunk, *latent.shape[1:])),
                  ops.reshape(log_prior, (-1, chunk, log_prior.shape[-1])))
        # Without remat the backward pass would keep every chunk's logits,
        # as many values as computing the mixture in one piece. The weights
        # are arguments, not closures: TensorFlow's recompute_grad gives
        # gradients only to its arguments and to variables.
        mix = keras.remat(_mix)
        mixed = ops.map(lambda pair: mix(*pair, *weights), chunks)
        return ops.reshape(mixed, (-1, self.vocab_size))[:count]

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.vocab_size)

    def compute_output_spec(self, inputs, training=False, mask=None):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_experts": self.num_experts,
            "vocab_size": self.vocab_size,
            "embedding": (None if self.embedding is None
                          else keras.saving.serialize_keras_object(self.embedding)),
            "latent_size": self.latent_size,
            "latent_dropout": self.latent_dropout,
            "chunk_size": self.chunk_size,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "decoder_initializer": keras.initializers.serialize(self.decoder_initializer),
            "decoder_bias_initializer": keras.initializers.serialize(
                self.decoder_bias_initializer),
            "seed": self.seed,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("embedding") is not None:
            # Inside `keras.saving.load_model` this is the model's own
            # embedding layer (Keras's shared-object scope), so the tie holds.
            config["embedding"] = keras.saving.deserialize_keras_object(config["embedding"])
        return cls(**config)


def _mix(latent, log_prior, kernel, bias=None):
    """log Σ_k π_k softmax(g_k E^T + b) for latent (n, K, d), log π (n, K): (n, V)."""
    experts = latent.shape[1]
    logits = project_tokens(latent, kernel, bias)  # (n, K, V), compute dtype
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    if experts == 1:
        return log_probs[:, 0, :]
    return ops.logsumexp(log_probs + ops.expand_dims(log_prior, -1), axis=1)
