"""Word-level corpora (Penn Treebank style) as token-id streams."""

import os
from typing import NamedTuple

import numpy as np

PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")


class Corpus(NamedTuple):
    """Token-id streams of a corpus split, and its vocabulary.

    `vocab[i]` is the word with id `i`; `word_ids` maps words back to ids.
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab: list

    @property
    def word_ids(self):
        return {word: i for i, word in enumerate(self.vocab)}


def load_ptb(path, filenames=PTB_FILES, eos="<eos>"):
    """Reads a PTB-style word-level corpus into int32 token-id streams.

    Every line is split on whitespace and followed by an end-of-sentence
    token, and the lines of a file are concatenated into one stream, as the
    AWD-LSTM reference does (Merity et al. 2017; Mikolov et al.'s
    preprocessed Penn Treebank already maps rare words to `<unk>`). Ids are
    given in order of first appearance over the train, valid and test files
    in turn, so a word seen only outside train still gets an id. For the
    standard PTB files the streams hold 929,589 / 73,760 / 82,430 tokens and
    the vocabulary 10,000 words (`<eos>` included).

    Args:
        path: Directory holding the three files.
        filenames: Names of the train, valid and test files in `path` (e.g.
            `("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")`
            for WikiText-2).
        eos: The token appended to every line.

    Returns:
        A `Corpus(train, valid, test, vocab)` named tuple.

    Example:

    >>> corpus = load_ptb("data/ptb")
    >>> train = BPTTSequence(corpus.train, batch_size=40, bptt=70)
    >>> len(corpus.vocab)
    10000
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"Argument `path` must be a directory path. Received: path={path!r}"
        )
    if not os.path.isdir(path):
        raise ValueError(
            f"Argument `path` must be an existing directory. Received: path={path!r}"
        )
    if isinstance(filenames, str) or len(filenames) != 3:
        raise ValueError(
            "Argument `filenames` must name three files (train, valid, test). "
            f"Received: filenames={filenames!r}"
        )
    missing = [name for name in filenames if not os.path.isfile(os.path.join(path, name))]
    if missing:
        raise ValueError(
            f"Argument `path` must contain {', '.join(filenames)}. "
            f"Missing in {os.fspath(path)!r}: {', '.join(missing)}"
        )
    word_ids = {}
    streams = []
    for name in filenames:
        ids = []
        with open(os.path.join(path, name), encoding="utf-8") as file:
            for line in file:
                for word in line.split() + [eos]:
                    ids.append(word_ids.setdefault(word, len(word_ids)))
        streams.append(np.asarray(ids, dtype="int32"))
    return Corpus(*streams, vocab=list(word_ids))
