import keras
import numpy as np
import pytest

from conftest import numpy_gru, numpy_lstm, to_numpy
from keras_rnnreg.layers import WeightDropGRU, WeightDropLSTM

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 9, 5)).astype("float32")


def run_and_recover_mask(layer, *args, **kwargs):
    """Calls the layer while training and returns (output, U' it used).

    U' is recomputed from the mask generator's state before the call, so this
    does not depend on which backend path (fused or cell loop) ran.
    """
    if not layer.built:
        layer(*args, training=False, **kwargs)
    state = to_numpy(layer.weight_dropout_seed_generator.state).copy()
    out = layer(*args, training=True, **kwargs)
    after = to_numpy(layer.weight_dropout_seed_generator.state).copy()
    layer.weight_dropout_seed_generator.state.assign(state)
    dropped = to_numpy(layer.dropped_recurrent_kernel())
    layer.weight_dropout_seed_generator.state.assign(after)
    return out, dropped


def weights_of(layer):
    kernel, recurrent_kernel, bias = (to_numpy(w) for w in layer.cell.weights)
    return kernel, recurrent_kernel, bias


def spy_on_backend(monkeypatch, name):
    """Records the recurrent kernel handed to the backend's fused `name`."""
    from keras.src import backend

    calls = []
    fused = getattr(backend, name)

    def spy(*args, **kwargs):
        calls.append(to_numpy(kwargs["recurrent_kernel"]))
        return fused(*args, **kwargs)

    monkeypatch.setattr(backend, name, spy)
    return calls


def spy_on_torch_kernel(monkeypatch, name):
    """The recurrent kernels PyTorch's `name` ("lstm", "gru") kernel
    receives, in Keras's layout (the GRU's gate blocks r, z, n back in
    Keras's order z, r, h). On torch every fused call, ours off CUDA and
    Keras's on CUDA, is a call of that kernel."""
    import torch

    calls = []
    fused = getattr(torch._VF, name)

    def spy(inputs, state, weights, *args):
        kernel = to_numpy(weights[1].T)
        if name == "gru":
            r, z, n = np.split(kernel, 3, axis=1)
            kernel = np.concatenate([z, r, n], axis=1)
        calls.append(kernel)
        return fused(inputs, state, weights, *args)

    monkeypatch.setattr(torch._VF, name, spy)
    return calls


def spy_on_jax_scan(monkeypatch):
    """The recurrent kernels the engine's JAX LSTM scan (`_lstm.jax_core`)
    receives: on JAX off GPUs every call that Keras would have sent to cuDNN."""
    from keras_rnnreg._lstm import jax_core

    calls = []
    scan = jax_core.scan_lstm()

    def spy(projected, recurrent_kernel, *args):
        calls.append(to_numpy(recurrent_kernel))
        return scan(projected, recurrent_kernel, *args)

    monkeypatch.setattr(jax_core, "scan_lstm", lambda: spy)
    return calls


def spy_on_tf_loop(monkeypatch):
    """The recurrent kernels the engine's TensorFlow LSTM loop
    (`_lstm.tf_core`) receives: on TensorFlow without a GPU every call that
    Keras would have sent to cuDNN."""
    from keras_rnnreg._lstm import tf_core

    calls = []
    loop = tf_core.tf_lstm

    def spy(projected, recurrent_kernel, *args):
        calls.append(to_numpy(recurrent_kernel))
        return loop(projected, recurrent_kernel, *args)

    monkeypatch.setattr(tf_core, "tf_lstm", spy)
    return calls


def jax_off_gpu():
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() != "gpu"


def tf_off_gpu():
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


def own_loop_off_gpu():
    """Where `WeightDropLSTM` runs our own LSTM loop (JAX or TensorFlow
    without a GPU) instead of Keras's."""
    return jax_off_gpu() or tf_off_gpu()


@pytest.fixture
def spy_lstm(monkeypatch):
    if keras.backend.backend() == "torch":
        return spy_on_torch_kernel(monkeypatch, "lstm")
    if jax_off_gpu():
        return spy_on_jax_scan(monkeypatch)
    if tf_off_gpu():
        return spy_on_tf_loop(monkeypatch)
    return spy_on_backend(monkeypatch, "lstm")


@pytest.mark.parametrize("use_cudnn", ["auto", False])
def test_output_equals_numpy_recurrence_with_one_dropped_kernel(use_cudnn):
    layer = WeightDropLSTM(7, weight_dropout=0.5, seed=1, return_sequences=True,
                           use_cudnn=use_cudnn)
    out, dropped = run_and_recover_mask(layer, X)
    kernel, raw, bias = weights_of(layer)
    # U' is U masked and scaled: each entry is 0 or U / (1 - p)
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], raw[kept] / 0.5, rtol=1e-6)
    assert abs(kept.mean() - 0.5) < 4 * np.sqrt(0.25 / kept.size)
    expected, _, _ = numpy_lstm(X, kernel, dropped, bias)
    np.testing.assert_allclose(to_numpy(out), expected, atol=2e-5)
    # and not the raw-kernel recurrence
    undropped, _, _ = numpy_lstm(X, kernel, raw, bias)
    assert np.abs(to_numpy(out) - undropped).max() > 1e-3


