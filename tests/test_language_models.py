"""keras_rnnreg.models: the language-model builder, the papers' initialization
and the presets (parameter counts, recipes, a few training steps per -cpu twin)."""

import math

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.callbacks import NTASGD, BPTTCallback, LogRegularizers, reset_rnn_states
from keras_rnnreg.layers import NoisinGRU, NoisinLSTM, WeightDropGRU, WeightDropLSTM
from keras_rnnreg.losses import TokenCrossEntropy
from keras_rnnreg.models import (
    DEFAULT_ARGUMENTS,
    Preset,
    get_preset,
    initializers,
    language_model,
    list_presets,
    resolve_arguments,
)
from keras_rnnreg.models.presets import EpochDecay
from keras_rnnreg.optimizers import ASGD

BACKEND = keras.backend.backend()
CPU_TWINS = ("zaremba-cpu", "artar-cpu", "noisin-cpu", "awd-lstm-cpu")
# Models share weight shapes where they can: on JAX each new shape costs a
# compilation of the random draw. STATS is large enough for statistics.
STATS = {"vocab_size": 300, "embedding_size": 32, "hidden_size": [64, 48, 32]}
SMALL = {"vocab_size": 12, "embedding_size": 32, "hidden_size": 32}


def recurrent_layers(model):
    kinds = (WeightDropLSTM, WeightDropGRU, NoisinLSTM, NoisinGRU)
    return [layer for layer in model.layers if isinstance(layer, kinds)]


def cell_weights(layer):
    cell = layer.cell
    return {
        "kernel": to_numpy(cell.kernel),
        "recurrent_kernel": to_numpy(cell.recurrent_kernel),
        "bias": to_numpy(cell.bias),
    }


def expected_parameters(vocab, embedding, sizes, tied, gates=4, experts=1):
    """Embedding + Keras LSTM layers (one bias vector) + softmax (with K > 1
    experts: a prior without bias and K latent contexts of the embedding's
    size with a bias, Yang et al. 2018)."""
    count = vocab * embedding
    inputs = embedding
    for units in sizes:
        count += gates * units * (inputs + units + 1)
        inputs = units
    if experts > 1:
        count += inputs * experts + (inputs + 1) * experts * embedding
        inputs = embedding
    return count + vocab + (0 if tied else vocab * inputs)


def assert_uniform(values, bound, name):
    """max |w| <= bound and close to it; mean, std and quartile shares those
    of U(-bound, bound), within 5 standard errors of a sample of this size.

    5, not 4: a model has dozens of weights, each checked on six statistics,
    and 4 standard errors failed once in a few hundred seeds (seen on a GPU's
    torch generator, a 4.1-sigma quartile of a 300-element bias)."""
    values = np.ravel(values)
    n = values.size
    largest = np.abs(values).max()
    assert largest <= bound * (1 + 1e-6), name
    assert largest >= bound * (1 - 10 / n), name  # P(fails) = (1 - 10/n)^n < 1e-4
    assert abs(values.mean()) < 5 * bound / math.sqrt(3 * n), name
    # std of the sample std of U(-b, b): (b/sqrt(3)) * sqrt(1/(5n)) ~ 0.45/sqrt(n) relative.
    assert values.std() == pytest.approx(bound / math.sqrt(3), rel=2.25 / math.sqrt(n)), name
    shares = np.histogram(values, bins=4, range=(-bound, bound))[0] / n
    np.testing.assert_allclose(shares, 0.25, atol=5 * math.sqrt(3 / 16 / n), err_msg=name)


# ------------------------------------------------------------------ presets


