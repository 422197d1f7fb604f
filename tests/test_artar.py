import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.layers import ARTARRegularizer

RNG = np.random.default_rng(0)
H = RNG.normal(size=(4, 7, 5)).astype("float32")
DROPPED = (H * (RNG.random((4, 1, 5)) > 0.4) / 0.6).astype("float32")


def reference_penalty(h, dropped_h, alpha, beta, lengths=None):
    """alpha * mean(dropped_h^2) + beta * mean((h_t+1 - h_t)^2) over valid steps."""
    if lengths is None:
        lengths = [h.shape[1]] * h.shape[0]
    ar = np.concatenate([dropped_h[b, :n] for b, n in enumerate(lengths)])
    tar = np.concatenate([np.diff(h[b, :n], axis=0) for b, n in enumerate(lengths)])
    return alpha * np.mean(ar ** 2) + beta * np.mean(tar ** 2)


def added_losses(layer, inputs, **kwargs):
    out = layer(inputs, **kwargs)
    return out, [float(to_numpy(loss)) for loss in layer.losses]


def test_added_loss_equals_formula_on_pair():
    layer = ARTARRegularizer(alpha=2.0, beta=1.0)
    out, losses = added_losses(layer, [H, DROPPED], training=True)
    np.testing.assert_array_equal(to_numpy(out), DROPPED)  # returns the last tensor
    assert len(losses) == 1
    np.testing.assert_allclose(losses[0], reference_penalty(H, DROPPED, 2.0, 1.0), rtol=1e-5)


def test_single_tensor_feeds_both_terms():
    layer = ARTARRegularizer(alpha=0.5, beta=3.0)
    out, losses = added_losses(layer, H, training=True)
    np.testing.assert_array_equal(to_numpy(out), H)
    np.testing.assert_allclose(losses[0], reference_penalty(H, H, 0.5, 3.0), rtol=1e-5)


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.0, 1.0)])
def test_each_term_alone(alpha, beta):
    _, losses = added_losses(ARTARRegularizer(alpha, beta), [H, DROPPED], training=True)
    np.testing.assert_allclose(
        losses[0], reference_penalty(H, DROPPED, alpha, beta), rtol=1e-5
    )


def test_nothing_added_at_inference():
    layer = ARTARRegularizer(alpha=2.0, beta=1.0)
    out, losses = added_losses(layer, [H, DROPPED], training=False)
    assert losses == []
    np.testing.assert_array_equal(to_numpy(out), DROPPED)


def test_masked_steps_are_excluded():
    lengths = [7, 3, 5, 1]
    mask = np.arange(7)[None] < np.array(lengths)[:, None]
    garbage_h, garbage_dropped = H.copy(), DROPPED.copy()
    garbage_h[~mask] = 1e3  # padded steps must not count
    garbage_dropped[~mask] = -1e3
    layer = ARTARRegularizer(alpha=2.0, beta=1.0)
    _, losses = added_losses(layer, [garbage_h, garbage_dropped], training=True, mask=[mask, mask])
    np.testing.assert_allclose(
        losses[0], reference_penalty(H, DROPPED, 2.0, 1.0, lengths), rtol=1e-5
    )


def test_fit_adds_penalty_evaluate_does_not():
    inputs = keras.Input((7, 5))
    h = keras.layers.Dense(5, name="hidden")(inputs)
    h = ARTARRegularizer(alpha=3.0, beta=2.0)(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(h))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    y = np.zeros((4, 7, 1), "float32")
    plain = model.evaluate(H, y, verbose=0)
    hidden = keras.Model(inputs, model.get_layer("hidden").output)
    penalty = reference_penalty(*(2 * [to_numpy(hidden(H))]), 3.0, 2.0)
    model.reset_metrics()  # Keras < 3.15 keeps evaluate's loss in the mean
    trained = model.train_on_batch(H, y)  # loss of the forward pass, lr = 0
    np.testing.assert_allclose(trained, plain + penalty, rtol=1e-5)
    expected_plain = np.mean(to_numpy(model(H)) ** 2)
    np.testing.assert_allclose(plain, expected_plain, rtol=1e-5)


