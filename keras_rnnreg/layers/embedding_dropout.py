import keras
from keras import ops

from keras_rnnreg._validation import check_rate, check_seed
from keras_rnnreg.layers.tied_output import TiedEmbedding


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class EmbeddingDropout(TiedEmbedding):
    """An embedding that drops whole words (rows of the matrix) while training.

    Embedding dropout (Gal & Ghahramani, 2016; AWD-LSTM, Merity et al. 2017,
    section 4.3) is dropout on the embedding matrix at the word level: once
    per forward pass, each row E[w] (word type w) is kept with probability
    1 - p_e and the kept rows are scaled by 1 / (1 - p_e):

        E' = diag(m / (1 - p_e)) E,   m_w ~ Bernoulli(1 - p_e),   e_t = E'[x_t]

    Every occurrence of a dropped word in the batch becomes the zero vector
    together. We gather the per-word scale alongside the rows instead of
    forming E', which gives the same output and gradients without touching
    all V x D entries.

    The stored `embeddings` variable is never modified, so it can be tied to
    the softmax: call the layer with `reverse=True` (see `TiedEmbedding`);
    the reverse projection always uses the undropped matrix, as AWD-LSTM does.

    Args:
        input_dim: Vocabulary size.
        output_dim: Embedding size.
        rate: Float in [0, 1), p_e, the fraction of word types dropped.
            AWD-LSTM uses 0.1.
        seed: Optional int, for reproducible masks.
        **embedding_kwargs: Any `TiedEmbedding` / `keras.layers.Embedding`
            argument (`mask_zero`, `use_output_bias`, initializers, ...).

    Call arguments:
        inputs: Integer ids, any shape.
        training: Python bool. Words are dropped only when True.
        reverse: Bool, see `TiedEmbedding`.

    Example:

    >>> embedding = EmbeddingDropout(10000, 400, rate=0.1, mask_zero=True)
    >>> vectors = embedding(keras.ops.array([[5, 7, 5]]), training=True)
    >>> # vectors[0, 0] and vectors[0, 2] are zero together or scaled together.
    """

    def __init__(self, input_dim, output_dim, rate=0.1, seed=None, **embedding_kwargs):
        self.rate = check_rate("rate", rate)
        self.seed = check_seed(seed)
        super().__init__(input_dim, output_dim, **embedding_kwargs)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, inputs, training=False, reverse=False):
        outputs = super().call(inputs, reverse=reverse)
        if reverse or not training or self.rate == 0.0:
            return outputs
        word_scale = keras.random.dropout(
            ops.ones((self.input_dim,), dtype=self.compute_dtype),
            self.rate,
            seed=self.seed_generator,
        )
        ids = ops.cast(self._ids(inputs), "int32")
        return outputs * ops.expand_dims(ops.take(word_scale, ids, axis=0), -1)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
