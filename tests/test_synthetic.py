"""The synthetic corpus: its oracle against brute force, its determinism, its
format, and the statistics it is meant to have (Zipf-like frequencies,
structure beyond a bigram's reach, topics that outlast a sentence)."""

import ast
import itertools
import json
import math

import numpy as np
import pytest

from keras_rnnreg.datasets import SyntheticCorpus, make_synthetic_corpus
from keras_rnnreg.datasets import synthetic

# A smaller corpus than the default, for speed; the default vocabulary.
SMALL = {"train_tokens": 60_000, "valid_tokens": 10_000, "test_tokens": 10_000}


@pytest.fixture(scope="module")
def corpus():
    return make_synthetic_corpus(seed=0, **SMALL)


def random_hmm(rng, states, words, zeros=True):
    """A random HMM, with some zero transition and emission probabilities."""
    def stochastic(shape):
        matrix = rng.random(shape)
        if zeros:
            matrix[rng.random(shape) < 0.3] = 0.0
            matrix[np.arange(shape[0]), rng.integers(shape[1], size=shape[0])] += 0.1
        return matrix / matrix.sum(axis=-1, keepdims=True)

    return stochastic((1, states))[0], stochastic((states, states)), stochastic((states, words))


def brute_force_log_likelihood(tokens, initial, transition, emission):
    """log of the sum over every hidden path of P(path, tokens)."""
    total = 0.0
    for path in itertools.product(range(initial.size), repeat=len(tokens)):
        probability = initial[path[0]] * emission[path[0], tokens[0]]
        for t in range(1, len(tokens)):
            probability *= transition[path[t - 1], path[t]] * emission[path[t], tokens[t]]
        total += probability
    return math.log(total) if total > 0 else -math.inf


def log_space_log_likelihood(tokens, initial, transition, emission):
    """The forward algorithm in log space, without any rescaling or sparsity."""
    with np.errstate(divide="ignore"):
        log_transition, log_emission = np.log(transition), np.log(emission)
        log_alpha = np.log(initial) + log_emission[:, tokens[0]]
    for token in tokens[1:]:
        scores = log_alpha[:, None] + log_transition
        peak = scores.max(axis=0)
        safe = np.where(np.isfinite(peak), peak, 0.0)
        with np.errstate(divide="ignore"):
            log_alpha = safe + np.log(np.exp(scores - safe).sum(axis=0)) + log_emission[:, token]
    peak = log_alpha.max()
    return float(peak + np.log(np.exp(log_alpha - peak).sum())) if np.isfinite(peak) else -math.inf


# --------------------------------------------------------------- the oracle
@pytest.mark.parametrize("states,words,length", [(2, 3, 1), (2, 3, 7), (3, 4, 6), (3, 2, 8)])
def test_forward_equals_brute_force_on_tiny_hmms(states, words, length):
    rng = np.random.default_rng(states * 100 + length)
    for _ in range(3):
        initial, transition, emission = random_hmm(rng, states, words)
        tokens = rng.integers(words, size=length)
        expected = brute_force_log_likelihood(tokens, initial, transition, emission)
        actual = synthetic._forward_log_likelihood(tokens, initial, transition, emission)
        if expected == -math.inf:
            assert actual == -math.inf
        else:
            np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


def test_forward_equals_log_space_forward_on_long_streams():
    # Long enough for the periodic rescaling and for probabilities far below
    # the smallest float64.
    rng = np.random.default_rng(5)
    for states, words in [(3, 5), (6, 40)]:
        initial, transition, emission = random_hmm(rng, states, words, zeros=False)
        tokens = synthetic._sample_hmm(initial, transition, emission, 500, rng)
        expected = log_space_log_likelihood(tokens, initial, transition, emission)
        actual = synthetic._forward_log_likelihood(tokens, initial, transition, emission)
        assert expected < -700  # exp() of it underflows
        np.testing.assert_allclose(actual, expected, rtol=1e-10)


def test_forward_of_an_impossible_stream_is_minus_infinity():
    initial = np.array([1.0, 0.0])
    transition = np.array([[0.0, 1.0], [1.0, 0.0]])
    emission = np.array([[1.0, 0.0], [0.0, 1.0]])  # the stream must alternate
    forward = synthetic._forward_log_likelihood
    assert forward([0, 1, 0, 1], initial, transition, emission) == 0.0
    assert forward([0, 1, 1], initial, transition, emission) == -math.inf
    assert forward([1], initial, transition, emission) == -math.inf
    assert forward([0] + [1, 0] * 20 + [0], initial, transition, emission) == -math.inf


