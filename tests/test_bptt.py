import copy
import os

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_rnnreg.layers import WeightDropLSTM
from keras_rnnreg.callbacks import BPTTCallback
import keras_rnnreg.callbacks
import keras_rnnreg.data
from keras_rnnreg.data import (
    BPTTSequence,
    batchify,
    draw_epoch_bounds,
    draw_lengths,
    load_ptb,
    most_frequent_batch_count,
    reset_rnn_states,
)

BACKEND = keras.backend.backend()
PTB = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ptb")


def backend_batches(sequence):
    """One epoch of `(inputs, targets)` as the backend's trainer receives them."""
    if BACKEND == "tensorflow":
        batches = sequence.get_tf_dataset()
    elif BACKEND == "jax":
        batches = sequence.get_jax_iterator()
    else:
        batches = sequence.get_torch_dataloader()
    return [(to_numpy(x), to_numpy(y)) for x, y in batches]


def lstm_lm(batch_size, vocab=11, units=6, stateful=True, layer=WeightDropLSTM):
    # Keras 3.15's own stateful LSTM drops its state between JAX fit batches
    # and breaks torch's backward pass with the fused kernel; WeightDropLSTM
    # (here without a mask) carries it on every backend.
    tokens = keras.Input((None,), batch_size=batch_size, dtype="int32")
    h = keras.layers.Embedding(vocab, 4)(tokens)
    kwargs = {"weight_dropout": 0.0} if layer is WeightDropLSTM else {"use_cudnn": False}
    h = layer(units, return_sequences=True, stateful=stateful, **kwargs)(h)
    return keras.Model(tokens, keras.layers.Dense(vocab)(h))


def bigram_lm(vocab=11, frozen_embedding=False):
    """No recurrence: cheap to compile once per length on JAX.

    A frozen embedding with unit-scale rows gives dense gradients of order
    one (an embedding's gradient is sparse, and on TF its global norm is
    taken over duplicated rows, not the dense gradient).
    """
    tokens = keras.Input((None,), dtype="int32")
    if frozen_embedding:
        embedding = keras.layers.Embedding(
            vocab, 4, embeddings_initializer=keras.initializers.RandomNormal(1.0), trainable=False
        )
    else:
        embedding = keras.layers.Embedding(vocab, 4)
    return keras.Model(tokens, keras.layers.Dense(vocab)(embedding(tokens)))


def seq_len(y_true, y_pred):
    """Per-example time length of the batch: a metric that reports it."""
    length = keras.ops.cast(keras.ops.shape(y_true)[1], "float32")
    return length * keras.ops.ones_like(keras.ops.cast(y_true[:, 0], "float32"))


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# ------------------------------------------------------------------ batchify
def test_batchify_cuts_contiguous_rows_and_drops_the_remainder():
    rows = batchify(np.arange(23), 4)
    assert rows.shape == (4, 5) and rows.dtype == np.int32
    np.testing.assert_array_equal(rows, np.arange(20).reshape(4, 5))
    np.testing.assert_array_equal(batchify([7, 8, 9], 1), [[7, 8, 9]])


# ------------------------------------------------------- lengths and visits
def test_every_token_is_visited_once_per_epoch_in_order():
    tokens = np.random.default_rng(0).integers(0, 1000, size=3 * 601 + 2)
    sequence = BPTTSequence(tokens, batch_size=3, bptt=12, s=4.0, seed=3)
    rows = sequence.rows
    assert rows.shape == (3, 601)
    epochs = []
    for _ in range(3):
        batches = backend_batches(sequence)
        assert len(batches) == sequence.num_batches == len(sequence)
        lengths = [x.shape[1] for x, _ in batches]
        np.testing.assert_array_equal(lengths, sequence.lengths)
        for (x, y), (x_item, y_item) in zip(batches, sequence):
            np.testing.assert_array_equal(x, x_item)
            np.testing.assert_array_equal(y, y_item)
        # the pieces, put back together, are each row once: inputs without
        # the last token, targets (the next tokens) without the first
        np.testing.assert_array_equal(np.concatenate([x for x, _ in batches], 1), rows[:, :-1])
        np.testing.assert_array_equal(np.concatenate([y for _, y in batches], 1), rows[:, 1:])
        epochs.append(sequence.lengths)
        sequence.on_epoch_end()  # what Keras calls after each epoch
    assert len({tuple(lengths) for lengths in epochs}) == 3  # redrawn each epoch
    # the same seed gives the same epochs
    again = BPTTSequence(tokens, batch_size=3, bptt=12, s=4.0, seed=3)
    np.testing.assert_array_equal(again.lengths, epochs[0])


