"""MixtureOfSoftmaxes (Yang et al. 2018): the mixture against NumPy, its
rank, masks, mixed precision, saving, latent dropout, and its use in
`language_model`, the losses, the metric and the neural cache."""

import math

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.cache import cache_nll, evaluate_with_cache
from keras_rnnreg.callbacks import reset_rnn_states
from keras_rnnreg.data.bptt import batchify
from keras_rnnreg.layers import MixtureOfSoftmaxes, TiedEmbedding
from keras_rnnreg.losses import TokenCrossEntropy
from keras_rnnreg.metrics import Perplexity
from keras_rnnreg.models import language_model, resolve_arguments

VOCAB, LATENT, FEATURES, EXPERTS = 20, 4, 6, 3
NORMAL = keras.initializers.RandomNormal(stddev=1.0, seed=0)


# ----------------------------------------------------------- NumPy reference
def log_softmax(x, axis=-1):
    x = x - x.max(axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis, keepdims=True))


def reference(layer, h):
    """Σ_k π_k softmax(tanh(h W_h + b_h)_k E^T + b), mixed in probability
    space in float64, from the layer's weights."""
    h = np.asarray(h, "float64")
    K, d = layer.num_experts, layer.latent_size
    latent = np.tanh(h @ to_numpy(layer.latent_kernel) + to_numpy(layer.latent_bias))
    latent = latent.reshape(*h.shape[:-1], K, d)
    if layer.embedding is None:
        kernel, bias = to_numpy(layer.decoder_kernel), to_numpy(layer.decoder_bias)
    else:
        kernel = to_numpy(layer.embedding.embeddings).T
        bias = to_numpy(layer.embedding.output_bias) if layer.embedding.use_output_bias else 0
    logits = latent @ kernel + bias                                       # (..., K, V)
    probs = np.exp(log_softmax(logits))
    prior = np.exp(log_softmax(h @ to_numpy(layer.prior_kernel))) if K > 1 else np.ones(
        (*h.shape[:-1], 1))
    return np.log((prior[..., None] * probs).sum(-2))


def tied_layer(experts=EXPERTS, **kwargs):
    embedding = TiedEmbedding(VOCAB, LATENT, use_output_bias=True, embeddings_initializer=NORMAL)
    embedding.build()
    embedding.output_bias.assign(np.linspace(-1, 1, VOCAB))
    return MixtureOfSoftmaxes(experts, embedding=embedding, kernel_initializer=NORMAL,
                              bias_initializer=NORMAL, **kwargs)


def inputs(batch=2, steps=5, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, steps, FEATURES)).astype("float32")


@pytest.fixture(scope="module")
def mos_model():
    """One small stateful AWD-LSTM-MoS for the tests that read a model (each
    resets its states first); the training test runs last and moves it."""
    keras.utils.set_random_seed(11)
    return language_model(VOCAB, embedding_size=LATENT, hidden_size=[8, 6], tie_weights=True,
                          num_experts=EXPERTS, latent_dropout=0.3, output_dropout=0.1,
                          padding_id=-1, stateful=True, batch_size=2, initialization=0.1,
                          seed=4)


def run(model, tokens):
    """The model's log-probabilities from zero states; compiled (one JAX
    compilation per model, as the tests use one shape, (2, 9))."""
    reset_rnn_states(model)
    return np.asarray(model.predict_on_batch(tokens))


# ----------------------------------------------------------------- the mixture
@pytest.mark.parametrize("tied", [True, False])
def test_mixture_matches_numpy_and_is_normalized(tied):
    h = inputs()
    if tied:
        layer = tied_layer()
    else:
        layer = MixtureOfSoftmaxes(EXPERTS, VOCAB, latent_size=LATENT, kernel_initializer=NORMAL,
                                   bias_initializer=NORMAL, decoder_initializer=NORMAL,
                                   decoder_bias_initializer=NORMAL)
    out = layer(h)
    assert tuple(out.shape) == (2, 5, VOCAB) and keras.backend.standardize_dtype(
        out.dtype) == "float32"
    out = to_numpy(out)
    np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, reference(layer, h), atol=2e-5)


def test_one_expert_is_a_tied_softmax():
    layer = tied_layer(experts=1)
    h = inputs()
    out = to_numpy(layer(h))
    assert not hasattr(layer, "prior_kernel")  # K = 1: no prior
    latent = np.tanh(h @ to_numpy(layer.latent_kernel) + to_numpy(layer.latent_bias))
    logits = latent @ to_numpy(layer.embedding.embeddings).T + to_numpy(
        layer.embedding.output_bias)
    np.testing.assert_allclose(out, log_softmax(logits.astype("float64")), atol=2e-5)


