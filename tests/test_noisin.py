"""NoisinCell, NoisinRNN, NoisinLSTM and NoisinGRU (Noisin, Dieng et al. 2018)."""

import json
import math

import keras
import numpy as np
import pytest
from keras import ops

from conftest import numpy_lstm
from keras_rnnreg.layers import NoisinCell, NoisinGRU, NoisinLSTM, NoisinRNN
from keras_rnnreg.noise import DISTRIBUTIONS

BACKEND = keras.backend.backend()
X = np.random.default_rng(0).normal(size=(4, 3, 5)).astype("float32")


# The medium-model spreads of the paper's Table 3 (no dropout).
TABLE_3_GAMMA = {
    "gaussian": 1.10,
    "logistic": 1.06,
    "laplace": 1.06,
    "gamma": 1.06,
    "bernoulli": 0.41,
    "gumbel": 1.06,
    "beta": 1.07,
    "chi_square": 1.50,
}


CELLS = {
    "lstm": lambda: keras.layers.LSTMCell(5),
    "gru": lambda: keras.layers.GRUCell(5),
    "simple_rnn": lambda: keras.layers.SimpleRNNCell(5),
}


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


@keras.saving.register_keras_serializable(package="test_noisin")
class ProbeCell(keras.layers.Layer):
    """Emits ones; under multiplicative noise the RNN's output is ε itself."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units
        self.output_size = units

    def call(self, inputs, states):
        ones = ops.ones_like(states[0])
        return ones, [ones]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class PassCell(keras.layers.Layer):
    """Emits its input (a user cell without `training`)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.state_size = units
        self.output_size = units

    def call(self, inputs, states):
        return inputs, [inputs]


def probe_layer(noise="gaussian", level=0.5, seed=3, **rnn_kwargs):
    return NoisinRNN(
        NoisinCell(ProbeCell(16), noise, level, seed=seed), return_sequences=True, **rnn_kwargs
    )


def training_outputs(layer, x, how, calls=2):
    """Outputs of `calls` successive training calls: eagerly or compiled."""
    layer.build(x.shape)
    if how == "eager":
        return [np_(layer(x, training=True)) for _ in range(calls)]
    if how == "jax_jit":
        import jax

        step = jax.jit(
            lambda tv, ntv, x: layer.stateless_call(tv, ntv, x, training=True)
        )
        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]
        outputs = []
        for _ in range(calls):
            out, ntv = step(tv, ntv, x)
            outputs.append(np_(out))
        return outputs
    import tensorflow as tf

    step = tf.function(
        lambda x: layer(x, training=True), jit_compile=(how == "tf_xla")
    )
    return [np_(step(x)) for _ in range(calls)]


COMPILED = {"jax": ["jax_jit"], "tensorflow": ["tf_graph", "tf_xla"], "torch": []}


# --- fresh noise per step, per example, per call -----------------------------


@pytest.mark.parametrize(
    "how, unroll",
    [("eager", False), ("eager", True), *((how, False) for how in COMPILED[BACKEND])],
)
def test_fresh_noise_every_step_and_example(how, unroll):
    batch, steps, units = 32, 12, 16
    layer = probe_layer("gaussian", 0.5, unroll=unroll)
    x = np.zeros((batch, steps, 2), "float32")
    first, second = training_outputs(layer, x, how)
    eps = first  # (batch, time, units): ε itself
    for t in range(steps):
        for u in range(t + 1, steps):
            assert np.all(eps[:, t] != eps[:, u]), (t, u)
    for b in range(batch):
        for d in range(b + 1, batch):
            assert np.all(eps[b] != eps[d]), (b, d)
    assert np.all(first != second)  # a new draw at every training call
    # And it is the noise of Table 2: mean 1, variance γ², uncorrelated in time.
    n = eps.size
    assert abs(eps.mean() - 1.0) < 5 * 0.5 / math.sqrt(n)
    assert abs(eps.var() - 0.25) < 5 * math.sqrt(2 * 0.25**2 / n)
    lag = np.corrcoef(eps[:, 1:].ravel(), eps[:, :-1].ravel())[0, 1]
    assert abs(lag) < 5 / math.sqrt(n)