@pytest.mark.parametrize(
    "kwargs", [{"pad_to_multiple": 8, "padding_id": 0}, {"token_weights": True},
               {"pad_to_multiple": 5, "token_weights": True, "variable_length": False}]
)
def test_trainer_batches_are_the_sequence_items_padded_weighted_and_resumed(kwargs):
    """What each backend's trainer is handed (on torch: tensors sliced on
    Keras's device, not NumPy batches) is `sequence[i]`, element for element
    and dtype for dtype, also in a resumed epoch."""
    tokens = np.random.default_rng(4).integers(1, 500, size=3 * 203 + 1)
    sequence = BPTTSequence(tokens, batch_size=3, bptt=12, seed=5, **kwargs)
    for resume in (None, 4):
        if resume is not None:
            sequence.resume_at(1, resume)
        expected = [sequence[i] for i in range(sequence.num_batches)]
        if BACKEND == "tensorflow":
            served = list(sequence.get_tf_dataset())
        elif BACKEND == "jax":
            served = list(sequence.get_jax_iterator())
        else:
            served = list(sequence.get_torch_dataloader())
            device = keras.ops.convert_to_tensor(0).device
            for batch in served:
                assert all(type(part).__name__ == "Tensor" and part.device == device
                           for part in batch)
        assert len(served) == len(expected) == sequence.num_batches
        for batch, item in zip(served, expected, strict=True):
            assert len(batch) == len(item) == (3 if sequence.token_weights else 2)
            for part, reference in zip(batch, item):
                part = to_numpy(part)
                assert part.dtype == reference.dtype
                np.testing.assert_array_equal(part, reference)
        if sequence.pad_to_multiple:
            assert {x.shape[1] % sequence.pad_to_multiple for x, *_ in expected} == {0}
            assert any((y == -1).any() for _, y, *_ in expected)


def test_length_distribution_mean_and_spread():
    bptt, p, s = 70, 0.95, 5.0
    sequence = BPTTSequence(np.zeros(200_001, "int32"), 1, bptt, p=p, s=s, seed=0)
    lengths = []
    for _ in range(3):
        lengths.append(sequence.lengths[:-1])  # the last one is cut at the end
        sequence.on_epoch_end()
    lengths = np.concatenate(lengths)
    n = lengths.size
    assert n > 8000 and lengths.min() >= 5
    # base = bptt w.p. p, else bptt / 2; then N(base, s), rounded
    mean = p * bptt + (1 - p) * bptt / 2
    std = np.sqrt(s**2 + 1 / 12 + p * (1 - p) * (bptt / 2) ** 2)
    assert abs(lengths.mean() - mean) < 4 * std / np.sqrt(n)
    assert abs(lengths.std() - std) < 0.05 * std
    long = lengths[lengths > 0.75 * bptt]
    short = lengths[lengths <= 0.75 * bptt]
    assert abs(short.size / n - (1 - p)) < 4 * np.sqrt(p * (1 - p) / n)
    assert abs(long.mean() - bptt) < 4 * s / np.sqrt(long.size)
    assert abs(long.std() - s) < 0.05 * s
    assert abs(short.mean() - bptt / 2) < 4 * s / np.sqrt(short.size)


def test_floor_ceiling_and_fixed_length_is_variable_without_randomness():
    tokens = np.zeros(2 * 1000, "int32")
    floored = BPTTSequence(tokens, 2, 10, s=20.0, min_length=7, max_length=14, seed=1)
    assert floored.lengths[:-1].min() >= 7 and floored.lengths.max() <= 14
    fixed = BPTTSequence(tokens, 2, 10, variable_length=False)
    np.testing.assert_array_equal(fixed.lengths, [10] * 99 + [9])  # 999 steps
    no_randomness = BPTTSequence(tokens, 2, 10, p=1.0, s=0.0, seed=5)
    np.testing.assert_array_equal(no_randomness.lengths, fixed.lengths)
    fixed.on_epoch_end()
    np.testing.assert_array_equal(fixed.lengths, no_randomness.lengths)
    np.testing.assert_allclose(fixed.learning_rate_scales[[0, -1]], [1.0, 0.9])


