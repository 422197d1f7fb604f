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


def test_tied_embedding_has_one_matrix_and_gradients_from_both_uses():
    tokens = keras.Input((None,), dtype="int32")
    embedding = TiedEmbedding(30, 6)
    h = keras.layers.LSTM(6, return_sequences=True)(embedding(tokens))
    model = keras.Model(tokens, embedding(h, reverse=True))
    assert [w.path for w in model.trainable_weights].count(embedding.embeddings.path) == 1
    assert not any("dense" in w.path for w in model.trainable_weights)
    model.compile(
        keras.optimizers.SGD(1.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = to_numpy(embedding.embeddings).copy()
    ids = np.array([[1, 2, 3]])
    model.train_on_batch(ids, np.array([[4, 5, 6]]))
    changed = np.any(before != to_numpy(embedding.embeddings), axis=-1)
    # rows 1-3 are looked up, rows 4-6 are targets; with tying, the softmax
    # gradient reaches every row (all logits enter the softmax)
    assert changed.all()


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