def test_fused_backend_lstm_receives_the_dropped_kernel(spy_lstm):
    layer = WeightDropLSTM(7, weight_dropout=0.5, seed=1, return_sequences=True)
    layer(X, training=False)
    out, dropped = run_and_recover_mask(layer, X)
    # one inference call and one training call; the training call handed U'
    # (not U) to the fused implementation, the inference call U
    assert len(spy_lstm) == 2
    np.testing.assert_array_equal(spy_lstm[-1], dropped)
    np.testing.assert_array_equal(spy_lstm[0], weights_of(layer)[1])
    # the kernel variable itself was never modified
    assert layer.cell.recurrent_kernel is layer.cell.weights[1]


@pytest.mark.parametrize(
    "cls, rate", [(WeightDropLSTM, 0.5), (WeightDropLSTM, 0.2), (WeightDropGRU, 0.5)],
    ids=["lstm-0.5", "lstm-0.2", "gru-0.5"],
)
def test_kept_fraction_of_a_million_recurrent_weights(cls, rate):
    # About 10^6 entries: 5 binomial standard deviations are 0.0025 at p = 0.5
    # (0.002 at p = 0.2), so a keep rate off by 0.01 fails.
    units = 500 if cls is WeightDropLSTM else 578  # 500 x 2000, 578 x 1734
    layer = cls(units, weight_dropout=rate, seed=11, return_sequences=True,
                recurrent_initializer="zeros")  # replaced below; skips a QR
    x = X[:1, :2, :1]  # two steps: the second reads U' h_1 (h_0 = 0)
    layer.build(x.shape)
    rng = np.random.default_rng(2)
    raw = rng.choice([-1.0, 1.0], size=layer.cell.recurrent_kernel.shape)
    raw = (raw * rng.uniform(0.5, 1.0, size=raw.shape) / units).astype("float32")
    layer.cell.recurrent_kernel.assign(raw)  # no entry is 0
    out, dropped = run_and_recover_mask(layer, x)
    kept = dropped != 0
    keep = 1 - rate
    assert abs(kept.mean() - keep) < 5 * np.sqrt(keep * (1 - keep) / kept.size)
    # each entry is kept or dropped on its own: the rows' (and columns') kept
    # fractions spread as binomials, not 0/1 as a mask shared along an axis
    for axis, n in ((1, raw.shape[1]), (0, raw.shape[0])):
        spread = kept.mean(axis=axis).std()
        assert abs(spread / np.sqrt(keep * (1 - keep) / n) - 1) < 0.2
    np.testing.assert_allclose(dropped[kept], raw[kept] / keep, rtol=1e-6)
    # the training call ran with that U'
    kernel, _, bias = weights_of(layer)
    reference = numpy_lstm if cls is WeightDropLSTM else numpy_gru
    expected = reference(x, kernel, dropped, bias)
    expected = expected[0] if cls is WeightDropLSTM else expected
    np.testing.assert_allclose(to_numpy(out), expected, atol=2e-5)


def test_recurrent_dropout_disables_fused_path_but_keeps_weight_drop(spy_lstm):
    layer = WeightDropLSTM(7, weight_dropout=0.5, recurrent_dropout=0.3, seed=2,
                           return_sequences=True)
    layer.build(X.shape)
    # The cell's recurrent-dropout masks come from its own seed generator:
    # a twin given the same state draws the same masks.
    cell_state = to_numpy(layer.cell.seed_generator.state).copy()
    train, dropped = run_and_recover_mask(layer, X)
    assert spy_lstm == []
    kernel, raw, bias = weights_of(layer)
    assert 0.3 < np.mean(dropped == 0) < 0.7

    def twin(recurrent_kernel, recurrent_dropout=0.3):
        """Keras's LSTM with `recurrent_kernel` and no weight drop, drawing
        the recurrent-dropout masks the training call drew."""
        reference = keras.layers.LSTM(7, recurrent_dropout=recurrent_dropout, seed=2,
                                      return_sequences=True)
        reference.build(X.shape)
        reference.set_weights([kernel, recurrent_kernel, bias])
        reference.cell.seed_generator.state.assign(cell_state)
        return to_numpy(reference(X, training=True))

    # the training call used U' (weight drop) together with recurrent dropout
    np.testing.assert_allclose(to_numpy(train), twin(dropped), atol=2e-5)
    # and neither alone: not the raw kernel, and recurrent dropout did act
    assert np.abs(to_numpy(train) - twin(raw)).max() > 1e-3
    assert np.abs(to_numpy(train) - twin(dropped, recurrent_dropout=0.0)).max() > 1e-3


