"""keras_rnnreg.tuner: the search space around a preset and real KerasTuner searches."""

import importlib
import math
import sys

import keras
import numpy as np
import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from keras_rnnreg.callbacks import BPTTCallback  # noqa: E402
from keras_rnnreg.layers import NoisinLSTM, WeightDropLSTM  # noqa: E402
from keras_rnnreg.models import get_preset, resolve_arguments  # noqa: E402
from keras_rnnreg.noise import DISTRIBUTIONS, noise_moments  # noqa: E402
from keras_rnnreg.optimizers import GradientNoise  # noqa: E402
from keras_rnnreg.tuner import LanguageModelHyperModel  # noqa: E402

# KerasTuner reloads a checkpoint, optimizer variables included, into a freshly
# built model whose optimizer has no slots yet; Keras skips those with a warning.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Skipping variable loading for optimizer:UserWarning"
)

VOCAB = 30
# A two-layer model (the first layer's size is tuned, the tied second one is
# the embedding size) on a few batches: each trial costs a JIT compilation of
# its train and test steps on JAX (~4 s), which is what bounds these tests. A
# uniform initialization because on JAX the papers' per-layer scheme takes
# ~2 s to initialize even this model.
TINY = dict(
    batch_size=2, bptt=6, variable_bptt=False, embedding_size=8, hidden_size=8,
    num_layers=2, initialization=0.1,
)
RATES = ("embedding_dropout", "input_dropout", "hidden_dropout", "output_dropout")


def corpus():
    """A learnable stream (token t+1 follows token t), cut into train/valid."""
    stream = np.arange(60) % VOCAB
    return stream[:26], stream[26:40]


def tiny_hypermodel(**overrides):
    return LanguageModelHyperModel(VOCAB, "awd-lstm-cpu", **{**TINY, **overrides})


def space(hypermodel):
    """The hypermodel's space in a fresh `HyperParameters`, and its entries by name."""
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    return hp, {entry.name: entry for entry in hp.space}


def contains(entry, value):
    return entry.min_value <= value <= entry.max_value


# ------------------------------------------------------------------ the space
@pytest.mark.parametrize(
    "preset", ["awd-lstm-cpu", "zaremba-cpu", "noisin-cpu", "artar-cpu", "awd-lstm"]
)
def test_space_is_centred_on_the_preset(preset):
    hypermodel = LanguageModelHyperModel(10000, preset)
    arguments = resolve_arguments(**get_preset(preset).arguments())
    hp, entries = space(hypermodel)
    lr = entries["learning_rate"]
    assert lr.default == get_preset(preset).learning_rate and contains(lr, lr.default)
    assert entries["hidden_size"].default == arguments["hidden_size"]
    for name in (*RATES, "alpha", "beta"):
        assert entries[name].default == arguments[name], name
        assert contains(entries[name], arguments[name]), name
    noise = arguments["noise"]
    assert entries["noise"].default == (noise or "off")
    if noise is None:
        assert contains(entries["weight_dropout"], arguments["weight_dropout"])
    else:
        level = entries[f"noise_level_{noise}"]
        assert level.default == arguments["noise_level"] and contains(level, level.default)
    # All defaults: the trial is the preset itself.
    trial = hypermodel.trial_preset(hp)
    assert trial.learning_rate == get_preset(preset).learning_rate
    assert resolve_arguments(**trial.arguments()) == arguments


def test_rate_windows_and_documented_ranges():
    hp, entries = space(LanguageModelHyperModel(10000, "awd-lstm-cpu"))
    # input_dropout 0.4 ± 0.2; embedding_dropout 0.1 clipped at 0.
    assert (entries["input_dropout"].min_value, entries["input_dropout"].max_value) == (0.2, 0.6)
    assert entries["embedding_dropout"].min_value == 0.0
    assert entries["learning_rate"].min_value == pytest.approx(10.0)
    assert entries["learning_rate"].max_value == pytest.approx(90.0)
    assert (entries["alpha"].max_value, entries["beta"].max_value) == (4.0, 2.0)
    # Gradient noise: lr·√η spans [1e-4, 1e-2] with the Keras learning rate.
    eta = entries["gradient_noise_eta"]
    assert 30 * math.sqrt(eta.min_value) == pytest.approx(1e-4, rel=1e-2)
    assert 30 * math.sqrt(eta.max_value) == pytest.approx(1e-2, rel=1e-2)
    assert entries["gradient_noise"].default is False
    assert entries["gradient_noise_gamma"].value == 0.55
    # A 0.85 rate: the window stops at max_rate but still holds the value.
    _, entries = space(LanguageModelHyperModel(10000, "awd-lstm-cpu", output_dropout=0.85))
    assert entries["output_dropout"].max_value == 0.9
    # With zaremba-cpu's loss summed over time, η follows the Keras rate 35.
    _, entries = space(LanguageModelHyperModel(10000, "zaremba-cpu"))
    assert 35 * math.sqrt(entries["gradient_noise_eta"].max_value) == pytest.approx(
        1e-2, rel=1e-2
    )


