"""Dynamic evaluation (Krause et al. 2018): `evaluate_dynamic` against a NumPy
loop of the same update on a bigram model whose gradient NumPy computes, the
optimizer's step against NumPy, the model left as it was, adaptation to a
repeated stream, the synthetic corpus's oracle as a floor, argument errors,
the old `keras_rnnreg.cache` path, and `keras-rnnreg evaluate --dynamic`."""

import functools
import math
import re

import keras
import numpy as np
import pytest

import keras_rnnreg.datasets
from conftest import to_numpy
from keras_rnnreg import cli, evaluation
from keras_rnnreg.datasets import make_synthetic_corpus
from keras_rnnreg.evaluation import (
    DYNAMIC_EVALUATION_DEFAULTS,
    DynamicEvaluation,
    DynamicEvaluationOptimizer,
    evaluate_dynamic,
    gradient_rms,
)
from keras_rnnreg.models import language_model

VOCAB, DIM = 12, 4


# ------------------------------------------------------------ NumPy reference
def bigram_weights(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.5, (VOCAB, DIM)), rng.normal(0, 0.5, (DIM, VOCAB)),
            rng.normal(0, 0.1, VOCAB)]


def bigram_model(batch_size, weights):
    """logits_t = E[x_t] W + b: no state, a gradient NumPy can write down."""
    tokens = keras.Input(batch_shape=(batch_size, None), dtype="int32")
    logits = keras.layers.Dense(VOCAB)(keras.layers.Embedding(VOCAB, DIM)(tokens))
    model = keras.Model(tokens, logits)
    model.set_weights([w.astype("float32") for w in weights])
    return model


def bigram_nll_and_gradients(weights, inputs, targets):
    """Σ NLL over the segment and the gradients of its mean NLL, float64."""
    embeddings, kernel, bias = weights
    h = embeddings[inputs]
    logits = h @ kernel + bias
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    onehot = np.eye(VOCAB)[targets]
    nll = -np.log((p * onehot).sum(-1)).sum()
    d_logits = (p - onehot) / targets.size
    d_embeddings = np.zeros_like(embeddings)
    np.add.at(d_embeddings, inputs, d_logits @ kernel.T)
    return nll, [d_embeddings, np.einsum("bld,blv->dv", h, d_logits), d_logits.sum((0, 1))]


def segments(tokens, batch_size, length):
    """The stream in `batch_size` contiguous rows, read `length` steps at a time."""
    n = len(tokens) // batch_size
    rows = np.asarray(tokens[: n * batch_size]).reshape(batch_size, n)
    for start in range(0, n - 1, length):
        stop = min(start + length, n - 1)
        yield rows[:, start:stop], rows[:, start + 1 : stop + 1]


def reference_dynamic(weights, tokens, lr, decay, length, batch_size, training=None,
                      epsilon=2e-5, statistics_batch_size=100):
    """Krause et al.'s loop (dynamiceval.py's gradstat and evaluate) in NumPy:
    score a segment, then θ += λ r (θ_g − θ) − η g / (RMS + ε)."""
    trained = [w.astype("float64") for w in weights]
    scales, rates = [np.ones_like(w) for w in trained], [np.ones_like(w) for w in trained]
    if training is not None:
        squares, count = [np.zeros_like(w) for w in trained], 0
        for inputs, targets in segments(training, statistics_batch_size, length):
            _, grads = bigram_nll_and_gradients(trained, inputs, targets)
            squares = [s + g * g for s, g in zip(squares, grads)]
            count += 1
        rms = [np.sqrt(s / count) for s in squares]
        mean = np.mean([r.mean() for r in rms])  # over tensors, as gradstat
        rates = [np.minimum(r / mean, 1 / decay) for r in rms]
        scales = [1 / (r + epsilon) for r in rms]
    static = dynamic = 0.0
    count = 0
    theta = [w.copy() for w in trained]
    for inputs, targets in segments(tokens, batch_size, length):
        static += bigram_nll_and_gradients(trained, inputs, targets)[0]
        nll, grads = bigram_nll_and_gradients(theta, inputs, targets)
        dynamic += nll
        count += targets.size
        theta = [t + decay * r * (t0 - t) - lr * s * g
                 for t, t0, r, s, g in zip(theta, trained, rates, scales, grads)]
    return math.exp(dynamic / count), math.exp(static / count), count