def test_inference_equals_keras_lstm_with_same_weights():
    layer = WeightDropLSTM(7, weight_dropout=0.5, return_sequences=True)
    reference = keras.layers.LSTM(7, return_sequences=True)
    layer.build(X.shape)
    reference.build(X.shape)
    reference.set_weights(layer.get_weights())
    # Bit-exact where both run one kernel; on torch off CUDA ours runs
    # PyTorch's LSTM kernel and Keras's LSTM its Python loop, on JAX and
    # TensorFlow off GPUs ours its own loop (float32 sums in another order).
    check = (
        np.testing.assert_array_equal
        if keras.backend.backend() != "torch" and not own_loop_off_gpu()
        else lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    )
    check(to_numpy(layer(X)), to_numpy(reference(X)))
    check(to_numpy(layer(X, training=False)), to_numpy(reference(X, training=False)))


def test_one_mask_per_pass_shared_by_batch_and_time_fresh_each_pass():
    layer = WeightDropLSTM(6, weight_dropout=0.5, seed=3)
    _, first = run_and_recover_mask(layer, X)
    _, second = run_and_recover_mask(layer, X)
    assert not np.array_equal(first != 0, second != 0)
    # the same seed reproduces the same sequence of masks
    twin = WeightDropLSTM(6, weight_dropout=0.5, seed=3)
    twin.build(X.shape)
    twin.set_weights(layer.get_weights())
    _, twin_first = run_and_recover_mask(twin, X)
    np.testing.assert_array_equal(first, twin_first)


def test_gradients_reach_only_kept_entries_of_the_raw_kernel():
    inputs = keras.Input((9, 5))
    layer = WeightDropLSTM(4, weight_dropout=0.5, seed=4)
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    model.compile(keras.optimizers.SGD(0.5), "mse")
    before = to_numpy(layer.cell.recurrent_kernel).copy()
    state = to_numpy(layer.weight_dropout_seed_generator.state).copy()
    model.train_on_batch(X, np.ones((6, 1)))
    after = to_numpy(layer.cell.recurrent_kernel)
    layer.weight_dropout_seed_generator.state.assign(state)
    kept = to_numpy(layer.dropped_recurrent_kernel()) != 0
    # dropped weights get no gradient; kept ones are updated
    np.testing.assert_array_equal(after[~kept], before[~kept])
    assert np.mean(after[kept] != before[kept]) > 0.95


def test_masking_go_backwards_return_state_with_dropped_kernel():
    lengths = [9, 6, 4, 9, 2, 7]
    mask = np.arange(9)[None] < np.array(lengths)[:, None]
    layer = WeightDropLSTM(5, weight_dropout=0.4, seed=5, return_state=True)
    (out, h, c), dropped = run_and_recover_mask(layer, X, mask=mask)
    kernel, _, bias = weights_of(layer)
    for b, n in enumerate(lengths):
        _, h_ref, c_ref = numpy_lstm(X[b:b + 1, :n], kernel, dropped, bias)
        np.testing.assert_allclose(to_numpy(out)[b], h_ref[0], atol=2e-5)
        np.testing.assert_allclose(to_numpy(h)[b], h_ref[0], atol=2e-5)
        np.testing.assert_allclose(to_numpy(c)[b], c_ref[0], atol=2e-5)

    backwards = WeightDropLSTM(5, weight_dropout=0.4, seed=6, go_backwards=True)
    out, dropped = run_and_recover_mask(backwards, X)
    kernel, _, bias = weights_of(backwards)
    _, h_ref, _ = numpy_lstm(X[:, ::-1], kernel, dropped, bias)
    np.testing.assert_allclose(to_numpy(out), h_ref, atol=2e-5)


def test_stateful_carries_state_across_calls():
    layer = WeightDropLSTM(5, weight_dropout=0.5, stateful=True, return_sequences=True)
    layer.build(X.shape)
    whole = to_numpy(layer(X))
    layer.reset_state()
    pieces = np.concatenate([to_numpy(layer(X[:, :4])), to_numpy(layer(X[:, 4:]))], 1)
    np.testing.assert_allclose(pieces, whole, atol=1e-5)