# Exact counts of our Keras models at the dataset's vocabulary; the papers
# print 20M, 66M, 13M, 13M, 13M, 24M, 33M, 51M, 51M, 22M and 22M.
EXACT_PARAMETERS = {
    "zaremba-medium": 19_775_200,
    "zaremba-large": 66_022_000,
    "artar-650": 13_275_200,
    "noisin-medium": 13_275_200,
    "noisin-medium-dropout": 13_275_200,
    "awd-lstm": 24_210_800,
    "awd-lstm-wt2": 33_545_278,
    "noisin-large": 51_022_000,
    "noisin-large-dropout": 51_022_000,
    "awd-lstm-mos": 21_490_460,
    "awd-lstm-mos-noisin": 21_490_460,
}


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_builds_with_the_papers_parameter_count(name, monkeypatch):
    """Paper-size models built only to count parameters (never trained).

    The papers print counts rounded to millions; we allow 3%: Keras LSTMs
    have one bias vector where PyTorch's have two (4H fewer parameters per
    layer), and AWD-LSTM's Table 2 prints 33.5M as 33M.
    """
    # A count does not read the values: zeros skip the random draws, each of
    # which costs a compilation per new shape on JAX.
    monkeypatch.setattr(initializers, "uniform", lambda scale, seed=None: "zeros")
    preset = get_preset(name)
    vocab = preset.reference_vocab_size
    model = preset.build(vocab)
    sizes = resolve_arguments(**preset.arguments())["hidden_sizes"]
    arguments = preset.model_arguments
    assert model.output.shape == (preset.batch_size, None, vocab)
    # The papers count what is trained; the only other weights are the AR/TAR
    # layer's three running totals of its terms (for the logs).
    parameters = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    artar = arguments.get("alpha") or arguments.get("beta")
    assert [w.path.rsplit("/", 1)[-1] for w in model.non_trainable_weights] == (
        ["term_totals"] if artar else [])
    assert parameters == expected_parameters(
        vocab, arguments["embedding_size"], sizes, arguments["tie_weights"],
        experts=arguments.get("num_experts", 1),
    )
    if preset.reported_parameters is not None:
        assert parameters == EXACT_PARAMETERS[name]
        assert parameters == pytest.approx(preset.reported_parameters, rel=0.03)
    assert (preset.twin_of is None) == (preset.reported_test_perplexity is not None)
    if name.startswith("awd-lstm") and not arguments.get("num_experts", 1) > 1:
        assert sizes[-1] == arguments["embedding_size"]  # §4.5: the last is the embedding size


def test_presets_state_the_papers_recipes():
    awd = get_preset("awd-lstm")
    assert (awd.optimizer, awd.learning_rate, awd.clipnorm, awd.weight_decay) == (
        "asgd", 30.0, 0.25, 1.2e-6)
    assert (awd.batch_size, awd.bptt, awd.variable_bptt, awd.epochs, awd.nonmono) == (
        40, 70, True, 750, 5)
    assert get_preset("awd-lstm-wt2").batch_size == 80
    assert get_preset("awd-lstm-wt2").model_arguments["input_dropout"] == 0.65
    noisin = get_preset("noisin-medium")
    assert (noisin.batch_size, noisin.clipnorm, noisin.seed, noisin.decay_factor) == (
        80, 0.25, 1111, 1.2)
    assert get_preset("noisin-medium-dropout").model_arguments["noise_level"] == 0.80
    artar = get_preset("artar-650")
    assert (artar.learning_rate, artar.decay_factor, artar.clipnorm, artar.weight_decay) == (
        20.0, 4.0, 10.0, 1e-7)
    large = get_preset("zaremba-large")
    assert (large.decay_start, large.decay_factor, large.epochs, large.clipnorm) == (
        14, 1.15, 55, 10.0)
    # Zaremba's loss sums over the 35 steps: the token-mean equivalent.
    medium = get_preset("zaremba-medium")
    assert medium.keras_learning_rate == 35.0
    assert medium.keras_clipnorm == pytest.approx(5.0 / 35)
    assert awd.keras_learning_rate == 30.0 and awd.keras_clipnorm == 0.25
    decay = EpochDecay(35.0, 6, 1.2)
    assert [decay(e) for e in (0, 5, 6, 7)] == pytest.approx(
        [35.0, 35.0, 35.0 / 1.2, 35.0 / 1.2**2])