# Eagerly, test_noised_state_is_fed_back shows this. Under XLA TensorFlow picks
# another stateless RNG algorithm than eagerly, so a compiled draw cannot be
# compared with an eager twin there.
@pytest.mark.parametrize(
    "how",
    [h for h in COMPILED[BACKEND] if h != "tf_xla"]
    or [pytest.param(None, marks=pytest.mark.skip(
        reason="compiled draws; torch runs eagerly: runs in the tensorflow and jax passes"))],
)
def test_compiled_noise_matches_a_twin_draw(how):
    """Compiled, the layer's ε is still the first draw of a NoisinCell with the same seed."""
    layer = probe_layer("gaussian", 0.7, seed=42)
    x = np.zeros((3, 5, 2), "float32")
    (eps,) = training_outputs(layer, x, how, calls=1)
    twin = NoisinCell(ProbeCell(16), "gaussian", 0.7, seed=42)
    # Compiled, XLA may fuse the arithmetic differently: equal to float32 rounding.
    np.testing.assert_allclose(eps, np_(twin.draw_noise((3, 5, 16))), rtol=1e-5, atol=1e-6)


def test_stacked_levels_get_their_own_noise():
    """A stack of two noised identity cells emits x ⊙ ε1 ⊙ ε2, both fresh per step."""
    cells = [
        NoisinCell(PassCell(8), "bernoulli", 0.5, seed=1),
        NoisinCell(PassCell(8), "gumbel", 0.3, seed=2),
    ]
    layer = NoisinRNN(cells, return_sequences=True)  # a list becomes StackedRNNCells
    assert isinstance(layer.cell, keras.layers.StackedRNNCells)
    x = np.ones((6, 4, 8), "float32")
    out = np_(layer(x, training=True))
    eps1 = np_(NoisinCell(PassCell(8), "bernoulli", 0.5, seed=1).draw_noise((6, 4, 8)))
    eps2 = np_(NoisinCell(PassCell(8), "gumbel", 0.3, seed=2).draw_noise((6, 4, 8)))
    np.testing.assert_allclose(out, eps1 * eps2, rtol=1e-6)
    np.testing.assert_array_equal(np_(layer(x, training=False)), x)


def test_plain_keras_rnn_refuses_to_train_without_noise():
    layer = keras.layers.RNN(NoisinCell(keras.layers.LSTMCell(5)))
    with pytest.raises(ValueError, match="NoisinRNN"):
        layer(X, training=True)
    stacked = keras.layers.RNN([NoisinCell(keras.layers.GRUCell(5)), keras.layers.GRUCell(5)])
    with pytest.raises(ValueError, match="NoisinRNN"):
        stacked(X, training=True)


def test_cell_with_explicit_noise():
    cell = NoisinCell(keras.layers.LSTMCell(5), "gaussian", 0.5)
    bare = cell.cell
    x = X[:, 0]
    rng = np.random.default_rng(2)
    h0, c0, eps = rng.normal(size=(3, 4, 5)).astype("float32")
    eps += 1.0
    z, (z_state, c) = cell((x, eps), [h0, c0], training=True)
    h, (_, c_bare) = bare(x, [h0, c0])
    np.testing.assert_allclose(np_(z), np_(h) * eps, rtol=1e-6)
    np.testing.assert_array_equal(np_(z_state), np_(z))
    np.testing.assert_array_equal(np_(c), np_(c_bare))  # the memory cell is not noised
    h_inf, _ = cell((x, eps), [h0, c0], training=False)
    np.testing.assert_array_equal(np_(h_inf), np_(h))


# --- the recurrence ----------------------------------------------------------


@pytest.mark.parametrize(
    "noise, level, mode, masked",
    [
        ("bernoulli", 0.41, "multiplicative", False),
        ("gaussian", 0.3, "additive", False),
        ("bernoulli", 0.41, "multiplicative", True),
    ],
)
def test_noised_state_is_fed_back(noise, level, mode, masked):
    """The layer equals a 3-step NumPy recurrence using the drawn ε."""
    units = 5
    layer = NoisinLSTM(
        units, noise=noise, noise_level=level, mode=mode, seed=21,
        return_sequences=True, return_state=True,
    )
    mask = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 0], [0, 1, 1]], bool) if masked else None
    layer.build(X.shape)
    out, h, c = layer(X, mask=mask, training=True)
    eps = np_(NoisinCell(keras.layers.LSTMCell(units), noise, level, mode, seed=21)
              .draw_noise((4, 3, units)))
    kernel, recurrent_kernel, bias = layer.get_weights()
    expected, z, c_expected = numpy_lstm(
        X.astype(np.float64), kernel, recurrent_kernel, bias, eps=eps, mode=mode, mask=mask
    )
    np.testing.assert_allclose(np_(out), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np_(h), z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np_(c), c_expected, rtol=1e-5, atol=1e-5)