def test_chunks_give_the_values_and_gradients_of_one_piece():
    h = inputs(batch=2, steps=7)  # 14 tokens: chunks of 4 leave a padded last one
    whole, chunked = tied_layer(), tied_layer(chunk_size=4)
    whole.build(h.shape), chunked.build(h.shape)
    chunked.set_weights(whole.get_weights())
    targets = np.random.default_rng(1).integers(0, VOCAB, (2, 7))

    def loss_and_gradients(layer):
        loss = TokenCrossEntropy()
        backend = keras.backend.backend()
        variables = layer.trainable_variables
        if backend == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                value = loss(targets, layer(h))
            return value, tape.gradient(value, variables)
        if backend == "jax":
            import jax

            def f(values):
                out, _ = layer.stateless_call(values, [], h)
                return loss(targets, out)

            return jax.jit(jax.value_and_grad(f))([v.value for v in variables])
        import torch

        value = loss(targets, layer(h))
        return value, torch.autograd.grad(value, [v.value for v in variables])

    (value, grads), (chunked_value, chunked_grads) = (
        loss_and_gradients(whole), loss_and_gradients(chunked))
    np.testing.assert_allclose(to_numpy(chunked_value), to_numpy(value), rtol=1e-6)
    assert len(grads) == len(chunked_grads) == 5  # embedding, its bias, prior, latent W, b
    for a, b in zip(grads, chunked_grads):
        assert np.abs(to_numpy(a)).max() > 0
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=1e-5, atol=1e-7)


def test_rank_exceeds_a_single_softmaxes_bound():
    """The softmax bottleneck (Yang et al. §2): the log-probabilities of one
    softmax over contexts of size d, A = G E^T + 1 b^T - lse 1^T, have rank
    at most d + 2 (d + 1 without the bias b); a mixture's are not bound."""
    contexts = np.random.default_rng(2).normal(size=(1, 200, FEATURES)).astype("float32")

    def rank(layer):
        values = to_numpy(layer(contexts))[0].astype("float64")
        singular = np.linalg.svd(values, compute_uv=False)
        return int((singular > 1e-3 * singular[0]).sum())

    single, mixture = rank(tied_layer(experts=1)), rank(tied_layer(experts=4))
    assert single <= LATENT + 2
    assert mixture > LATENT + 2 + 5


# ---------------------------------------------------------- masks, precision
def test_masks_pass_through_and_padding_changes_nothing_else(mos_model):
    tokens = np.random.default_rng(3).integers(0, VOCAB, (2, 9))
    padded = np.concatenate([tokens[:, :6], np.full((2, 3), -1)], axis=1)
    mask = np.array([[True] * 6 + [False] * 3] * 2)
    assert mos_model.get_layer("mixture_of_softmaxes").compute_mask(None, mask) is mask
    log_probs = run(mos_model, tokens)[:, :6].astype("float64")
    np.testing.assert_allclose(run(mos_model, padded)[:, :6], log_probs, atol=1e-6)
    # The mask reaches the loss and the metric: padded steps count nowhere,
    # whatever their targets.
    targets = np.random.default_rng(4).integers(0, VOCAB, (2, 9))
    nll = -np.take_along_axis(log_probs, targets[:, :6, None], -1).mean()
    mos_model.compile(loss=TokenCrossEntropy(), metrics=[Perplexity()])
    reset_rnn_states(mos_model)
    logs = mos_model.evaluate(padded, targets, batch_size=2, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], nll, rtol=1e-5)
    np.testing.assert_allclose(logs["perplexity"], math.exp(nll), rtol=1e-5)


def test_mixed_precision_mixes_in_float32():
    h = inputs()
    reference_layer = tied_layer()
    expected = to_numpy(reference_layer(h))
    try:
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
        layer = tied_layer()
        layer(h)
        layer.set_weights(reference_layer.get_weights())
        layer.embedding.set_weights(reference_layer.embedding.get_weights())
        out = layer(h)
        # Logits of ±1000 overflow no float32 softmax.
        loud = layer(1000.0 * h)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    out = to_numpy(out)
    np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, atol=1e-5)
    # bfloat16 projections: 8 bits of mantissa on logits of a few units.
    np.testing.assert_allclose(out, expected, atol=0.15)
    assert np.abs(out - expected).max() > 1e-6  # the projections did run in bfloat16
    loud = to_numpy(loud)
    assert np.isfinite(loud).all() and (loud <= 1e-6).all()


