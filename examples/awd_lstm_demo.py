"""A small AWD-LSTM language model on a corpus with a known optimum.

The corpus is generated here: a random first-order Markov chain over 200
"words" (each word has 8 possible successors with random probabilities).
Because the chain is known, so is the best any model can do: its entropy rate

    H = sum_i pi_i * H(P[i, :])          (pi: stationary distribution)

and the optimal perplexity exp(H). The script also prints the perplexity of
the true chain on the actual validation tokens, the unigram perplexity (a
model that ignores context) and the uniform one (200), so the model's
validation perplexity can be read against them.

The model has every AWD-LSTM regularizer of keras-rnnreg (Merity et al. 2017):

    EmbeddingDropout -> LockedDropout -> WeightDropLSTM -> LockedDropout
      -> WeightDropLSTM -> LockedDropout -> ARTARRegularizer
      -> tied softmax (the same embedding, called with reverse=True)

trained statelessly with `model.fit` on fixed-length windows (bptt 35), then
saved to a `.keras` file and reloaded to show that it serializes (all layers
are registered, so no `custom_objects` are needed).

The dropout rates are lighter than AWD-LSTM's (locked 0.4/0.3/0.4, weight drop
0.5, tuned for 1150-unit LSTMs on Penn Treebank): locked 0.1, weight drop 0.2,
embedding dropout 0.1, since this model is tiny and the corpus has little to
overfit; AR/TAR keep AWD-LSTM's alpha = 2, beta = 1. The printed training loss
includes the AR/TAR penalty and is computed with dropout on, so it sits above
the validation loss. After 5 epochs (about a minute of training on a 2-core
CPU) the validation perplexity is within about 10% of the optimum.

Run:  KERAS_BACKEND=jax .venv/bin/python examples/awd_lstm_demo.py
      (or `make demo`, which uses tensorflow unless KERAS_BACKEND is set)
"""

import math
import os
import tempfile
import time

import keras
import numpy as np

from keras_rnnreg import (
    ARTARRegularizer,
    EmbeddingDropout,
    LockedDropout,
    WeightDropLSTM,
)

SEED = 7
VOCAB = 200
SUCCESSORS = 8  # nonzero entries per row of the transition matrix
TRAIN_TOKENS = 200_000
VALID_TOKENS = 20_000
EMBEDDING = 128  # = units of the last LSTM, for tying (AWD-LSTM 4.5)
HIDDEN = 128
BPTT = 35
BATCH = 32
EPOCHS = 5


# ---------------------------------------------------------------- the corpus
def markov_chain(rng):
    """A random sparse transition matrix P (rows sum to 1)."""
    transitions = np.zeros((VOCAB, VOCAB))
    for word in range(VOCAB):
        successors = rng.choice(VOCAB, size=SUCCESSORS, replace=False)
        transitions[word, successors] = rng.dirichlet(np.full(SUCCESSORS, 0.5))
    return transitions


def stationary_distribution(transitions):
    pi = np.full(VOCAB, 1.0 / VOCAB)
    for _ in range(10_000):
        new = pi @ transitions
        if np.abs(new - pi).sum() < 1e-13:
            break
        pi = new
    return new / new.sum()