# ------------------------------------------- the sampler as pure functions
SAMPLERS = {
    "draw_lengths": lambda rng: draw_lengths(rng, (4, 50), 12, p=0.7, s=3.0),
    "most_frequent_batch_count": lambda rng: most_frequent_batch_count(rng, 600, 12, s=4.0),
    "draw_epoch_bounds": lambda rng: draw_epoch_bounds(rng, 600, 52, 12, s=4.0, max_length=20),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_are_pure_functions_of_their_generator(name):
    sample = SAMPLERS[name]
    rng = np.random.default_rng(7)
    twin = copy.deepcopy(rng)
    np.random.seed(0)
    global_state = np.random.get_state()
    first = sample(rng)
    # NumPy's global generator is neither read nor advanced ...
    after = np.random.get_state()
    np.testing.assert_array_equal(after[1], global_state[1])
    assert after[2:] == global_state[2:]
    # ... and does not matter: the same generator state gives the same output,
    # and leaves the generator in the same state
    np.random.seed(99)
    np.testing.assert_array_equal(sample(twin), first)
    assert twin.bit_generator.state == rng.bit_generator.state
    # the generator advanced: a second call draws something new
    if name == "draw_lengths":
        assert not np.array_equal(sample(rng), first)


def test_bounds_are_an_epoch_of_awd_lengths_in_exactly_num_batches():
    rng = np.random.default_rng(3)
    count = most_frequent_batch_count(rng, 600, 12, s=4.0, min_length=2)
    for _ in range(20):
        bounds = draw_epoch_bounds(rng, 600, count, 12, s=4.0, min_length=2)
        assert bounds[0] == 0 and bounds[-1] == 600 and len(bounds) == count + 1
        lengths = np.diff(bounds)
        assert lengths.min() >= 1 and lengths[:-1].min() >= 2  # only the last is cut
    ceiling = draw_lengths(rng, 10_000, 10, s=20.0, min_length=7, max_length=14)
    assert ceiling.dtype == np.int64 and ceiling.min() == 7 and ceiling.max() == 14


def test_sequence_lengths_come_from_the_samplers_and_its_own_generator():
    tokens = np.zeros(3 * 601 + 2, "int32")
    sequence = BPTTSequence(tokens, 3, 12, s=4.0, seed=3)
    # the count from a generator apart from the epochs' one (seeded [seed, 1])
    count = most_frequent_batch_count(np.random.default_rng([3, 1]), 600, 12, s=4.0)
    assert sequence.num_batches == count
    for epoch in range(3):
        # epoch e's lengths from its own generator, seeded [seed, 2, e]
        expected = draw_epoch_bounds(np.random.default_rng([3, 2, epoch]), 600, count, 12, s=4.0)
        np.testing.assert_array_equal(sequence.lengths, np.diff(expected))
        sequence.on_epoch_end()
    sequence.set_epoch(1)  # what BPTTCallback does in a fit resumed at epoch 1
    expected = draw_epoch_bounds(np.random.default_rng([3, 2, 1]), 600, count, 12, s=4.0)
    np.testing.assert_array_equal(sequence.lengths, np.diff(expected))
    assert sequence.epoch == 1


@pytest.mark.parametrize("variable_length", [True, False])
def test_resume_at_serves_the_rest_of_the_epoch_batch_for_batch(variable_length):
    tokens = np.arange(4 * 301 + 3) % 97
    whole = BPTTSequence(tokens, 4, 12, variable_length=variable_length, seed=7)
    whole.set_epoch(2)
    batches, scales = [whole[i] for i in range(whole.num_batches)], whole.learning_rate_scales
    resumed = BPTTSequence(tokens, 4, 12, variable_length=variable_length, seed=7)
    resumed.resume_at(2, 5)
    assert resumed.num_batches == whole.num_batches - 5
    np.testing.assert_array_equal(resumed.learning_rate_scales, scales[5:])
    # Keras's fit moves an adapter one epoch on when it starts, BPTTCallback
    # sets the epoch back: the resumed epoch is still served from batch 5.
    resumed.on_epoch_end()
    assert resumed.num_batches == whole.num_batches  # epoch 3, whole
    resumed.set_epoch(2)
    for served, expected in zip(list(resumed), batches[5:], strict=True):
        for a, b in zip(served, expected):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed[0][0], batches[5][0])
    resumed.on_epoch_end()
    whole.on_epoch_end()
    np.testing.assert_array_equal(resumed.lengths, whole.lengths)  # later epochs whole
    with pytest.raises(ValueError, match=r"`batch` must be in \[0, \d+\).*batch=99"):
        resumed.resume_at(0, 99)


@pytest.mark.parametrize(
    "call, error, fragment",
    [
        (lambda: draw_lengths(3, 5, 10), TypeError, "`rng` must be a numpy.random.Generator"),
        (lambda: draw_lengths(np.random.RandomState(0), 5, 10), TypeError, "RandomState"),
        (lambda: draw_lengths(np.random.default_rng(), -1, 10), ValueError, "size=-1"),
        (lambda: draw_lengths(np.random.default_rng(), 5, 10, min_length=11), ValueError,
         "`min_length` must be <= bptt=10"),
        (lambda: most_frequent_batch_count(np.random.default_rng(), 0, 10), ValueError,
         "`steps` must be an int >= 1. Received: steps=0"),
        (lambda: most_frequent_batch_count(np.random.default_rng(), 9, 10, epochs=0),
         ValueError, "epochs=0"),
        (lambda: draw_epoch_bounds(np.random.default_rng(), 100, 21, 10), ValueError,
         "`num_batches` must be in [1, 20]"),
        (lambda: draw_epoch_bounds(np.random.default_rng(), 100, 4, 10, max_length=20),
         ValueError, "`num_batches` must be in [5, 20]"),
        (lambda: draw_epoch_bounds(np.random.default_rng(), 100, 0, 10), ValueError,
         "num_batches=0"),
    ],
)
def test_bad_sampler_arguments_name_the_argument_value_and_what_is_allowed(call, error, fragment):
    with pytest.raises(error) as info:
        call()
    assert fragment in str(info.value)