def test_oracle_equals_brute_force_on_a_tiny_corpus():
    # Two topics, so that the stream crosses sentence ends where the topic
    # and number change; 34 states per topic, so the brute force enumerates
    # every path of nonzero probability (extending a path by all 68 states
    # and dropping those that get probability 0) instead of all 68^14.
    tiny = make_synthetic_corpus(
        seed=3, train_tokens=14, valid_tokens=14, test_tokens=14, vocab_size=64, num_topics=2
    )
    source = synthetic._source(tiny.config)
    for split in ("train", "valid", "test"):
        tokens = getattr(tiny, split)
        paths = {(state,): source.initial[state] * source.emission[state, tokens[0]]
                 for state in range(source.initial.size)}
        paths = {path: p for path, p in paths.items() if p > 0}
        for token in tokens[1:]:
            extended = {}
            for path, p in paths.items():
                steps = source.transition[path[-1]] * source.emission[:, token]
                for state in np.flatnonzero(steps):
                    extended[path + (state,)] = p * steps[state]
            paths = extended
        assert paths, "the stream must have a path of nonzero probability"
        brute_force = -math.log(sum(paths.values())) / tokens.size
        np.testing.assert_allclose(tiny.oracle_cross_entropy[split], brute_force, rtol=1e-12)
    assert synthetic.EOS in [tiny.vocab[i] for i in tiny.train]


def test_sampler_follows_the_hmm():
    rng = np.random.default_rng(11)
    initial, transition, emission = random_hmm(rng, 3, 4)
    stationary = synthetic._stationary_distribution(transition)
    tokens = synthetic._sample_hmm(stationary, transition, emission, 40_000, rng)
    assert np.isfinite(synthetic._forward_log_likelihood(tokens, stationary, transition, emission))
    unigram = stationary @ emission
    bigram = (stationary[:, None, None] * emission[:, :, None]
              * (transition @ emission)[:, None, :]).sum(axis=0)
    empirical_bigram = np.zeros((4, 4))
    np.add.at(empirical_bigram, (tokens[:-1], tokens[1:]), 1.0)
    np.testing.assert_allclose(np.bincount(tokens, minlength=4) / tokens.size, unigram, atol=0.015)
    np.testing.assert_allclose(empirical_bigram / (tokens.size - 1), bigram, atol=0.015)


def test_oracle_is_consistent_across_splits_and_below_the_marginal_entropy(corpus):
    oracle = corpus.oracle_cross_entropy
    assert set(oracle) == {"train", "valid", "test"}
    values = np.array(list(oracle.values()))
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    # The splits are independent draws of one source: their per-token
    # cross-entropies differ by sampling noise only.
    assert values.max() - values.min() < 0.05
    for split in ("train", "valid", "test"):
        tokens = getattr(corpus, split)
        frequencies = np.bincount(tokens) / tokens.size
        frequencies = frequencies[frequencies > 0]
        marginal_entropy = -(frequencies * np.log(frequencies)).sum()
        assert oracle[split] < marginal_entropy - 1.0
    assert corpus.oracle_perplexity == pytest.approx(math.exp(oracle["test"]))


# ------------------------------------------------------------- determinism
def test_same_seed_gives_the_same_corpus_and_another_seed_another():
    config = {"train_tokens": 3000, "valid_tokens": 500, "test_tokens": 500, "vocab_size": 300}
    first = make_synthetic_corpus(seed=42, **config)
    again = make_synthetic_corpus(seed=42, **config)
    other = make_synthetic_corpus(seed=43, **config)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(first, split), getattr(again, split))
        assert not np.array_equal(getattr(first, split), getattr(other, split))
    assert first.vocab == again.vocab and first.vocab != other.vocab
    assert first.oracle_cross_entropy == again.oracle_cross_entropy
    assert first.oracle_cross_entropy != other.oracle_cross_entropy
    # The corpus is its config's: a run that records it can remake it.
    remade = make_synthetic_corpus(**json.loads(json.dumps(first.config)))
    np.testing.assert_array_equal(remade.train, first.train)
    # Each split has its own random stream: a longer train split leaves the
    # source and the test split as they were.
    longer = make_synthetic_corpus(seed=42, **{**config, "train_tokens": 4000})
    np.testing.assert_array_equal(longer.test, first.test)
    assert longer.vocab == first.vocab