def assert_unbiased(noisy, exact):
    """Mean over the batch (axis 0) within 5 standard errors of `exact`, per unit."""
    n = noisy.shape[0]
    se = noisy.std(axis=0) / math.sqrt(n)
    assert se.min() > 0
    np.testing.assert_array_less(np.abs(noisy.mean(axis=0) - exact), 5 * se + 1e-6)


def one_step_inputs(cell, n):
    """n copies of one input and one previous state."""
    x = np.repeat(X[:1, 0], n, axis=0)
    sizes = cell.state_size if isinstance(cell.state_size, list) else [cell.state_size]
    rng = np.random.default_rng(3)
    states = [np.repeat(rng.normal(size=(1, s)).astype("float32"), n, axis=0) for s in sizes]
    return x, states


@pytest.mark.parametrize("mode", ["multiplicative", "additive"])
@pytest.mark.parametrize("noise", DISTRIBUTIONS)
def test_unbiased_one_step(noise, mode, n=20000):
    """Eq. 12: the mean over ε of one noisy step is the deterministic step f_W(x, z_{t-1}).

    n copies of the same input and previous state take one LSTM step, each
    with its own ε from the cell's generator; the LSTM's memory cell is not
    noised at all.
    """
    cell = NoisinCell(keras.layers.LSTMCell(5), noise, TABLE_3_GAMMA[noise], mode, seed=5)
    x, states = one_step_inputs(cell, n)
    eps = cell.draw_noise((n, 5))
    z, (z_state, c) = cell((x, eps), states, training=True)
    h, (_, c_exact) = cell(x, states, training=False)
    assert_unbiased(np_(z), np_(h)[0])
    np.testing.assert_array_equal(np_(z_state), np_(z))
    np.testing.assert_array_equal(np_(c), np_(c_exact))


@pytest.mark.parametrize(
    "cell, noise, mode",
    [
        ("lstm", "bernoulli", "multiplicative"),
        ("gru", "gumbel", "additive"),
        ("simple_rnn", "gamma", "multiplicative"),
    ],
)
def test_unbiased_one_step_of_the_layer(cell, noise, mode, n=20000):
    """Eq. 12 through NoisinRNN's own draw, for the three Keras cells."""
    cell = NoisinCell(CELLS[cell](), noise, TABLE_3_GAMMA[noise], mode, seed=6)
    layer = NoisinRNN(cell, return_state=True)
    x, states = one_step_inputs(cell, n)
    noisy = [np_(t) for t in layer(x[:, None], initial_state=states, training=True)]
    exact = [np_(t) for t in layer(x[:, None], initial_state=states, training=False)]
    assert_unbiased(noisy[0], exact[0][0])
    np.testing.assert_array_equal(noisy[1], noisy[0])  # the state fed back is the output
    for got, want in zip(noisy[2:], exact[2:]):  # the LSTM's memory cell
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


# --- inference is the wrapped cell -------------------------------------------


def copy_weights(source, *targets):
    for target in targets:
        target.set_weights(source.get_weights())


@pytest.mark.parametrize(
    "cell, options",
    [
        ("lstm", {"go_backwards": True, "mask": True}),
        ("gru", {}),
        ("simple_rnn", {}),
    ],
)
def test_inference_is_the_wrapped_cell_bit_for_bit(cell, options):
    """Also for the plain LSTM: test_convenience_layers_at_inference."""
    options = dict(options)
    mask = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 0], [0, 1, 1]], bool) if options.pop("mask", False) else None
    kwargs = dict(return_sequences=True, return_state=True, **options)
    reference = keras.layers.RNN(CELLS[cell](), **kwargs)
    noisy = NoisinRNN(NoisinCell(CELLS[cell](), "gaussian", 0.9), **kwargs)
    reference.build(X.shape)
    noisy.build(X.shape)
    copy_weights(reference, noisy)
    got = noisy(X, mask=mask, training=False)
    want = reference(X, mask=mask, training=False)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np_(a), np_(b))


