import math

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.callbacks import reset_rnn_states
from keras_rnnreg.data.bptt import batchify
from keras_rnnreg.evaluation import (
    NEURAL_CACHE_DEFAULTS,
    CacheEvaluation,
    CacheHistory,
    NeuralCache,
    cache_nll,
    evaluate_with_cache,
)
from keras_rnnreg.models import language_model


def reference_nll(logits, hidden, targets, window, theta, lambd, wait_for_full_window=False):
    """The cache pointer step by step, stream by stream (pointer.py's loop).

    Step t's cache holds (hidden[i], targets[i]) for the `window` steps
    i < t before it; an empty cache (or, waiting, one with at most `window`
    earlier steps) leaves the model's distribution alone.
    """
    batch, steps, vocab = logits.shape
    shifted = logits - logits.max(-1, keepdims=True)
    p_model = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    nll = np.empty((batch, steps))
    for b in range(batch):
        for t in range(steps):
            p = p_model[b, t]
            start = max(0, t - window)
            if (t > window) if wait_for_full_window else (t > start):
                scores = theta * hidden[b, start:t] @ hidden[b, t]
                attention = np.exp(scores - scores.max())
                attention /= attention.sum()
                p_cache = np.zeros(vocab)
                np.add.at(p_cache, targets[b, start:t], attention)
                p = lambd * p_cache + (1 - lambd) * p
            with np.errstate(divide="ignore"):
                nll[b, t] = -np.log(p[targets[b, t]])
    return nll


def random_streams(batch=2, steps=23, vocab=6, units=5, seed=0):
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.normal(size=(batch, steps, vocab)).astype("float32")
    hidden = rng.normal(size=(batch, steps, units)).astype("float32")
    targets = rng.integers(0, vocab, size=(batch, steps)).astype("int32")
    return logits, hidden, targets


def model_nll(logits, targets):
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]


# --------------------------------------------------------- the pure function
@pytest.mark.parametrize("window", [1, 3, 100])
@pytest.mark.parametrize("theta", [0.0, 0.8])
@pytest.mark.parametrize("lambd", [0.3, 1.0])
def test_cache_nll_matches_the_step_by_step_reference(window, theta, lambd):
    logits, hidden, targets = random_streams()
    nll, history = cache_nll(logits, hidden, targets, None, window, theta, lambd)
    expected = reference_nll(logits, hidden, targets, window, theta, lambd)
    # λ = 1 with a word absent from the window: -log 0 = inf on both sides.
    np.testing.assert_allclose(to_numpy(nll), expected, rtol=1e-5, atol=1e-5)
    assert isinstance(history, CacheHistory) and history.length == 23
    keep = min(window, 23)
    np.testing.assert_array_equal(to_numpy(history.targets)[:, -keep:], targets[:, -keep:])
    np.testing.assert_allclose(to_numpy(history.hidden)[:, -keep:], hidden[:, -keep:])


@pytest.mark.parametrize("window", [4, 30])
def test_wait_for_full_window_matches_the_reference_switch(window):
    logits, hidden, targets = random_streams(steps=40)
    nll, _ = cache_nll(logits, hidden, targets, None, window, 0.8, 0.4,
                       wait_for_full_window=True)
    expected = reference_nll(logits, hidden, targets, window, 0.8, 0.4,
                             wait_for_full_window=True)
    np.testing.assert_allclose(to_numpy(nll), expected, rtol=1e-5, atol=1e-5)
    # Steps with at most `window` earlier steps keep the model's NLL.
    np.testing.assert_allclose(
        to_numpy(nll)[:, : window + 1], model_nll(logits, targets)[:, : window + 1],
        rtol=1e-6, atol=1e-6,
    )


@pytest.mark.parametrize("window, wait", [(4, False), (30, True)])
def test_calls_with_carried_history_equal_one_long_call(window, wait):
    logits, hidden, targets = random_streams(steps=23)
    whole, _ = cache_nll(logits, hidden, targets, None, window, 0.8, 0.4, wait)
    history, parts = None, []
    for start, end in [(0, 5), (5, 6), (6, 15), (15, 23)]:
        nll, history = cache_nll(
            logits[:, start:end], hidden[:, start:end], targets[:, start:end],
            history, window, 0.8, 0.4, wait,
        )
        parts.append(to_numpy(nll))
    np.testing.assert_allclose(np.concatenate(parts, axis=1), to_numpy(whole),
                               rtol=1e-6, atol=1e-6)
    assert history.length == 23


