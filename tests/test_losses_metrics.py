"""TokenCrossEntropy equals Keras's sparse cross-entropy; Perplexity is exp of
the token-weighted mean cross-entropy."""

import math

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.losses import TokenCrossEntropy, token_cross_entropy
from keras_rnnreg.metrics import Perplexity

RNG = np.random.default_rng(0)
Y = RNG.integers(0, 11, size=(3, 7))
LOGITS = RNG.normal(size=(3, 7, 11)).astype("float32")
WEIGHTS = RNG.random((3, 7)).astype("float32")


def numpy_token_nll(y, logits):
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probs, y[..., None], -1)[..., 0]


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean", None])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_equals_keras_sparse_categorical_crossentropy(reduction, weighted):
    weights = WEIGHTS if weighted else None
    ours = TokenCrossEntropy(reduction=reduction)(Y, LOGITS, sample_weight=weights)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
    np.testing.assert_allclose(
        to_numpy(ours), to_numpy(keras_loss(Y, LOGITS, sample_weight=weights)), rtol=1e-6
    )


def test_per_token_values_and_probabilities():
    np.testing.assert_allclose(
        to_numpy(token_cross_entropy(Y, LOGITS)), numpy_token_nll(Y, LOGITS), rtol=1e-5
    )
    probabilities = to_numpy(keras.ops.softmax(LOGITS))
    np.testing.assert_allclose(
        to_numpy(token_cross_entropy(Y[..., None], probabilities, from_logits=False)),
        numpy_token_nll(Y, LOGITS), rtol=1e-4,
    )


def test_loss_honours_a_keras_mask_like_keras():
    tokens = keras.Input((7,), dtype="int32")
    embedded = keras.layers.Embedding(11, 4, mask_zero=True)(tokens)
    logits = keras.layers.Dense(11)(keras.layers.LSTM(5, return_sequences=True)(embedded))
    model = keras.Model(tokens, logits)
    x = Y.copy()
    x[:, 4:] = 0  # padding
    results = {}
    for name, loss in [("ours", TokenCrossEntropy()),
                       ("keras", keras.losses.SparseCategoricalCrossentropy(from_logits=True))]:
        model.compile(loss=loss)
        results[name] = model.evaluate(x, Y, verbose=0)
    np.testing.assert_allclose(results["ours"], results["keras"], rtol=1e-6)


def test_perplexity_is_exp_of_the_token_weighted_mean_over_batches():
    metric = Perplexity()
    nll = numpy_token_nll(Y, LOGITS)
    metric.update_state(Y[:1], LOGITS[:1], sample_weight=WEIGHTS[:1])
    metric.update_state(Y[1:], LOGITS[1:], sample_weight=WEIGHTS[1:])
    expected = math.exp((nll * WEIGHTS).sum() / WEIGHTS.sum())
    np.testing.assert_allclose(float(to_numpy(metric.result())), expected, rtol=1e-5)
    metric.reset_state()
    metric.update_state(Y, LOGITS)
    np.testing.assert_allclose(float(to_numpy(metric.result())), math.exp(nll.mean()), rtol=1e-5)


def test_uniform_logits_give_the_vocabulary_size():
    metric = Perplexity()
    metric.update_state(Y, np.zeros_like(LOGITS))
    np.testing.assert_allclose(float(to_numpy(metric.result())), 11.0, rtol=1e-5)


def test_perplexity_in_fit_and_evaluate_and_round_trips(tmp_path):
    tokens = keras.Input((7,), dtype="int32")
    logits = keras.layers.Dense(11)(keras.layers.Embedding(11, 4)(tokens))
    model = keras.Model(tokens, logits)
    model.compile("sgd", TokenCrossEntropy(), metrics=[Perplexity()])
    history = model.fit(Y, Y, epochs=1, verbose=0)
    assert "perplexity" in history.history
    loss, perplexity = model.evaluate(Y, Y, verbose=0)
    np.testing.assert_allclose(perplexity, math.exp(loss), rtol=1e-5)
    path = tmp_path / "lm.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored.evaluate(Y, Y, verbose=0), [loss, perplexity], rtol=1e-6)


def test_configs_round_trip():
    loss = TokenCrossEntropy(from_logits=False, reduction="sum")
    assert TokenCrossEntropy.from_config(loss.get_config()).get_config() == loss.get_config()
    metric = Perplexity(name="ppl")
    assert Perplexity.from_config(metric.get_config()).get_config() == metric.get_config()


def test_bad_arguments():
    with pytest.raises(TypeError, match="from_logits"):
        TokenCrossEntropy(from_logits="yes")
    with pytest.raises(TypeError, match="from_logits"):
        Perplexity(from_logits=1)


def test_train_step_perplexity_reuses_the_losses_only_for_the_same_tensors(monkeypatch):
    # On eager torch the metric takes the loss's per-token values for the
    # same (y_true, y_pred) rather than a second log-softmax; elsewhere (and
    # for other tensors) it computes its own. Either way the value is exp of
    # the step's token mean on the logits before the update.
    import keras_rnnreg.metrics as metrics_module

    calls = []
    real = metrics_module.token_cross_entropy
    monkeypatch.setattr(
        metrics_module, "token_cross_entropy", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    tokens = keras.Input((7,), dtype="int32")
    logits = keras.layers.Dense(11)(keras.layers.Embedding(11, 4)(tokens))
    model = keras.Model(tokens, logits)
    model.compile(keras.optimizers.SGD(0.5), TokenCrossEntropy(), metrics=[Perplexity()])
    model.train_on_batch(Y, Y)  # builds the train step before counting
    model.reset_metrics()
    before = to_numpy(model(Y))
    calls.clear()
    logs = model.train_on_batch(Y, Y, return_dict=True)
    expected = math.exp(numpy_token_nll(Y, before).mean())
    np.testing.assert_allclose(logs["perplexity"], expected, rtol=1e-5)
    if keras.backend.backend() == "torch":
        assert calls == []
    # another y_pred with the same targets: computed, not recalled
    metric = Perplexity()
    metric.update_state(Y, LOGITS)
    assert len(calls) == 1
    np.testing.assert_allclose(
        to_numpy(metric.result()), math.exp(numpy_token_nll(Y, LOGITS).mean()), rtol=1e-5
    )
