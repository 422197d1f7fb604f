"""Dropout-LSTM vs dropout-LSTM + Noisin: a word-level language model on PTB.

Noisin (Dieng et al. 2018) regularizes an RNN by multiplying its hidden
state at every step by unbiased noise; Table 3 of the paper reports it on
top of a dropout-LSTM ("D + Bernoulli": γ = 0.80 for the medium model, 0.50
for the large one). This script trains two 2-layer language models on the
same data with the same seed, schedule and dropout, one with plain LSTMs and
one with `NoisinLSTM`, and prints both validation perplexities.

Data: the Penn Treebank files ptb.train.txt / ptb.valid.txt / ptb.test.txt
(Mikolov's split) from `--data-dir` (default: ../shared/data/ptb beside the
checkout), read with `keras_rnnreg.data.load_ptb`. Without them it falls back
to a synthetic corpus, so that it always runs.

The defaults are a small, quick run (a slice of PTB, 200 units, a few
epochs: a few minutes on a 2-core CPU) that shows the mechanics, not the
paper's numbers. The comparison is fair (both models share everything but
the noise), but it is not the paper's recipe: the LSTMs and the softmax keep
Keras's default initializers (only the embedding is U(-0.1, 0.1)), where
Noisin §5 initializes every weight U(-1/sqrt(H), 1/sqrt(H)) with zero biases,
and it uses plain SGD where the paper uses ASGD. For the paper's model and
recipe use the `noisin-medium-dropout` preset of `keras_rnnreg.models`
(docs/models.md). A larger run of this script:

    KERAS_BACKEND=jax python examples/noisin_lm.py --train-tokens 0 \\
        --valid-tokens 0 --units 650 --epochs 39 --noise-level 0.8

Batches come from `keras_rnnreg.data.BPTTSequence`: each stream is cut into
`--batch-size` contiguous rows and read in windows of `--bptt` words (the
last window of an epoch is what is left). The windows are trained statelessly
(each starts from a zero state; on JAX, Keras's own stateful LSTM would not
carry its state through `fit` anyway) with SGD and gradient clipping, dropout
0.5 on the embedding, between the layers and on the output (Zaremba et al.
2014). `BPTTCallback` scales the learning rate of the shorter last window by
its length, so that every word has the same weight; the validation windows
carry per-token weights, so that exp(validation loss) is the exact perplexity.
"""

import argparse
import math
import os

import keras
import numpy as np

from keras_rnnreg.callbacks import BPTTCallback
from keras_rnnreg.data import BPTTSequence, load_ptb
from keras_rnnreg.layers import NoisinLSTM

DEFAULT_DATA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "ptb"
)


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


def batches(tokens, args, validation=False):
    """Fixed-length BPTT windows over `tokens`; per-token weights for validation."""
    return BPTTSequence(
        tokens, args.batch_size, args.bptt, variable_length=False, token_weights=validation
    )


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
        keras.Input((None,), dtype="int32"),  # the last window is shorter
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
    train_batches, valid_batches = data
    keras.utils.set_random_seed(args.seed)  # the same initial weights and random draws
    model = build_model(vocab, args, noisin)
    history = model.fit(
        train_batches,
        epochs=args.epochs,
        validation_data=valid_batches,
        callbacks=[
            BPTTCallback(train_batches),
            keras.callbacks.ReduceLROnPlateau(factor=1 / 1.2, patience=0),
        ],
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
        corpus = load_ptb(args.data_dir)
        train_ids = _head(corpus.train, args.train_tokens)
        valid_ids = _head(corpus.valid, args.valid_tokens)
        vocab = len(corpus.vocab)
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
    data = (batches(train_ids, args), batches(valid_ids, args, validation=True))
    baseline = train("dropout-LSTM", vocab, data, args, noisin=False)
    noisy = train(
        f"dropout-LSTM + Noisin ({args.noise} {args.noise_level})", vocab, data, args, noisin=True
    )
    print(f"\nbest validation perplexity: dropout-LSTM {baseline:.1f}, + Noisin {noisy:.1f}")


if __name__ == "__main__":
    main()
