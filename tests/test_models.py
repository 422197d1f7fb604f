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
from keras_rnnreg.models import Preset, get_preset
from keras_rnnreg.optimizers import ASGD

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


def values_of(variables):
    """Copies (a CPU torch tensor's NumPy view follows later assigns)."""
    return [np.array(to_numpy(v), copy=True) for v in variables]


def test_model_round_trips_through_keras_file(tmp_path):
    model = awd_language_model()
    model.compile(ASGD(0.5, momentum=0.5),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = cyclic_corpus(batch=4, steps=6)
    model.fit(x, y, epochs=1, verbose=0)
    # an average of two iterates (unequal to the weights) and momentum slots
    model.optimizer.start_averaging()
    model.fit(x, y, epochs=1, verbose=0)
    optimizer = model.optimizer
    saved_paths = [v.path for v in optimizer.variables]
    saved_state = values_of(optimizer.variables)
    assert int(to_numpy(optimizer.iterations)) == 2 and optimizer.average_count == 2
    assert not np.allclose(values_of(optimizer.averages)[1], to_numpy(model.trainable_weights[1]))
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

    # The optimizer state came back: iterations, learning rate, momentum
    # slots, the averages and when averaging started.
    reloaded = restored.optimizer
    assert isinstance(reloaded, ASGD) and reloaded.momentum == 0.5
    assert [v.path for v in reloaded.variables] == saved_paths
    for name, value, saved in zip(saved_paths, values_of(reloaded.variables), saved_state,
                                  strict=True):
        np.testing.assert_array_equal(value, saved, err_msg=name)
    assert reloaded.averaging and reloaded.average_count == 2

    # The tied matrix is still one variable, read by the lookup and the decoder.
    embedding = next(l for l in restored.layers if isinstance(l, EmbeddingDropout))
    paths = [w.path for w in restored.trainable_weights]
    assert paths.count(embedding.embeddings.path) == 1
    assert not any("dense" in p for p in paths)
    assert len(restored.trainable_weights) == len(model.trainable_weights)

    # A training step of the reloaded model is the original's. Seed
    # generator states are not saved: the reloaded ones are set to the
    # original's so both steps draw the same dropout masks.
    for original, twin in zip(model.variables, restored.variables, strict=True):
        if original.path.endswith("seed_generator_state"):
            twin.assign(np.array(to_numpy(original), copy=True))
    before = values_of(model.trainable_weights)
    model.train_on_batch(x, y)
    restored.train_on_batch(x, y)
    for a, b in zip(values_of(model.variables + model.optimizer.variables),
                    values_of(restored.variables + reloaded.variables), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    after = values_of(model.trainable_weights)
    assert all(np.abs(a - b).max() > 1e-6 for a, b in zip(after, before))
    # and after it the decoder still reads the (updated) embedding matrix
    artar = next(l for l in restored.layers if isinstance(l, ARTARRegularizer))
    hidden = to_numpy(keras.Model(restored.inputs[0], artar.output)(x, training=False))
    matrix, bias = to_numpy(embedding.embeddings), to_numpy(embedding.output_bias)
    np.testing.assert_allclose(to_numpy(restored(x, training=False)), hidden @ matrix.T + bias,
                               rtol=1e-5, atol=1e-5)


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


# ------------------------------------------------------- Preset's field rules


def preset(**fields):
    """A minimal valid `Preset` with `fields` changed."""
    return Preset(**{"name": "t", "paper": "p", "section": "§0", "description": "d",
                     "model_arguments": {}, **fields})


@pytest.mark.parametrize(
    "fields, error, message",
    [
        # a decaying schedule divides the rate by decay_factor > 1
        ({"schedule": "plateau"}, ValueError,
         r"schedule='plateau'.*`decay_factor` > 1.*decay_factor=None"),
        ({"schedule": "plateau", "decay_factor": 1.0}, ValueError,
         r"`decay_factor` > 1.*decay_factor=1\.0"),
        ({"schedule": "plateau", "decay_factor": 0.5}, ValueError, r"decay_factor=0\.5"),
        ({"schedule": "plateau", "decay_factor": float("nan")}, ValueError, "decay_factor=nan"),
        ({"schedule": "epoch_decay", "decay_start": 3, "decay_factor": 1.0}, ValueError,
         r"schedule='epoch_decay'.*decay_factor=1\.0"),
        # epoch_decay starts at a positive epoch
        ({"schedule": "epoch_decay", "decay_factor": 2.0}, TypeError,
         "`decay_start`.*decay_start=None"),
        ({"schedule": "epoch_decay", "decay_factor": 2.0, "decay_start": 0}, ValueError,
         "`decay_start` must be an int >= 1.*decay_start=0"),
        ({"schedule": "epoch_decay", "decay_factor": 2.0, "decay_start": 2.5}, TypeError,
         r"decay_start=2\.5"),
        # NT-ASGD's trigger needs ASGD and a positive n
        ({"nonmono": 5}, ValueError, r"`nonmono`.*optimizer='asgd'.*nonmono=5, optimizer='sgd'"),
        ({"nonmono": 5, "optimizer": "adam"}, ValueError, r"`nonmono`.*optimizer='asgd'.*optimizer='adam'"),
        ({"nonmono": 0, "optimizer": "asgd"}, ValueError, "`nonmono`.*nonmono=0"),
        ({"nonmono": True, "optimizer": "asgd"}, TypeError, "nonmono=True"),
        # fine-tuning stops by NT-ASGD's test
        ({"finetune": True, "optimizer": "asgd"}, ValueError, "Fine-tuning.*`nonmono`.*finetune=True, nonmono=None"),
        ({"finetune": 1, "optimizer": "asgd", "nonmono": 5}, TypeError, "finetune=1"),
        # single fields
        ({"optimizer": "rmsprop"}, ValueError, "optimizer='rmsprop'"),
        ({"schedule": "cosine"}, ValueError, "schedule='cosine'"),
        ({"learning_rate": -1.0}, ValueError, r"`learning_rate` must be >= 0.*learning_rate=-1\.0"),
        ({"clipnorm": -0.25}, ValueError, r"clipnorm=-0\.25"),
        ({"weight_decay": -1e-6}, ValueError, "weight_decay=-1e-06"),
        ({"batch_size": 0}, ValueError, "batch_size=0"),
        ({"bptt": 0}, ValueError, "bptt=0"),
        ({"epochs": 0}, ValueError, "epochs=0"),
        ({"length_bucket": 0}, ValueError, "length_bucket=0"),
        ({"variable_bptt": "yes"}, TypeError, "variable_bptt='yes'"),
        ({"seed": 1.5}, TypeError, r"seed=1\.5"),
        ({"model_arguments": {"hidden_units": 3}}, ValueError, "unknown model argument.*hidden_units"),
    ],
)
def test_preset_rejects_invalid_fields_naming_them(fields, error, message):
    with pytest.raises(error, match=message):
        preset(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"schedule": "plateau", "decay_factor": 1.001},
        {"schedule": "epoch_decay", "decay_factor": 1.15, "decay_start": 1},
        {"optimizer": "asgd"},
        {"optimizer": "asgd", "nonmono": 1},
        {"optimizer": "asgd", "nonmono": 5, "finetune": True},
        {"learning_rate": 0.0, "clipnorm": 0.0, "weight_decay": 0.0, "length_bucket": 1},
    ],
)
def test_preset_accepts_the_valid_neighbours(fields):
    made = preset(**fields)
    for name, value in fields.items():
        assert getattr(made, name) == value