def test_tokens_are_validated_once(monkeypatch):
    import keras_rnnreg.data.bptt as bptt_module

    calls = []
    validate = bptt_module._token_array

    def counting(tokens):
        calls.append(1)
        return validate(tokens)

    monkeypatch.setattr(bptt_module, "_token_array", counting)
    BPTTSequence(np.arange(100), 4, 10)
    assert len(calls) == 1
    batchify(np.arange(10), 3)
    assert len(calls) == 2


# -------------------------------------------------------- learning rate
@pytest.mark.parametrize("wrapped", [False, True], ids=["sgd", "loss_scale"])
def test_learning_rate_scaled_per_batch_with_clipping_on_the_unscaled_gradient(
    wrapped,
):
    lr, clip, bptt = 0.5, 1e-3, 4
    tokens = np.random.default_rng(1).integers(0, 11, size=2 * 41)
    sequence = BPTTSequence(tokens, 2, bptt, p=0.5, s=1.0, min_length=1, seed=2)
    model = bigram_lm(frozen_embedding=True)
    optimizer = keras.optimizers.SGD(lr, global_clipnorm=clip)
    if wrapped:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer, LOSS, metrics=[seq_len])

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.lengths.append(sequence.lengths)

        def on_train_batch_begin(self, batch, logs=None):
            model = self.model
            self.rates.append(float(to_numpy(model.optimizer.learning_rate)))
            self.before = np.concatenate([to_numpy(w).ravel() for w in model.trainable_weights])

        def on_train_batch_end(self, batch, logs=None):
            after = np.concatenate([to_numpy(w).ravel() for w in self.model.trainable_weights])
            self.steps.append(np.linalg.norm(after - self.before))
            self.mean_lengths.append(float(logs["seq_len"]))

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_end_rates.append(float(to_numpy(self.model.optimizer.learning_rate)))

    record = Record()
    record.lengths, record.rates, record.steps, record.mean_lengths = [], [], [], []
    record.epoch_end_rates = []
    model.fit(sequence, epochs=2, verbose=0, callbacks=[BPTTCallback(sequence), record])

    lengths = np.concatenate(record.lengths)
    assert len(set(lengths.tolist())) >= 3
    scales = lengths / bptt
    np.testing.assert_allclose(record.rates, lr * scales, rtol=1e-6)
    # SGD with global clipping: step = lr * (L / bptt) * clip(g), |clip(g)| = clip.
    # Scaling the loss instead would leave |step| = lr * clip for every batch.
    np.testing.assert_allclose(record.steps, lr * scales * clip, rtol=1e-3)
    # the batch the model trained on had the length the rate was scaled for
    k = np.arange(1, sequence.num_batches + 1)
    for epoch in range(2):
        means = np.array(record.mean_lengths[epoch * k.size : (epoch + 1) * k.size])
        trained = k * means - (k - 1) * np.concatenate([[0.0], means[:-1]])
        np.testing.assert_allclose(trained, record.lengths[epoch], atol=1e-3)
    # other callbacks see the unscaled rate between epochs, and it is restored
    assert record.epoch_end_rates == [lr, lr]
    assert float(to_numpy(model.optimizer.learning_rate)) == lr


def test_rate_restored_after_the_last_step_with_batch_end_callbacks_off_the_loop():
    """BPTTCallback (and NTASGD without `interval`) have no batch-end work, so
    Keras keeps running batch-end callbacks in its background thread on
    torch and JAX (TensorFlow never does); the unscaled rate is back before
    validation and every `on_epoch_end`, even those of callbacks listed first."""
    from keras_rnnreg.callbacks import NTASGD
    from keras_rnnreg.optimizers import ASGD

    lr = 0.5
    tokens = np.random.default_rng(1).integers(0, 11, size=2 * 41)
    sequence = BPTTSequence(tokens, 2, 4, p=0.5, s=1.0, min_length=1, seed=2)
    valid = BPTTSequence(tokens, 2, 4, variable_length=False)
    model = bigram_lm()
    model.compile(ASGD(lr), LOSS)

    def rate(model):  # `self.model` in a callback: on JAX, it syncs the state first
        return float(to_numpy(model.optimizer.learning_rate))

    class Record(keras.callbacks.Callback):  # listed first; no batch-end hook
        def on_train_batch_begin(self, batch, logs=None):
            self.rates.append(rate(self.model))  # the rate set for the batch before

        def on_test_begin(self, logs=None):
            self.test_rates.append(rate(self.model))

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_end_rates.append(rate(self.model))

    record = Record()
    record.rates, record.test_rates, record.epoch_end_rates = [], [], []
    assert not NTASGD(interval=3, validation_data=valid).async_safe
    callbacks = keras.callbacks.CallbackList(
        [record, BPTTCallback(sequence), NTASGD()], add_history=True, model=model
    )
    # Keras's own switch (keras/src/callbacks/callback_list.py).
    assert callbacks._async_train == (BACKEND != "tensorflow")
    model.fit(sequence, validation_data=valid, epochs=2, verbose=0, callbacks=callbacks)
    assert len(set(record.rates)) >= 3  # scaled within the epochs
    assert record.test_rates == record.epoch_end_rates == [lr, lr]
    assert rate(model) == lr