def test_compile_sequences_and_callbacks_follow_the_recipe():
    preset = get_preset("awd-lstm-cpu").replace(
        batch_size=2, bptt=6, hidden_size=32, embedding_size=32)
    model = preset.compile(preset.build(12))
    optimizer = model.optimizer
    assert isinstance(optimizer, ASGD)
    assert float(to_numpy(optimizer.learning_rate)) == 30.0
    assert optimizer.global_clipnorm == 0.25
    assert optimizer.weight_decay == pytest.approx(1.2e-6)
    assert isinstance(model.loss, TokenCrossEntropy)
    tokens = np.arange(200) % 12
    train, valid, test = preset.sequences(tokens, tokens[:50], tokens[:40])
    assert train.variable_length and train.batch_size == 2 and train.bptt == 6
    assert not valid.variable_length and valid.token_weights and valid.batch_size == 2
    callbacks = preset.callbacks(train)
    # The terms go into the logs before any logger added after these reads them.
    assert [type(c) for c in callbacks] == [BPTTCallback, NTASGD, LogRegularizers]
    assert preset.callbacks(train, finetune=True)[1].finetune
    artar = get_preset("artar-cpu").callbacks(train)
    assert [type(c).__name__ for c in artar] == [
        "BPTTCallback", "ReduceLROnPlateau", "LogRegularizers"]
    assert artar[1].factor == 0.25 and artar[1].patience == 0
    zaremba = get_preset("zaremba-cpu").callbacks(train)
    # The schedule runs first: BPTTCallback scales the scheduled rate.
    assert [type(c).__name__ for c in zaremba] == ["LearningRateScheduler", "BPTTCallback"]
    sgd = get_preset("zaremba-small").make_optimizer()
    assert isinstance(sgd, keras.optimizers.SGD) and not isinstance(sgd, ASGD)
    assert sgd.weight_decay is None
    with pytest.raises(ValueError, match="no fine-tuning stage"):
        get_preset("artar-cpu").callbacks(train, finetune=True)


TWIN_OVERRIDES = {
    # Tiny layers start near zero with U(±0.1) and need many steps to leave
    # it; a wider scale keeps this test to a few steps.
    "zaremba-cpu": {"initialization": 0.3},
    "artar-cpu": {},
    "noisin-cpu": {},
    # At 32 units a third layer makes lr 30 (steps of norm up to 7.5, sized
    # for 24M parameters) learn this stream only after many more steps.
    "awd-lstm-cpu": {"num_layers": 2},
}


@pytest.mark.parametrize("name", CPU_TWINS)
def test_cpu_twin_trains_with_its_recipe(name):
    vocab, batch, bptt = SMALL["vocab_size"], 4, 10
    overrides = {"hidden_size": SMALL["hidden_size"], "embedding_size": SMALL["embedding_size"],
                 **TWIN_OVERRIDES[name]}
    preset = get_preset(name).replace(
        batch_size=batch, bptt=bptt, epochs=4, seed=0,
        # JAX compiles one train step per distinct BPTT length.
        variable_bptt=get_preset(name).variable_bptt and BACKEND != "jax",
        **overrides,
    )
    model = preset.compile(preset.build(vocab))
    stream = np.arange(batch * bptt * 8 + batch) % vocab  # token t + 1 follows t
    train, valid = preset.sequences(stream, stream[: batch * bptt * 2 + batch])
    history = model.fit(
        train, validation_data=valid, epochs=preset.epochs,
        callbacks=preset.callbacks(train), verbose=0,
    )
    losses, val_losses = history.history["loss"], history.history["val_loss"]
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(val_losses))
    # The training loss carries dropout and AR/TAR; the validation loss is
    # the plain cross-entropy.
    assert losses[-1] < losses[0], losses
    assert val_losses[-1] < 0.85 * val_losses[0], val_losses
    assert history.history["val_perplexity"][-1] == pytest.approx(
        math.exp(val_losses[-1]), rel=1e-4)


