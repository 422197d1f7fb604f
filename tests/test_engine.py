"""The LSTM engine's path rules (`keras_rnnreg/_lstm/paths.py`) and their table."""

import pathlib

import keras
import numpy as np
import pytest

from keras_rnnreg._lstm import jax_core, loop, paths, tf_core, torch_core
from keras_rnnreg.layers import NoisinGRU, NoisinLSTM, WeightDropGRU, WeightDropLSTM

ROOT = pathlib.Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()
X = np.random.default_rng(0).normal(size=(3, 5, 4)).astype("float32")
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 1, 0]], bool)


@pytest.mark.parametrize("page", ["docs/gpu.md", "README.md"])
def test_the_pages_show_the_engines_table(page):
    text = (ROOT / page).read_text()
    start = text.index("<!-- engine-paths")
    block = text[text.index("\n", start) + 1: text.index("<!-- /engine-paths -->")]
    assert block == paths.paths_markdown() + "\n\n" + paths.COMMON + "\n"


@pytest.fixture
def taken(monkeypatch):
    """The names of the paths each call runs (CPU: the JAX GPU paths only
    through `on_gpu`, which this suite leaves False)."""
    ran = []

    def record(module, name, label):
        original = getattr(module, name)

        def spy(*args, **kwargs):
            ran.append(label)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)

    record(torch_core, "native_lstm", "torch kernel")
    record(torch_core, "native_gru", "torch kernel")
    record(torch_core, "noisy_lstm", "torch noise loop")
    record(paths, "time_major_loop", "own loop")
    record(paths, "_keras_fused", "keras fused")
    record(paths, "cell_loop", "generic")
    return ran


OWN = {"torch": "torch kernel", "jax": "own loop", "tensorflow": "own loop"}
NOISY = {"torch": "torch noise loop", "jax": "own loop", "tensorflow": "own loop"}


def _run(layer, **call):
    layer(X, training=True, **call)


@pytest.mark.parametrize(
    "make, call, expected",
    [
        (lambda: WeightDropLSTM(4, weight_dropout=0.5), {}, OWN),
        (lambda: NoisinLSTM(4, weight_dropout=0.5), {}, NOISY),
        (lambda: NoisinLSTM(4, dtype="mixed_bfloat16"), {}, "generic"),
        (lambda: WeightDropLSTM(4, recurrent_dropout=0.2), {}, "generic"),
        (lambda: WeightDropLSTM(4, unroll=True), {}, "generic"),
        (lambda: WeightDropLSTM(4, use_cudnn=False), {}, "generic"),
        (lambda: WeightDropLSTM(4, activation="relu"), {}, "generic"),
        (lambda: WeightDropLSTM(4, dropout=0.3, implementation=1), {}, "generic"),
        (lambda: NoisinGRU(4, weight_dropout=0.5), {}, "generic"),
    ],
    ids=["weight-drop", "noisin-weight-drop", "noisin-16-bit", "recurrent-dropout", "unroll",
         "no-cudnn", "relu", "per-gate-dropout", "noisin-gru"],
)
def test_the_path_each_configuration_takes(taken, make, call, expected):
    _run(make(), **call)
    want = expected if isinstance(expected, str) else expected[BACKEND]
    assert taken == [want]


def test_a_mask_takes_the_own_loop_on_jax_and_tensorflow_and_the_generic_loop_on_torch(taken):
    _run(WeightDropLSTM(4, weight_dropout=0.5), mask=MASK)
    _run(NoisinLSTM(4), mask=MASK)
    if BACKEND == "torch":  # Keras's torch LSTM declines masks
        assert taken == ["keras fused", "generic", "generic"]
    else:
        assert taken == ["own loop", "own loop"]


def test_weight_drop_gru_takes_the_torch_kernel_or_keras_fused(taken):
    _run(WeightDropGRU(4, weight_dropout=0.5))
    _run(WeightDropGRU(4, reset_after=False))
    if BACKEND == "torch":
        assert taken == ["torch kernel", "keras fused", "generic"]
    elif BACKEND == "jax":  # Keras's JAX GRU is a scan on every device
        assert taken == ["keras fused", "keras fused", "generic"]
    else:  # TensorFlow's cuDNN GRU declines off GPUs
        assert taken == ["keras fused", "generic", "keras fused", "generic"]


def test_use_cudnn_true_without_a_fast_path_raises_as_keras_does():
    with pytest.raises(ValueError, match="use_cudnn=True"):
        _run(WeightDropLSTM(4, use_cudnn=True, recurrent_dropout=0.2))


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's GPU rules; run in the jax pass")
def test_on_jax_gpus_the_lstm_leaves_the_scan_for_cudnn_but_noise_stays(taken, monkeypatch):
    monkeypatch.setattr(jax_core, "on_gpu", lambda: True)
    _run(WeightDropLSTM(4))  # Keras's cuDNN call (it declines on this CPU)
    _run(NoisinLSTM(4))
    assert taken == ["keras fused", "generic", "own loop"]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's GPU rule")
def test_on_tensorflow_gpus_the_lstm_leaves_the_loop_for_cudnn_but_noise_stays(
    taken, monkeypatch
):
    tf_core.has_gpu.cache_clear()
    monkeypatch.setattr(tf_core, "has_gpu", lambda: True)
    _run(WeightDropLSTM(4))
    _run(NoisinLSTM(4))
    assert taken[0] == "keras fused" and taken[-1] == "own loop"


def test_the_generic_loop_is_kerass_loop_with_the_given_kernel():
    # Path 8 with U' equals Keras's cell loop on a layer whose U is U'.
    layer = WeightDropLSTM(4, use_cudnn=False, return_sequences=True)
    layer.build(X.shape)
    dropped = keras.ops.convert_to_numpy(layer.dropped_recurrent_kernel())
    got = loop.cell_loop(layer, keras.ops.convert_to_tensor(X), layer.get_initial_state(3),
                         None, False, recurrent_kernel=dropped)[1]
    keras_lstm = keras.layers.LSTM(4, use_cudnn=False, return_sequences=True)
    keras_lstm.build(X.shape)
    kernel, _, bias = layer.get_weights()
    keras_lstm.set_weights([kernel, dropped, bias])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got),
                               keras.ops.convert_to_numpy(keras_lstm(X)), rtol=1e-5, atol=1e-6)