def _rate(model):
    return float(to_numpy(model.optimizer.learning_rate))


def _trained_lengths(mean_lengths):
    """Each batch's length from the running means of `seq_len` Keras logs."""
    means = np.asarray(mean_lengths)
    k = np.arange(1, means.size + 1)
    return k * means - (k - 1) * np.concatenate([[0.0], means[:-1]])


def test_resumed_fit_trains_on_the_lengths_of_its_own_epoch():
    """fit(initial_epoch=2), as a resumed run calls it, trains epoch 2 on the
    lengths the uninterrupted run drew for epoch 2, not on a fresh
    sequence's epoch 0, and scales the rate by them."""
    lr, bptt = 0.5, 4
    tokens = np.random.default_rng(6).integers(0, 11, size=2 * 41)
    kwargs = {"batch_size": 2, "bptt": bptt, "p": 1.0, "s": 0.7, "min_length": 1, "seed": 3}
    reference = BPTTSequence(tokens, **kwargs)
    epoch_0 = reference.lengths
    reference.set_epoch(2)
    epoch_2 = reference.lengths
    assert epoch_2.size == epoch_0.size and not np.array_equal(epoch_2, epoch_0)

    sequence = BPTTSequence(tokens, **kwargs)
    model = bigram_lm()
    model.compile(keras.optimizers.SGD(lr), LOSS, metrics=[seq_len])

    class Record(keras.callbacks.Callback):
        rates, means = [], []

        def on_train_batch_begin(self, batch, logs=None):
            self.rates.append(_rate(self.model))

        def on_train_batch_end(self, batch, logs=None):
            self.means.append(float(logs["seq_len"]))

    record = Record()
    model.fit(sequence, initial_epoch=2, epochs=3, verbose=0,
              callbacks=[BPTTCallback(sequence), record])
    np.testing.assert_allclose(_trained_lengths(record.means), epoch_2, atol=1e-3)
    np.testing.assert_allclose(record.rates, lr * epoch_2 / bptt, rtol=1e-6)


def test_rate_is_unscaled_after_a_fit_stopped_mid_epoch():
    """A callback stops fit after batch 1 of a multi-batch epoch, whose rate
    was scaled: the optimizer is left with the unscaled base rate (Keras
    3.15 still calls `on_epoch_end` after the stop, then `on_train_end`;
    either puts the base rate back)."""
    lr, bptt = 0.5, 4
    tokens = np.random.default_rng(1).integers(0, 11, size=2 * 41)
    sequence = BPTTSequence(tokens, 2, bptt, p=0.5, s=1.0, min_length=1, seed=2)
    assert sequence.num_batches > 3 and sequence.lengths[1] != bptt
    model = bigram_lm()
    model.compile(keras.optimizers.SGD(lr), LOSS)

    class StopAfterBatchOne(keras.callbacks.Callback):  # listed after BPTTCallback
        rates = []

        def on_train_batch_begin(self, batch, logs=None):
            self.rates.append(_rate(self.model))  # the rate batch `batch` trains with
            if batch == 1:
                self.model.stop_training = True  # Keras stops after this batch

    stop = StopAfterBatchOne()
    model.fit(sequence, epochs=3, verbose=0, callbacks=[BPTTCallback(sequence), stop])
    np.testing.assert_allclose(stop.rates, lr * sequence.lengths[:2] / bptt, rtol=1e-6)
    assert stop.rates[1] != lr  # the last batch trained with a scaled rate
    assert _rate(model) == lr


def test_a_fit_interrupted_mid_epoch_leaves_the_next_fit_its_base_rate():
    """An exception mid-epoch (Ctrl-C, RunCheckpoint's stop) skips
    on_epoch_end and on_train_end, leaving a batch's scaled rate in the
    optimizer; the next fit with the same callback starts from the base rate
    (a notebook that catches the interrupt and fits again)."""
    lr, bptt = 0.5, 4
    tokens = np.random.default_rng(1).integers(0, 11, size=2 * 41)
    sequence = BPTTSequence(tokens, 2, bptt, p=0.5, s=1.0, min_length=1, seed=2)
    assert sequence.lengths[0] != bptt
    model = bigram_lm()
    model.compile(keras.optimizers.SGD(lr), LOSS)
    callback = BPTTCallback(sequence)

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(sequence, epochs=1, verbose=0, callbacks=[callback, Interrupt()])
    assert _rate(model) != lr  # the first batch's scaled rate, left behind
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(callback.base_learning_rate))
    model.fit(sequence, epochs=1, verbose=0, callbacks=[callback, record])
    assert seen == [lr] and _rate(model) == lr