@pytest.mark.parametrize(
    "layer_class, cell_class, fused_class",
    [
        (NoisinLSTM, keras.layers.LSTMCell, keras.layers.LSTM),
        (NoisinGRU, keras.layers.GRUCell, keras.layers.GRU),
    ],
)
def test_convenience_layers_at_inference(layer_class, cell_class, fused_class):
    noisy = layer_class(5, noise="logistic", noise_level=1.06, dropout=0.3, return_sequences=True)
    loop = keras.layers.RNN(cell_class(5, dropout=0.3), return_sequences=True)
    fused = fused_class(5, dropout=0.3, return_sequences=True)
    for layer in (noisy, loop, fused):
        layer.build(X.shape)
    copy_weights(noisy, loop, fused)  # same weights, same order
    inference = np_(noisy(X))
    # The engine's paths (the input projections of all steps in one matmul; a
    # fused kernel, cuDNN on GPUs) sum in another order than the cell loop:
    # float32 rounding, a few ulps of outputs of order 1 after 10 steps.
    np.testing.assert_allclose(inference, np_(loop(X)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inference, np_(fused(X)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np_(noisy(X, training=True)), inference)


def test_composes_with_the_cells_dropout():
    """D + Noisin: the wrapped cell's dropout masks are those of the bare cell."""
    kwargs = dict(dropout=0.5, recurrent_dropout=0.3, seed=3)
    noisy = NoisinLSTM(5, noise="bernoulli", noise_level=1.0, return_sequences=True, **kwargs)
    bare = keras.layers.RNN(keras.layers.LSTMCell(5, **kwargs), return_sequences=True)
    noisy.build(X.shape)
    bare.build(X.shape)
    copy_weights(noisy, bare)
    # Bernoulli with keep probability 1 is ε = 1: only dropout differs from
    # inference. (The engine's loop sums in another order: a few ulps.)
    for _ in range(2):
        got = np_(noisy(X, training=True))
        np.testing.assert_allclose(got, np_(bare(X, training=True)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, np_(noisy(X)))


# --- training ----------------------------------------------------------------


def markov_tokens(n, steps, vocab, rng):
    """Sequences from a noisy deterministic chain: next = 3·tok + 1 (mod vocab)."""
    tokens = np.empty((n, steps + 1), "int32")
    tokens[:, 0] = rng.integers(0, vocab, n)
    for t in range(steps):
        follow = (3 * tokens[:, t] + 1) % vocab
        tokens[:, t + 1] = np.where(rng.random(n) < 0.9, follow, rng.integers(0, vocab, n))
    return tokens[:, :-1], tokens[:, 1:]


def test_small_language_model_trains_with_fit():
    vocab, steps = 12, 10
    rng = np.random.default_rng(1)
    x, y = markov_tokens(320, steps, vocab, rng)
    x_val, y_val = markov_tokens(64, steps, vocab, rng)
    model = keras.Sequential([
        keras.Input((steps,), dtype="int32"),
        keras.layers.Embedding(vocab, 16, mask_zero=True),
        NoisinLSTM(24, dropout=0.2, noise="bernoulli", noise_level=0.8, return_sequences=True),
        keras.layers.Dense(vocab),
    ])
    model.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        x, y, batch_size=32, epochs=4, validation_data=(x_val, y_val), verbose=0
    )
    val = history.history["val_loss"]
    assert np.isfinite(val).all()
    assert val[-1] < val[0] - 0.2, val
    assert val[-1] < 0.8 * math.log(vocab), val


def gradients(layer, x):
    """d sum(layer(x, training=True)) / d weights, with the backend's autodiff."""
    layer.build(x.shape)
    if BACKEND == "jax":
        import jax

        ntv = [v.value for v in layer.non_trainable_variables]

        def loss(tv):
            out, _ = layer.stateless_call(tv, ntv, x, training=True)
            return out.sum()

        return [np_(g) for g in jax.grad(loss)([v.value for v in layer.trainable_variables])]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True))
        return [np_(g) for g in tape.gradient(loss, layer.trainable_variables)]
    layer.zero_grad()
    layer(x, training=True).sum().backward()
    return [np_(v.value.grad) for v in layer.trainable_variables]


def test_gradients_reach_every_wrapped_cell():
    """Every weight of every noised cell of a stack gets a gradient."""
    rnn = NoisinRNN(
        [
            NoisinCell(keras.layers.LSTMCell(5), "gamma", 0.4, seed=1),
            NoisinCell(keras.layers.GRUCell(5, dropout=0.2), "bernoulli", 0.8, seed=2),
        ],
        return_sequences=True,
    )
    grads = gradients(rnn, X)
    assert len(grads) == 6  # kernel, recurrent kernel, bias of each cell
    for grad, weight in zip(grads, rnn.trainable_weights):
        assert grad.shape == tuple(weight.shape)
        assert np.isfinite(grad).all() and np.abs(grad).max() > 0, weight.path


