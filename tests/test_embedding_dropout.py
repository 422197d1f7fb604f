import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.layers import EmbeddingDropout, TiedEmbedding


def test_every_occurrence_of_a_dropped_word_and_only_those_vanish():
    rate = 0.3
    layer = EmbeddingDropout(40, 8, rate=rate, seed=2)
    ids = np.random.default_rng(0).integers(0, 40, size=(16, 25))
    dropped = to_numpy(layer(ids, training=True))
    plain = to_numpy(layer(ids, training=False))
    assert np.all(np.abs(plain).sum(-1) > 0)  # no row is zero to begin with
    zero = np.all(dropped == 0, axis=-1)
    dropped_words = set(ids[zero].tolist())
    kept_words = set(ids[~zero].tolist())
    assert dropped_words and kept_words
    assert not dropped_words & kept_words  # a word is dropped everywhere or nowhere
    np.testing.assert_allclose(dropped[~zero], plain[~zero] / (1 - rate), rtol=1e-6)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_fraction_of_word_types_dropped(rate):
    vocab = 50000
    layer = EmbeddingDropout(vocab, 2, rate=rate, seed=4)
    out = to_numpy(layer(np.arange(vocab)[None], training=True))[0]
    dropped = np.mean(np.all(out == 0, axis=-1))
    assert abs(dropped - rate) < 4 * np.sqrt(rate * (1 - rate) / vocab)


def test_identity_at_inference_and_rate_zero():
    ids = np.array([[1, 2, 3, 1]])
    layer = EmbeddingDropout(5, 3, rate=0.5)
    layer.build()
    expected = to_numpy(layer.embeddings)[ids]
    np.testing.assert_array_equal(to_numpy(layer(ids)), expected)
    zero_rate = EmbeddingDropout(5, 3, rate=0.0)
    zero_rate.build()
    np.testing.assert_array_equal(
        to_numpy(zero_rate(ids, training=True)), to_numpy(zero_rate.embeddings)[ids]
    )


def test_matches_keras_embedding_lookup_and_mask_zero():
    layer = EmbeddingDropout(10, 4, rate=0.1, mask_zero=True)
    layer.build()
    ids = np.array([[4, 2, 0, 0]])
    np.testing.assert_array_equal(
        to_numpy(layer.compute_mask(ids)), [[True, True, False, False]]
    )
    reference = keras.layers.Embedding(10, 4)
    reference.build()
    reference.set_weights(layer.get_weights())
    np.testing.assert_array_equal(to_numpy(layer(ids)), to_numpy(reference(ids)))


def test_same_seed_same_mask_and_fresh_mask_per_pass():
    ids = np.arange(200)[None]
    a = EmbeddingDropout(200, 2, rate=0.5, seed=7, embeddings_initializer="ones")
    b = EmbeddingDropout(200, 2, rate=0.5, seed=7, embeddings_initializer="ones")
    first = to_numpy(a(ids, training=True))
    np.testing.assert_array_equal(first, to_numpy(b(ids, training=True)))
    assert not np.array_equal(first, to_numpy(a(ids, training=True)))


def test_reverse_uses_the_undropped_matrix():
    layer = EmbeddingDropout(12, 4, rate=0.5, use_output_bias=True)
    layer.build()
    layer.output_bias.assign(np.linspace(-1, 1, 12).astype("float32"))
    h = np.random.default_rng(1).normal(size=(2, 3, 4)).astype("float32")
    logits = to_numpy(layer(h, reverse=True, training=True))
    expected = h @ to_numpy(layer.embeddings).T + to_numpy(layer.output_bias)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


class ReferenceLookup(keras.layers.Layer):
    """Keras's own lookup E[x] times a fixed per-word scale, from a matrix
    that is a trainable variable or a constant copy."""

    def __init__(self, matrix, scale, trainable):
        super().__init__()
        self.matrix = self.add_weight(shape=matrix.shape, initializer="zeros",
                                      trainable=trainable)
        self.matrix.assign(matrix)
        self.scale = np.asarray(scale, "float32")

    def call(self, ids):
        vectors = keras.ops.take(self.matrix, ids, axis=0)
        return vectors * keras.ops.expand_dims(keras.ops.take(self.scale, ids, axis=0), -1)


class ReferenceDecoder(keras.layers.Layer):
    """h E^T with E a trainable variable or a constant copy."""

    def __init__(self, matrix, trainable):
        super().__init__()
        self.matrix = self.add_weight(shape=matrix.shape, initializer="zeros",
                                      trainable=trainable)
        self.matrix.assign(matrix)

    def call(self, h):
        return keras.ops.matmul(h, keras.ops.transpose(self.matrix))


TIED_VOCAB, TIED_DIM = 30, 6
TIED_IDS = np.array([[1, 2, 3, 2], [7, 1, 9, 3]])
TIED_TARGETS = np.array([[4, 5, 6, 0], [2, 8, 1, 11]])