def test_every_noise_level_is_centred_on_the_preset_variance():
    _, entries = space(LanguageModelHyperModel(10000, "noisin-cpu"))
    _, variance = noise_moments("bernoulli", 0.41)
    assert set(entries["noise"].values) == {"off", *DISTRIBUTIONS}
    for distribution in DISTRIBUTIONS:
        level = entries[f"noise_level_{distribution}"]
        assert contains(level, level.default)
        assert noise_moments(distribution, level.default)[1] == pytest.approx(
            variance, rel=1e-2
        ), distribution
        # Each level is active only while its distribution is chosen.
        (condition,) = level.conditions
        assert condition.name == "noise" and condition.values == [distribution]


def test_objective_is_validation_perplexity():
    objective = LanguageModelHyperModel.objective
    assert (objective.name, objective.direction) == ("val_perplexity", "min")
    model = tiny_hypermodel().build(keras_tuner.HyperParameters())
    metrics = model.get_compile_config()["metrics"]
    assert [metric["config"]["name"] for metric in metrics] == ["perplexity"]


def test_build_follows_the_trial_values():
    hypermodel = tiny_hypermodel()
    hp = keras_tuner.HyperParameters()
    hp.Fixed("hidden_size", 12)
    hp.Fixed("noise", "gaussian")
    hp.Fixed("noise_level_gaussian", 0.3)  # unconditional: still honoured
    hp.Fixed("weight_dropout", 0.25)
    hp.Fixed("gradient_noise", True)
    hp.Fixed("gradient_noise_eta", 1e-9)
    model = hypermodel.build(hp)
    first, last = (model.get_layer(f"lstm_{i}") for i in (1, 2))
    assert isinstance(first, NoisinLSTM) and first.noise_level == 0.3
    # The tied last layer keeps the embedding size; the others are tuned.
    assert (first.units, last.units) == (12, 8)
    assert isinstance(model.optimizer, GradientNoise)
    assert (model.optimizer.eta, model.optimizer.gamma) == (1e-9, 0.55)
    # Weight drop composes with Noisin: declared and used while Noisin is on.
    assert first.weight_dropout == 0.25


def test_per_layer_hidden_sizes_scale_with_the_tuned_size():
    hypermodel = tiny_hypermodel(hidden_size=[10, 20, 8], num_layers=3)
    hp, entries = space(hypermodel)
    assert entries["hidden_size"].default == 10
    hp.values["hidden_size"] = 15
    assert hypermodel.trial_preset(hp).model_arguments["hidden_size"] == [15, 30, 8]


def test_num_experts_and_latent_dropout_are_searched():
    hypermodel = tiny_hypermodel()
    hp, entries = space(hypermodel)
    experts = entries["num_experts"]
    assert (experts.min_value, experts.max_value, experts.default) == (1, 10, 1)
    latent = entries["latent_dropout"]  # only while a mixture is drawn
    assert latent.conditions[0].values == list(range(2, 11))
    hp.values["num_experts"], hp.values["latent_dropout"] = 3, 0.15
    trial = hypermodel.trial_preset(hp)
    assert (trial.model_arguments["num_experts"], trial.model_arguments["latent_dropout"]) == (
        3, 0.15)
    mos = hypermodel.build(hp).get_layer("mixture_of_softmaxes")
    assert (mos.num_experts, mos.latent_dropout) == (3, 0.15)

    # Around a mixture preset: [1, 2K], and a single softmax ties the last
    # layer to the embedding again (the mixture's 620 would not fit it).
    mixture = LanguageModelHyperModel(
        VOCAB, "awd-lstm-mos-cpu", **{**TINY, "hidden_size": [10, 10, 6]})
    hp, entries = space(mixture)
    assert (entries["num_experts"].max_value, entries["num_experts"].default) == (10, 5)
    assert entries["latent_dropout"].default == 0.29
    assert mixture.trial_preset(hp).model_arguments["hidden_size"] == [10, 10, 6]
    hp.values["num_experts"] = 1
    single = mixture.trial_preset(hp).model_arguments
    assert (single["num_experts"], single["hidden_size"]) == (1, [10, 10, 8])
    fixed = keras_tuner.HyperParameters()
    fixed.Fixed("num_experts", 1)
    assert "latent_dropout" not in space_with(mixture, fixed)