def test_stateful_carries_the_noised_state():
    layer = NoisinLSTM(5, stateful=True, return_state=True, noise="gumbel", noise_level=0.5)
    model_input = keras.Input((3, 5), batch_size=4)
    layer(model_input)
    _, h, c = layer(X, training=True)
    np.testing.assert_array_equal(np_(layer.states[0]), np_(h))
    np.testing.assert_array_equal(np_(layer.states[1]), np_(c))
    _, h2, _ = layer(X, training=True)
    assert not np.allclose(np_(h2), np_(h))
    layer.reset_state()
    assert not np_(layer.states[0]).any()


def test_bidirectional_noises_both_directions():
    layer = keras.layers.Bidirectional(NoisinLSTM(5, noise_level=0.5, return_sequences=True))
    clean = np_(layer(X))
    noisy = np_(layer(X, training=True))
    assert not np.allclose(noisy[..., :5], clean[..., :5])
    assert not np.allclose(noisy[..., 5:], clean[..., 5:])


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision(policy):
    layer = NoisinLSTM(5, noise="bernoulli", noise_level=0.41, return_sequences=True, dtype=policy)
    compute = keras.mixed_precision.Policy(policy).compute_dtype
    out = layer(X, training=True)
    assert keras.backend.standardize_dtype(out.dtype) == compute
    assert np.isfinite(np_(ops.cast(out, "float32"))).all()
    assert layer.cell.compute_dtype == compute
    assert all(w.dtype == "float32" for w in layer.trainable_weights)
    # ε is drawn in float32, so 1/γ is not rounded to 8 or 11 bits.
    eps = layer.draw_noise((2, 3, 5))
    assert keras.backend.standardize_dtype(eps.dtype) == "float32"
    np.testing.assert_allclose(np.unique(np_(eps)), [0.0, 1 / 0.41], rtol=1e-6)


def test_seed_makes_training_reproducible():
    def run(seed):
        layer = NoisinLSTM(5, noise="logistic", noise_level=1.0, seed=seed, return_sequences=True)
        layer.build(X.shape)
        layer.set_weights(weights)
        return np_(layer(X, training=True))

    reference = NoisinLSTM(5)
    reference.build(X.shape)
    weights = reference.get_weights()
    np.testing.assert_array_equal(run(9), run(9))
    assert not np.allclose(run(9), run(10))


# --- configuration and saving ------------------------------------------------


def test_configs_round_trip():
    cell = NoisinCell(keras.layers.GRUCell(3), "gamma", 0.4, "additive", seed=4, alpha=3.0)
    config = cell.get_config()
    assert config["noise"] == "gamma" and config["alpha"] == 3.0 and config["seed"] == 4
    restored = NoisinCell.from_config(config)
    assert restored.get_config() == config

    lstm = NoisinLSTM(
        7, noise="beta", noise_level=0.2, alpha=2.0, mode="additive", dropout=0.5,
        recurrent_dropout=0.1, unit_forget_bias=False, return_state=True, seed=8,
    )
    config = lstm.get_config()
    assert config["units"] == 7 and config["dropout"] == 0.5 and config["alpha"] == 2.0
    assert NoisinLSTM.from_config(config).get_config() == config
    gru = NoisinGRU(3, reset_after=False, noise="laplace", noise_level=0.3)
    assert NoisinGRU.from_config(gru.get_config()).get_config() == gru.get_config()


def test_keras_file_round_trip(tmp_path):
    model = keras.Sequential([
        keras.Input((3, 5)),
        NoisinLSTM(5, noise="gamma", noise_level=0.4, alpha=3.0, seed=1, return_sequences=True),
        NoisinRNN(
            [
                NoisinCell(keras.layers.SimpleRNNCell(5), "laplace", 0.5, "additive"),
                NoisinCell(ProbeCell(5), "beta", 0.3, alpha=2.0),  # a user cell
            ],
            return_sequences=True,
        ),
        NoisinGRU(5, noise="chi_square", noise_level=0.2, dropout=0.1),
    ])
    path = tmp_path / "noisin.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np_(loaded.predict(X, verbose=0)), np_(model.predict(X, verbose=0)))
    for a, b in zip(model.layers, loaded.layers):
        assert type(a) is type(b)
        # Through JSON, as the file stores it: Keras writes shapes as lists.
        assert json.loads(json.dumps(a.get_config())) == json.loads(json.dumps(b.get_config()))


