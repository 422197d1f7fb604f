"""`sample_text`: seeding, temperature, `<unk>`/`<eos>` banning and argument
checks, against stub models whose next-word logits are known."""

import keras
import numpy as np
import pytest
from keras import ops

from conftest import to_numpy
from keras_rnnreg.app.generate import sample_text

VOCAB = ["<unk>", "the", "cat", "<eos>", "sat", "on", "mat"]
# <unk> and <eos> carry much of the mass, so that banning them moves every
# other word's frequency well beyond the tolerance below.
LOGITS = np.array([1.2, 1.0, -0.5, 1.5, 0.0, 0.6, -1.0], "float32")
DRAWS = 4000


class ConstantLogits(keras.layers.Layer):
    """`logits` at every (batch, time) position, whatever the ids."""

    def __init__(self, logits, **kwargs):
        super().__init__(**kwargs)
        self.logits = ops.convert_to_tensor(np.asarray(logits, "float32"))

    def call(self, ids):
        return ops.broadcast_to(self.logits, (*ops.shape(ids), self.logits.shape[0]))

    def compute_output_spec(self, ids):
        return keras.KerasTensor((*ids.shape, self.logits.shape[0]), "float32")


class FixedLogits(keras.Model):
    """A functional model whose output ignores its input: LOGITS everywhere.

    With `fast=True` a call runs the head layer's `call` directly: the same
    computation, without Keras's per-call bookkeeping (about a millisecond
    on TensorFlow and JAX, which thousands of one-word steps would pay).
    """

    def __init__(self, logits=LOGITS, batch_size=2, fast=True):
        tokens = keras.Input(batch_shape=(batch_size, None), dtype="int32")
        head = ConstantLogits(logits)
        super().__init__(tokens, head(tokens))
        self.head, self.fast = head, fast

    def __call__(self, ids, training=False):
        if self.fast:
            return self.head.call(ops.convert_to_tensor(ids))
        return super().__call__(ids, training=training)


def softmax(logits):
    e = np.exp(logits - logits.max())
    return e / e.sum()


def expected_frequencies(temperature=1.0, banned=()):
    """softmax(LOGITS / T) over the words not banned, 0 for the banned."""
    logits = LOGITS.astype("float64") / temperature
    allowed = np.array([w not in banned for w in VOCAB])
    probabilities = np.zeros(len(VOCAB))
    probabilities[allowed] = softmax(logits[allowed])
    return probabilities


def frequencies(words):
    counts = np.array([words.count(w) for w in VOCAB])
    assert counts.sum() == len(words)  # every word is a vocabulary word
    return counts / len(words)


def assert_frequencies(observed, expected, draws):
    """Each word's frequency within 5 binomial standard deviations of its
    probability (about 0.04 at p = 0.5 for 4000 draws); a word of
    probability 0 is never drawn."""
    np.testing.assert_array_equal(observed[expected == 0], 0)
    sigma = np.sqrt(expected * (1 - expected) / draws)
    np.testing.assert_array_less(np.abs(observed - expected), 5 * sigma + 1e-12)


def test_stub_model_outputs_the_logits_through_keras_and_fast():
    ids = np.array([[3, 1, 4], [1, 5, 2]], "int32")
    for fast in (True, False):
        out = to_numpy(FixedLogits(fast=fast)(ids, training=False))
        assert out.shape == (2, 3, len(VOCAB))
        np.testing.assert_array_equal(out, np.broadcast_to(LOGITS, out.shape))


def test_same_seed_same_words_another_seed_others():
    model = FixedLogits(fast=False)  # through keras.Model.__call__
    first = sample_text(model, VOCAB, length=40, seed=5)
    np.random.seed(0)  # NumPy's global state plays no part
    keras.utils.set_random_seed(99)
    again = sample_text(model, VOCAB, length=40, seed=5)
    other = sample_text(model, VOCAB, length=40, seed=6)
    assert first == again
    assert len(first) == 40
    # two 40-word draws agree with probability < 0.32 ** 40 (sum of p^2 per word)
    assert other != first
    assert sample_text(model, VOCAB, length=40) != sample_text(model, VOCAB, length=40)