@pytest.fixture(scope="module")
def streams():
    rng = np.random.default_rng(3)
    # Words follow a few favourite successors: a structure to adapt to.
    successors = rng.integers(0, VOCAB, (VOCAB, 2))
    def walk(n, seed):
        r = np.random.default_rng(seed)
        out = [0]
        for _ in range(n - 1):
            out.append(successors[out[-1], r.integers(2)] if r.random() < 0.8
                       else r.integers(VOCAB))
        return np.array(out, "int32")
    return walk(123, 1), walk(400, 2)


@pytest.mark.parametrize(
    "settings",
    [
        # RMS statistics; λ = 0.4 clips the decay rate of the busiest weights
        # at 1/λ; 2 rows of segments of 4, the last one shorter.
        dict(learning_rate=0.02, decay=0.4, segment_length=4, batch_size=2,
             statistics_batch_size=3, epsilon=1e-3, with_training=True),
        # Plain SGD with decay, one stream.
        dict(learning_rate=1.5, decay=0.05, segment_length=5, batch_size=1,
             with_training=False),
    ],
    ids=["rms", "sgd"],
)
def test_matches_the_numpy_loop_of_the_same_update(streams, settings):
    tokens, training = streams
    settings = dict(settings)
    with_training = settings.pop("with_training")
    weights = bigram_weights()
    model = bigram_model(settings["batch_size"], weights)
    result = evaluate_dynamic(model, tokens, training_tokens=training if with_training else None,
                              **settings)
    expected, static, count = reference_dynamic(
        weights, tokens, settings["learning_rate"], settings["decay"],
        settings["segment_length"], settings["batch_size"],
        training if with_training else None,
        **{k: settings[k] for k in ("epsilon", "statistics_batch_size") if k in settings},
    )
    assert isinstance(result, DynamicEvaluation)
    assert result.num_tokens == count
    assert result.statistics_tokens == ((len(training) // 3 - 1) * 3 if with_training else 0)
    np.testing.assert_allclose(result.static_perplexity, static, rtol=1e-5)
    np.testing.assert_allclose(result.perplexity, expected, rtol=1e-4)
    # The update matters here: a wrong rule would not hide inside the tolerance.
    assert abs(math.log(expected / static)) > 0.02


def test_gradient_rms_matches_numpy(streams):
    _, training = streams
    weights = bigram_weights(1)
    rms = gradient_rms(bigram_model(1, weights), training, segment_length=6, batch_size=4)
    squares, count = [np.zeros_like(w) for w in weights], 0
    for inputs, targets in segments(training, 4, 6):
        squares = [s + g * g for s, g in zip(squares, bigram_nll_and_gradients(
            weights, inputs, targets)[1])]
        count += 1
    for got, want in zip(rms, squares):
        np.testing.assert_allclose(got, np.sqrt(want / count), rtol=1e-4, atol=1e-7)


def test_the_optimizer_step_against_numpy():
    rng = np.random.default_rng(5)
    theta0 = [rng.normal(size=(3, 4)), rng.normal(size=5)]
    variables = [keras.Variable(w.astype("float32")) for w in theta0]
    optimizer = DynamicEvaluationOptimizer(learning_rate=0.1, decay=0.3, epsilon=0.01)
    optimizer.build(variables)
    rms = [np.abs(rng.normal(size=w.shape)) * s for w, s in zip(theta0, (1.0, 8.0))]
    optimizer.set_statistics(rms)
    mean = np.mean([r.mean() for r in rms])
    rates = [np.minimum(r / mean, 1 / 0.3) for r in rms]
    assert np.any(rms[1] / mean > 1 / 0.3)  # the clip is exercised
    theta = [w.copy() for w in theta0]
    for _ in range(3):
        grads = [rng.normal(size=w.shape) for w in theta0]
        optimizer.apply([g.astype("float32") for g in grads], variables)
        theta = [t + 0.3 * r * (t0 - t) - 0.1 * g / (s + 0.01)
                 for t, t0, r, s, g in zip(theta, theta0, rates, rms, grads)]
        for variable, expected in zip(variables, theta):
            np.testing.assert_allclose(to_numpy(variable), expected, rtol=1e-5, atol=1e-6)
    config = optimizer.get_config()
    assert (config["decay"], config["epsilon"]) == (0.3, 0.01)
    assert DynamicEvaluationOptimizer.from_config(config).decay == 0.3


# ------------------------------------------------------------ a real LSTM model
@pytest.fixture(scope="module")
def lstm_model():
    model = language_model(20, embedding_size=8, hidden_size=8, num_layers=2, stateful=True,
                           batch_size=2, seed=1)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def _states(model):
    return [to_numpy(s) for layer in model.layers if getattr(layer, "states", None)
            for s in keras.tree.flatten(layer.states)]


def test_the_models_weights_and_states_are_unchanged(lstm_model):
    rng = np.random.default_rng(0)
    lstm_model.predict_on_batch(rng.integers(0, 20, (2, 7)))  # non-zero states
    weights, states = [to_numpy(w) for w in lstm_model.weights], _states(lstm_model)
    assert len(states) == 4 and all(np.abs(s).sum() > 0 for s in states)
    iterations = int(to_numpy(lstm_model.optimizer.iterations))
    # 45 steps a row: 9 segments of 5, one compiled shape.
    result = evaluate_dynamic(lstm_model, rng.integers(0, 20, 92), learning_rate=0.05,
                              decay=0.01, training_tokens=rng.integers(0, 20, 404),
                              statistics_batch_size=4)
    assert abs(result.perplexity - result.static_perplexity) > 0.01  # it did adapt
    for before, after in zip(weights, [to_numpy(w) for w in lstm_model.weights]):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(states, _states(lstm_model)):
        np.testing.assert_array_equal(before, after)
    assert int(to_numpy(lstm_model.optimizer.iterations)) == iterations


def test_adapts_to_a_stream_it_never_saw_when_it_repeats():
    """A random stream twice: dynamic evaluation has learned the first copy
    by the time it reads the second, which it then predicts far better than
    the fixed model, and than the first copy. The second copy's NLL is the
    doubled stream's total minus the single stream's (the same segments up
    to there: 60 predicted tokens, 12 segments of 5)."""
    # A wide initialization: a fresh model's hidden states are then large
    # enough for one pass of SGD to tie each word to its successors.
    model = language_model(16, embedding_size=16, hidden_size=16, num_layers=1,
                           stateful=True, batch_size=1, seed=2, initialization=1.0)
    pattern = np.random.default_rng(4).integers(0, 16, 61)
    settings = dict(learning_rate=1.0, decay=0.0, segment_length=5)
    once = evaluate_dynamic(model, pattern, **settings)
    twice = evaluate_dynamic(model, np.concatenate([pattern, pattern[1:]]), **settings)
    assert (once.num_tokens, twice.num_tokens) == (60, 120)

    def second_copy(loss_twice, loss_once):
        return math.exp((loss_twice * twice.num_tokens - loss_once * once.num_tokens) / 60)

    dynamic = second_copy(twice.loss, once.loss)
    static = second_copy(twice.static_loss, once.static_loss)
    # Measured: second copy 10.7-12.3 against 20.7-25.4 static (the fixed
    # weights are too wide to be near uniform) and 19.6-20.9 on the first copy.
    assert dynamic < 0.6 * static, (dynamic, static)
    assert dynamic < 0.7 * once.perplexity, (dynamic, once.perplexity)
    assert dynamic < 14  # below uniform (16): successors were learned
    # The static perplexity is the model's own, as an independent pass reads it,
    plain = evaluation.evaluate_with_cache(model, pattern, window=5, theta=1.0, lambd=0.0)
    assert plain.num_tokens == 60
    np.testing.assert_allclose(once.static_perplexity, plain.perplexity, rtol=1e-5)
    # and weights that never move (η = λ = 0) give it again: the dynamic pass
    # starts from zero states too.
    still = evaluate_dynamic(model, pattern, learning_rate=0.0, decay=0.0, segment_length=5)
    np.testing.assert_allclose(still.perplexity, plain.perplexity, rtol=1e-5)


# ------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "changes, error, fragment",
    [
        (dict(learning_rate=-1.0), ValueError, "`learning_rate` must be >= 0"),
        (dict(learning_rate=math.inf), ValueError, "`learning_rate` must be >= 0 and finite"),
        (dict(learning_rate="fast"), TypeError, "`learning_rate` must be a float"),
        (dict(decay=1.5), ValueError, "`decay` must be a probability in [0, 1]"),
        (dict(decay=None), TypeError, "`decay` must be a float"),
        (dict(epsilon=0.0), ValueError, "`epsilon` must be > 0 and finite"),
        (dict(segment_length=0), ValueError, "`segment_length` must be an int >= 1"),
        (dict(segment_length=2.5), TypeError, "`segment_length` must be an int"),
        (dict(batch_size=0), ValueError, "`batch_size` must be an int >= 1"),
        (dict(statistics_batch_size=0), ValueError, "`statistics_batch_size` must be an int"),
        (dict(tokens=np.zeros((2, 5), "int32")), ValueError, "Argument `tokens` must be a 1D"),
        (dict(tokens=np.ones(40) * 0.5), TypeError, "Argument `tokens` must hold integer"),
        (dict(tokens=np.full(40, VOCAB)), ValueError, f"`tokens` must hold ids in [0, {VOCAB})"),
        (dict(tokens=np.zeros(3, "int32")), ValueError, "Argument `tokens` is too short for batch_size=2"),
        (dict(training_tokens=np.full(400, VOCAB + 3)), ValueError, "`training_tokens` must hold ids"),
        (dict(training_tokens=np.zeros(5, "int32")), ValueError, "`training_tokens` is too short for statistics_batch_size=100"),
        (dict(model="a model"), TypeError, "`model` must be a keras.Model"),
    ],
)
def test_bad_arguments_are_clear_errors(changes, error, fragment):
    arguments = dict(model=bigram_model(2, bigram_weights()), tokens=np.zeros(40, "int32"),
                     learning_rate=0.1, decay=0.1)
    arguments.update(changes)
    with pytest.raises(error) as info:
        evaluate_dynamic(arguments.pop("model"), arguments.pop("tokens"), **arguments)
    assert fragment in str(info.value), str(info.value)


def test_model_errors():
    stateless = language_model(10, embedding_size=4, hidden_size=4, num_layers=1)
    with pytest.raises(ValueError, match=r"stateful recurrent layers.*\['lstm_1'\]"):
        evaluate_dynamic(stateless, np.zeros(30, "int32"), learning_rate=0.1, decay=0.1,
                         batch_size=1)
    unbatched = bigram_model(None, bigram_weights())
    with pytest.raises(ValueError, match="`batch_size` is needed"):
        evaluate_dynamic(unbatched, np.zeros(30, "int32"), learning_rate=0.1, decay=0.1)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="functional"):
        evaluate_dynamic(Subclassed(), np.zeros(30, "int32"), learning_rate=0.1, decay=0.1)
    optimizer = DynamicEvaluationOptimizer()
    with pytest.raises(ValueError, match="build"):
        optimizer.set_statistics([np.ones(3)])
    optimizer.build([keras.Variable(np.zeros(3, "float32"))])
    with pytest.raises(ValueError, match=r"`rms\[0\]` must have the shape"):
        optimizer.set_statistics([np.ones(4)])
    with pytest.raises(ValueError, match="one array per variable"):
        optimizer.set_statistics([np.ones(3), np.ones(3)])
    with pytest.raises(ValueError, match="finite values >= 0"):
        optimizer.set_statistics([np.array([1.0, -1.0, 0.0])])
    with pytest.raises(ValueError, match="zero everywhere"):
        optimizer.set_statistics([np.zeros(3)])