def test_ids_are_in_order_of_stationary_probability():
    config = synthetic._check_config(
        seed=4, train_tokens=1, valid_tokens=1, test_tokens=1, vocab_size=300,
        num_topics=3, topic_switch=0.2, zipf_exponent=1.1)
    source = synthetic._source(config)
    # The chain's own stationary distribution (the source computes it in
    # product form); every word has a nonzero probability.
    frequencies = synthetic._stationary_distribution(source.transition) @ source.emission
    assert frequencies.min() > 0
    assert np.all(np.diff(frequencies) <= 1e-12)
    # A topic that never changes leaves the chain reducible; still defined.
    frozen = synthetic._source({**config, "topic_switch": 0.0})
    assert frozen.vocab == source.vocab


def test_a_known_seed_gives_known_values():
    # Pinned, so that any change of the generator, or of NumPy's streams,
    # shows: the corpus must be the same on every machine and version.
    small = make_synthetic_corpus(seed=0, train_tokens=20, valid_tokens=5, test_tokens=5,
                                  vocab_size=100)
    assert small.train.tolist() == [2, 60, 43, 37, 5, 0, 13, 4, 20, 14, 0, 36, 41, 56, 31, 1,
                                    12, 27, 10, 12]
    assert small.valid.tolist() == [21, 41, 56, 8, 1]
    assert small.test.tolist() == [21, 58, 44, 18, 3]
    assert " ".join(small.vocab[i] for i in small.train[:11]) == (
        "a puka zabi ziroly zevus <eos> this riga rapily sofas <eos>")
    expected = {"train": 2.181449493551145, "valid": 2.2990157807914358,
                "test": 2.006303744001304}
    for split, value in expected.items():
        assert small.oracle_cross_entropy[split] == pytest.approx(value, rel=1e-9)


# ------------------------------------------------------------------ format
def test_streams_vocabulary_and_config(corpus):
    assert isinstance(corpus, SyntheticCorpus)
    for split in ("train", "valid", "test"):
        tokens = getattr(corpus, split)
        assert tokens.dtype == np.int32 and tokens.ndim == 1
        assert tokens.size == SMALL[f"{split}_tokens"]
        assert tokens.min() >= 0 and tokens.max() < len(corpus.vocab)
    assert len(corpus.vocab) == 2000
    assert all(isinstance(word, str) and word and " " not in word for word in corpus.vocab)
    assert len(set(corpus.vocab)) == len(corpus.vocab)
    assert "<eos>" in corpus.vocab and "<unk>" not in corpus.vocab
    assert corpus.word_ids == {word: i for i, word in enumerate(corpus.vocab)}
    assert json.loads(json.dumps(corpus.config)) == corpus.config
    assert corpus.config == {"seed": 0, **SMALL, "vocab_size": 2000, "num_topics": 4,
                             "topic_switch": 0.1, "zipf_exponent": 1.0}
    # Read by field name, it is a keras_rnnreg.data.Corpus.
    from keras_rnnreg.data import BPTTSequence

    assert BPTTSequence(corpus.valid, 10, 35, variable_length=False).rows.shape == (10, 1000)


