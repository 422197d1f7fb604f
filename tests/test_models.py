"""Whole-model checks: an AWD-style LM trains, saves, reloads; mixed precision."""

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.layers import (
    ARTARRegularizer,
    EmbeddingDropout,
    LockedDropout,
    TiedEmbedding,
    WeightDropGRU,
    WeightDropLSTM,
)

VOCAB, EMBED, HIDDEN = 30, 16, 24


def awd_language_model(seed=0):
    """Embedding → WeightDropLSTM ×2 → LockedDropout → ARTAR → tied softmax."""
    tokens = keras.Input((None,), dtype="int32")
    embedding = EmbeddingDropout(VOCAB, EMBED, rate=0.1, seed=seed, use_output_bias=True)
    x = LockedDropout(0.2, seed=seed)(embedding(tokens))
    x = WeightDropLSTM(HIDDEN, weight_dropout=0.3, seed=seed, return_sequences=True)(x)
    x = LockedDropout(0.2, seed=seed + 1)(x)
    # the last layer's units equal the embedding size, so the softmax can be tied
    h = WeightDropLSTM(EMBED, weight_dropout=0.3, seed=seed + 1, return_sequences=True)(x)
    dropped_h = LockedDropout(0.2, seed=seed + 2)(h)
    dropped_h = ARTARRegularizer(alpha=2.0, beta=1.0)([h, dropped_h])
    logits = embedding(dropped_h, reverse=True)
    return keras.Model(tokens, logits)


def cyclic_corpus(batch=16, steps=20):
    """A deterministic, learnable stream: token t+1 follows token t."""
    start = np.random.default_rng(0).integers(0, VOCAB, size=(batch, 1))
    stream = (start + np.arange(steps + 1)[None]) % VOCAB
    return stream[:, :-1], stream[:, 1:]


def test_awd_language_model_trains_and_loss_falls():
    model = awd_language_model()
    model.compile(
        keras.optimizers.Adam(0.03),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = cyclic_corpus()
    history = model.fit(x, y, epochs=40, batch_size=8, verbose=0)
    losses = history.history["loss"]
    evaluated = model.evaluate(x, y, verbose=0)
    assert losses[-1] < 0.5 * losses[0]
    # without dropout the deterministic stream is nearly solved
    assert evaluated < 0.35 * np.log(VOCAB)


def test_model_round_trips_through_keras_file(tmp_path):
    model = awd_language_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = cyclic_corpus(batch=4, steps=6)
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "awd.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(
        to_numpy(restored.predict(x, verbose=0)), to_numpy(model.predict(x, verbose=0))
    )
    kinds = {type(layer).__name__ for layer in restored.layers}
    assert {"EmbeddingDropout", "LockedDropout", "WeightDropLSTM", "ARTARRegularizer"} <= kinds
    lstm = next(l for l in restored.layers if isinstance(l, WeightDropLSTM))
    assert lstm.weight_dropout == 0.3
    # the reloaded model trains on (optimizer state and tied weights intact)
    restored.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: WeightDropGRU(6, weight_dropout=0.4, return_sequences=True),
        lambda: TiedEmbedding(VOCAB, 6, use_output_bias=True),
    ],
    ids=["gru", "tied"],
)
def test_other_layers_round_trip(layer, tmp_path):
    layer = layer()
    if isinstance(layer, TiedEmbedding):
        tokens = keras.Input((None,), dtype="int32")
        model = keras.Model(tokens, layer(layer(tokens), reverse=True))
        x = np.array([[1, 2, 3]])
        layer.output_bias.assign(np.arange(VOCAB, dtype="float32"))
    else:
        inputs = keras.Input((None, 3))
        model = keras.Model(inputs, layer(inputs))
        x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(to_numpy(restored(x)), to_numpy(model(x)))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    model = awd_language_model()
    compute = policy.split("_")[1]
    assert model.output.dtype == compute
    model.compile(
        keras.optimizers.SGD(0.5),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = cyclic_corpus(batch=8, steps=10)
    history = model.fit(x, y, epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    lstm = next(l for l in model.layers if isinstance(l, WeightDropLSTM))
    assert lstm.cell.recurrent_kernel.dtype == "float32"  # variables stay float32
    dropped = lstm.dropped_recurrent_kernel()
    assert keras.backend.standardize_dtype(dropped.dtype) == compute
