"""The language models' output projection over flattened tokens
(`project_tokens`, `TokenDense`, `TiedEmbedding(reverse=True)`): the same
values and training as Keras's matmul over (batch, time, features)."""

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.layers import TiedEmbedding
from keras_rnnreg.layers._projection import TokenDense, project_tokens
from keras_rnnreg.losses import TokenCrossEntropy

VOCAB, FEATURES = 11, 6


def test_project_tokens_is_matmul_plus_bias():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(FEATURES, VOCAB)).astype("float32")
    bias = rng.normal(size=(VOCAB,)).astype("float32")
    for shape in ((3, 5, FEATURES), (4, FEATURES), (2, 3, 4, FEATURES)):
        inputs = rng.normal(size=shape).astype("float32")
        np.testing.assert_allclose(
            to_numpy(project_tokens(inputs, kernel, bias)), inputs @ kernel + bias,
            rtol=1e-5, atol=1e-5,
        )
        np.testing.assert_allclose(
            to_numpy(project_tokens(inputs, kernel)), inputs @ kernel, rtol=1e-5, atol=1e-5
        )


def _decoder_model(layer, time=None):
    hidden = keras.Input((time, FEATURES))
    model = keras.Model(hidden, layer(hidden))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=TokenCrossEntropy())
    return model


def test_token_dense_trains_as_dense():
    """Same logits and, after two SGD steps, the same weights as Dense:
    the gradients through the flattened matmul are Dense's."""
    rng = np.random.default_rng(1)
    dense = _decoder_model(keras.layers.Dense(VOCAB, activation="tanh"))
    token_dense = _decoder_model(TokenDense(VOCAB, activation="tanh"))
    token_dense.set_weights(dense.get_weights())
    for length in (5, 3):  # a variable time axis (TensorFlow: one dynamic trace)
        hidden = rng.normal(size=(4, length, FEATURES)).astype("float32")
        targets = rng.integers(0, VOCAB, size=(4, length)).astype("int32")
        np.testing.assert_allclose(
            to_numpy(token_dense(hidden)), to_numpy(dense(hidden)), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            token_dense.train_on_batch(hidden, targets), dense.train_on_batch(hidden, targets),
            rtol=1e-5,
        )
    for got, expected in zip(token_dense.get_weights(), dense.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(token_dense.get_weights()[0], _decoder_model(
        keras.layers.Dense(VOCAB)).get_weights()[0])


def test_token_dense_keeps_dense_config_and_lora():
    layer = TokenDense(VOCAB, use_bias=False, name="decoder")
    restored = TokenDense.from_config(layer.get_config())
    assert restored.units == VOCAB and not restored.use_bias
    hidden = np.random.default_rng(2).normal(size=(2, 3, FEATURES)).astype("float32")
    dense = keras.layers.Dense(VOCAB, use_bias=False)
    layer(hidden), dense(hidden)
    dense.set_weights(layer.get_weights())
    for each in (layer, dense):
        each.enable_lora(2)
        each.lora_kernel_b.assign(np.full((2, VOCAB), 0.5, "float32"))
    dense.lora_kernel_a.assign(layer.lora_kernel_a)
    np.testing.assert_allclose(to_numpy(layer(hidden)), to_numpy(dense(hidden)), rtol=1e-5)


@pytest.mark.parametrize("use_output_bias", [True, False])
def test_tied_reverse_call_with_a_variable_time_axis(use_output_bias):
    embedding = TiedEmbedding(VOCAB, FEATURES, use_output_bias=use_output_bias)
    tokens = keras.Input((None,), dtype="int32")
    model = keras.Model(tokens, embedding(embedding(tokens), reverse=True))
    if use_output_bias:
        embedding.output_bias.assign(np.linspace(-1, 1, VOCAB).astype("float32"))
    matrix = to_numpy(embedding.embeddings)
    for length in (4, 7):
        ids = np.random.default_rng(length).integers(0, VOCAB, size=(3, length)).astype("int32")
        expected = matrix[ids] @ matrix.T
        if use_output_bias:
            expected = expected + to_numpy(embedding.output_bias)
        np.testing.assert_allclose(to_numpy(model(ids)), expected, rtol=1e-5, atol=1e-5)
