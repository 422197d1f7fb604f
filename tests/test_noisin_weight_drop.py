"""A weight-dropped Noisin LSTM (AWD-LSTM + Noisin, the Noisin paper's Table 5).

One DropConnect mask on U per forward pass (Merity et al. 2017, section 2)
and fresh noise on the emitted state at every step (Dieng et al. 2018,
Algorithm 1), through the one LSTM engine on every path.
"""

import os

import keras
import numpy as np
import pytest

import keras_rnnreg._lstm.layer as engine
from conftest import numpy_lstm, to_numpy
from keras_rnnreg.layers import NoisinGRU, NoisinLSTM
from keras_rnnreg.models import language_model

X = np.random.default_rng(3).normal(size=(6, 7, 5)).astype("float32")
P = 0.5
UNITS = 16


@pytest.fixture
def handed_to_the_engine(monkeypatch):
    """The U' and ε each forward pass hands the engine."""
    calls = []
    run = engine.lstm

    def spy(layer, sequences, initial_state, mask, training, recurrent_kernel=None,
            noise=None, noise_mode=None):
        calls.append((None if recurrent_kernel is None else to_numpy(recurrent_kernel),
                      None if noise is None else to_numpy(noise)))
        return run(layer, sequences, initial_state, mask, training, recurrent_kernel, noise,
                   noise_mode)

    monkeypatch.setattr(engine, "lstm", spy)
    return calls


def _layer(**kwargs):
    layer = NoisinLSTM(UNITS, noise="bernoulli", noise_level=0.6, weight_dropout=P, seed=5,
                       return_sequences=True, return_state=True, **kwargs)
    layer.build(X.shape)
    return layer


@pytest.mark.parametrize("use_cudnn", ["auto", False], ids=["fast-path", "generic-loop"])
def test_training_is_the_recurrence_with_one_dropped_kernel_and_noise_per_step(
    handed_to_the_engine, use_cudnn
):
    layer = _layer(use_cudnn=use_cudnn)
    kernel, raw, bias = (to_numpy(w) for w in layer.get_weights())
    outputs, h, c = (to_numpy(t) for t in layer(X, training=True))
    (dropped, eps), = handed_to_the_engine
    # The engine got U' = U ⊙ M / (1 - p) and ε of (batch, time, units) ...
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], raw[kept] / (1 - P), rtol=1e-6)
    assert eps.shape == (6, 7, UNITS)
    # ... and computed Algorithm 1 with exactly them.
    want, want_h, want_c = numpy_lstm(X, kernel, dropped, bias, eps=eps)
    for got, expected in ((outputs, want), (h, want_h), (c, want_c)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_one_mask_per_forward_pass_and_fresh_noise_per_step(handed_to_the_engine):
    layer = _layer()
    for _ in range(3):
        layer(X, training=True)
    masks = [dropped != 0 for dropped, _ in handed_to_the_engine]
    # Each pass drops a fraction p of the 4·16·16 = 1024 weights: within 4
    # standard deviations of a Binomial(1024, 0.5) (the mean ± 64 weights)...
    n = masks[0].size
    for mask in masks:
        assert abs((~mask).sum() - n * P) < 4 * np.sqrt(n * P * (1 - P))
    # ... with a new mask at every pass (two equal masks: probability 2^-1024).
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    # Bernoulli noise ε ∈ {0, 1/γ}, mean 1, drawn anew at every step:
    eps = np.stack([e for _, e in handed_to_the_engine])  # (pass, batch, time, units)
    np.testing.assert_allclose(np.unique(eps), [0.0, 1 / 0.6], rtol=1e-6)
    steps = eps.transpose(2, 0, 1, 3).reshape(7, -1)
    assert all(not np.array_equal(steps[t], steps[t + 1]) for t in range(6))
    assert abs(eps.mean() - 1.0) < 4 * np.sqrt((1 / 0.6 - 1) / eps.size)


def test_inference_equals_keras_lstm_with_the_same_weights(handed_to_the_engine):
    layer = _layer()
    keras_lstm = keras.layers.LSTM(UNITS, return_sequences=True, return_state=True)
    keras_lstm.build(X.shape)
    keras_lstm.set_weights(layer.get_weights())
    for got, want in zip(layer(X), keras_lstm(X), strict=True):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=1e-5, atol=1e-6)
    assert handed_to_the_engine == [(None, None)]  # the raw U, no noise


def test_keras_file_round_trip(tmp_path):
    inputs = keras.Input((7, 5))
    outputs = NoisinLSTM(UNITS, noise="gamma", noise_level=0.7, alpha=3.0, weight_dropout=0.3,
                         seed=2, return_sequences=True)(inputs)
    model = keras.Model(inputs, outputs)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.layers[-1]
    assert isinstance(layer, NoisinLSTM)
    assert (layer.noise, layer.noise_level, layer.noise_params, layer.weight_dropout) == (
        "gamma", 0.7, {"alpha": 3.0}, 0.3
    )
    np.testing.assert_array_equal(to_numpy(loaded(X)), to_numpy(model(X)))


def test_a_language_model_with_noise_and_weight_drop_trains():
    model = language_model(30, embedding_size=8, hidden_size=8, num_layers=2, noise="bernoulli",
                           noise_level=0.8, weight_dropout=0.4, tie_weights=True, seed=0)
    recurrent = [layer for layer in model.layers if isinstance(layer, NoisinLSTM)]
    assert [layer.weight_dropout for layer in recurrent] == [0.4, 0.4]
    model.compile(keras.optimizers.SGD(1.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    tokens = np.random.default_rng(0).integers(0, 30, (8, 11))
    history = model.fit(tokens[:, :-1], tokens[:, 1:], epochs=4, batch_size=4, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_noisin_gru_takes_weight_drop_too(monkeypatch):
    layer = NoisinGRU(UNITS, noise="gaussian", noise_level=0.3, weight_dropout=P, seed=1,
                      return_sequences=True)
    layer.build(X.shape)
    keras_gru = keras.layers.GRU(UNITS, return_sequences=True)
    keras_gru.build(X.shape)
    keras_gru.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(layer(X)), to_numpy(keras_gru(X)), rtol=1e-5, atol=1e-6)
    kernels = []
    run = engine.gru

    def spy(layer, *args, **kwargs):
        kernels.append(to_numpy(args[4]))
        return run(layer, *args, **kwargs)

    monkeypatch.setattr(engine, "gru", spy)
    assert not np.allclose(to_numpy(layer(X, training=True)), to_numpy(keras_gru(X)))
    raw = to_numpy(layer.cell.recurrent_kernel)
    (dropped,) = kernels
    kept = dropped != 0
    assert 0.4 < 1 - kept.mean() < 0.6
    np.testing.assert_allclose(dropped[kept], raw[kept] / (1 - P), rtol=1e-6)


def test_bad_weight_dropout_names_the_argument():
    with pytest.raises(ValueError, match="weight_dropout"):
        NoisinLSTM(4, weight_dropout=1.0)
    with pytest.raises(ValueError, match="use_cudnn=True"):
        NoisinGRU(4, use_cudnn=True)
