"""Dropout-LSTM vs dropout-LSTM + Noisin: a word-level language model on PTB.

Noisin (Dieng et al. 2018) regularizes an RNN by multiplying its hidden
state at every step by unbiased noise; Table 3 of the paper reports it on
top of a dropout-LSTM ("D + Bernoulli": γ = 0.80 for the medium model, 0.50
for the large one). This script trains two 2-layer language models on the
same data with the same seed, schedule and dropout, one with plain LSTMs and
one with `NoisinLSTM`, and prints both validation perplexities.

Data: the Penn Treebank files ptb.train.txt / ptb.valid.txt (Mikolov's
split) from `--data-dir` (default: ../shared/data/ptb beside the checkout).
Without them it falls back to a synthetic corpus, so that it always runs.

The defaults are a small, quick run (a slice of PTB, 200 units, a few
epochs: a few minutes on a 2-core CPU) that shows the mechanics, not the
paper's numbers; for those use the medium setting, e.g.

    KERAS_BACKEND=jax python examples/noisin_lm.py --train-tokens 0 \\
        --valid-tokens 0 --units 650 --epochs 39 --noise-level 0.8

Segments of `--bptt` words are trained statelessly (each starts from a zero
state) with SGD and gradient clipping, dropout 0.5 on the embedding, between
the layers and on the output (Zaremba et al. 2014).
"""

import argparse
import collections
import math
import os

import keras
import numpy as np

from keras_rnnreg.layers import NoisinLSTM

DEFAULT_DATA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "ptb"
)


def read_words(path):
    with open(path) as f:
        return [word for line in f for word in line.split() + ["<eos>"]]


def load_ptb(data_dir, train_tokens, valid_tokens):
    """Token ids of PTB's train and valid files (vocabulary from train)."""
    train_words = read_words(os.path.join(data_dir, "ptb.train.txt"))
    valid_words = read_words(os.path.join(data_dir, "ptb.valid.txt"))
    counts = collections.Counter(train_words)
    vocab = {w: i for i, (w, _) in enumerate(sorted(counts.items(), key=lambda c: (-c[1], c[0])))}
    unk = vocab["<unk>"]
    train = np.array([vocab[w] for w in train_words], np.int32)
    valid = np.array([vocab.get(w, unk) for w in valid_words], np.int32)
    return _head(train, train_tokens), _head(valid, valid_tokens), len(vocab)


def synthetic_corpus(train_tokens, valid_tokens, vocab=2000, seed=0):
    """A Zipfian bigram language: each word has a few likely successors."""
    rng = np.random.default_rng(seed)
    successors = rng.zipf(1.3, size=(vocab, 8)) % vocab
    n = (train_tokens or 100_000) + (valid_tokens or 20_000)
    tokens = np.empty(n, np.int32)
    tokens[0] = 0
    for t in range(1, n):
        if rng.random() < 0.8:
            tokens[t] = successors[tokens[t - 1], rng.integers(0, 8)]
        else:
            tokens[t] = rng.zipf(1.3) % vocab
    split = train_tokens or 100_000
    return tokens[:split], tokens[split:], vocab


def _head(tokens, n):
    return tokens if not n else tokens[:n]


def segments(tokens, bptt):
    """Inputs and next-word targets, (n_segments, bptt) each."""
    n = (len(tokens) - 1) // bptt
    x = tokens[: n * bptt].reshape(n, bptt)
    y = tokens[1 : n * bptt + 1].reshape(n, bptt)
    return x, y


def build_model(vocab, args, noisin):
    def recurrent():
        if noisin:
            return NoisinLSTM(
                args.units,
                noise=args.noise,
                noise_level=args.noise_level,
                return_sequences=True,
            )
        return keras.layers.LSTM(args.units, return_sequences=True)

    init = keras.initializers.RandomUniform(-0.1, 0.1)
    model = keras.Sequential([
        keras.Input((args.bptt,), dtype="int32"),
        keras.layers.Embedding(vocab, args.units, embeddings_initializer=init),
        keras.layers.Dropout(args.dropout),
        recurrent(),
        keras.layers.Dropout(args.dropout),
        recurrent(),
        keras.layers.Dropout(args.dropout),
        keras.layers.Dense(vocab),
    ])
    model.compile(
        optimizer=keras.optimizers.SGD(args.lr, global_clipnorm=args.clip),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def train(name, vocab, data, args, noisin):
    (x, y), (x_val, y_val) = data
    keras.utils.set_random_seed(args.seed)  # the same initial weights and data order
    model = build_model(vocab, args, noisin)
    history = model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_val, y_val),
        callbacks=[keras.callbacks.ReduceLROnPlateau(factor=1 / 1.2, patience=0)],
        verbose=2 if args.verbose else 0,
    )
    val = [math.exp(loss) for loss in history.history["val_loss"]]
    print(
        f"{name:<26} validation perplexity by epoch: "
        + ", ".join(f"{p:.1f}" for p in val),
        flush=True,
    )
    return min(val)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--train-tokens", type=int, default=50_000, help="0: all")
    parser.add_argument("--valid-tokens", type=int, default=10_000, help="0: all")
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--clip", type=float, default=5.0)
    parser.add_argument("--noise", default="bernoulli")
    parser.add_argument(
        "--noise-level", type=float, default=0.8,
        help="γ; the paper's D + Bernoulli: 0.80 (medium), 0.50 (large)",
    )
    parser.add_argument("--seed", type=int, default=1111)  # the paper's seed
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    if os.path.exists(os.path.join(args.data_dir, "ptb.train.txt")):
        train_ids, valid_ids, vocab = load_ptb(args.data_dir, args.train_tokens, args.valid_tokens)
        source = f"PTB from {os.path.normpath(args.data_dir)}"
    else:
        train_ids, valid_ids, vocab = synthetic_corpus(args.train_tokens, args.valid_tokens)
        source = f"a synthetic corpus (no PTB files in {args.data_dir})"
    print(
        f"backend {keras.backend.backend()}; {source}: {len(train_ids):,} training and "
        f"{len(valid_ids):,} validation tokens, vocabulary {vocab:,}; 2 x {args.units} "
        f"units, dropout {args.dropout}, {args.epochs} epochs",
        flush=True,
    )
    data = (segments(train_ids, args.bptt), segments(valid_ids, args.bptt))
    baseline = train("dropout-LSTM", vocab, data, args, noisin=False)
    noisy = train(
        f"dropout-LSTM + Noisin ({args.noise} {args.noise_level})", vocab, data, args, noisin=True
    )
    print(f"\nbest validation perplexity: dropout-LSTM {baseline:.1f}, + Noisin {noisy:.1f}")


if __name__ == "__main__":
    main()