# ------------------------------------------------------------------- saving
def test_keras_file_round_trip_keeps_the_tie(mos_model, tmp_path):
    model = mos_model
    tokens = np.random.default_rng(5).integers(0, VOCAB, (2, 9))
    path = tmp_path / "mos.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    mos = loaded.get_layer("mixture_of_softmaxes")
    assert mos.embedding is loaded.get_layer("embedding")  # one matrix, still tied
    assert (mos.num_experts, mos.latent_dropout, mos.vocab_size) == (EXPERTS, 0.3, VOCAB)
    assert loaded.count_params() == model.count_params()
    np.testing.assert_allclose(run(loaded, tokens), run(model, tokens), atol=1e-6)
    # The mixture reads the embedding's own variable: zeroed, every softmax
    # is softmax(b).
    loaded.get_layer("embedding").embeddings.assign(np.zeros((VOCAB, LATENT), "float32"))
    probs = np.exp(run(loaded, tokens))
    bias = to_numpy(loaded.get_layer("embedding").output_bias)
    np.testing.assert_allclose(probs, np.broadcast_to(np.exp(log_softmax(bias)), probs.shape),
                               rtol=1e-5)


def test_untied_layer_config_round_trip():
    layer = MixtureOfSoftmaxes(2, VOCAB, latent_size=3, latent_dropout=0.2, chunk_size=7,
                               seed=5, name="mos")
    clone = MixtureOfSoftmaxes.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.embedding is None and clone.chunk_size == 7


# ----------------------------------------------------------- latent dropout
def test_latent_dropout_is_locked_over_time_and_off_at_inference():
    layer = tied_layer(latent_dropout=0.5, seed=3)
    # The same context at every step: only the dropout masks can differ.
    h = np.repeat(inputs(batch=4, steps=1), 6, axis=1)
    trained = to_numpy(layer(h, training=True))
    inferred = to_numpy(layer(h))
    np.testing.assert_allclose(inferred, reference(layer, h), atol=2e-5)
    np.testing.assert_allclose(trained, np.repeat(trained[:, :1], 6, axis=1), atol=1e-6)
    assert np.abs(trained - inferred).max() > 1e-2  # dropped, in every row
    assert all(np.abs(trained[b] - inferred[b]).max() > 1e-3 for b in range(4))
    np.testing.assert_allclose(np.exp(trained).sum(-1), 1.0, atol=1e-5)


# --------------------------------------------------------- in language_model
def test_language_model_arguments():
    sizes = resolve_arguments(embedding_size=4, hidden_size=[8, 6], tie_weights=True,
                              num_experts=2)["hidden_sizes"]
    assert sizes == [8, 6]  # a mixture frees the tied last layer's size
    assert resolve_arguments(embedding_size=4, hidden_size=8, tie_weights=True,
                             num_experts=2)["hidden_sizes"] == [8, 4]
    with pytest.raises(ValueError, match="unless num_experts > 1"):
        resolve_arguments(embedding_size=4, hidden_size=[8, 6], tie_weights=True)
    with pytest.raises(ValueError, match="num_experts"):
        resolve_arguments(num_experts=0)
    with pytest.raises(TypeError, match="num_experts"):
        resolve_arguments(num_experts=2.0)
    with pytest.raises(ValueError, match="latent_dropout"):
        resolve_arguments(num_experts=2, latent_dropout=1.0)


def test_one_expert_keeps_the_single_softmax():
    arguments = dict(embedding_size=4, hidden_size=6, tie_weights=True, initialization=0.1, seed=5)
    plain = language_model(VOCAB, **arguments)
    one = language_model(VOCAB, num_experts=1, latent_dropout=0.3, **arguments)
    assert [layer.name for layer in one.layers] == [layer.name for layer in plain.layers]
    assert not any(isinstance(layer, MixtureOfSoftmaxes) for layer in one.layers)
    tokens = np.random.default_rng(6).integers(0, VOCAB, (2, 3))
    np.testing.assert_array_equal(to_numpy(one(tokens)), to_numpy(plain(tokens)))


def test_losses_and_perplexity_take_log_probabilities(mos_model):
    tokens = np.random.default_rng(7).integers(0, VOCAB, (2, 9))
    targets = np.random.default_rng(8).integers(0, VOCAB, (2, 9))
    log_probs = run(mos_model, tokens)
    nll = -np.take_along_axis(log_probs.astype("float64"), targets[..., None], -1).mean()
    scce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    np.testing.assert_allclose(to_numpy(scce(targets, log_probs)), nll, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(TokenCrossEntropy()(targets, log_probs)), nll,
                               rtol=1e-5)
    metric = Perplexity()
    metric.update_state(targets, log_probs)
    np.testing.assert_allclose(to_numpy(metric.result()), math.exp(nll), rtol=1e-5)