def test_preset_replace_and_builder_overrides():
    preset = get_preset("awd-lstm-cpu")
    changed = preset.replace(bptt=10, hidden_size=16, weight_dropout=0.1)
    assert changed.bptt == 10 and changed.model_arguments["hidden_size"] == 16
    assert preset.model_arguments["hidden_size"] == 400  # presets are immutable
    with pytest.raises(TypeError):
        preset.model_arguments["hidden_size"] = 3
    arguments = resolve_arguments(**preset.arguments(embedding_size=8, num_layers=2))
    assert arguments["hidden_sizes"] == [400, 8] and arguments["batch_size"] == 40
    # a stateless override drops the recipe's fixed batch size ...
    assert resolve_arguments(**preset.arguments(stateful=False))["batch_size"] is None
    assert preset.arguments(stateful=False, batch_size=4)["batch_size"] == 4
    # ... and a hidden_size list the preset's layer count
    assert resolve_arguments(**preset.arguments(hidden_size=[8, 200]))["num_layers"] == 2
    with pytest.raises(ValueError, match="num_layers=3"):
        preset.build(50, hidden_size=[8, 200], num_layers=3)
    assert resolve_arguments() == resolve_arguments(**DEFAULT_ARGUMENTS)
    assert isinstance(get_preset("awd-lstm"), Preset)


# ----------------------------------------------------------- initialization

def test_paper_initialization_is_exact_per_layer():
    model = language_model(**STATS, tie_weights=True, seed=3)
    embedding = model.get_layer("embedding")
    assert_uniform(to_numpy(embedding.embeddings), 0.1, "embeddings")
    np.testing.assert_array_equal(to_numpy(embedding.output_bias), 0.0)
    for layer, units in zip(recurrent_layers(model), STATS["hidden_size"]):
        assert isinstance(layer, WeightDropLSTM)
        for name, values in cell_weights(layer).items():
            assert_uniform(values, 1 / math.sqrt(units), f"{layer.name}.{name}")
    untied = language_model(**STATS, seed=3)
    decoder = untied.get_layer("decoder")
    assert_uniform(to_numpy(decoder.kernel), 0.1, "decoder kernel")
    np.testing.assert_array_equal(to_numpy(decoder.bias), 0.0)


def test_paper_initialization_of_noisin_and_gru_layers():
    noisin = language_model(**STATS, noise="bernoulli", noise_level=0.5, seed=1)
    for layer, units in zip(recurrent_layers(noisin), STATS["hidden_size"]):
        assert isinstance(layer, NoisinLSTM)
        weights = cell_weights(layer)
        np.testing.assert_array_equal(weights.pop("bias"), 0.0)  # Noisin §5
        for name, values in weights.items():
            assert_uniform(values, 1 / math.sqrt(units), f"{layer.name}.{name}")
    gru = language_model(**SMALL, cell="gru", seed=1)
    for layer in recurrent_layers(gru):
        assert isinstance(layer, WeightDropGRU)
        for name, values in cell_weights(layer).items():  # bias: (2, 3H), input and recurrent
            assert_uniform(values, 1 / math.sqrt(SMALL["hidden_size"]), f"{layer.name}.{name}")
    noisin_gru = language_model(**SMALL, cell="gru", noise="gaussian", noise_level=0.3)
    assert all(isinstance(layer, NoisinGRU) for layer in recurrent_layers(noisin_gru))


def test_keras_initialization_differs():
    keras_init = language_model(**SMALL, initialization="keras", seed=0)
    units = SMALL["hidden_size"]
    lstm = recurrent_layers(keras_init)[0]
    bias = cell_weights(lstm)["bias"]
    np.testing.assert_array_equal(bias[units:2 * units], 1.0)  # unit forget bias
    np.testing.assert_array_equal(np.delete(bias, np.s_[units:2 * units]), 0.0)
    assert np.abs(to_numpy(keras_init.get_layer("embedding").embeddings)).max() <= 0.05
    recurrent = cell_weights(lstm)["recurrent_kernel"]
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(units), atol=1e-4)  # orthogonal