def space_with(hypermodel, hp):
    hypermodel.declare_hyperparameters(hp)
    return {entry.name for entry in hp.space}


def test_the_oracle_honours_fixed_entries(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Fixed("noise", "gaussian")
    hp.Fixed("noise_level_gaussian", 0.3)
    hp.Float("learning_rate", 1.0, 2.0)
    tuner = keras_tuner.RandomSearch(
        tiny_hypermodel(), objective=LanguageModelHyperModel.objective, max_trials=5,
        hyperparameters=hp, directory=tmp_path, seed=0,
    )
    for index in range(5):
        values = tuner.oracle.create_trial(f"tuner{index}").hyperparameters.values
        assert values["noise"] == "gaussian" and values["noise_level_gaussian"] == 0.3
        assert 1.0 <= values["learning_rate"] <= 2.0
        assert 0.0 <= values["weight_dropout"] <= 1.0


def test_fit_needs_validation_data():
    hypermodel = tiny_hypermodel()
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    train, _ = hypermodel.sequences(*corpus())
    with pytest.raises(ValueError, match="validation_data"):
        hypermodel.fit(hp, model, train, epochs=1)


def test_missing_keras_tuner_names_the_extra(monkeypatch):
    for name in [name for name in sys.modules if name.startswith("keras_rnnreg.tuner")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "keras_tuner", None)  # import fails
    with pytest.raises(ImportError, match=r'pip install "keras-rnnreg\[tuner\]"'):
        importlib.import_module("keras_rnnreg.tuner")


# ----------------------------------------------------------------- searches
def test_random_search_honours_fixed_values_and_its_best_model_reloads(tmp_path):
    hypermodel = tiny_hypermodel()
    hp = keras_tuner.HyperParameters()
    hp.Fixed("noise", "off")
    hp.Fixed("learning_rate", 12.0)
    hp.Fixed("gradient_noise", True)
    hp.Fixed("gradient_noise_eta", 1e-9)
    hp.Float("alpha", 0.5, 1.0)  # a narrower range of the user's own
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective=hypermodel.objective, max_trials=2, hyperparameters=hp,
        directory=tmp_path, seed=1,
    )
    train, valid = hypermodel.sequences(*corpus())
    tuner.search(train, validation_data=valid, epochs=1, verbose=0)

    trials = list(tuner.oracle.trials.values())
    assert [trial.status for trial in trials] == ["COMPLETED"] * 2
    for trial in trials:
        values = trial.hyperparameters.values
        assert (values["noise"], values["learning_rate"]) == ("off", 12.0)
        assert values["gradient_noise_eta"] == 1e-9 and 0.5 <= values["alpha"] <= 1.0
        assert trial.metrics.exists("val_perplexity")
    assert len({trial.hyperparameters.values["input_dropout"] for trial in trials}) == 2

    (model,) = tuner.get_best_models(1)
    (best,) = tuner.oracle.get_best_trials(1)
    assert isinstance(model.optimizer, GradientNoise)
    assert isinstance(model.get_layer("lstm_1"), WeightDropLSTM)
    assert model.get_layer("lstm_1").units == best.hyperparameters.values["hidden_size"]
    path = tmp_path / "best.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert [type(layer) for layer in restored.layers] == [type(layer) for layer in model.layers]
    for saved, loaded in zip(model.weights, restored.weights):
        assert saved.path == loaded.path
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(saved), keras.ops.convert_to_numpy(loaded)
        )
    assert isinstance(restored.optimizer, GradientNoise)
    assert restored.optimizer.eta == 1e-9
    # The checkpoint is the scored model: evaluating it gives the trial's score.
    # (BPTTCallback resets the states first, as it did in the trial's validation.)
    perplexity = model.evaluate(
        valid, verbose=0, return_dict=True, callbacks=[BPTTCallback(train)]
    )["perplexity"]
    assert perplexity == pytest.approx(best.score, rel=1e-4)