def test_bidirectional_applies_weight_drop_to_both_directions(spy_lstm, monkeypatch):
    from keras.src import backend

    # Bidirectional's own fused kernel would take the raw kernels: never used
    bidirectional_calls = []
    monkeypatch.setattr(
        backend, "bidirectional_lstm",
        lambda *a, **k: bidirectional_calls.append(1) or backend_raise(),
        raising=False,  # Keras < 3.14 has no fused bidirectional kernel
    )
    layer = keras.layers.Bidirectional(
        WeightDropLSTM(4, weight_dropout=0.5, seed=7, return_sequences=True)
    )
    layer.build(X.shape)
    spy_lstm.clear()
    layer(X, training=True)
    # each direction went through WeightDropLSTM.inner_loop with its own U'
    assert len(spy_lstm) == 2 and bidirectional_calls == []
    assert layer.forward_layer._use_cudnn == "auto"
    raw_fw = to_numpy(layer.forward_layer.cell.recurrent_kernel)
    raw_bw = to_numpy(layer.backward_layer.cell.recurrent_kernel)
    for seen, raw in zip(spy_lstm, (raw_fw, raw_bw)):
        assert np.mean(seen == 0) > 0.3
        kept = seen != 0
        np.testing.assert_allclose(seen[kept], raw[kept] * 2, rtol=1e-6)


def backend_raise():
    raise NotImplementedError


def test_gru_output_equals_numpy_recurrence_with_dropped_kernel():
    layer = WeightDropGRU(6, weight_dropout=0.5, seed=8, return_sequences=True)
    out, dropped = run_and_recover_mask(layer, X)
    kernel, raw, bias = weights_of(layer)
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], raw[kept] * 2, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(out), numpy_gru(X, kernel, dropped, bias), atol=2e-5)
    reference = keras.layers.GRU(6, return_sequences=True)
    reference.build(X.shape)
    reference.set_weights(layer.get_weights())
    # Bit-exact where both run one kernel; on torch off CUDA ours is
    # PyTorch's GRU kernel and Keras's GRU its Python loop.
    if keras.backend.backend() == "torch":
        np.testing.assert_allclose(to_numpy(layer(X)), to_numpy(reference(X)), rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(to_numpy(layer(X)), to_numpy(reference(X)))


def test_gru_fused_backend_receives_the_dropped_kernel(monkeypatch):
    if keras.backend.backend() == "torch":
        seen = spy_on_torch_kernel(monkeypatch, "gru")
    else:
        seen = spy_on_backend(monkeypatch, "gru")
    layer = WeightDropGRU(6, weight_dropout=0.5, seed=9)
    layer.build(X.shape)
    _, dropped = run_and_recover_mask(layer, X)
    np.testing.assert_array_equal(seen[-1], dropped)


def test_zero_weight_dropout_is_plain_lstm():
    layer = WeightDropLSTM(5, weight_dropout=0.0)
    layer.build(X.shape)
    np.testing.assert_array_equal(
        to_numpy(layer(X, training=True)), to_numpy(layer(X, training=False))
    )


@pytest.mark.parametrize("cls", [WeightDropLSTM, WeightDropGRU])
@pytest.mark.parametrize("value", [1.0, -0.2, 2])
def test_bad_weight_dropout_is_rejected(cls, value):
    with pytest.raises(ValueError, match=r"`weight_dropout`.*\[0, 1\)"):
        cls(4, weight_dropout=value)


def test_weight_dropout_of_wrong_type_is_rejected():
    with pytest.raises(TypeError, match="weight_dropout"):
        WeightDropLSTM(4, weight_dropout="0.5")


def test_config_round_trip_keeps_lstm_options():
    layer = WeightDropLSTM(
        8, weight_dropout=0.3, seed=2, dropout=0.1, return_sequences=True,
        go_backwards=True, stateful=False, use_cudnn=False,
    )
    clone = WeightDropLSTM.from_config(layer.get_config())
    assert clone.weight_dropout == 0.3 and clone.cell.seed == 2
    assert clone.dropout == 0.1 and clone.return_sequences and clone.go_backwards
    gru = WeightDropGRU.from_config(WeightDropGRU(3, weight_dropout=0.2).get_config())
    assert gru.weight_dropout == 0.2


@pytest.mark.parametrize("cls", [WeightDropLSTM, WeightDropGRU])
def test_stateful_state_carries_across_fit_batches(cls):
    """Keras 3.15's own stateful RNNs restart from zero in JAX's fit and break
    torch's backward pass; these layers carry the state on every backend."""
    batch, steps = 3, 4
    inputs = keras.Input(batch_shape=(batch, steps, 5))
    # no mask, so the reference calls below see the same kernel
    layer = cls(6, weight_dropout=0.0, stateful=True, return_sequences=True)
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.SGD(0.0), "mse")  # backward runs, weights fixed
    stream = X[:batch, :2 * steps]
    model.train_on_batch(stream[:, :steps], np.zeros((batch, steps, 6)))
    model.train_on_batch(stream[:, steps:], np.zeros((batch, steps, 6)))
    carried = [to_numpy(s).copy() for s in layer.states]
    layer.reset_state()
    layer(stream[:, :steps])
    layer(stream[:, steps:])
    for fit_state, reference in zip(carried, layer.states):
        np.testing.assert_allclose(fit_state, to_numpy(reference), atol=1e-5)
    assert np.abs(carried[0]).max() > 0