def test_train_end_restores_the_base_rate_of_an_epoch_that_did_not_end():
    """Keras 3.15's fit calls `on_epoch_end` even after `stop_training`; a
    trainer that ends training in the middle of an epoch without it (the
    hooks called directly) still gets the base rate back from `on_train_end`."""
    lr, bptt = 0.5, 4
    tokens = np.random.default_rng(1).integers(0, 11, size=2 * 41)
    sequence = BPTTSequence(tokens, 2, bptt, p=0.5, s=1.0, min_length=1, seed=2)
    model = bigram_lm()
    model.compile(keras.optimizers.SGD(lr), LOSS)
    callback = BPTTCallback(sequence)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    callback.on_train_batch_begin(0)
    callback.on_train_batch_begin(1)
    assert _rate(model) == pytest.approx(lr * sequence.lengths[1] / bptt, rel=1e-6) != lr
    callback.on_train_end()
    assert _rate(model) == lr


# ------------------------------------------------------------ state carry
def test_stateful_lstm_fed_in_pieces_equals_one_pass():
    batch = 3
    tokens = np.random.default_rng(2).integers(0, 11, size=batch * 20)
    sequence = BPTTSequence(tokens, batch, bptt=6, s=2.0, min_length=2, seed=4)
    stateful = lstm_lm(batch)
    whole = lstm_lm(batch, stateful=False)
    whole.set_weights(stateful.get_weights())
    pieces = [to_numpy(stateful(x)) for x, _ in backend_batches(sequence)]
    assert len({piece.shape[1] for piece in pieces}) > 1
    np.testing.assert_allclose(
        np.concatenate(pieces, axis=1), to_numpy(whole(sequence.rows[:, :-1])), atol=1e-5
    )


def _final_state(model, inputs):
    """(h, c) after a stateless pass of the model's LSTM over `inputs`."""
    embedding, lstm = model.layers[1], model.layers[2]
    fresh = keras.layers.LSTM(lstm.units, return_state=True, use_cudnn=False)
    embedded = embedding(inputs)
    fresh.build(embedded.shape)
    fresh.set_weights(lstm.get_weights())
    _, h, c = fresh(embedded)
    return to_numpy(h), to_numpy(c)