def one_sgd_step_gradients(lookup, decoder, hidden_weights, matrices):
    """Gradients of the loss of ids -> lookup -> Dense(tanh) -> decoder,
    one per variable of `matrices` (a list of the layers' matrix variables),
    read off one SGD step at rate 1: before - after."""
    tokens = keras.Input((None,), dtype="int32")
    hidden = keras.layers.Dense(TIED_DIM, activation="tanh")
    model = keras.Model(tokens, decoder(hidden(lookup(tokens))))
    hidden.set_weights(hidden_weights)
    model.compile(
        keras.optimizers.SGD(1.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [np.array(to_numpy(m), copy=True) for m in matrices]
    model.train_on_batch(TIED_IDS, TIED_TARGETS)
    return [b - np.array(to_numpy(m), copy=True) for b, m in zip(before, matrices)]


@pytest.mark.parametrize("rate", [0.0, 0.5], ids=["tied", "embedding-dropout"])
def test_tied_embedding_has_one_matrix_and_gradients_from_both_uses(rate):
    def tied_layer():
        return (TiedEmbedding(TIED_VOCAB, TIED_DIM) if rate == 0
                else EmbeddingDropout(TIED_VOCAB, TIED_DIM, rate=rate, seed=5))

    tied = tied_layer()
    tokens = keras.Input((None,), dtype="int32")
    h = keras.layers.LSTM(TIED_DIM, return_sequences=True)(tied(tokens))
    lm = keras.Model(tokens, tied(h, reverse=True))
    assert [w.path for w in lm.trainable_weights].count(tied.embeddings.path) == 1
    assert not any("dense" in w.path for w in lm.trainable_weights)

    # The gradient of L(E, E), E used by the lookup and by the decoder, is
    # the sum of its partial derivatives: the lookup's with the decoder
    # reading a constant copy of E, and the decoder's with the lookup
    # reading one. Those two come from Keras's own lookup and matmul, so a
    # stop_gradient on either use of the tied matrix fails the sum.
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(TIED_VOCAB, TIED_DIM)).astype("float32")
    hidden_weights = [rng.normal(size=(TIED_DIM, TIED_DIM)).astype("float32"),
                      rng.normal(size=(TIED_DIM,)).astype("float32")]
    layer = tied_layer()
    layer.build()
    layer.embeddings.assign(matrix)
    scale = np.ones(TIED_VOCAB, "float32")
    if rate:  # the word mask the training step will draw, from the same state
        state = np.array(to_numpy(layer.seed_generator.state), copy=True)
        dropped = to_numpy(layer(np.arange(TIED_VOCAB)[None], training=True))[0]
        layer.seed_generator.state.assign(state)
        scale = np.where(np.all(dropped == 0, axis=-1), 0.0, 1 / (1 - rate)).astype("float32")
        np.testing.assert_allclose(dropped, matrix * scale[:, None], rtol=1e-6)
        used = np.unique(TIED_IDS)
        assert 0 < np.mean(scale[used] == 0) < 1  # some used words dropped, some kept
    (full,) = one_sgd_step_gradients(
        layer, lambda h: layer(h, reverse=True), hidden_weights, [layer.embeddings])

    lookup = ReferenceLookup(matrix, scale, trainable=True)
    (lookup_only,) = one_sgd_step_gradients(
        lookup, ReferenceDecoder(matrix, trainable=False), hidden_weights, [lookup.matrix])
    decoder = ReferenceDecoder(matrix, trainable=True)
    (decoder_only,) = one_sgd_step_gradients(
        ReferenceLookup(matrix, scale, trainable=False), decoder, hidden_weights,
        [decoder.matrix])

    # the lookup's gradient reaches the kept looked-up rows only; the
    # decoder's every row (every logit enters the softmax)
    looked_up = np.zeros(TIED_VOCAB, bool)
    looked_up[TIED_IDS.ravel()] = True
    reached = np.any(lookup_only != 0, axis=-1)
    np.testing.assert_array_equal(reached, looked_up & (scale != 0))
    assert np.all(np.any(decoder_only != 0, axis=-1))
    assert np.abs(lookup_only).max() > 1e-3 and np.abs(decoder_only).max() > 1e-3
    np.testing.assert_allclose(full, lookup_only + decoder_only, rtol=1e-4, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="`rate`.*1.0"):
        EmbeddingDropout(10, 4, rate=1.0)
    with pytest.raises(TypeError, match="seed"):
        EmbeddingDropout(10, 4, seed="1")
    with pytest.raises(TypeError, match="use_output_bias"):
        TiedEmbedding(10, 4, use_output_bias="yes")


def test_config_round_trip():
    layer = EmbeddingDropout(10, 4, rate=0.2, seed=3, mask_zero=True, use_output_bias=True)
    clone = EmbeddingDropout.from_config(layer.get_config())
    assert (clone.rate, clone.seed, clone.mask_zero, clone.use_output_bias) == (
        0.2, 3, True, True,
    )


def test_untied_embedding_round_trips_without_an_output_bias(tmp_path):
    tokens = keras.Input((5,), dtype="int32")
    embedding = EmbeddingDropout(11, 4, rate=0.1)
    model = keras.Model(tokens, keras.layers.Dense(11)(embedding(tokens)))
    path = tmp_path / "untied.keras"
    model.save(path)
    x = np.arange(10).reshape(2, 5) % 11
    np.testing.assert_array_equal(
        to_numpy(keras.saving.load_model(path)(x)), to_numpy(model(x))
    )