BACKEND = keras.backend.backend()


def spy_on_dtypes(monkeypatch, name):
    """Records the dtypes reaching the backend's fused `name`, then declines
    (NotImplementedError), so Keras falls back to its cell loop."""
    from keras.src import backend

    calls = []

    def spy(inputs, *states_and_mask, **kwargs):
        states = states_and_mask[:-1]  # (h, c) or (h,), then the mask
        dtypes = [inputs.dtype, *(s.dtype for s in states)]
        dtypes += [kwargs[k].dtype for k in ("kernel", "recurrent_kernel", "bias")]
        calls.append({keras.backend.standardize_dtype(d) for d in dtypes})
        raise NotImplementedError

    monkeypatch.setattr(backend, name, spy)
    return calls


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's cuDNN LSTM; runs in the jax pass")
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("on_gpu", [True, False], ids=["gpu", "cpu"])
def test_jax_fused_lstm_runs_in_float32_under_mixed_precision_on_gpus(
    monkeypatch, policy, on_gpu
):
    """JAX's cuDNN LSTM fails to lower 16-bit types: on a GPU the fused call
    gets float32 inputs, states and weights and the output is cast back."""
    from keras_rnnreg._lstm import jax_core

    monkeypatch.setattr(jax_core, "on_gpu", lambda: on_gpu)
    keras.mixed_precision.set_global_policy(policy)
    compute = keras.mixed_precision.Policy(policy).compute_dtype
    calls = spy_on_dtypes(monkeypatch, "lstm")
    layer = WeightDropLSTM(7, weight_dropout=0.5, seed=1, return_sequences=True)
    for training in (False, True):
        out = layer(X, training=training)
        assert keras.backend.standardize_dtype(out.dtype) == compute
    # On a GPU the float32 call comes first; the spy declines it, as a
    # backend may, and the usual path then runs in the compute dtype.
    assert calls == ([{"float32"}, {compute}] if on_gpu else [{compute}]) * 2
    # that fallback still computes the LSTM
    reference = WeightDropLSTM(7, weight_dropout=0.0, return_sequences=True, dtype="float32")
    reference.build(X.shape)
    reference.set_weights([to_numpy(w) for w in layer.weights])
    np.testing.assert_allclose(
        to_numpy(layer(X)).astype("float32"), to_numpy(reference(X)), atol=0.05
    )


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's cuDNN LSTM; runs in the jax pass")
def test_jax_mixed_precision_train_step_with_the_float32_fused_path(monkeypatch):
    from keras_rnnreg._lstm import jax_core

    monkeypatch.setattr(jax_core, "on_gpu", lambda: True)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    calls = spy_on_dtypes(monkeypatch, "lstm")
    model = keras.Sequential([
        keras.Input((9, 5)),
        WeightDropLSTM(7, weight_dropout=0.5, seed=1, return_sequences=True),
        keras.layers.Dense(3),
    ])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(X, np.zeros((6, 9), "int32"), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert calls and calls[0::2] == [{"float32"}] * (len(calls) // 2)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_fused_gru_gets_the_compute_dtype(monkeypatch, policy):
    """Only JAX's cuDNN LSTM needs float32; its GRU is a scan in any dtype."""
    keras.mixed_precision.set_global_policy(policy)
    compute = keras.mixed_precision.Policy(policy).compute_dtype
    calls = spy_on_dtypes(monkeypatch, "gru")
    layer = WeightDropGRU(7, weight_dropout=0.5, seed=1, return_sequences=True)
    out = layer(X, training=True)
    assert keras.backend.standardize_dtype(out.dtype) == compute
    assert calls == [{compute}]


def _trained_twins(options, steps=2, cls=WeightDropLSTM, mask=None):
    """Two identical LMs-in-miniature, one with the fused LSTM path ("auto":
    PyTorch's kernel on torch, our scan on JAX off GPUs, the backend's fused
    LSTM elsewhere) and one with Keras's generic cell loop, trained `steps`
    SGD steps on the same batches (with `mask`, a (6, 9) boolean array,
    its False steps zeroed and masked by `Masking`); returns their weights,
    last outputs and carried states, and the weights both started from."""
    keep = np.ones((6, 9, 1), "float32") if mask is None else mask[..., None].astype("float32")
    results = []
    for use_cudnn in ("auto", False):
        keras.utils.set_random_seed(7)
        layer = cls(6, weight_dropout=0.5, seed=8, use_cudnn=use_cudnn, **options)
        inputs = keras.Input((9, 5), batch_size=6)
        hidden = inputs if mask is None else keras.layers.Masking(0.0)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(3)(layer(hidden)))
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        targets = np.ones(model.output.shape, "float32")
        initial = [to_numpy(w) for w in model.weights]
        for step in range(steps):
            model.train_on_batch((X + step) * keep, targets)
        states = [to_numpy(s) for s in layer.states] if layer.stateful else []
        results.append(([to_numpy(w) for w in model.weights], to_numpy(model(X * keep)), states))
    return (*results, initial)


@pytest.mark.parametrize(
    "options",
    [
        {"return_sequences": True},
        {"return_sequences": False, "go_backwards": True},
        {"return_sequences": True, "dropout": 0.3},
        {"return_sequences": True, "stateful": True},
    ],
    ids=["sequences", "backwards", "input-dropout", "stateful"],
)
@pytest.mark.parametrize("cls", [WeightDropLSTM, WeightDropGRU])
def test_fused_path_trains_as_the_generic_loop(options, cls):
    # Two SGD steps at rate 1 from the same weights and the same masks: equal
    # weights after them mean equal gradients for every weight, through the
    # weight mask, the input dropout and (stateful) the carried state.
    _assert_twins_trained_alike(*_trained_twins(options, cls=cls))


def _assert_twins_trained_alike(fused, loop, initial):
    """`_trained_twins`' two results agree, and the steps changed the weights."""
    for a, b in zip(fused[0] + [fused[1]] + fused[2], loop[0] + [loop[1]] + loop[2]):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)
    assert max(np.abs(w1 - w0).max() for w1, w0 in zip(fused[0], initial)) > 1e-3