def test_argument_errors():
    with pytest.raises(ValueError, match="gaussian.*chi_square"):
        NoisinCell(keras.layers.LSTMCell(3), noise="dropout")
    with pytest.raises(ValueError, match=r"noise_level=1.5.*bernoulli.*\(0, 1\]"):
        NoisinLSTM(3, noise="bernoulli", noise_level=1.5)
    with pytest.raises(ValueError, match=r"noise_level=0.0.*gaussian.*\(0, inf\)"):
        NoisinGRU(3, noise="gaussian", noise_level=0.0)
    with pytest.raises(ValueError, match="multiplicative.*additive"):
        NoisinCell(keras.layers.GRUCell(3), mode="both")
    with pytest.raises(ValueError, match="no shape parameter"):
        NoisinLSTM(3, noise="gaussian", alpha=2.0)
    with pytest.raises(ValueError, match="each cell of the stack"):
        NoisinCell(keras.layers.StackedRNNCells([keras.layers.GRUCell(3)] * 2))
    with pytest.raises(ValueError, match="already a NoisinCell"):
        NoisinCell(NoisinCell(keras.layers.GRUCell(3)))
    with pytest.raises(ValueError, match="state_size"):
        NoisinCell(keras.layers.Dense(3))
    with pytest.raises(TypeError, match="seed"):
        NoisinLSTM(3, seed=1.5)
    with pytest.raises((TypeError, ValueError)):
        NoisinLSTM(3, use_cudnn=True)



NOISIN_CONSTRUCTORS = {
    "NoisinLSTM": lambda **kwargs: NoisinLSTM(3, **kwargs),
    "NoisinGRU": lambda **kwargs: NoisinGRU(3, **kwargs),
    "NoisinCell": lambda **kwargs: NoisinCell(keras.layers.LSTMCell(3), **kwargs),
}


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        # An unknown distribution lists the valid ones.
        (
            {"noise": "normal"},
            ValueError,
            "Argument `noise` must be one of 'gaussian', 'bernoulli', 'gamma', "
            "'gumbel', 'laplace', 'logistic', 'beta', 'chi_square'. Received: noise='normal'",
        ),
        # A noise_level outside the domain names the value and the domain.
        (
            {"noise": "bernoulli", "noise_level": 1.5},
            ValueError,
            r"noise_level=1.5 .* bernoulli noise: it is a keep probability .* \(0, 1\]",
        ),
        (
            {"noise": "laplace", "noise_level": -0.2},
            ValueError,
            r"noise_level=-0.2 .* laplace noise: it is a spread .* \(0, inf\)",
        ),
        ({"noise_level": "0.5"}, TypeError, "Argument `noise_level` must be a float"),
        ({"mode": "both"}, ValueError, "'multiplicative', 'additive'. Received: mode='both'"),
        ({"seed": True}, TypeError, "Argument `seed` must be an int or None. Received: seed=True"),
        ({"seed": 1.5}, TypeError, "Received: seed=1.5 of type float"),
        (
            {"noise": "gaussian", "alpha": 2.0},
            ValueError,
            "gaussian noise takes no shape parameter",
        ),
        ({"noise": "gamma", "alpha": 0.0}, ValueError, r"alpha=0.0 .* gamma .* \(0, inf\)"),
        ({"noise": "beta", "alpha": True}, TypeError, "Argument `alpha` must be a float"),
    ],
)
def test_layers_and_cell_reject_bad_noise_arguments_alike(kwargs, error, pattern):
    """One check for NoisinCell, NoisinLSTM and NoisinGRU: the same error, word for word."""
    messages = {}
    for name, make in NOISIN_CONSTRUCTORS.items():
        with pytest.raises(error, match=pattern) as info:
            make(**kwargs)
        assert type(info.value) is error, name
        messages[name] = str(info.value)
    assert len(set(messages.values())) == 1, messages


