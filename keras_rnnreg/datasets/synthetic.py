"""An embedded synthetic corpus whose best achievable perplexity is known.

`make_synthetic_corpus` samples three token streams (train, valid, test) from
a hidden Markov model (HMM) that it builds from a seed, offline and in well
under a second, and scores every stream under that same HMM with the forward
algorithm. The score, the source's exact negative log-likelihood per token,
is the lowest cross-entropy any language model can expect on the stream: its
exponential, `SyntheticCorpus.oracle_perplexity`, is the floor a model's test
perplexity is read against.

The source. A hidden state is a triple (topic k, number g, slot s), so there
are `num_topics` x 2 x 17 states (136 with the default 4 topics):

- the slot s is one of 17 positions of a small sentence grammar (subject
  determiner, adjectives, subject noun, an optional prepositional phrase or
  relative clause, adverb, verb, object, a coordinated verb, `<eos>`); it
  moves along a fixed graph (`_SLOT_GRAPH`) whose branch probabilities are
  drawn from the seed, Dirichlet with concentration 20 around the graph's
  base probabilities;
- the number g (singular or plural) is drawn at each sentence start
  (P(singular) drawn from the seed in [0.5, 0.7]) and kept to the sentence's
  end: the subject determiner (`a`, `this`, ... or `these`, `some`, ...),
  the subject noun and every verb of the sentence (of its relative clause
  and of a coordinated verb phrase too) agree with it, across the
  prepositional phrase or relative clause in between, whose nouns have a
  number of their own (singular with a probability drawn in [0.55, 0.75])
  and a neutral determiner (`the`, `its`, ...);
- the topic k (one of `num_topics`) outlasts sentences: at each `<eos>` it
  is redrawn with probability `topic_switch` (possibly as the same topic)
  from topic frequencies drawn from the seed (Dirichlet(2)), which also
  give the first sentence's topic.

Each state emits one word. Function words come from small closed classes
(determiners, prepositions, relative pronouns, conjunctions) with Zipf
weights r^-a over each class's list (r the rank, a = `zipf_exponent`).
Content words (nouns, verbs, adjectives, adverbs: pronounceable pseudo-words,
the shorter ones for the more frequent lemmas) depend on the topic: in each
class, lemma r has Zipf weight r^-a; the most frequent fifth of the lemmas
is shared by all topics and the others are dealt out to the topics in turn;
topic k draws a lemma from the shared ones with probability 0.25, from its
own ones with probability 0.7 and from all the non-shared ones with
probability 0.05, Zipf-weighted within each. A noun is written `stem`
(singular) or `stem + "s"`, a verb `stem + "s"` (singular) or `stem`, an
adverb `stem + "ly"`. The word frequencies are thus Zipf-like overall, and
a word depends on the words before it only through the hidden topic,
number and slot, which a model has to infer, the topic from as far back as
its last change (ten sentences on average with the default `topic_switch`).

Each split is an independent draw of the chain from its initial
distribution (a sentence start, the topic from the topic frequencies and
the number from its prior), cut at exactly the requested number of tokens,
so it may end mid-sentence. The source's parameters and the three splits
come from separate streams of `np.random.SeedSequence(seed)`: the same seed
gives the same corpus on every machine, and a longer train split leaves the
source and the other splits unchanged.

The oracle. `oracle_cross_entropy[split]` is -log P(stream) / len(stream) in
nats, with P the HMM's probability of the whole stream from its initial
distribution (the scaled forward algorithm): the way a stateful language
model evaluates a split, its state reset at the split's start and carried
through it. It is the true model's cross-entropy on the very tokens a model
is scored on, so no model beats it in expectation; a model can come out
below it on a finite split only by chance, and by little.

The vocabulary holds `vocab_size` words, `<eos>` included and no `<unk>`
(every word of every split is in it, though the rarest ones may not occur
in a short split); ids are in order of decreasing stationary probability of
the words, so an id is about its word's frequency rank.

Sizing. The defaults (60k/10k/10k tokens, 2,000 words, 4 topics) were
calibrated with benchmarks/synthetic_calibration.py on a 2-core CPU: an
unregularized 2 x 256 LSTM language model (untied, Adam) reaches its best
validation perplexity after about 5 epochs and then gets worse, while the
same model with AWD-LSTM's regularizers keeps improving to about 1.28 times
the oracle; a regularized 2 x 128 model gets to about 1.25 times the oracle
in under two minutes of training (the script's docstring has the numbers).
"""