def test_bayesian_search_on_token_ids_keeps_undeclared_entries_at_the_preset(tmp_path):
    hypermodel = tiny_hypermodel()
    hp = keras_tuner.HyperParameters()
    hp.Fixed("noise", "off")
    hp.Float("learning_rate", 10.0, 40.0, sampling="log")
    tuner = keras_tuner.BayesianOptimization(
        hypermodel, objective=hypermodel.objective, max_trials=2, num_initial_points=1,
        hyperparameters=hp, tune_new_entries=False, directory=tmp_path, seed=0,
    )
    train_ids, valid_ids = corpus()  # token streams: each trial cuts them itself
    tuner.search(train_ids, validation_data=valid_ids, epochs=1, verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert [trial.status for trial in trials] == ["COMPLETED"] * 2
    # The oracle tunes only the declared entries; the second trial is the
    # Gaussian process's proposal.
    assert set(tuner.oracle.get_space().values) == {"noise", "learning_rate"}
    preset = resolve_arguments(**get_preset("awd-lstm-cpu").replace(**TINY).arguments())
    for trial in trials:
        values = trial.hyperparameters.values
        assert 10.0 <= values["learning_rate"] <= 40.0
        for name in (*RATES, "weight_dropout", "alpha", "beta"):
            assert values[name] == preset[name], name
        assert values["gradient_noise"] is False
    (model,) = tuner.get_best_models(1)
    assert model.get_layer("input_dropout").rate == preset["input_dropout"]
    assert model.get_layer("lstm_1").weight_dropout == preset["weight_dropout"]
    assert not isinstance(model.optimizer, GradientNoise)


def test_hyperband_continues_a_trial_with_its_epochs(tmp_path):
    hypermodel = tiny_hypermodel()
    hp = keras_tuner.HyperParameters()
    hp.Fixed("noise", "off")
    hp.Fixed("gradient_noise", False)
    # No random masks: on JAX they nearly double each trial's compilation time.
    for name in (*RATES, "weight_dropout"):
        hp.Fixed(name, 0.0)
    tuner = keras_tuner.Hyperband(
        hypermodel, objective=hypermodel.objective, max_epochs=2, factor=2,
        hyperparameters=hp, directory=tmp_path, seed=0,
    )
    # The first bracket: two 1-epoch trials, then the better one for epoch 2.
    tuner.oracle.max_trials = 3
    train, valid = hypermodel.sequences(*corpus())
    tuner.search(train, validation_data=valid, verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert [trial.status for trial in trials] == ["COMPLETED"] * 3
    continued = trials[-1].hyperparameters.values
    assert (continued["tuner/initial_epoch"], continued["tuner/epochs"]) == (1, 2)
    parent = tuner.oracle.get_trial(continued["tuner/trial_id"]).hyperparameters.values
    assert parent["tuner/epochs"] == 1
    assert all(continued[name] == parent[name] for name in ("learning_rate", "hidden_size"))
    # Trained from epoch 1 to 2 only: one epoch of metrics.
    assert len(trials[-1].metrics.get_history("val_perplexity")) == 1
    assert tuner.get_best_models(1)[0] is not None


def test_search_with_noisin(tmp_path):
    hypermodel = tiny_hypermodel()
    hp = keras_tuner.HyperParameters()
    hp.Choice("noise", ["gaussian", "bernoulli"])
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective=hypermodel.objective, max_trials=1, hyperparameters=hp,
        directory=tmp_path, seed=0, max_consecutive_failed_trials=1,
    )
    train, valid = hypermodel.sequences(*corpus())
    tuner.search(train, validation_data=valid, epochs=1, verbose=0)
    (trial,) = tuner.oracle.trials.values()
    values = trial.hyperparameters.values
    assert trial.status == "COMPLETED" and np.isfinite(trial.score)
    (model,) = tuner.get_best_models(1)
    layer = model.get_layer("lstm_1")
    assert isinstance(layer, NoisinLSTM) and layer.noise == values["noise"]
    assert layer.noise_level == values[f"noise_level_{values['noise']}"]