def test_neural_cache_takes_log_probabilities_as_logits(mos_model):
    model = mos_model
    tokens = np.random.default_rng(10).integers(0, VOCAB, 41)
    rows = batchify(tokens, 2)
    stepper = keras.Model(model.inputs[0], [model.get_layer("lstm_2").output, model.outputs[0]])
    reset_rnn_states(model)
    hidden, log_probs = (to_numpy(x) for x in stepper(rows[:, :-1], training=False))
    targets = rows[:, 1:]
    result = evaluate_with_cache(model, tokens, window=5, theta=1.5, lambd=0.25, bptt=19)
    nll = -np.take_along_axis(log_probs.astype("float64"), targets[..., None], -1)
    np.testing.assert_allclose(result.loss, nll.mean(), rtol=1e-5)
    # p = (1 - λ) exp(log p_model) + λ p_cache, p_cache over the 5 steps before.
    expected = np.empty(targets.shape)
    for b in range(2):
        for t in range(targets.shape[1]):
            p = np.exp(log_probs[b, t].astype("float64"))
            start = max(0, t - 5)
            if t > start:
                scores = 1.5 * hidden[b, start:t] @ hidden[b, t]
                attention = np.exp(scores - scores.max())
                cache = np.zeros(VOCAB)
                np.add.at(cache, targets[b, start:t], attention / attention.sum())
                p = 0.25 * cache + 0.75 * p
            expected[b, t] = -np.log(p[targets[b, t]])
    np.testing.assert_allclose(result.cache_loss, expected.mean(), rtol=1e-5)
    direct, _ = cache_nll(log_probs, hidden, targets, None, 5, 1.5, 0.25)
    np.testing.assert_allclose(to_numpy(direct), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss", ["token", "keras"])
def test_language_model_trains_a_step(mos_model, loss):
    model = mos_model
    loss = TokenCrossEntropy() if loss == "token" else (
        keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss, metrics=[Perplexity()])
    tokens = np.random.default_rng(9).integers(0, VOCAB, (2, 9))
    before = [to_numpy(w) for w in model.trainable_weights]
    logs = model.train_on_batch(tokens, np.roll(tokens, -1, axis=1), return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["perplexity"] == pytest.approx(
        math.exp(logs["loss"]), rel=1e-4)
    mos = model.get_layer("mixture_of_softmaxes")
    moved = {w.path for w, b in zip(model.trainable_weights, before)
             if np.abs(to_numpy(w) - b).max() > 0}
    for weight in (mos.prior_kernel, mos.latent_kernel, model.get_layer("embedding").embeddings):
        assert weight.path in moved


# ------------------------------------------------------------ bad arguments
@pytest.mark.parametrize(
    "arguments, error, match",
    [
        ({"num_experts": 0, "vocab_size": 5}, ValueError, "num_experts"),
        ({"num_experts": 1.5, "vocab_size": 5}, TypeError, "num_experts"),
        ({"num_experts": True, "vocab_size": 5}, TypeError, "num_experts"),
        ({"num_experts": 2}, ValueError, "vocab_size"),
        ({"num_experts": 2, "vocab_size": 1}, ValueError, "vocab_size"),
        ({"num_experts": 2, "vocab_size": 5, "latent_size": 0}, ValueError, "latent_size"),
        ({"num_experts": 2, "vocab_size": 5, "latent_dropout": 1.0}, ValueError,
         "latent_dropout"),
        ({"num_experts": 2, "vocab_size": 5, "latent_dropout": -0.1}, ValueError,
         "latent_dropout"),
        ({"num_experts": 2, "vocab_size": 5, "latent_dropout": "0.1"}, TypeError,
         "latent_dropout"),
        ({"num_experts": 2, "vocab_size": 5, "chunk_size": 0}, ValueError, "chunk_size"),
        ({"num_experts": 2, "vocab_size": 5, "seed": "x"}, TypeError, "seed"),
        ({"num_experts": 2, "embedding": "embedding"}, TypeError, "embedding"),
        ({"num_experts": 2, "embedding": TiedEmbedding(5, 3), "vocab_size": 6}, ValueError,
         "vocab_size"),
        ({"num_experts": 2, "embedding": TiedEmbedding(5, 3), "latent_size": 4}, ValueError,
         "latent_size"),
    ],
)
def test_bad_arguments_raise_naming_them(arguments, error, match):
    with pytest.raises(error, match=match):
        MixtureOfSoftmaxes(**arguments)


def test_inputs_must_be_sequences():
    with pytest.raises(ValueError, match="3D input"):
        MixtureOfSoftmaxes(2, 5)(np.zeros((2, 4), "float32"))