def test_lambda_zero_is_the_models_nll_exactly():
    logits, hidden, targets = random_streams()
    nll, _ = cache_nll(logits, hidden, targets, None, 5, 1.0, 0.0)
    log_p = keras.ops.log_softmax(keras.ops.convert_to_tensor(logits), axis=-1)
    own = -keras.ops.take_along_axis(log_p, keras.ops.convert_to_tensor(targets)[..., None], -1)
    np.testing.assert_array_equal(to_numpy(nll), to_numpy(own)[..., 0])
    np.testing.assert_allclose(to_numpy(nll), model_nll(logits, targets), rtol=1e-5)


def test_empty_cache_uses_the_model_alone():
    # Not (1 - λ) p_model: a stream's first step has nothing to mix with.
    logits, hidden, targets = random_streams()
    nll, _ = cache_nll(logits, hidden, targets, None, 5, 1.0, 0.5)
    alone, _ = cache_nll(logits, hidden, targets, None, 5, 1.0, 0.0)
    np.testing.assert_array_equal(to_numpy(nll)[:, 0], to_numpy(alone)[:, 0])
    assert np.all(to_numpy(nll)[:, 1:] != to_numpy(alone)[:, 1:])


def test_the_current_step_is_not_in_its_own_cache():
    # Every target is new and every hidden state the same: the cache holds
    # only other words, so p = (1 - λ) p_model. Were step t's own pair in
    # the window, its target would get cache mass.
    steps, lambd = 12, 0.25
    logits = np.random.default_rng(1).normal(size=(1, steps, steps)).astype("float32")
    hidden = np.ones((1, steps, 3), "float32")
    targets = np.arange(steps, dtype="int32")[None]
    nll, _ = cache_nll(logits, hidden, targets, None, 100, 1.0, lambd)
    expected = model_nll(logits, targets) - math.log(1 - lambd)
    expected[:, 0] = model_nll(logits, targets)[:, 0]
    np.testing.assert_allclose(to_numpy(nll), expected, rtol=1e-5)


def test_streams_have_their_own_caches():
    logits, hidden, targets = random_streams(batch=3)
    together, _ = cache_nll(logits, hidden, targets, None, 4, 0.8, 0.4)
    for b in range(3):
        alone, _ = cache_nll(logits[b : b + 1], hidden[b : b + 1], targets[b : b + 1],
                             None, 4, 0.8, 0.4)
        np.testing.assert_allclose(to_numpy(together)[b], to_numpy(alone)[0], rtol=1e-6)


def test_neural_cache_carries_its_history_and_resets():
    logits, hidden, targets = random_streams()
    whole, _ = cache_nll(logits, hidden, targets, None, 6, 0.5, 0.2)
    cache = NeuralCache(window=6, theta=0.5, lambd=0.2)
    parts = [to_numpy(cache(logits[:, s:e], hidden[:, s:e], targets[:, s:e]))
             for s, e in [(0, 10), (10, 23)]]
    np.testing.assert_allclose(np.concatenate(parts, 1), to_numpy(whole), rtol=1e-6)
    cache.reset()
    assert cache.history is None
    np.testing.assert_allclose(to_numpy(cache(logits, hidden, targets)), to_numpy(whole),
                               rtol=1e-6)
    assert "window=6" in repr(cache)


def test_defaults_are_the_papers_tuned_values():
    assert dict(NEURAL_CACHE_DEFAULTS["ptb"]) == {"window": 2000, "lambd": 0.1, "theta": 1.0}
    assert dict(NEURAL_CACHE_DEFAULTS["wikitext2"]) == {
        "window": 3785, "lambd": 0.1279, "theta": 0.662
    }
    NeuralCache(**NEURAL_CACHE_DEFAULTS["wikitext2"])