@pytest.mark.parametrize(
    "temperature, allow_unk, allow_eos",
    [
        (1.0, True, True),
        (0.5, True, True),
        (1.0, False, False),
        (1.0, True, False),
        (1.0, False, True),
        (0.5, False, False),
    ],
)
def test_word_frequencies_follow_the_renormalized_tempered_softmax(
    temperature, allow_unk, allow_eos
):
    banned = [w for w, allowed in (("<unk>", allow_unk), ("<eos>", allow_eos)) if not allowed]
    expected = expected_frequencies(temperature, banned)
    # far beyond the tolerance from the untempered distribution and from the
    # one that keeps the banned words
    if temperature != 1.0:
        assert np.abs(expected_frequencies(1.0, banned) - expected).max() > 0.1
    if banned:
        assert np.abs(expected_frequencies(temperature) - expected).max() > 0.1
    words = sample_text(FixedLogits(), VOCAB, length=DRAWS, temperature=temperature,
                        seed=11, allow_unk=allow_unk, allow_eos=allow_eos)
    assert len(words) == DRAWS
    assert_frequencies(frequencies(words), expected, DRAWS)


def test_a_vocabulary_without_unk_bans_only_eos():
    vocab = ["the", "cat", "<eos>", "sat", "on", "mat", "dog"]
    words = sample_text(FixedLogits(), vocab, length=300, seed=2)
    assert "<eos>" not in words
    assert set(words) == set(vocab) - {"<eos>"}


def chain_model(size, batch_size):
    """The next word is surely id + 1 (mod size): an Embedding whose row i
    is a one-hot at i + 1, times 50."""
    tokens = keras.Input(batch_shape=(batch_size, None), dtype="int32")
    table = 50.0 * np.roll(np.eye(size, dtype="float32"), 1, axis=1)
    logits = keras.layers.Embedding(
        size, size, embeddings_initializer=keras.initializers.Constant(table))(tokens)
    return keras.Model(tokens, logits)


@pytest.mark.parametrize("batch_size", [None, 3])
def test_prompt_and_each_drawn_word_feed_the_next_step(batch_size):
    vocab = ["<eos>", "a", "b", "c", "d", "<unk>"]
    model = chain_model(len(vocab), batch_size)
    # the last prompt word sets the first drawn one, then each the next
    words = sample_text(model, vocab, prompt=["c", "a"], length=7, seed=0,
                        allow_unk=True, allow_eos=True)
    assert words == ["b", "c", "d", "<unk>", "<eos>", "a", "b"]
    # no prompt: generation starts after <eos>
    assert sample_text(model, vocab, length=2, allow_eos=True) == ["a", "b"]
    # "d" is followed by <unk>, banned: its mass goes to the other words
    banned = sample_text(model, vocab, prompt=["d"], length=200, seed=1, allow_eos=True)
    assert "<unk>" not in banned and len(set(banned)) == len(vocab) - 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, r"`temperature` must be finite and > 0.*temperature=0.0"),
        ({"temperature": -1.0}, r"`temperature`.*temperature=-1.0"),
        ({"temperature": float("nan")}, r"`temperature`.*temperature=nan"),
        ({"temperature": float("inf")}, r"`temperature`.*temperature=inf"),
        ({"length": 0}, r"`length` must be an int >= 1.*length=0"),
        ({"length": -3}, r"`length`.*length=-3"),
        ({"length": 2.5}, r"`length`.*length=2.5"),
        ({"length": "10"}, r"`length`.*length='10'"),
        ({"length": True}, r"`length`.*length=True"),
        ({"prompt": ["the", "zebra", "quux"]}, r"prompt.*vocabulary: zebra, quux"),
    ],
    ids=["temperature-0", "temperature-negative", "temperature-nan", "temperature-inf",
         "length-0", "length-negative", "length-float", "length-str", "length-bool",
         "prompt-unknown-words"],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_text(FixedLogits(), VOCAB, **kwargs)


@pytest.mark.parametrize("temperature", ["hot", None, True])
def test_a_temperature_that_is_not_a_number_is_a_type_error(temperature):
    with pytest.raises(TypeError, match=rf"`temperature` must be a number.*{temperature!r}"):
        sample_text(FixedLogits(), VOCAB, temperature=temperature)