def test_fit_carries_state_within_an_epoch_and_resets_it_at_each_start():
    batch = 2
    tokens = np.random.default_rng(3).integers(0, 11, size=batch * 25)
    sequence = BPTTSequence(tokens, batch, bptt=6, p=1.0, s=1.0, min_length=4, seed=5)
    model = lstm_lm(batch)
    model.compile(keras.optimizers.SGD(0.0), LOSS)  # weights stay put
    model.fit(sequence, epochs=2, verbose=0, callbacks=[BPTTCallback(sequence)])
    # two epochs, each from a zero state: the state left is one pass's
    expected = _final_state(model, sequence.rows[:, :-1])
    states = [to_numpy(v) for v in model.layers[2].states]
    np.testing.assert_allclose(states[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(states[1], expected[1], atol=1e-5)


def test_evaluate_starts_from_zero_state_and_carries_it_over_its_batches():
    batch = 2
    tokens = np.random.default_rng(3).integers(0, 11, size=batch * 13)
    valid = BPTTSequence(tokens, batch, 6, variable_length=False)
    model = lstm_lm(batch)
    model.compile(keras.optimizers.SGD(0.0), LOSS)
    callback = BPTTCallback(valid)
    model(valid.rows[:, :5])  # leave some state behind
    first = model.evaluate(valid, verbose=0, callbacks=[callback])
    assert model.evaluate(valid, verbose=0, callbacks=[callback]) == pytest.approx(first)
    reset_rnn_states(model)
    logits = np.concatenate([to_numpy(model(x)) for x, _ in valid], axis=1)
    targets = valid.rows[:, 1:]
    per_batch = [
        float(to_numpy(LOSS(targets[:, a:b], logits[:, a:b])))
        for a, b in zip(np.cumsum([0, *valid.lengths[:-1]]), np.cumsum(valid.lengths))
    ]
    # Keras averages batch losses weighted by batch size (equal here)
    assert first == pytest.approx(np.mean(per_batch), rel=1e-5)


@pytest.mark.skipif(
    BACKEND != "jax", reason="tests a JAX-trainer behaviour; runs in the jax pass"
)
def test_callback_warns_that_jax_does_not_carry_keras_rnn_states():
    # Keras 3.15's JAX trainer passes only `model.non_trainable_variables` from
    # one compiled step to the next; keras.layers.LSTM's states are not there.
    sequence = BPTTSequence(np.arange(40) % 11, 2, 5, variable_length=False)
    model = lstm_lm(2, layer=keras.layers.LSTM)
    model.compile(keras.optimizers.SGD(0.0), LOSS)
    with pytest.warns(UserWarning, match="does not carry the state of stateful RNN"):
        model.fit(sequence, epochs=1, verbose=0, callbacks=[BPTTCallback(sequence)])


def test_token_weights_make_evaluate_report_the_mean_over_tokens():
    tokens = np.random.default_rng(5).integers(0, 11, size=2 * 24)
    model = bigram_lm()
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    plain = BPTTSequence(tokens, 2, 5, variable_length=False)
    weighted = BPTTSequence(tokens, 2, 5, variable_length=False, token_weights=True)
    assert list(plain.lengths) == [5, 5, 5, 5, 3]
    losses = [float(to_numpy(LOSS(y, model(x)))) for x, y in plain]
    lengths = plain.lengths
    assert model.evaluate(plain, verbose=0) == pytest.approx(np.mean(losses), rel=1e-5)
    exact = np.sum(lengths * np.array(losses)) / lengths.sum()
    assert model.evaluate(weighted, verbose=0) == pytest.approx(exact, rel=1e-5)
    assert abs(exact - np.mean(losses)) > 1e-4  # the test can tell them apart


def test_predict_starts_from_zero_state():
    batch = 2
    tokens = np.random.default_rng(7).integers(0, 11, size=batch * 20)
    sequence = BPTTSequence(tokens, batch, 6, variable_length=False)
    model = lstm_lm(batch)
    stateless = lstm_lm(batch, stateful=False)
    stateless.set_weights(model.get_weights())
    inputs = sequence.rows[:, :6]
    expected = to_numpy(stateless(inputs))  # from the zero state
    callback = BPTTCallback(sequence)

    def leave_state_behind():
        model(sequence.rows[:, 10:16])
        assert min(np.abs(to_numpy(s)).max() for s in model.layers[2].states) > 1e-3

    leave_state_behind()
    # without the callback predict starts from the state left behind
    carried = model.predict(inputs, batch_size=batch, verbose=0)
    assert np.abs(carried - expected).max() > 1e-3
    leave_state_behind()
    predicted = model.predict(inputs, batch_size=batch, verbose=0, callbacks=[callback])
    np.testing.assert_allclose(predicted, expected, atol=1e-5)


# ------------------------------------------------------ traces / compiles
def test_one_trace_on_tensorflow_one_compile_per_length_on_jax():
    tokens = np.random.default_rng(4).integers(0, 11, size=2 * 121)
    sequence = BPTTSequence(tokens, 2, bptt=8, s=2.5, min_length=1, seed=7)  # 10 distinct lengths in epoch 0
    model = bigram_lm()
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    traces = []
    train_step = model.train_step

    def counting_train_step(*args, **kwargs):
        traces.append(1)  # runs once per trace (TF, JAX) or per call (torch)
        return train_step(*args, **kwargs)

    model.train_step = counting_train_step
    seen = []

    class Lengths(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(sequence.lengths.tolist())

    model.fit(sequence, epochs=1, verbose=0, callbacks=[BPTTCallback(sequence), Lengths()])
    assert len(set(seen[0])) >= 8
    if BACKEND == "tensorflow":
        assert len(traces) == 1
    elif BACKEND == "jax":
        assert len(traces) == len(set(seen[0]))  # compiled once per length, cached
    else:
        assert len(traces) == sequence.num_batches  # eager


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"bptt": 0}, ValueError, "`bptt` must be an int >= 1. Received: bptt=0"),
        ({"bptt": 3.5}, TypeError, "bptt=3.5"),
        ({"batch_size": 0}, ValueError, "`batch_size` must be an int >= 1. Received: batch_size=0"),
        ({"p": 1.5}, ValueError, "`p` must be a probability in [0, 1]. Received: p=1.5"),
        ({"p": -0.1}, ValueError, "p=-0.1"),
        ({"p": "high"}, TypeError, "p='high'"),
        ({"s": -1.0}, ValueError, "`s` must be >= 0. Received: s=-1.0"),
        ({"s": float("inf")}, ValueError, "`s` must be finite"),
        ({"min_length": 0}, ValueError, "min_length=0"),
        ({"min_length": 11}, ValueError, "`min_length` must be <= bptt=10"),
        ({"max_length": 9}, ValueError, "`max_length` must be None or >= bptt=10"),
        ({"variable_length": 1}, TypeError, "variable_length=1"),
        ({"seed": 1.5}, TypeError, "seed=1.5"),
        ({"token_weights": "yes"}, TypeError, "token_weights='yes'"),
        ({"pad_to_multiple": 0}, ValueError, "`pad_to_multiple` must be an int >= 1"),
        ({"pad_to_multiple": 2.0}, TypeError, "pad_to_multiple=2.0"),
        ({"padding_id": "pad"}, TypeError, "padding_id='pad'"),
        ({"tokens": np.arange(7)}, ValueError, "too short for batch_size=4"),
        ({"tokens": np.zeros((4, 5), "int32")}, ValueError, "1D sequence"),
        ({"tokens": np.ones(40)}, TypeError, "dtype float64"),
        ({"tokens": -np.ones(40, "int64")}, ValueError, "ids from -1 to -1"),
    ],
)
def test_bad_arguments_name_the_argument_value_and_what_is_allowed(kwargs, error, fragment):
    arguments = {"tokens": np.arange(100), "batch_size": 4, "bptt": 10, **kwargs}
    with pytest.raises(error) as info:
        BPTTSequence(**arguments)
    assert fragment in str(info.value)