def test_the_cache_lowers_nll_where_copying_is_right():
    # A random segment of distinct words repeated five times. The model is
    # uniform; h_t is the one-hot of the word just read, so the cache points
    # at the step after that word's last occurrence, whose next word is the
    # target on every repeat.
    vocab, length, repeats = 50, 20, 5
    segment = np.random.default_rng(2).choice(vocab, length, replace=False)
    stream = np.tile(segment, repeats)
    inputs, targets = stream[:-1], stream[1:][None].astype("int32")
    hidden = np.eye(vocab, dtype="float32")[inputs][None]
    logits = np.zeros((1, len(inputs), vocab), "float32")
    nll = to_numpy(cache_nll(logits, hidden, targets, None, 100, 5.0, 0.5)[0])[0]
    uniform = math.log(vocab)
    np.testing.assert_allclose(model_nll(logits, targets), uniform, rtol=1e-6)
    repeated = nll[length - 1 :]
    assert repeated.mean() < 0.25 * uniform
    assert nll.mean() < 0.5 * uniform


# ------------------------------------------------------------ end to end
VOCAB = 20


@pytest.fixture(scope="module")
def stateful_model():
    keras.utils.set_random_seed(7)
    return language_model(VOCAB, embedding_size=8, hidden_size=[12, 10], stateful=True,
                          batch_size=2, seed=3)


def stepper_outputs(model, rows):
    stepper = keras.Model(model.inputs[0],
                          [model.get_layer("lstm_2").output, model.outputs[0]])
    reset_rnn_states(model)
    hidden, logits = stepper(rows[:, :-1], training=False)
    return to_numpy(hidden), to_numpy(logits)


def test_evaluate_equals_the_model_and_cache_on_the_whole_rows(stateful_model):
    tokens = np.random.default_rng(4).integers(0, VOCAB, 61)
    rows = batchify(tokens, 2)  # 30 tokens a row, 29 predicted
    hidden, logits = stepper_outputs(stateful_model, rows)
    targets = rows[:, 1:]
    # Left in the model's states: evaluation must hand them back. (Other
    # tokens than `rows`, whose evaluation ends in the states that reading
    # them in one call leaves.)
    stateful_model(np.flip(rows, axis=1), training=False)
    before = [to_numpy(v) for v in stateful_model.get_layer("lstm_1").states]
    assert np.abs(before[0]).max() > 0

    result = evaluate_with_cache(stateful_model, tokens, window=8, theta=2.0, lambd=0.3,
                                 bptt=7)
    assert isinstance(result, CacheEvaluation) and result.num_tokens == 58
    direct = model_nll(logits, targets).mean()
    np.testing.assert_allclose(result.loss, direct, rtol=1e-5)
    np.testing.assert_allclose(result.perplexity, math.exp(direct), rtol=1e-5)
    # The last recurrent layer's output is h_t, and BPTT windows of 7 with
    # carried state and history give the cache of one call over each row.
    expected = reference_nll(logits, hidden, targets, 8, 2.0, 0.3).mean()
    np.testing.assert_allclose(result.cache_loss, expected, rtol=1e-5)
    np.testing.assert_allclose(result.cache_perplexity, math.exp(expected), rtol=1e-5)
    for state, value in zip(stateful_model.get_layer("lstm_1").states, before):
        np.testing.assert_array_equal(to_numpy(state), value)

    off = evaluate_with_cache(stateful_model, tokens, window=8, theta=2.0, lambd=0.0,
                              bptt=100)
    assert off.cache_perplexity == off.perplexity
    np.testing.assert_allclose(off.perplexity, result.perplexity, rtol=1e-6)


def test_evaluate_with_cache_lowers_perplexity_on_a_copying_stream():
    # Untrained but for a one-hot embedding scaled up: the LSTM's state then
    # tells which word it just read, and a sharp cache (θ = 20) copies what
    # followed that word in the segment's first occurrence.
    rng = np.random.default_rng(0)
    length = 6
    stream = np.concatenate(
        [np.tile(rng.choice(VOCAB, length, replace=False), 2) for _ in range(10)]
    )
    model = language_model(VOCAB, embedding_size=VOCAB, hidden_size=16, num_layers=1,
                           stateful=True, batch_size=2, seed=0)
    model.get_layer("embedding").embeddings.assign(4.0 * np.eye(VOCAB, dtype="float32"))
    result = evaluate_with_cache(model, stream, window=2 * length, theta=20.0, lambd=0.5,
                                 bptt=25)
    assert result.perplexity > 0.8 * VOCAB  # the model alone is near uniform
    assert result.cache_perplexity < 0.7 * result.perplexity


