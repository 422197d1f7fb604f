"""Padded variable-length BPTT (`BPTTSequence(pad_to_multiple=k)`): the same
training as unpadded, with fewer batch shapes (so fewer JAX compilations)."""

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.callbacks import BPTTCallback
from keras_rnnreg.data import BPTTSequence
from keras_rnnreg.layers import (
    ARTARRegularizer,
    EmbeddingDropout,
    NoisinLSTM,
    TiedEmbedding,
    WeightDropGRU,
    WeightDropLSTM,
)
from keras_rnnreg.losses import IGNORED_TARGET, TokenCrossEntropy, token_cross_entropy
from keras_rnnreg.metrics import Perplexity
from keras_rnnreg.models import get_preset

BACKEND = keras.backend.backend()


# ------------------------------------------------------------- the batches
def test_padded_batches_keep_the_lengths_and_bucket_the_shapes():
    tokens = np.random.default_rng(0).integers(0, 50, size=4 * 400)
    plain = BPTTSequence(tokens, 4, 20, s=6.0, seed=1)
    padded = BPTTSequence(tokens, 4, 20, s=6.0, seed=1, pad_to_multiple=8)
    assert list(padded.lengths) == list(plain.lengths)
    np.testing.assert_array_equal(padded.learning_rate_scales, plain.learning_rate_scales)
    shapes = set()
    for (x, y), (xp, yp), length in zip(plain, padded, plain.lengths):
        width = xp.shape[1]
        shapes.add(width)
        assert width % 8 == 0 and length <= width < length + 8
        np.testing.assert_array_equal(xp[:, :length], x)
        np.testing.assert_array_equal(yp[:, :length], y)
        assert (xp[:, length:] == -1).all() and (yp[:, length:] == IGNORED_TARGET).all()
    assert len(shapes) < len(set(plain.lengths))
    weighted = BPTTSequence(tokens, 4, 20, variable_length=False, token_weights=True,
                            pad_to_multiple=8, padding_id=0)
    x, y, w = weighted[weighted.num_batches - 1]
    assert x.shape == y.shape == w.shape and w.shape[1] % 8 == 0


# ----------------------------------------------------------- the layers
def test_tied_embedding_masks_its_padding_id_and_round_trips():
    layer = TiedEmbedding(5, 3, padding_id=-1)
    ids = np.array([[1, 4, -1, -1]])
    vectors = to_numpy(layer(ids))
    np.testing.assert_array_equal(to_numpy(layer.compute_mask(ids)), [[True, True, False, False]])
    np.testing.assert_allclose(vectors[0, 2], to_numpy(layer.embeddings)[0])  # row 0, masked
    clone = TiedEmbedding.from_config(layer.get_config())
    assert clone.padding_id == -1
    dropped = EmbeddingDropout(5, 3, rate=0.5, padding_id=-1, seed=1)
    assert to_numpy(dropped(ids, training=True)).shape == (1, 4, 3)
    with pytest.raises(ValueError, match="either `mask_zero=True`"):
        TiedEmbedding(5, 3, mask_zero=True, padding_id=0)
    with pytest.raises(TypeError, match="padding_id=1.5"):
        TiedEmbedding(5, 3, padding_id=1.5)