def entropy_rate(transitions, pi):
    """H = -sum_i pi_i sum_j P_ij log P_ij, in nats."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = np.where(transitions > 0, np.log(transitions), 0.0)
    return float(-(pi * (transitions * log_p).sum(axis=1)).sum())


def sample_chain(transitions, pi, n, rng):
    cumulative = np.cumsum(transitions, axis=1)
    tokens = np.empty(n, dtype=np.int32)
    tokens[0] = rng.choice(VOCAB, p=pi)
    draws = rng.random(n)
    for t in range(1, n):
        row = cumulative[tokens[t - 1]]
        tokens[t] = min(np.searchsorted(row, draws[t] * row[-1], side="right"), VOCAB - 1)
    return tokens


def windows(tokens):
    """Non-overlapping (input, next-token target) windows of length BPTT."""
    n = (len(tokens) - 1) // BPTT
    x = tokens[: n * BPTT].reshape(n, BPTT)
    y = tokens[1 : n * BPTT + 1].reshape(n, BPTT)
    return x, y


# ----------------------------------------------------------------- the model
def awd_lstm(seed=SEED):
    tokens = keras.Input((BPTT,), dtype="int32", name="tokens")
    embedding = EmbeddingDropout(
        VOCAB, EMBEDDING, rate=0.1, use_output_bias=True, seed=seed, name="embedding"
    )
    x = embedding(tokens)
    x = LockedDropout(0.1, seed=seed + 1)(x)
    x = WeightDropLSTM(
        HIDDEN, weight_dropout=0.2, return_sequences=True, seed=seed + 2, name="lstm_1"
    )(x)
    x = LockedDropout(0.1, seed=seed + 3)(x)
    h = WeightDropLSTM(
        EMBEDDING, weight_dropout=0.2, return_sequences=True, seed=seed + 4, name="lstm_2"
    )(x)
    dropped_h = LockedDropout(0.1, seed=seed + 5)(h)
    dropped_h = ARTARRegularizer(alpha=2.0, beta=1.0, name="ar_tar")([h, dropped_h])
    logits = embedding(dropped_h, reverse=True)
    return keras.Model(tokens, logits, name="awd_lstm_demo")


class EpochReport(keras.callbacks.Callback):
    """One line per epoch: training loss (with AR/TAR) and validation perplexity."""

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        print(
            f"epoch {epoch + 1}/{self.params['epochs']}  "
            f"train loss {logs['loss']:.4f} (cross-entropy + AR/TAR, with dropout)  "
            f"val loss {logs['val_loss']:.4f}  val ppl {math.exp(logs['val_loss']):7.3f}  "
            f"[{time.perf_counter() - self.start:5.1f} s]",
            flush=True,
        )


def limit_torch_threads():
    """One intra-op thread for torch unless OMP_NUM_THREADS says otherwise.

    This model's matrices are small (batch 32 x 128 units), so torch's
    OpenMP pool gains little; on a busy machine it loses a lot: when another
    process holds a core, every parallel region waits for the descheduled
    thread (on a shared 2-core VM an epoch took 15 s to over 200 s with the
    default two threads, depending on the other load, and 15 s with one).
    """
    if keras.backend.backend() == "torch" and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)


def main():
    limit_torch_threads()
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")

    transitions = markov_chain(rng)
    pi = stationary_distribution(transitions)
    h_rate = entropy_rate(transitions, pi)
    corpus = sample_chain(transitions, pi, TRAIN_TOKENS + VALID_TOKENS + 1, rng)
    train, valid = corpus[: TRAIN_TOKENS + 1], corpus[TRAIN_TOKENS:]
    x_train, y_train = windows(train)
    x_valid, y_valid = windows(valid)

    # The true chain scored on exactly the validation targets the model sees.
    oracle_nll = -np.mean(np.log(transitions[x_valid, y_valid]))
    unigram_ppl = math.exp(-(pi * np.log(pi)).sum())
    print(
        f"corpus: Markov chain over {VOCAB} words, {SUCCESSORS} successors each; "
        f"{x_train.size:,} training and {x_valid.size:,} validation tokens"
    )
    print(
        f"optimal perplexity exp(entropy rate) = {math.exp(h_rate):.3f}  "
        f"(true chain on these validation tokens: {math.exp(oracle_nll):.3f}; "
        f"unigram {unigram_ppl:.1f}; uniform {VOCAB})"
    )

    model = awd_lstm()
    # Adam with a cosine-decayed rate: quicker than AWD-LSTM's SGD + NT-ASGD
    # for a one-minute demo.
    steps = EPOCHS * math.ceil(len(x_train) / BATCH)
    learning_rate = keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=steps, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, global_clipnorm=0.25),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    print(f"model: {model.count_params():,} parameters (embedding tied to the softmax)")
    model.fit(
        x_train,
        y_train,
        batch_size=BATCH,
        epochs=EPOCHS,
        validation_data=(x_valid, y_valid),
        callbacks=[EpochReport()],
        verbose=0,
    )

    # ARTARRegularizer adds its loss only when training, and evaluate runs
    # with training=False, so this is the plain cross-entropy.
    valid_loss = model.evaluate(x_valid, y_valid, batch_size=BATCH, verbose=0)
    print(
        f"final validation perplexity {math.exp(valid_loss):.3f}  "
        f"vs optimal {math.exp(h_rate):.3f} "
        f"(ratio {math.exp(valid_loss - h_rate):.3f})"
    )

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "awd_lstm_demo.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
        reloaded_loss = reloaded.evaluate(x_valid, y_valid, batch_size=BATCH, verbose=0)
        difference = np.max(
            np.abs(
                model.predict(x_valid[:64], verbose=0)
                - reloaded.predict(x_valid[:64], verbose=0)
            )
        )
        print(
            f"saved and reloaded {os.path.basename(path)} "
            f"({os.path.getsize(path) / 1024:.0f} KiB): validation perplexity "
            f"{math.exp(reloaded_loss):.3f}, max |logit difference| {difference:.2e}"
        )
    if difference > 1e-4:
        raise SystemExit("the reloaded model does not match the trained one")


if __name__ == "__main__":
    main()