def test_keras_mask_from_embedding_reaches_the_penalty():
    tokens = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(10, 3, mask_zero=True)(tokens)
    h = keras.layers.LSTM(3, return_sequences=True)(h)
    h = ARTARRegularizer(alpha=1.0, beta=1.0)(h)
    model = keras.Model(tokens, h)
    model.compile("sgd", "mse")
    short = np.array([[1, 2, 3]])
    padded = np.array([[1, 2, 3, 0, 0]])
    model.compile(keras.optimizers.SGD(0.0), loss=lambda y, p: 0.0 * keras.ops.mean(p))
    loss_short = model.train_on_batch(short, np.zeros((1, 3, 3)))
    loss_padded = model.train_on_batch(padded, np.zeros((1, 5, 3)))
    np.testing.assert_allclose(loss_padded, loss_short, rtol=1e-5)
    assert loss_short > 0


@pytest.mark.parametrize("argument", ["alpha", "beta"])
def test_negative_coefficient_is_rejected(argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*>= 0.*-1"):
        ARTARRegularizer(**{argument: -1.0})


def test_non_3d_input_and_wrong_arity_are_rejected():
    with pytest.raises(ValueError, match="3D"):
        ARTARRegularizer(1.0, 1.0)(np.ones((3, 4), "float32"), training=True)
    with pytest.raises(ValueError, match="pair"):
        ARTARRegularizer(1.0)([H, H, H], training=True)


def test_config_round_trip():
    layer = ARTARRegularizer(alpha=2.0, beta=1.0, name="artar")
    clone = ARTARRegularizer.from_config(layer.get_config())
    assert (clone.alpha, clone.beta, clone.name) == (2.0, 1.0, "artar")


def _terms_model(alpha, beta, layers=1):
    inputs = keras.Input((7, 5))
    x = inputs
    for _ in range(layers):
        x = ARTARRegularizer(alpha=alpha, beta=beta)(x)  # reads the input itself
    outputs = keras.layers.Dense(2)(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def test_the_epoch_logs_hold_the_mean_ar_and_tar_terms_of_training_steps():
    from keras_rnnreg.callbacks import LogRegularizers

    keras.utils.set_random_seed(0)
    x = RNG.normal(size=(12, 7, 5)).astype("float32")
    y = np.zeros((12, 7, 2), "float32")
    model = _terms_model(2.0, 1.5)
    history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
                        validation_data=(5 * x[:4], y[:4]),  # would change the means if counted
                        callbacks=[LogRegularizers()])
    batches = [x[i:i + 4] for i in range(0, 12, 4)]
    ar = np.mean([2.0 * np.mean(b ** 2) for b in batches])
    tar = np.mean([1.5 * np.mean(np.diff(b, axis=1) ** 2) for b in batches])
    # Each epoch's means, from sums reset at the epoch's start.
    np.testing.assert_allclose(history.history["ar_loss"], [ar, ar], rtol=1e-5)
    np.testing.assert_allclose(history.history["tar_loss"], [tar, tar], rtol=1e-5)
    assert history.history["loss"][0] > ar + tar  # the loss holds them and the MSE


def test_several_regularizers_log_under_their_names_and_terms_survive_saving(tmp_path):
    from keras_rnnreg.callbacks import LogRegularizers

    x = RNG.normal(size=(4, 7, 5)).astype("float32")
    model = _terms_model(1.0, 0.0, layers=2)
    logs = model.fit(x, np.zeros((4, 7, 2)), verbose=0, callbacks=[LogRegularizers()]).history
    names = [layer.name for layer in model.layers if isinstance(layer, ARTARRegularizer)]
    expected = np.mean(x ** 2)
    for name in names:
        np.testing.assert_allclose(logs[f"{name}_ar_loss"], [expected], rtol=1e-5)
        assert logs[f"{name}_tar_loss"] == [0.0]
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = [l for l in loaded.layers if isinstance(l, ARTARRegularizer)][0]
    assert layer.terms()["ar_loss"] == pytest.approx(expected, rel=1e-5)
    layer.reset_terms()
    assert layer.terms() == {"ar_loss": 0.0, "tar_loss": 0.0}


def test_a_one_step_batch_has_no_tar_term_with_or_without_a_mask():
    # variable-length BPTT can cut a one-step last batch: TAR has no pair
    layer = ARTARRegularizer(alpha=2.0, beta=1.0)
    one = H[:, :1]
    expected = 2.0 * np.mean(DROPPED[:, :1] ** 2)
    _, losses = added_losses(layer, [one, DROPPED[:, :1]], training=True)
    np.testing.assert_allclose(losses, [expected], rtol=1e-5)
    _, masked = added_losses(layer, [one, DROPPED[:, :1]], training=True,
                             mask=np.ones((4, 1), bool))
    np.testing.assert_allclose(masked, [expected], rtol=1e-5)