def test_the_defaults_are_krause_et_als_ptb_settings():
    assert dict(DYNAMIC_EVALUATION_DEFAULTS["ptb"]) == {
        "learning_rate": 5e-5, "decay": 2e-3, "epsilon": 2e-5, "segment_length": 5,
        "batch_size": 1, "statistics_batch_size": 100,
    }


# ------------------------------------------------------------ the old module path
def test_keras_rnnreg_cache_still_works():
    import keras_rnnreg
    import keras_rnnreg.cache as old

    for name in ("NEURAL_CACHE_DEFAULTS", "CacheEvaluation", "CacheHistory", "NeuralCache",
                 "cache_nll", "evaluate_with_cache"):
        assert getattr(old, name) is getattr(evaluation, name) is getattr(
            keras_rnnreg.evaluation, name)
    logits = np.zeros((1, 4, 3), "float32")
    nll, _ = old.cache_nll(logits, np.ones((1, 4, 2), "float32"), np.zeros((1, 4), "int32"),
                           None, window=2, theta=1.0, lambd=0.0)
    np.testing.assert_allclose(to_numpy(nll), math.log(3), rtol=1e-6)


# ------------------------------------------------------------ the command line
SMALL = ["--preset", "awd-lstm-cpu", "--hidden-size", "16", "--embedding-size", "8",
         "--num-layers", "1", "--batch-size", "4", "--bptt", "10", "--variable-bptt", "false",
         "--quiet", "--checkpoint-every", "0"]