def test_preset_replace_checks_the_rules_too():
    awd = get_preset("awd-lstm-cpu")
    with pytest.raises(ValueError, match=r"`nonmono`.*optimizer='asgd'"):
        awd.replace(optimizer="sgd")
    with pytest.raises(ValueError, match="Fine-tuning.*`nonmono`"):
        awd.replace(nonmono=None)
    assert awd.replace(nonmono=None, finetune=False).nonmono is None
    with pytest.raises(ValueError, match=r"decay_factor=1\.0"):
        get_preset("artar-cpu").replace(decay_factor=1.0)
    with pytest.raises(ValueError, match="decay_start=0"):
        get_preset("zaremba-cpu").replace(decay_start=0)


def test_mixture_and_large_noisin_presets_state_their_sources():
    """The MoS code README's PTB command (github.com/zihangdai/mos) and
    main.py's defaults, the MoS paper's Table 1, Noisin's Tables 3-5."""
    mos = get_preset("awd-lstm-mos")
    arguments = mos.model_arguments
    assert (arguments["embedding_size"], arguments["hidden_size"], arguments["num_experts"]) == (
        280, [960, 960, 620], 15)
    assert [arguments[name] for name in ("input_dropout", "hidden_dropout", "output_dropout",
                                         "embedding_dropout", "latent_dropout",
                                         "weight_dropout")] == [0.4, 0.225, 0.4, 0.1, 0.29, 0.5]
    assert (mos.batch_size, mos.learning_rate, mos.epochs, mos.seed, mos.finetune) == (
        12, 20.0, 1000, 28, True)
    assert (mos.clipnorm, mos.bptt, mos.weight_decay, mos.nonmono) == (0.25, 70, 1.2e-6, 5)
    assert (mos.reported_valid_perplexity, mos.reported_test_perplexity) == (56.54, 54.44)
    assert "48.33 / 47.69" in mos.notes and "lr 25" in mos.notes
    noisin = get_preset("awd-lstm-mos-noisin")
    # The same model and recipe, but the noise and the epochs.
    same = {name: value for name, value in noisin.model_arguments.items()
            if name not in ("noise", "noise_level")}
    assert same == dict(mos.model_arguments)
    for field in ("optimizer", "learning_rate", "batch_size", "bptt", "clipnorm",
                  "weight_decay", "nonmono", "finetune", "seed", "reported_parameters"):
        assert getattr(noisin, field) == getattr(mos, field), field
    assert (noisin.model_arguments["noise"], noisin.model_arguments["noise_level"],
            noisin.epochs) == ("gamma", 0.4, 400)
    assert (noisin.reported_valid_perplexity, noisin.reported_test_perplexity) == (48.4, 47.6)
    assert "WITH dynamic evaluation" in noisin.notes
    rows = {"noisin-large": ("bernoulli", 0.33, 0.0, 72.8, 68.3),
            "noisin-large-dropout": ("bernoulli", 0.50, 0.5, 70.0, 66.1),
            "noisin-large-wt2": ("bernoulli", 0.41, 0.0, 86.9, 83.0),
            "noisin-large-dropout-wt2": ("bernoulli", 0.64, 0.5, 80.8, 76.8)}
    for name, (noise, level, dropout, valid, test) in rows.items():
        large = get_preset(name)
        arguments = large.model_arguments
        assert (arguments["hidden_size"], arguments["embedding_size"]) == (1500, 1500), name
        assert (arguments["noise"], arguments["noise_level"], arguments["input_dropout"]) == (
            noise, level, dropout), name
        assert (large.reported_valid_perplexity, large.reported_test_perplexity) == (
            valid, test), name
        assert large.dataset == ("WT2" if name.endswith("wt2") else "PTB"), name
    assert get_preset("noisin-large-dropout").model_arguments["hidden_dropout"] == 0.4
    assert get_preset("awd-lstm-mos-cpu").twin_of == "awd-lstm-mos"