def test_old_callback_path_warns_and_is_the_same_class():
    with pytest.warns(DeprecationWarning, match="moved to keras_rnnreg.callbacks.BPTTCallback"):
        old = keras_rnnreg.data.BPTTCallback
    assert old is keras_rnnreg.callbacks.BPTTCallback is BPTTCallback
    sequence = BPTTSequence(np.arange(40) % 11, 2, 4, variable_length=False)
    assert old(sequence).sequence is sequence


def test_bad_batchify_and_callback_arguments():
    with pytest.raises(ValueError, match="too short for batch_size=5"):
        batchify(np.arange(4), 5)
    with pytest.raises(TypeError, match="must be a BPTTSequence"):
        BPTTCallback(np.arange(10))
    sequence = BPTTSequence(np.arange(40) % 11, 2, 4, variable_length=False)
    with pytest.raises(TypeError, match="reset_states"):
        BPTTCallback(sequence, reset_states="yes")
    model = bigram_lm()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    model.compile(keras.optimizers.SGD(schedule), LOSS)
    with pytest.raises(TypeError, match="LearningRateSchedule"):
        model.fit(sequence, epochs=1, verbose=0, callbacks=[BPTTCallback(sequence)])
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(
            sequence, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[BPTTCallback(sequence)]
        )


def test_callback_rejects_more_than_one_step_per_execution():
    sequence = BPTTSequence(np.arange(40) % 11, 2, 4, variable_length=False)
    model = bigram_lm()
    model.compile(keras.optimizers.SGD(0.1), LOSS, steps_per_execution=2)
    assert model.steps_per_execution == 2
    callback = BPTTCallback(sequence)
    callback.set_model(model)
    with pytest.raises(ValueError) as info:
        callback.on_train_begin()
    message = str(info.value)
    assert "steps_per_execution=1" in message and "Received: steps_per_execution=2" in message
    if BACKEND == "torch":
        return  # Keras's torch trainer itself refuses steps_per_execution > 1 in fit
    before = [to_numpy(w) for w in model.weights]
    with pytest.raises(ValueError, match="BPTTCallback sets one learning rate per train step"):
        model.fit(sequence, epochs=1, verbose=0, callbacks=[BPTTCallback(sequence)])
    for weight, value in zip(model.weights, before, strict=True):  # no step ran
        np.testing.assert_array_equal(to_numpy(weight), value)


# ------------------------------------------------------------------ corpus
def test_load_ptb_appends_eos_and_numbers_words_by_first_appearance(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" the cat sat \n the dog \n")
    (tmp_path / "ptb.valid.txt").write_text(" the bird \n")
    (tmp_path / "ptb.test.txt").write_text("\n dog sat \n")
    corpus = load_ptb(tmp_path)
    assert corpus.vocab == ["the", "cat", "sat", "<eos>", "dog", "bird"]
    np.testing.assert_array_equal(corpus.train, [0, 1, 2, 3, 0, 4, 3])
    np.testing.assert_array_equal(corpus.valid, [0, 5, 3])
    np.testing.assert_array_equal(corpus.test, [3, 4, 2, 3])
    assert corpus.train.dtype == np.int32 and corpus.word_ids["dog"] == 4
    with pytest.raises(ValueError, match="Missing in .*: ptb.test.txt"):
        (tmp_path / "ptb.test.txt").unlink()
        load_ptb(tmp_path)


@pytest.mark.skipif(
    not os.path.isdir(PTB),
    reason="no PTB at ../shared/data/ptb; runs in every backend's pass where it is",
)
def test_load_ptb_documented_sizes():
    corpus = load_ptb(PTB)
    assert [len(corpus.train), len(corpus.valid), len(corpus.test)] == [929_589, 73_760, 82_430]
    assert len(corpus.vocab) == 10_000