import bisect
import math
import numbers
from typing import NamedTuple

import numpy as np

from keras_rnnreg._validation import check_probability, check_real

EOS = "<eos>"
#: The 26 function words, `<eos>` and a few lemmas in each content class.
MIN_VOCAB_SIZE = 64
MAX_VOCAB_SIZE = 100_000
MAX_TOPICS = 16

# Slots of the sentence grammar, in the order of the state index.
(SUBJ_DET, SUBJ_ADJ, SUBJ_NOUN, PREP, PP_DET, PP_NOUN, REL, REL_VERB, REL_DET,
 REL_NOUN, ADV, VERB, OBJ_DET, OBJ_ADJ, OBJ_NOUN, CONJ, END) = range(17)
NUM_SLOTS = 17

# slot -> {successor: base probability}. A sentence always starts at
# SUBJ_DET after END; the seed perturbs the branch probabilities only, so
# every seed has the same grammar.
_SLOT_GRAPH = {
    SUBJ_DET: {SUBJ_ADJ: 0.3, SUBJ_NOUN: 0.7},
    SUBJ_ADJ: {SUBJ_ADJ: 0.15, SUBJ_NOUN: 0.85},
    SUBJ_NOUN: {PREP: 0.25, REL: 0.15, ADV: 0.1, VERB: 0.5},
    PREP: {PP_DET: 0.8, PP_NOUN: 0.2},
    PP_DET: {PP_NOUN: 1.0},
    PP_NOUN: {REL: 0.1, ADV: 0.15, VERB: 0.75},
    REL: {REL_VERB: 1.0},
    REL_VERB: {REL_DET: 0.6, ADV: 0.1, VERB: 0.3},
    REL_DET: {REL_NOUN: 1.0},
    REL_NOUN: {ADV: 0.2, VERB: 0.8},
    ADV: {VERB: 1.0},
    VERB: {OBJ_DET: 0.55, CONJ: 0.1, END: 0.35},
    OBJ_DET: {OBJ_ADJ: 0.3, OBJ_NOUN: 0.7},
    OBJ_ADJ: {OBJ_ADJ: 0.1, OBJ_NOUN: 0.9},
    OBJ_NOUN: {END: 0.8, CONJ: 0.2},
    CONJ: {ADV: 0.2, VERB: 0.8},
    END: {SUBJ_DET: 1.0},
}
_BRANCH_CONCENTRATION = 20.0

# Closed classes. The subject determiner agrees in number; the other
# determiners are neutral, because the nouns they introduce have a number of
# their own that no state remembers.
_CLOSED_CLASSES = {
    "det_singular": ("a", "this", "every", "each"),
    "det_plural": ("these", "some", "many", "all"),
    "det_neutral": ("the", "its", "their", "no"),
    "prep": ("of", "in", "on", "with", "for", "from", "near", "under"),
    "rel": ("that", "which"),
    "conj": ("and", "but", "or"),
}
# Shares of the open vocabulary (words, not lemmas) per content class; the
# adjectives take what is left.
_NOUN_SHARE, _VERB_SHARE, _ADVERB_SHARE = 0.45, 0.25, 0.08
_SHARED_FRACTION = 0.2
_SHARED_MASS, _OWN_MASS, _LEAK_MASS = 0.25, 0.7, 0.05

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