SHORT = dict(train_tokens=1200, valid_tokens=100, test_tokens=300, vocab_size=64)
DYNAMIC_LINE = (r"test perplexity with dynamic evaluation \(learning_rate=([\d.e-]+), "
                r"decay=([\d.e-]+), epsilon=2e-05, segment_length=(\d+), batch_size=1, "
                r"statistics_batch_size=100; RMS statistics from (\d+) training tokens\): "
                r"([\d.]+) \(without: ([\d.]+); \d+ s\)")


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """One short epoch on a short synthetic corpus (its oracle known)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(keras_rnnreg.datasets, "make_synthetic_corpus",
                  functools.partial(make_synthetic_corpus, **SHORT))
    directory = tmp_path_factory.mktemp("synthetic") / "run"
    try:
        assert cli.main(["train", *SMALL, "--epochs", "1", "--output", str(directory)]) == 0
        yield directory
    finally:
        patch.undo()


def test_cli_evaluate_dynamic(synthetic_run, capsys):
    corpus = make_synthetic_corpus(**SHORT)
    calls = []

    def recorded(*args, **kwargs):
        calls.append((args, kwargs, evaluate_dynamic(*args, **kwargs)))
        return calls[-1][-1]

    patch = pytest.MonkeyPatch()
    patch.setattr(keras_rnnreg.datasets, "make_synthetic_corpus",
                  functools.partial(make_synthetic_corpus, **SHORT))
    patch.setattr(evaluation, "evaluate_dynamic", recorded)
    try:
        capsys.readouterr()
        # 299 test steps: 23 segments of 13.
        assert cli.main(["evaluate", str(synthetic_run), "--dynamic", "--dynamic-lr", "0.0003",
                         "--dynamic-decay", "0.01", "--segment-length", "13"]) == 0
    finally:
        patch.undo()
    out = capsys.readouterr().out
    oracle = float(re.search(r"oracle ([\d.]+)", out).group(1))
    match = re.search(DYNAMIC_LINE, out)
    assert match, out
    lr, decay, length, statistics, dynamic, static = (float(g) for g in match.groups())
    assert (lr, decay, length) == (0.0003, 0.01, 13)
    (args, kwargs, result), = calls
    np.testing.assert_array_equal(args[1], corpus.test)
    np.testing.assert_array_equal(kwargs["training_tokens"], corpus.train)
    assert statistics == result.statistics_tokens == (len(corpus.train) // 100 - 1) * 100
    assert abs(dynamic - result.perplexity) <= 0.005 and abs(static - result.static_perplexity) <= 0.005
    assert abs(dynamic - static) > 0.02  # the flags reached the update
    assert oracle == pytest.approx(math.exp(corpus.oracle_cross_entropy["test"]), abs=0.005)
    # The source's Bayes-optimal predictor is a floor for any sequential one.
    assert dynamic >= oracle and static >= oracle


def test_cli_dynamic_flags_need_dynamic(capsys):
    assert cli.main(["evaluate", "runs/x", "--dynamic-lr", "0.1", "--segment-length", "3"]) == 2
    assert ("--dynamic-lr, --segment-length: settings of dynamic evaluation; add --dynamic"
            in capsys.readouterr().err)