def test_layers_check_noise_arguments_before_building_the_cell():
    """A bad noise argument is reported before the wrapped cell's own arguments."""
    for layer_class in (NoisinLSTM, NoisinGRU):
        with pytest.raises(ValueError, match="Argument `noise` must be one of"):
            layer_class(0, noise="normal")  # units=0 alone: the Keras cell's error
        with pytest.raises(TypeError, match="Argument `seed`"):
            layer_class(0, seed=False)
    with pytest.raises(ValueError, match="Argument `noise` must be one of"):
        NoisinCell(keras.layers.Dense(3), noise="normal")  # not a cell, either

def test_stateful_noisin_lstm_carries_state_across_fit_batches():
    """Bernoulli noise with keep probability 1 is ε = 1: a deterministic check
    that fit carries the state (Keras's own RNNs drop it on JAX)."""
    batch, steps = 2, 3
    inputs = keras.Input(batch_shape=(batch, steps, 4))
    layer = NoisinLSTM(5, noise="bernoulli", noise_level=1.0, stateful=True,
                       return_sequences=True)
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    stream = np.random.default_rng(0).normal(size=(batch, 2 * steps, 4)).astype("float32")
    model.train_on_batch(stream[:, :steps], np.zeros((batch, steps, 5)))
    model.train_on_batch(stream[:, steps:], np.zeros((batch, steps, 5)))
    carried = [keras.ops.convert_to_numpy(s).copy() for s in layer.states]
    layer.reset_state()
    layer(stream[:, :steps])
    layer(stream[:, steps:])
    for fit_state, reference in zip(carried, layer.states):
        np.testing.assert_allclose(fit_state, keras.ops.convert_to_numpy(reference), atol=1e-5)


def test_trains_on_batches_of_varying_length_with_an_open_time_axis():
    """Variable-length BPTT: the time axis is unknown when the train step is
    traced (TensorFlow) and differs from batch to batch."""
    from keras_rnnreg.callbacks import BPTTCallback
    from keras_rnnreg.data import BPTTSequence

    rng = np.random.default_rng(0)
    train = BPTTSequence(rng.integers(0, 9, 400), 4, 8, s=2.0, seed=1)
    assert len(set(train.lengths)) > 1
    tokens = keras.Input(batch_shape=(4, None), dtype="int32")
    hidden = keras.layers.Embedding(9, 6)(tokens)
    hidden = NoisinLSTM(6, noise="gaussian", noise_level=0.3, stateful=True,
                        return_sequences=True, dtype="mixed_bfloat16")(hidden)
    model = keras.Model(tokens, keras.layers.Dense(9)(hidden))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(train, epochs=2, verbose=0, callbacks=[BPTTCallback(train)])
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("mode", ["multiplicative", "additive"])
@pytest.mark.parametrize(
    "options",
    [{"masked": True}, {}, {"go_backwards": True}, {"return_sequences": False}],
    ids=["masked", "unmasked", "backwards", "last-output"],
)
def test_the_lstm_loop_equals_the_cell_call_loop_in_outputs_states_and_gradients(mode, options):
    # NoisinLSTM's fast path (unmasked on torch its own torch loop; on JAX and
    # TensorFlow one loop with a hand-written backward pass, masked or not),
    # its generic loop (use_cudnn=False) and the reference, NoisinRNN calling
    # a NoisinCell per step: one seed, one noise, the same outputs, states
    # and gradients.
    options = dict(options)
    masked = options.pop("masked", False)
    options.setdefault("return_sequences", True)
    noise = dict(noise="gaussian", noise_level=0.3, mode=mode, seed=4)
    fast = NoisinLSTM(6, return_state=True, **noise, **options)
    loop = NoisinLSTM(6, return_state=True, use_cudnn=False, **noise, **options)
    generic = NoisinRNN(NoisinCell(keras.layers.LSTMCell(6), **noise), return_state=True,
                        **options)
    for layer in (fast, loop, generic):
        layer.build(X.shape)
    loop.set_weights(fast.get_weights())
    generic.set_weights(fast.get_weights())
    mask = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 0], [0, 1, 1]], bool) if masked else None
    want = [np_(t) for t in generic(X, mask=mask, training=True)]
    for layer in (fast, loop):
        for a, b in zip(layer(X, mask=mask, training=True), want, strict=True):
            np.testing.assert_allclose(np_(a), b, rtol=1e-6, atol=1e-6)
    for layer in (fast, loop, generic):
        layer.return_state = False
    want = gradients(generic, X)  # each layer's second draw of the noise
    for layer in (fast, loop):
        for a, b in zip(gradients(layer, X), want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