def test_module_uses_only_numpy_and_the_standard_library():
    tree = ast.parse(open(synthetic.__file__, encoding="utf-8").read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= {"bisect", "math", "numbers", "typing", "numpy",
                        "keras_rnnreg._validation"}, imported


# -------------------------------------------------------------- statistics
def test_word_frequencies_are_zipf_like(corpus):
    counts = np.sort(np.bincount(corpus.train, minlength=len(corpus.vocab)))[::-1]
    ranks = np.arange(1, counts.size + 1)
    used = (ranks >= 10) & (ranks <= 500)
    slope = np.polyfit(np.log(ranks[used]), np.log(counts[used]), 1)[0]
    assert -1.6 < slope < -0.6, slope
    # Ids follow the words' frequencies: the 50 most frequent ids are among
    # the 100 most frequent words of the stream.
    by_count = np.argsort(-np.bincount(corpus.train, minlength=len(corpus.vocab)), kind="stable")
    assert set(range(50)) <= set(by_count[:100].tolist())


def test_oracle_beats_unigram_and_bigram_models_fitted_on_train(corpus):
    vocab_size = len(corpus.vocab)
    unigram = np.bincount(corpus.train, minlength=vocab_size) + 0.5
    unigram /= unigram.sum()
    pairs = np.zeros((vocab_size, vocab_size))
    np.add.at(pairs, (corpus.train[:-1], corpus.train[1:]), 1.0)
    conditional = pairs / np.maximum(pairs.sum(axis=1, keepdims=True), 1.0)

    def bigram_cross_entropy(tokens, weight):
        # Interpolated with the unigram (Jelinek-Mercer), so unseen pairs
        # keep a probability.
        p = weight * conditional[tokens[:-1], tokens[1:]] + (1 - weight) * unigram[tokens[1:]]
        return -np.log(p).mean()

    weight = min(np.linspace(0.05, 0.95, 19), key=lambda w: bigram_cross_entropy(corpus.valid, w))
    bigram = bigram_cross_entropy(corpus.test, weight)
    unigram_cross_entropy = -np.log(unigram[corpus.test]).mean()
    oracle = corpus.oracle_cross_entropy["test"]
    assert oracle < bigram - 0.3 < unigram_cross_entropy - 0.3 - 0.5, (oracle, bigram, unigram)


def test_topics_carry_information_across_sentences(corpus):
    # The same source except that the topic is redrawn at every sentence
    # end: a model that forgets the topic between sentences. It must score
    # the test split clearly worse than the true source does.
    source = synthetic._source(corpus.config)
    forgetful = synthetic._source({**corpus.config, "topic_switch": 1.0})
    assert forgetful.vocab == source.vocab
    test = corpus.test
    forgetful_cross_entropy = -synthetic._forward_log_likelihood(
        test, forgetful.initial, forgetful.transition, forgetful.emission) / test.size
    assert forgetful_cross_entropy > corpus.oracle_cross_entropy["test"] + 0.05


def test_subject_and_verb_agree_across_the_words_between():
    # In the source, a state's number is the sentence's: a plural subject
    # determiner ("these") never precedes a singular verb form in the same
    # sentence, however many words lie between.
    source = synthetic._source(synthetic._check_config(
        seed=1, train_tokens=1, valid_tokens=1, test_tokens=1, vocab_size=200,
        num_topics=2, topic_switch=0.1, zipf_exponent=1.0))
    ids = {word: i for i, word in enumerate(source.vocab)}
    emission = source.emission.reshape(2, 2, synthetic.NUM_SLOTS, -1)  # topic, number, slot
    verbs = emission[:, :, synthetic.VERB]
    singular_verbs = np.flatnonzero(verbs[:, 0].sum(axis=0))
    plural_verbs = np.flatnonzero(verbs[:, 1].sum(axis=0))
    assert singular_verbs.size and plural_verbs.size
    assert not set(singular_verbs) & set(plural_verbs)
    assert all(source.vocab[i].endswith("s") for i in singular_verbs)
    assert emission[:, 1, synthetic.SUBJ_DET, ids["these"]].min() > 0
    assert emission[:, 0, synthetic.SUBJ_DET, ids["these"]].max() == 0


# -------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "arguments,error,message",
    [
        ({"train_tokens": -5}, ValueError, "train_tokens"),
        ({"valid_tokens": 0}, ValueError, "valid_tokens"),
        ({"test_tokens": 10.0}, TypeError, "test_tokens"),
        ({"vocab_size": 10}, ValueError, "vocab_size"),
        ({"vocab_size": 10**6}, ValueError, "vocab_size"),
        ({"seed": "1"}, TypeError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"seed": True}, TypeError, "seed"),
        ({"seed": None}, TypeError, "seed"),
        ({"seed": -1}, ValueError, "seed"),
        ({"num_topics": 0}, ValueError, "num_topics"),
        ({"num_topics": 17}, ValueError, "num_topics"),
        ({"topic_switch": 1.5}, ValueError, "topic_switch"),
        ({"topic_switch": "often"}, TypeError, "topic_switch"),
        ({"zipf_exponent": 3.0}, ValueError, "zipf_exponent"),
        ({"zipf_exponent": float("nan")}, ValueError, "zipf_exponent"),
    ],
)
def test_bad_arguments_name_the_argument(arguments, error, message):
    with pytest.raises(error, match=f"`{message}`"):
        make_synthetic_corpus(**arguments)


def test_numpy_integers_are_accepted():
    small = make_synthetic_corpus(seed=np.int64(2), train_tokens=np.int32(100), valid_tokens=50,
                                  test_tokens=50, vocab_size=64)
    assert small.train.size == 100
    assert json.dumps(small.config)