# ------------------------------------------------------------ bad arguments
@pytest.mark.parametrize(
    "arguments, error, match",
    [
        ({"window": 0}, ValueError, "window=0"),
        ({"window": 2.5}, TypeError, "`window` must be an int"),
        ({"window": True}, TypeError, "`window`"),
        ({"theta": -1.0}, ValueError, "theta=-1.0"),
        ({"theta": float("nan")}, ValueError, "theta=nan"),
        ({"theta": float("inf")}, ValueError, "`theta` must be finite"),
        ({"theta": "1"}, TypeError, "`theta`"),
        ({"lambd": 1.5}, ValueError, r"`lambd` must be a probability in \[0, 1\]"),
        ({"lambd": -0.1}, ValueError, "lambd=-0.1"),
        ({"lambd": None}, TypeError, "`lambd`"),
        ({"wait_for_full_window": 1}, TypeError, "`wait_for_full_window` must be a bool"),
    ],
)
def test_bad_cache_parameters_raise(arguments, error, match):
    parameters = {"window": 4, "theta": 1.0, "lambd": 0.1, **arguments}
    logits, hidden, targets = random_streams(steps=3)
    with pytest.raises(error, match=match):
        cache_nll(logits, hidden, targets, None, **parameters)
    with pytest.raises(error, match=match):
        NeuralCache(**parameters)


def test_bad_tensors_and_history_raise():
    logits, hidden, targets = random_streams(steps=5)
    with pytest.raises(ValueError, match=r"`logits` must be 3D .* \(2, 5\)"):
        cache_nll(logits[..., 0], hidden, targets, None, 4, 1.0, 0.1)
    with pytest.raises(ValueError, match="`targets` must be 2D"):
        cache_nll(logits, hidden, targets[..., None], None, 4, 1.0, 0.1)
    with pytest.raises(TypeError, match="`targets` must hold integer token ids"):
        cache_nll(logits, hidden, targets.astype("float32"), None, 4, 1.0, 0.1)
    with pytest.raises(ValueError, match="agree on the time axis"):
        cache_nll(logits, hidden[:, :4], targets, None, 4, 1.0, 0.1)
    with pytest.raises(ValueError, match="agree on the batch axis"):
        cache_nll(logits, hidden[:1], targets, None, 4, 1.0, 0.1)
    _, history = cache_nll(logits, hidden, targets, None, 4, 1.0, 0.1)
    with pytest.raises(ValueError, match=r"history.hidden has shape \(2, 4, 5\), but window=6"):
        cache_nll(logits, hidden, targets, history, 6, 1.0, 0.1)
    with pytest.raises(TypeError, match="`history` must be None"):
        cache_nll(logits, hidden, targets, "cache", 4, 1.0, 0.1)


def test_bad_evaluation_arguments_raise(stateful_model):
    tokens = np.random.default_rng(4).integers(0, VOCAB, 40)
    cache = {"window": 4, "theta": 1.0, "lambd": 0.1}
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        evaluate_with_cache("model", tokens, **cache)
    with pytest.raises(ValueError, match="must match the stateful model's batch size 2"):
        evaluate_with_cache(stateful_model, tokens, batch_size=1, **cache)
    with pytest.raises(ValueError, match="bptt=0"):
        evaluate_with_cache(stateful_model, tokens, bptt=0, **cache)
    with pytest.raises(ValueError, match="lambd=2"):
        evaluate_with_cache(stateful_model, tokens, window=4, theta=1.0, lambd=2)
    with pytest.raises(ValueError, match=r"ids in \[0, 20\).* up to 25"):
        evaluate_with_cache(stateful_model, np.insert(tokens, 0, 25), **cache)
    with pytest.raises(ValueError, match="`hidden_layer` must name a layer"):
        evaluate_with_cache(stateful_model, tokens, hidden_layer="lstm_9", **cache)
    with pytest.raises(TypeError, match="`hidden_layer` must be None"):
        evaluate_with_cache(stateful_model, tokens, hidden_layer=2, **cache)
    with pytest.raises(ValueError, match="too short for batch_size=2"):
        evaluate_with_cache(stateful_model, tokens[:3], **cache)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'theta'"):
        evaluate_with_cache(stateful_model, tokens, window=4, lambd=0.1)
    stateless = language_model(VOCAB, embedding_size=4, hidden_size=4, num_layers=1)
    with pytest.raises(ValueError, match=r"needs stateful recurrent layers.*lstm_1"):
        evaluate_with_cache(stateless, tokens, batch_size=2, **cache)