MASKS = {
    "right-padded": np.arange(9)[None] < np.array([9, 6, 4, 9, 2, 7])[:, None],
    "holes": np.array([[(3 * row + step) % 4 != 1 for step in range(9)] for row in range(6)]),
}


@pytest.mark.parametrize("mask", MASKS, ids=list(MASKS))
@pytest.mark.parametrize(
    "options",
    [
        {"return_sequences": True},
        {"return_sequences": True, "zero_output_for_mask": True},
        {"return_sequences": False, "go_backwards": True, "stateful": True},
        {"return_sequences": True, "go_backwards": True, "zero_output_for_mask": True},
    ],
    ids=["sequences", "zero-output", "backwards-stateful", "backwards-zero-output"],
)
def test_masked_lstm_trains_as_the_generic_loop(options, mask):
    # As above, with masks: on JAX off GPUs our scan carries the states over
    # masked steps and emits the previous output (or zeros) as Keras's loop
    # does; elsewhere both twins run Keras's masked paths.
    _assert_twins_trained_alike(*_trained_twins(options, mask=MASKS[mask]))


def test_jax_and_tf_run_their_own_lstm_loop_where_keras_would_loop(spy_lstm):
    layer = WeightDropLSTM(5, weight_dropout=0.5, seed=9)
    layer(X, training=True)
    layer(X, mask=MASKS["holes"], training=True)  # masks too
    # unrolling, recurrent dropout or 16-bit compute: Keras's own paths
    WeightDropLSTM(5, recurrent_dropout=0.2)(X, training=True)
    WeightDropLSTM(5, unroll=True)(X, training=True)
    WeightDropLSTM(5, dtype="mixed_bfloat16")(X, training=True)
    if own_loop_off_gpu():
        assert len(spy_lstm) == 2
    elif keras.backend.backend() == "torch":  # the mask takes the generic loop
        assert len(spy_lstm) == 1


def test_torch_runs_its_own_lstm_kernel_where_keras_would_fuse(spy_lstm, monkeypatch):
    layer = WeightDropLSTM(5, weight_dropout=0.5, seed=9)
    layer(X, training=True)
    # a mask, unrolling or recurrent dropout: Keras's own paths, as for its LSTM
    mask = np.arange(9)[None] < np.array([9, 6, 4, 9, 2, 7])[:, None]
    layer(X, mask=mask, training=True)
    WeightDropLSTM(5, recurrent_dropout=0.2)(X, training=True)
    WeightDropLSTM(5, unroll=True)(X, training=True)
    if keras.backend.backend() == "torch":
        assert len(spy_lstm) == 1
    else:  # elsewhere never torch's kernel
        from keras_rnnreg._lstm import torch_core

        torch_calls = []
        monkeypatch.setattr(torch_core, "native_lstm", lambda *a: torch_calls.append(1))
        layer(X, training=True)
        assert torch_calls == []