class SyntheticCorpus(NamedTuple):
    """A generated corpus and its source's exact cross-entropy on each split.

    `train`, `valid`, `test` and `vocab` mean what they mean in
    `keras_rnnreg.data.Corpus` (int32 token-id streams, `vocab[i]` the word
    with id `i`), so code that reads a `Corpus` by field name reads this too
    (unpacking it into four names does not: it has six fields).

    Attributes:
        train, valid, test: 1D int32 arrays of token ids.
        vocab: List of str, the word of each id; holds `"<eos>"`, no `"<unk>"`.
        oracle_cross_entropy: Dict `{"train", "valid", "test"}` -> float, the
            source's exact mean negative log-likelihood per token of each
            stream, in nats (see the module docstring).
        config: Dict of the generator's arguments (JSON-serializable), which
            `make_synthetic_corpus(**config)` turns back into this corpus.
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab: list
    oracle_cross_entropy: dict
    config: dict

    @property
    def word_ids(self):
        return {word: i for i, word in enumerate(self.vocab)}

    @property
    def oracle_perplexity(self):
        """exp of the oracle cross-entropy on the test split."""
        return math.exp(self.oracle_cross_entropy["test"])


def make_synthetic_corpus(
    seed=0, train_tokens=60_000, valid_tokens=10_000, test_tokens=10_000,
    vocab_size=2_000, num_topics=4, topic_switch=0.1, zipf_exponent=1.0,
):
    """Generates a corpus from a seeded HMM and its oracle cross-entropy.

    The source (module docstring) is a hidden Markov model over (topic,
    number, grammar slot) states that writes sentences of pseudo-words with
    Zipf-like frequencies, number agreement across the words in between,
    and topics that last over many sentences. It is built from `seed`, so a
    seed always gives the same corpus, on every machine. Because the source
    is known, so is the best cross-entropy any model can reach on each split:
    the source's own, computed exactly with the forward algorithm. A model's
    test perplexity is to be read against `corpus.oracle_perplexity`.

    The defaults are quick to make (sampling and the forward algorithm on
    the three splits) and sized so that an unregularized 2 x 256 LSTM
    language model overfits the 60k training tokens within a few epochs
    while a regularized one keeps improving towards the oracle, and a small
    regularized model gets near the oracle perplexity in the couple of
    minutes a demo can afford on a CPU (measured with
    benchmarks/synthetic_calibration.py: docs/benchmarks.md, "The synthetic
    corpus and make demo").

    Args:
        seed: Int >= 0; the source's parameters and the three streams are
            drawn from `np.random.SeedSequence(seed)`.
        train_tokens: Int >= 1, the exact length of the training stream.
        valid_tokens: Int >= 1, the exact length of the validation stream.
        test_tokens: Int >= 1, the exact length of the test stream.
        vocab_size: Int in [64, 100000], the number of words, `<eos>`
            included. Every word has a nonzero probability, but in a short
            stream the rarest ones may not occur.
        num_topics: Int in [1, 16]; the HMM has `num_topics * 34` states.
            1 leaves the agreement within sentences as the only structure
            beyond the grammar.
        topic_switch: Float in [0, 1], the probability that the topic is
            redrawn at a sentence end (it may be redrawn as the same topic).
            Lower values make longer-range structure.
        zipf_exponent: Float in [0.5, 2], the exponent a of the Zipf weights
            r^-a inside each word class.

    Returns:
        A `SyntheticCorpus(train, valid, test, vocab, oracle_cross_entropy,
        config)`.

    Example:

    >>> corpus = make_synthetic_corpus(seed=0)
    >>> len(corpus.train), len(corpus.valid), len(corpus.vocab)
    (60000, 10000, 2000)
    >>> corpus.vocab[:5]                  # ids by decreasing frequency
    ['<eos>', 'the', 'a', 'and', 'its']
    >>> " ".join(corpus.vocab[i] for i in corpus.train[:6])
    'many fuka sefos sakuly vago <eos>'
    >>> round(corpus.oracle_perplexity, 2)  # the best test perplexity possible
    42.53
    >>> train = BPTTSequence(corpus.train, batch_size=32, bptt=35)
    """
    config = _check_config(
        seed=seed, train_tokens=train_tokens, valid_tokens=valid_tokens,
        test_tokens=test_tokens, vocab_size=vocab_size, num_topics=num_topics,
        topic_switch=topic_switch, zipf_exponent=zipf_exponent,
    )
    source = _source(config)
    split_seeds = np.random.SeedSequence(config["seed"]).spawn(4)[1:]
    streams, oracle = {}, {}
    for split, split_seed in zip(("train", "valid", "test"), split_seeds):
        tokens = _sample_hmm(
            source.initial,
            source.transition,
            source.emission,
            config[f"{split}_tokens"],
            np.random.default_rng(split_seed),
        )
        log_likelihood = _forward_log_likelihood(
            tokens, source.initial, source.transition, source.emission
        )
        streams[split] = tokens
        oracle[split] = -log_likelihood / tokens.size
    return SyntheticCorpus(
        **streams, vocab=list(source.vocab), oracle_cross_entropy=oracle, config=config
    )


def _check_int(name, value, minimum, maximum=None):
    """An int (NumPy's too, not a bool) in [minimum, maximum], as a Python int."""
    allowed = f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be {allowed}. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"Argument `{name}` must be {allowed}. Received: {name}={value}")
    return int(value)


def _check_config(**config):
    checked = {"seed": _check_int("seed", config["seed"], 0)}
    for name in ("train_tokens", "valid_tokens", "test_tokens"):
        checked[name] = _check_int(name, config[name], 1)
    checked["vocab_size"] = _check_int(
        "vocab_size", config["vocab_size"], MIN_VOCAB_SIZE, MAX_VOCAB_SIZE
    )
    # The forward algorithm's cost grows with the states squared.
    checked["num_topics"] = _check_int("num_topics", config["num_topics"], 1, MAX_TOPICS)
    checked["topic_switch"] = check_probability("topic_switch", config["topic_switch"])
    exponent = check_real("zipf_exponent", config["zipf_exponent"])
    if not 0.5 <= exponent <= 2.0:
        raise ValueError(
            "Argument `zipf_exponent` must be a float in [0.5, 2]. "
            f"Received: zipf_exponent={exponent}"
        )
    checked["zipf_exponent"] = exponent
    return checked


# ------------------------------------------------------------------ the source
class _Source(NamedTuple):
    """A dense HMM: P(state_0) = initial, P(state_t | state_t-1) =
    transition[state_t-1, state_t], P(word | state) = emission[state, word]."""

    initial: np.ndarray
    transition: np.ndarray
    emission: np.ndarray
    vocab: list


def _source(config):
    """The HMM of a checked `config` (the corpus's `config`)."""
    source_seed = np.random.SeedSequence(config["seed"]).spawn(4)[0]
    return _make_source(
        np.random.default_rng(source_seed),
        vocab_size=config["vocab_size"],
        num_topics=config["num_topics"],
        topic_switch=config["topic_switch"],
        zipf_exponent=config["zipf_exponent"],
    )


def _state(topic, number, slot):
    return (topic * 2 + number) * NUM_SLOTS + slot


def _zipf(size, exponent):
    weights = np.arange(1, size + 1, dtype="float64") ** -exponent
    return weights / weights.sum()


def _stems(rng, count, taken):
    """`count` distinct pseudo-word stems of consonant-vowel syllables,
    shortest first. Every stem ends in a vowel, so no stem equals another
    stem plus "s" or "ly"."""
    stems, seen = [], set(taken)
    syllables = 2
    # Short stems run out (14 * 5 syllables): after a run of duplicates the
    # stems grow by a syllable.
    misses = 0
    while len(stems) < count:
        letters = rng.integers(0, [len(_CONSONANTS), len(_VOWELS)] * syllables)
        stem = "".join(
            (_CONSONANTS if i % 2 == 0 else _VOWELS)[j] for i, j in enumerate(letters)
        )
        if stem in seen:
            misses += 1
            if misses > 20:
                syllables, misses = syllables + 1, 0
            continue
        seen.add(stem)
        stems.append(stem)
    return stems


def _class_sizes(vocab_size):
    """Lemma counts of the content classes (nouns and verbs have two forms)."""
    closed = 1 + sum(len(words) for words in _CLOSED_CLASSES.values())
    rest = vocab_size - closed
    nouns = max(1, round(_NOUN_SHARE * rest / 2))
    verbs = max(1, round(_VERB_SHARE * rest / 2))
    adverbs = max(1, round(_ADVERB_SHARE * rest))
    adjectives = rest - 2 * nouns - 2 * verbs - adverbs
    return {"noun": nouns, "verb": verbs, "adverb": adverbs, "adjective": adjectives}


def _topic_lemma_distributions(rng, lemmas, num_topics, exponent):
    """(num_topics, lemmas) array: each topic's distribution over a class."""
    weights = _zipf(lemmas, exponent)
    shared = max(1, round(_SHARED_FRACTION * lemmas))
    own = np.full(lemmas, -1)
    # A random rotation: which topic gets the most frequent topical lemma.
    own[shared:] = (np.arange(lemmas - shared) + rng.integers(num_topics)) % num_topics
    distributions = np.zeros((num_topics, lemmas))
    for topic in range(num_topics):
        parts = [(_SHARED_MASS, own < 0), (_OWN_MASS, own == topic), (_LEAK_MASS, own >= 0)]
        for mass, members in parts:
            if members.any():
                distributions[topic, members] += mass * weights[members] / weights[members].sum()
    return distributions / distributions.sum(axis=1, keepdims=True)


def _make_source(rng, vocab_size, num_topics, topic_switch, zipf_exponent):
    """The HMM of the module docstring, with words in structural order
    first and then re-ordered by decreasing stationary probability."""
    # -- words
    words = [EOS]
    closed = {}
    for name, members in _CLOSED_CLASSES.items():
        closed[name] = (len(words), len(members))
        words.extend(members)
    sizes = _class_sizes(vocab_size)
    # Shorter stems go to more frequent lemmas, as in natural language: the
    # lemmas of all classes are dealt the stems (shortest first) in the order
    # of their relative rank r / count in their class.
    stems = _stems(rng, sum(sizes.values()), taken=words)
    ranked = sorted((r / count, c, r) for c, count in enumerate(sizes.values()) for r in range(count))
    lemma_stems = {name: [None] * count for name, count in sizes.items()}
    names = list(sizes)
    for stem, (_, c, r) in zip(stems, ranked):
        lemma_stems[names[c]][r] = stem
    forms = {"noun": ("", "s"), "verb": ("s", ""), "adjective": ("",), "adverb": ("ly",)}
    # content[name] = (id of lemma 0's first form, number of forms); lemma r
    # has ids first + r * forms + f, lemma 0 the most frequent.
    content = {}
    for name in sizes:
        content[name] = (len(words), len(forms[name]))
        words.extend(stem + suffix for stem in lemma_stems[name] for suffix in forms[name])
    assert len(words) == vocab_size and len(set(words)) == vocab_size

    # -- parameters drawn from the seed
    singular = rng.uniform(0.5, 0.7)
    free_singular = rng.uniform(0.55, 0.75)
    topic_prior = rng.dirichlet(np.full(num_topics, 2.0))
    slot_transition = np.zeros((NUM_SLOTS, NUM_SLOTS))
    for slot, successors in _SLOT_GRAPH.items():
        targets = list(successors)
        base = np.array([successors[t] for t in targets])
        probabilities = (
            rng.dirichlet(_BRANCH_CONCENTRATION * base) if len(targets) > 1 else base
        )
        slot_transition[slot, targets] = probabilities
    lemma_distributions = {
        name: _topic_lemma_distributions(rng, count, num_topics, zipf_exponent)
        for name, count in sizes.items()
    }

    # -- emission[state, word]
    num_states = num_topics * 2 * NUM_SLOTS
    emission = np.zeros((num_states, vocab_size))

    def closed_class(name):
        start, size = closed[name]
        distribution = np.zeros(vocab_size)
        distribution[start : start + size] = _zipf(size, zipf_exponent)
        return distribution

    def content_class(name, topic, form_probabilities):
        start, num_forms = content[name]
        lemmas = lemma_distributions[name][topic]
        distribution = np.zeros(vocab_size)
        for form, probability in enumerate(form_probabilities):
            distribution[start + form : start + lemmas.size * num_forms : num_forms] = (
                probability * lemmas
            )
        return distribution

    neutral = closed_class("det_neutral")
    for topic in range(num_topics):
        for number in (0, 1):  # 0 singular, 1 plural
            agreeing = (1.0, 0.0) if number == 0 else (0.0, 1.0)
            free = (free_singular, 1.0 - free_singular)
            rows = {
                SUBJ_DET: closed_class("det_singular" if number == 0 else "det_plural"),
                SUBJ_ADJ: content_class("adjective", topic, (1.0,)),
                SUBJ_NOUN: content_class("noun", topic, agreeing),
                PREP: closed_class("prep"),
                PP_DET: neutral,
                PP_NOUN: content_class("noun", topic, free),
                REL: closed_class("rel"),
                REL_VERB: content_class("verb", topic, agreeing),
                REL_DET: neutral,
                REL_NOUN: content_class("noun", topic, free),
                ADV: content_class("adverb", topic, (1.0,)),
                VERB: content_class("verb", topic, agreeing),
                OBJ_DET: neutral,
                OBJ_ADJ: content_class("adjective", topic, (1.0,)),
                OBJ_NOUN: content_class("noun", topic, free),
                CONJ: closed_class("conj"),
                END: np.eye(1, vocab_size, words.index(EOS))[0],
            }
            for slot, row in rows.items():
                emission[_state(topic, number, slot)] = row

    # -- transition[state, state']: the slot moves; topic and number change
    # only from END to the next sentence's SUBJ_DET.
    topic_transition = (1.0 - topic_switch) * np.eye(num_topics) + topic_switch * topic_prior
    number_prior = np.array([singular, 1.0 - singular])
    transition = np.zeros((num_states, num_states))
    for topic in range(num_topics):
        for number in (0, 1):
            block = _state(topic, number, 0)
            transition[block : block + NUM_SLOTS, block : block + NUM_SLOTS] = slot_transition
            transition[block + END, block + SUBJ_DET] = 0.0
            for next_topic in range(num_topics):
                for next_number in (0, 1):
                    transition[block + END, _state(next_topic, next_number, SUBJ_DET)] = (
                        topic_transition[topic, next_topic] * number_prior[next_number]
                    )
    initial = np.zeros(num_states)
    for topic in range(num_topics):
        for number in (0, 1):
            initial[_state(topic, number, SUBJ_DET)] = topic_prior[topic] * number_prior[number]

    # -- ids by decreasing stationary probability (ties keep structural
    # order). The topic and number keep their priors from sentence to
    # sentence and the slot chain is irreducible, so the stationary state
    # distribution is a product, also when topic_switch = 0 makes the chain
    # of states reducible.
    stationary = (
        topic_prior[:, None, None]
        * number_prior[None, :, None]
        * _stationary_distribution(slot_transition)[None, None, :]
    )
    frequencies = stationary.reshape(-1) @ emission
    order = np.argsort(-frequencies, kind="stable")
    return _Source(initial, transition, emission[:, order], [words[i] for i in order])


def _stationary_distribution(transition):
    """pi with pi @ transition = pi and sum(pi) = 1 (an irreducible chain)."""
    size = transition.shape[0]
    system = transition.T - np.eye(size)
    system[-1] = 1.0
    target = np.zeros(size)
    target[-1] = 1.0
    pi = np.linalg.solve(system, target)
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


# ------------------------------------------------------ sampling and scoring
def _cdf(probabilities):
    """Cumulative sums for inverse-CDF sampling with `bisect_right` or
    `searchsorted(side="right")` of u in [0, 1): ends at exactly 1 from the
    last positive entry on, so rounding can never select a zero-probability
    outcome."""
    cdf = np.cumsum(probabilities, axis=-1)
    last = np.flatnonzero(probabilities)[-1]
    cdf /= cdf[last]
    cdf[last:] = 1.0
    return cdf


def _sample_hmm(initial, transition, emission, length, rng):
    """A stream of `length` int32 words of the HMM, from its initial state.

    The states are drawn first (one uniform each, in order), then the words
    (one uniform each), by inverse CDF.
    """
    state_uniforms = rng.random(length).tolist()
    word_uniforms = rng.random(length)
    rows = [_cdf(row).tolist() for row in transition]
    states = np.empty(length, dtype="int64")
    state = bisect.bisect_right(_cdf(initial).tolist(), state_uniforms[0])
    states[0] = state
    for t in range(1, length):
        state = bisect.bisect_right(rows[state], state_uniforms[t])
        states[t] = state
    tokens = np.empty(length, dtype="int32")
    order = np.argsort(states, kind="stable")
    bounds = np.flatnonzero(np.diff(states[order])) + 1
    for positions in np.split(order, bounds):
        cdf = _cdf(emission[states[positions[0]]])
        tokens[positions] = np.searchsorted(cdf, word_uniforms[positions], side="right")
    return tokens


def _forward_log_likelihood(tokens, initial, transition, emission):
    """log P(tokens) in nats under an HMM, by the scaled forward algorithm.

        alpha_0 = initial * emission[:, w_0]
        alpha_t = (alpha_t-1 @ transition) * emission[:, w_t]
        log P(w_0..w_T) = log sum(alpha_T)

    alpha is renormalized every 8 steps and the log of each normalizer
    summed, so it never underflows. Only the states that can emit w_t
    (emission[:, w_t] > 0) carry probability at step t, so the product runs
    over the block of `transition` between the states of w_t-1 and of w_t:
    on the synthetic source, a few dozen states instead of all of them.

    Args:
        tokens: 1D integer array of word ids.
        initial: (states,) initial state distribution.
        transition: (states, states) row-stochastic matrix.
        emission: (states, words) row-stochastic matrix.

    Returns:
        A float, -inf if the stream has probability 0.
    """
    tokens = np.asarray(tokens).tolist()
    if not tokens:
        return 0.0
    by_word = emission.T
    # Words with the same emitting states share a group and the blocks.
    groups, group_of_word, group_states = {}, [], []
    for column in by_word:
        states = np.flatnonzero(column)
        group = groups.setdefault(states.tobytes(), len(groups))
        if group == len(group_states):
            group_states.append(states)
        group_of_word.append(group)
    weights = {}  # word -> emission over its group's states
    blocks = {}  # (group, next group) -> transition block
    log_normalizers = 0.0
    word = tokens[0]
    group = group_of_word[word]
    alpha = initial[group_states[group]] * by_word[word, group_states[group]]
    for t, word in enumerate(tokens[1:], start=1):
        next_group = group_of_word[word]
        block = blocks.get((group, next_group))
        if block is None:
            block = transition[np.ix_(group_states[group], group_states[next_group])]
            blocks[group, next_group] = block
        emitted = weights.get(word)
        if emitted is None:
            emitted = weights[word] = by_word[word, group_states[next_group]]
        alpha = (alpha @ block) * emitted
        group = next_group
        # A step shrinks sum(alpha) by P(w_t | w_<t), which on the synthetic
        # source stays far above 1e-30 (its rarest word after its least
        # likely branch), so 8 steps stay above float64's smallest normal
        # number, 1e-308.
        if t % 8 == 0:
            total = alpha.sum()
            if total <= 0.0:
                return -math.inf
            alpha = alpha / total
            log_normalizers += math.log(total)
    total = alpha.sum()
    if total <= 0.0:
        return -math.inf
    return log_normalizers + math.log(total)