def test_float_initialization_draws_every_weight_from_one_interval():
    for tied, scale in ((True, 0.05), (False, 0.04)):
        model = language_model(**STATS, tie_weights=tied, initialization=scale, seed=0)
        for weight in model.weights:
            assert_uniform(to_numpy(weight), scale, weight.path)


def test_seed_makes_the_model_reproducible_and_weights_distinct():
    first = language_model(**SMALL, seed=7)
    again = language_model(**SMALL, seed=7)
    for a, b in zip(first.weights, again.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    layers = recurrent_layers(first)
    assert not np.array_equal(cell_weights(layers[0])["recurrent_kernel"],
                              cell_weights(layers[1])["recurrent_kernel"])


# ------------------------------------------------------- structure, saving


def test_tied_weights_share_the_embedding():
    three = language_model(12, hidden_size=48, embedding_size=32, num_layers=3, tie_weights=True)
    assert [layer.units for layer in recurrent_layers(three)] == [48, 48, 32]  # AWD §4.5
    assert three.count_params() == expected_parameters(12, 32, [48, 48, 32], tied=True)
    model = language_model(**SMALL, tie_weights=True, seed=0)
    assert not any(isinstance(layer, keras.layers.Dense) for layer in model.layers)
    embedding = model.get_layer("embedding")
    embedding.output_bias.assign(np.linspace(-1, 1, 12).astype("float32"))
    h = recurrent_layers(model)[-1].output
    hidden, logits = keras.Model(model.input, [h, model.output])(np.array([[1, 5, 7, 2]]))
    expected = to_numpy(hidden) @ to_numpy(embedding.embeddings).T + to_numpy(embedding.output_bias)
    np.testing.assert_allclose(to_numpy(logits), expected, rtol=1e-5, atol=1e-5)


def test_dropout_types_and_regularizers_in_place():
    locked = language_model(**SMALL, input_dropout=0.1, hidden_dropout=0.2,
                            output_dropout=0.3, alpha=2.0, beta=1.0)
    names = [type(layer).__name__ for layer in locked.layers]
    assert names.count("LockedDropout") == 3 and "ARTARRegularizer" in names
    standard = language_model(**SMALL, input_dropout=0.1, output_dropout=0.3,
                              dropout_type="standard")
    kinds = [type(layer) for layer in standard.layers]
    assert kinds.count(keras.layers.Dropout) == 2  # no hidden dropout at rate 0
    assert all(layer.weight_dropout == 0.0 for layer in recurrent_layers(standard))


@pytest.mark.parametrize(
    "arguments",
    [
        {"preset": "awd-lstm-cpu", "batch_size": 2, "num_layers": 2},
        {"preset": "zaremba-small", "batch_size": 2},
        {"cell": "gru", "noise": "bernoulli", "noise_level": 0.6, "tie_weights": True,
         "input_dropout": 0.2},
    ],
    ids=["awd", "zaremba", "noisin-gru"],
)
def test_keras_file_round_trip_gives_identical_logits(arguments, tmp_path):
    arguments = {**SMALL, "seed": 0, **arguments}
    preset = arguments.pop("preset", None)
    model = get_preset(preset).build(**arguments) if preset else language_model(**arguments)
    tokens = np.random.default_rng(0).integers(0, 12, size=(2, 7)).astype("int32")
    path = str(tmp_path / "lm.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    reset_rnn_states(model)
    reset_rnn_states(restored)
    np.testing.assert_array_equal(to_numpy(restored(tokens)), to_numpy(model(tokens)))
    assert [type(layer) for layer in restored.layers] == [type(layer) for layer in model.layers]


def test_compiled_model_round_trips_with_its_recipe(tmp_path):
    preset = get_preset("noisin-cpu").replace(batch_size=2, hidden_size=32, embedding_size=32)
    model = preset.compile(preset.build(12))
    model.optimizer.build(model.trainable_variables)
    path = str(tmp_path / "noisin.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.optimizer, ASGD)
    assert isinstance(restored.loss, TokenCrossEntropy)


# ----------------------------------------------------------------- errors


def test_unknown_preset_lists_the_valid_names():
    with pytest.raises(ValueError, match="Valid presets: zaremba-small.*awd-lstm-cpu"):
        get_preset("awd")


def test_the_builder_takes_no_preset_and_says_where_presets_build():
    with pytest.raises(ValueError, match=r"preset.*get_preset\(name\)\.build"):
        language_model(100, preset="awd-lstm")


def test_unknown_override_lists_the_valid_names():
    with pytest.raises(ValueError, match="hidden_units.*Valid arguments: embedding_size"):
        language_model(100, hidden_units=10)
    with pytest.raises(ValueError, match="dropouti.*Model arguments"):
        get_preset("awd-lstm").replace(dropouti=0.3)


def test_tied_size_mismatch_names_both_sizes():
    with pytest.raises(ValueError, match="last hidden size 300.*embedding_size=400"):
        get_preset("awd-lstm").build(100, hidden_size=[1150, 1150, 300])


@pytest.mark.parametrize(
    "arguments, error, match",
    [
        ({"vocab_size": 1}, ValueError, "vocab_size"),
        ({"input_dropout": 1.0}, ValueError, r"input_dropout.*\[0, 1\)"),
        ({"weight_dropout": -0.1}, ValueError, "weight_dropout"),
        ({"hidden_size": 0}, ValueError, "hidden_size"),
        ({"embedding_size": 0}, ValueError, "embedding_size"),
        ({"num_layers": 0}, ValueError, "num_layers"),
        ({"hidden_size": [8, 0]}, ValueError, r"hidden_size\[1\]"),
        ({"hidden_size": [8, 8], "num_layers": 3}, ValueError, "num_layers=3"),
        ({"cell": "rnn"}, ValueError, "'lstm', 'gru'"),
        ({"dropout_type": "variational"}, ValueError, "'locked', 'standard'"),
        ({"stateful": True}, ValueError, "batch_size"),
        ({"initialization": "glorot"}, ValueError, "'paper', 'keras'"),
        ({"initialization": -0.1}, ValueError, "positive float"),
        ({"noise": "cauchy"}, ValueError, "bernoulli"),
        ({"noise": "bernoulli", "noise_level": 1.5}, ValueError, "noise_level"),
        ({"alpha": -1.0}, ValueError, "alpha"),
        ({"tie_weights": 1}, TypeError, "tie_weights"),
        ({"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_arguments_raise_clear_errors(arguments, error, match):
    arguments = {"vocab_size": 50, **arguments}
    with pytest.raises(error, match=match):
        language_model(**arguments)



@pytest.mark.parametrize("weight_dropout", [0.0, 0.5])
def test_a_stateful_model_at_batch_1_evaluates_as_one_long_call(weight_dropout):
    """The papers' test evaluation runs at batch 1: a stateful model built
    for it evaluates two halves, carrying its state, as one call on the
    whole (and predicts them so)."""
    arguments = dict(embedding_size=4, hidden_size=4, weight_dropout=weight_dropout, seed=1)
    carried = language_model(12, stateful=True, batch_size=1, **arguments)
    whole = language_model(12, **arguments)
    whole.set_weights(carried.get_weights())
    for model in (carried, whole):
        model.compile("sgd", TokenCrossEntropy())
    ids = np.random.default_rng(3).integers(0, 12, size=(1, 9))
    x, y = ids[:, :-1], ids[:, 1:]
    halves = [carried.evaluate(x[:, :4], y[:, :4], verbose=0),
              carried.evaluate(x[:, 4:], y[:, 4:], verbose=0)]
    assert np.mean(halves) == pytest.approx(whole.evaluate(x, y, verbose=0), rel=1e-5)
    reset_rnn_states(carried)
    halves = [carried.predict(x[:, :4], verbose=0), carried.predict(x[:, 4:], verbose=0)]
    np.testing.assert_allclose(np.concatenate(halves, axis=1), whole.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