def _cudnn_lstm_on_cpu(monkeypatch, executions):
    """Stands in for JAX's cuDNN LSTM (GPU only) with jax.experimental.rnn's
    own reference implementation of it; counts the calls that execute."""
    import jax
    from jax.experimental import rnn

    def fake(x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers,
             dropout, bidirectional):
        jax.debug.callback(lambda: executions.append(1))
        unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers,
                                           bidirectional)
        y, h, c = rnn.lstm_ref(x, h_0, c_0, *unpacked, seq_lengths, input_size, hidden_size,
                               num_layers, dropout, bidirectional)
        # cuDNN leaves padded outputs zero; the layer must not rely on them
        steps = jax.numpy.arange(x.shape[1])[None, :, None]
        return jax.numpy.where(steps < seq_lengths[:, None, None], y, 0.0), h, c

    monkeypatch.setattr(rnn, "lstm", fake)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's cuDNN LSTM; runs in the jax pass")
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("padding", ["right", "hole"])
def test_jax_gpu_masked_lstm_runs_cudnn_with_the_lengths_as_keras_loops(
    monkeypatch, return_sequences, padding
):
    # Padding at the end (as BPTTSequence pads): cuDNN with the true lengths.
    # A mask with a hole: Keras's loop. Either way two SGD steps through the
    # layer (weight drop on) equal those through Keras's own masked loop, in
    # weights, outputs and returned states.
    from keras_rnnreg._lstm import jax_core

    monkeypatch.setattr(jax_core, "on_gpu", lambda: True)
    executions = []
    _cudnn_lstm_on_cpu(monkeypatch, executions)
    x = X.copy()
    lengths = [9, 6, 4, 9, 2, 7]
    for row, n in enumerate(lengths):
        x[row, n:] = 0.0  # Masking(0.0) masks these steps
    if padding == "hole":
        x[1, 2] = 0.0
    results = []
    for use_cudnn in ("auto", False):
        keras.utils.set_random_seed(3)
        inputs = keras.Input((9, 5), batch_size=6)
        masked = keras.layers.Masking(0.0)(inputs)
        out, h, c = WeightDropLSTM(6, weight_dropout=0.5, seed=8, use_cudnn=use_cudnn,
                                   return_sequences=return_sequences,
                                   return_state=True)(masked)
        model = keras.Model(inputs, [keras.layers.Dense(3)(out), h, c])
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss=["mse", None, None])
        target = np.ones(model.outputs[0].shape, "float32")
        for _ in range(2):
            model.train_on_batch(x, [target, None, None])
        results.append(([to_numpy(w) for w in model.weights],
                        [to_numpy(t) for t in model(x, training=True)]))
        if use_cudnn == "auto":
            ran = len(executions)
    (fused_weights, fused_out), (loop_weights, loop_out) = results
    for a, b in zip(fused_weights + fused_out, loop_weights + loop_out, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)
    # the fused path ran in every training call (2 steps + the last call)
    # with right padding, never with a hole
    assert ran == (3 if padding == "right" else 0)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="a TensorFlow SavedModel (model.export); runs in the tensorflow pass")
def test_exported_savedmodel_serves_the_same_outputs(tmp_path):
    # Our TensorFlow LSTM loop (a while loop with a custom gradient) inside
    # an exported serving function, masks and Noisin's loop included.
    import tensorflow as tf

    from keras_rnnreg.layers import NoisinLSTM

    inputs = keras.Input((9, 5))
    hidden = keras.layers.Masking(0.0)(inputs)
    hidden = WeightDropLSTM(6, weight_dropout=0.5, return_sequences=True)(hidden)
    model = keras.Model(inputs, keras.layers.Dense(3)(NoisinLSTM(4, return_sequences=True)(hidden)))
    model.export(str(tmp_path / "served"))
    served = tf.saved_model.load(str(tmp_path / "served"))
    masked = X * (MASKS["right-padded"][..., None])
    np.testing.assert_allclose(served.serve(masked).numpy(), to_numpy(model(masked)), atol=1e-6)


def test_batches_of_varying_length_train_as_the_generic_loop():
    # Variable-length BPTT: TensorFlow retraces the train step with an open
    # time axis, which our TensorFlow loop reads at run time.
    weights = []
    for use_cudnn in ("auto", False):
        keras.utils.set_random_seed(7)
        inputs = keras.Input(batch_shape=(6, None, 5))
        layer = WeightDropLSTM(6, weight_dropout=0.5, seed=8, use_cudnn=use_cudnn,
                               return_sequences=True, stateful=True)
        model = keras.Model(inputs, keras.layers.Dense(3)(layer(inputs)))
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        for length in (9, 5, 7, 4):
            model.train_on_batch(X[:, :length], np.ones((6, length, 3), "float32"))
        weights.append([to_numpy(w) for w in model.weights + layer.states])
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)


TOKENS = np.array([[3, 1, 4, 1, 5, 0, 0], [2, 6, 5, 3, 5, 8, 9], [9, 7, 0, 0, 0, 0, 0],
                   [2, 0, 1, 8, 2, 8, 0]], "int32")  # 0 is masked: padding, and a hole