@pytest.mark.parametrize("layer", ["weight_drop_lstm", "weight_drop_gru", "noisin_lstm", "artar"])
def test_padded_steps_leave_outputs_and_carried_states_as_unpadded(layer):
    """Real steps' outputs and the state after the last real step, padded or not."""
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 9, size=(2, 5))
    padded = np.pad(ids, ((0, 0), (0, 3)), constant_values=-1)

    def build():
        keras.utils.set_random_seed(0)
        tokens = keras.Input((None,), batch_size=2, dtype="int32")
        x = TiedEmbedding(9, 4, padding_id=-1)(tokens)
        if layer in ("weight_drop_lstm", "artar"):
            rnn = WeightDropLSTM(3, weight_dropout=0.5, return_sequences=True, stateful=True)
        elif layer == "weight_drop_gru":
            rnn = WeightDropGRU(3, weight_dropout=0.5, return_sequences=True, stateful=True)
        else:
            rnn = NoisinLSTM(3, noise="bernoulli", noise_level=0.3, return_sequences=True,
                             stateful=True)
        h = rnn(x)
        if layer == "artar":
            h = ARTARRegularizer(2.0, 1.0)([h, h])
        return keras.Model(tokens, h), rnn

    outputs, states, losses = [], [], []
    for inputs in (ids, padded):
        model, rnn = build()
        out = to_numpy(model(inputs, training=layer != "noisin_lstm"))
        outputs.append(out[:, :5])
        states.append([to_numpy(s) for s in rnn.states])
        losses.append([float(to_numpy(v)) for v in model.losses])
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(*states, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    assert np.abs(states[0][0]).max() > 1e-3  # the test can fail


# ------------------------------------------------------- loss and metric
def test_ignored_targets_add_no_loss_and_no_perplexity():
    logits = np.random.default_rng(3).normal(size=(2, 4, 6)).astype("float32")
    targets = np.array([[1, 2, 3, IGNORED_TARGET], [4, 5, IGNORED_TARGET, IGNORED_TARGET]])
    per_token = to_numpy(token_cross_entropy(targets, logits))
    assert per_token[0, 3] == 0 and (per_token[1, 2:] == 0).all()
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    real = targets >= 0
    expected = -log_p[np.nonzero(real)[0], np.nonzero(real)[1], targets[real]]
    metric = Perplexity()
    metric.update_state(targets, logits)
    assert float(to_numpy(metric.result())) == pytest.approx(np.exp(expected.mean()), rel=1e-5)
    assert float(to_numpy(TokenCrossEntropy()(targets, logits))) == pytest.approx(
        per_token.sum() / targets.size, rel=1e-5)  # without a mask: zeros, all counted


def test_perplexity_is_the_token_mean_over_batches_of_different_lengths():
    rng = np.random.default_rng(4)
    batches = [(rng.integers(0, 6, size=(2, n)), rng.normal(size=(2, n, 6)).astype("float32"))
               for n in (7, 2)]
    metric = Perplexity()
    token_losses = []
    for targets, logits in batches:
        metric.update_state(targets, logits)
        token_losses.append(to_numpy(token_cross_entropy(targets, logits)).ravel())
    exact = np.exp(np.concatenate(token_losses).mean())
    batch_means = np.exp(np.mean([t.mean() for t in token_losses]))
    assert float(to_numpy(metric.result())) == pytest.approx(exact, rel=1e-5)
    assert abs(exact - batch_means) > 1e-3 * exact  # what Keras's Mean would give differs


# ------------------------------------------------------------ training
def _train(bucket, epochs=2):
    keras.utils.set_random_seed(0)
    preset = get_preset("awd-lstm-cpu").replace(
        batch_size=2, bptt=6, hidden_size=8, embedding_size=8, seed=3,
        length_bucket=bucket, learning_rate=1.0)
    tokens = (np.arange(300) * 7) % 12
    model = preset.compile(preset.build(12))
    train, valid = preset.sequences(tokens, tokens[:60])
    history = model.fit(train, validation_data=valid, epochs=epochs,
                        callbacks=preset.callbacks(train), verbose=0)
    states = [to_numpy(s) for layer in model.layers for s in (getattr(layer, "states", None) or [])]
    return history.history, [to_numpy(w) for w in model.weights], states, (train, valid)


def test_padded_training_is_the_unpadded_training():
    """Every AWD-LSTM regularizer, variable lengths: same losses, metrics,
    AR/TAR terms, final weights and carried states; and the same validation
    metrics with the validation's short last batch padded to `bptt`."""
    plain, plain_weights, plain_states, (plain_train, plain_valid) = _train(None)
    padded, padded_weights, padded_states, (padded_train, padded_valid) = _train(4)
    assert all(x.shape[1] % 4 == 0 for x, _ in padded_train)
    assert {x.shape[1] for x, _, _ in plain_valid} == {6, 5}
    assert {x.shape[1] for x, _, _ in padded_valid} == {6}
    assert len({x.shape[1] for x, _ in plain_train}) > len({x.shape[1] for x, _ in padded_train})
    assert plain.keys() == padded.keys()
    for key in plain:
        np.testing.assert_allclose(padded[key], plain[key], rtol=1e-4, atol=1e-6, err_msg=key)
    for a, b in zip(plain_weights, padded_weights, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    assert plain_states and len(plain_states) == len(padded_states)
    for a, b in zip(plain_states, padded_states, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_a_model_that_does_not_mask_the_padding_is_refused():
    tokens = np.arange(200) % 12
    sequence = BPTTSequence(tokens, 2, 6, pad_to_multiple=4)
    inputs = keras.Input((None,), batch_size=2, dtype="int32")
    h = keras.layers.Embedding(12, 4)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(12)(h))
    model.compile("sgd", TokenCrossEntropy())
    with pytest.raises(ValueError, match="no embedding of model .* masks that id"):
        model.fit(sequence, epochs=1, verbose=0, callbacks=[BPTTCallback(sequence)])


def test_padding_bounds_the_compilations_on_jax():
    tokens = np.random.default_rng(4).integers(0, 11, size=2 * 121)
    sequence = BPTTSequence(tokens, 2, bptt=8, s=2.5, min_length=1, seed=7, pad_to_multiple=4)
    inputs = keras.Input((None,), dtype="int32")
    h = TiedEmbedding(11, 4, padding_id=-1)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(11)(h))
    model.compile(keras.optimizers.SGD(0.1), TokenCrossEntropy())
    traces = []
    train_step = model.train_step

    def counting_train_step(*args, **kwargs):
        traces.append(1)
        return train_step(*args, **kwargs)

    model.train_step = counting_train_step
    model.fit(sequence, epochs=1, verbose=0, callbacks=[BPTTCallback(sequence)])
    widths = {x.shape[1] for x, _ in sequence}
    assert len(set(sequence.lengths)) >= 8 and len(widths) <= 4
    if BACKEND == "jax":
        assert len(traces) == len(widths)
    elif BACKEND == "tensorflow":
        assert len(traces) == 1
    else:
        assert len(traces) == sequence.num_batches