@pytest.mark.parametrize("training, rate", [(False, 0.5), (True, 0.0)],
                         ids=["inference", "no-weight-drop"])
@pytest.mark.parametrize("cls", [WeightDropLSTM, WeightDropGRU])
def test_masked_call_without_weight_drop_equals_the_keras_layer(cls, training, rate):
    """At inference, and in training with weight_dropout=0, the layer is
    Keras's LSTM/GRU: the embedding's mask (mask_zero) reaches the
    recurrence, whose masked steps carry the state and output forward."""
    keras_cls = keras.layers.LSTM if cls is WeightDropLSTM else keras.layers.GRU
    embedding = keras.layers.Embedding(10, 5, mask_zero=True)
    # plain arrays: a tensor from the embedding would carry its mask along
    embedded, mask = to_numpy(embedding(TOKENS)), to_numpy(embedding.compute_mask(TOKENS))
    assert not mask.all()
    layer = cls(6, weight_dropout=rate, seed=4, return_sequences=True, return_state=True)
    reference = keras_cls(6, return_sequences=True, return_state=True)
    layer.build(embedded.shape)
    reference.build(embedded.shape)
    reference.set_weights(layer.get_weights())

    def through(rnn):  # the mask as a model passes it on
        inputs = keras.Input((None,), dtype="int32")
        return keras.Model(inputs, rnn(embedding(inputs)))

    outputs = [to_numpy(t) for t in through(layer)(TOKENS, training=training)]
    expected = [to_numpy(t) for t in through(reference)(TOKENS, training=training)]
    explicit = [to_numpy(t) for t in layer(embedded, mask=mask, training=training)]
    for out, ref, direct in zip(outputs, expected, explicit, strict=True):
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)
        np.testing.assert_allclose(direct, ref, rtol=0, atol=1e-6)
    if cls is WeightDropLSTM:  # and the NumPy recurrence with the mask
        kernel, recurrent_kernel, bias = weights_of(layer)
        seq, h, c = numpy_lstm(embedded, kernel, recurrent_kernel, bias, mask=mask)
        for out, ref in zip(outputs, (seq, h, c)):
            np.testing.assert_allclose(out, ref, atol=2e-5)
    # the mask matters: unmasked, the padded steps would move the state
    unmasked = to_numpy(layer(embedded, training=training)[0])
    assert np.abs(unmasked - outputs[0]).max() > 1e-3


@pytest.mark.parametrize("rate", [0.5, 0.0], ids=["weight-drop", "no-weight-drop"])
@pytest.mark.parametrize("cls", [WeightDropLSTM, WeightDropGRU])
def test_input_dropout_applies_in_training_with_the_dropped_kernel(cls, rate):
    """Keras's own `dropout` (one input mask per sequence, drawn by the cell)
    acts in training together with the weight mask: the output is the
    recurrence fed x ⊙ m / (1 - p) with U' ⊙ M / (1 - w)."""
    p = 0.3
    layer = cls(7, weight_dropout=rate, dropout=p, seed=2, return_sequences=True)
    layer.build(X.shape)
    cell_state = to_numpy(layer.cell.seed_generator.state).copy()
    out, dropped = run_and_recover_mask(layer, X)
    out = to_numpy(out)
    kernel, raw, bias = weights_of(layer)
    if rate == 0.0:
        np.testing.assert_array_equal(dropped, raw)
    else:
        assert 0.3 < np.mean(dropped == 0) < 0.7
    # the input mask the call drew: the cell's generator from its state before
    after = to_numpy(layer.cell.seed_generator.state).copy()
    layer.cell.seed_generator.state.assign(cell_state)
    layer.cell.reset_dropout_mask()
    input_mask = to_numpy(layer.cell.get_dropout_mask(keras.ops.convert_to_tensor(X[:, 0])))
    layer.cell.reset_dropout_mask()
    layer.cell.seed_generator.state.assign(after)
    assert input_mask.shape == (X.shape[0], X.shape[2])
    np.testing.assert_allclose(np.unique(input_mask), [0.0, 1 / (1 - p)], rtol=1e-6)
    reference = numpy_lstm if cls is WeightDropLSTM else numpy_gru
    recurrence = lambda x: reference(x, kernel, dropped, bias)  # noqa: E731
    expected = recurrence(X * input_mask[:, None, :])
    expected = expected[0] if cls is WeightDropLSTM else expected
    np.testing.assert_allclose(out, expected, atol=2e-5)
    # and not the same weights without the input dropout
    undropped = recurrence(X)
    undropped = undropped[0] if cls is WeightDropLSTM else undropped
    assert np.abs(out - undropped).max() > 1e-3
