"""A small AWD-LSTM language model on a corpus with a known optimum.

The corpus is generated here: a random first-order Markov chain over 200
"words" (each word has 8 possible successors with random probabilities).
Because the chain is known, so is the best any model can do: its entropy rate

    H = sum_i pi_i * H(P[i, :])          (pi: stationary distribution)

and the optimal perplexity exp(H). The script also prints the perplexity of
the true chain on the actual validation targets, the unigram perplexity (a
model that ignores context) and the uniform one (200), so the model's
validation perplexity can be read against them.

The model has every AWD-LSTM regularizer of keras-rnnreg (Merity et al. 2017):

    EmbeddingDropout -> LockedDropout -> WeightDropLSTM -> LockedDropout
      -> WeightDropLSTM -> LockedDropout -> ARTARRegularizer
      -> tied softmax (the same embedding, called with reverse=True)

and is trained the AWD-LSTM way, with the package's own parts:

- data: `BPTTSequence` cuts the training stream into BATCH contiguous rows
  and reads them in batches of variable length (AWD-LSTM section 4.1: about
  BPTT steps with probability 0.95, about BPTT / 2 otherwise, s = 5); the
  validation stream is read in fixed-length batches with per-token sample
  weights, so `evaluate`'s loss is the exact per-token mean;
- stateful WeightDropLSTMs (`stateful=True`, a fixed batch size in the
  Input) carry their state from one batch to the next, on every backend;
- `ASGD`: plain SGD with global gradient clipping at 0.25 (as AWD-LSTM),
  which keeps a uniform average of the iterates once averaging is started;
- `BPTTCallback` scales each batch's learning rate by L / BPTT and resets
  the states at each epoch start and before each evaluation; `NTASGD` starts
  the averaging when the validation loss stops improving (AWD-LSTM's
  non-monotone trigger) and validates with, and ends on, the averaged weights.

The weights are initialized as in AWD-LSTM (section 5 and its code, which
follows PyTorch): embeddings U(-0.1, 0.1), every LSTM weight and bias
U(-1/sqrt(H), 1/sqrt(H)) with H the LSTM's units, the softmax bias zero.
AWD-LSTM's high constant SGD rate is tuned for this initialization; with
Keras's defaults (embeddings U(-0.05, 0.05), Glorot-uniform inputs,
orthogonal recurrent weights, zero biases with a forget bias of 1) this
demo learns more slowly (perplexity 5.42 instead of 5.13 after 5 epochs) and
ends at 4.527 instead of 4.457 (TensorFlow, same seed, 2026-12-07).

The dropout rates are lighter than AWD-LSTM's (locked 0.4/0.3/0.4, weight drop
0.5, tuned for 1150-unit LSTMs on Penn Treebank): locked 0.1, weight drop 0.2,
embedding dropout 0.1, since this model is tiny and the corpus has little to
overfit; AR/TAR keep AWD-LSTM's alpha = 2, beta = 1. The printed training loss
includes the AR/TAR penalty and is computed with dropout on, so it sits above
the validation loss. Finally the model is saved to a `.keras` file and
reloaded (all layers and the optimizer are registered, so no
`custom_objects` are needed) and must give the same logits.

On a 2-core CPU (Keras 3.15, 2026-12-07) the SGD iterate plateaus near
perplexity 4.8 after about 12 epochs, NT-ASGD starts averaging at the end of
epoch 15 (iteration 1380, on all three backends), the averaged weights are at
about 4.47 one epoch later, and the final validation perplexity is 4.457
(TensorFlow), 4.445 (torch) and 4.455 (JAX) against the optimum 4.156
(ratio 1.07). The script takes
about 45 s on TensorFlow and 80 s on PyTorch (one thread). JAX compiles
the train step once for each distinct batch length (about 50 in this
run, 1 to 3 s each; see docs/bptt.md), so it needs about 2 minutes, most
of them in the first epochs; a later epoch takes about 1 s.

Run:  KERAS_BACKEND=jax .venv/bin/python examples/awd_lstm_demo.py
      (or `make demo`, which uses tensorflow unless KERAS_BACKEND is set)
"""

import math
import os
import tempfile
import time

import keras
import numpy as np

from keras_rnnreg.callbacks import NTASGD, BPTTCallback, reset_rnn_states
from keras_rnnreg.data import BPTTSequence
from keras_rnnreg.layers import (
    ARTARRegularizer,
    EmbeddingDropout,
    LockedDropout,
    WeightDropLSTM,
)
from keras_rnnreg.optimizers import ASGD

SEED = 7
VOCAB = 200
SUCCESSORS = 8  # nonzero entries per row of the transition matrix
TRAIN_TOKENS = 100_000
VALID_TOKENS = 10_000
EMBEDDING = 64  # = units of the last LSTM, for tying (AWD-LSTM 4.5)
HIDDEN = 64
BPTT = 35  # base length; BPTTSequence draws about BPTT (p = 0.95) or BPTT / 2
BATCH = 32  # contiguous rows, fixed: the LSTMs are stateful
EPOCHS = 18
# SGD with AWD-LSTM's clipping (0.25): a step is at most
# LEARNING_RATE * (L / BPTT) * CLIPNORM long. This 79k-parameter model takes
# a higher rate than AWD-LSTM's 30 (24M parameters), which gets it to its
# noise floor, and so to the NT-ASGD trigger, sooner: at 30 the validation
# loss still improved almost every epoch up to epoch 20 (4.63, no trigger),
# at 50 the trigger fired in epoch 18, at 70 in epoch 15 (12 or 13 with
# earlier versions of the library).
LEARNING_RATE = 70.0
CLIPNORM = 0.25
# AWD-LSTM uses nonmono = 5 over hundreds of epochs. Here averaging starts as
# soon as a validation loss is worse than the best one logged before the
# previous epoch; the SGD iterate plateaus after about 12 epochs and the
# trigger fired in epoch 15 on all three backends (2026-12-07), leaving 3
# epochs of averaging.
NONMONO = 1


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


# ----------------------------------------------------------------- the model
# The initializers are passed explicitly (keras.initializers.RandomUniform)
# to get AWD-LSTM's initialization instead of Keras's defaults, which train
# worse with SGD at a high learning rate (see the module docstring).
def uniform(limit, seed):
    """U(-limit, limit). One instance per weight: a seeded initializer gives
    the same values at every call."""
    return keras.initializers.RandomUniform(-limit, limit, seed=seed)


def lstm(units, seed, name):
    """A stateful weight-dropped LSTM with AWD-LSTM's (PyTorch's) U(-1/sqrt(H),
    1/sqrt(H)) initialization of all its weights and biases (no forget bias)."""
    limit = 1.0 / math.sqrt(units)
    return WeightDropLSTM(
        units,
        weight_dropout=0.2,
        return_sequences=True,
        stateful=True,
        kernel_initializer=uniform(limit, seed + 100),
        recurrent_initializer=uniform(limit, seed + 200),
        bias_initializer=uniform(limit, seed + 300),
        unit_forget_bias=False,
        seed=seed,
        name=name,
    )


def awd_lstm(seed=SEED):
    # Stateful layers need the batch size: BPTTSequence batches always have
    # BATCH rows; the time axis is open (its length varies from batch to batch).
    tokens = keras.Input(batch_shape=(BATCH, None), dtype="int32", name="tokens")
    embedding = EmbeddingDropout(
        VOCAB,
        EMBEDDING,
        rate=0.1,
        use_output_bias=True,  # zero-initialized, as AWD-LSTM's decoder bias
        embeddings_initializer=uniform(0.1, seed),  # AWD-LSTM: U(-0.1, 0.1)
        seed=seed,
        name="embedding",
    )
    x = embedding(tokens)
    x = LockedDropout(0.1, seed=seed + 1)(x)
    x = lstm(HIDDEN, seed + 2, "lstm_1")(x)
    x = LockedDropout(0.1, seed=seed + 3)(x)
    h = lstm(EMBEDDING, seed + 4, "lstm_2")(x)
    dropped_h = LockedDropout(0.1, seed=seed + 5)(h)
    dropped_h = ARTARRegularizer(alpha=2.0, beta=1.0, name="ar_tar")([h, dropped_h])
    logits = embedding(dropped_h, reverse=True)
    return keras.Model(tokens, logits, name="awd_lstm_demo")


class EpochReport(keras.callbacks.Callback):
    """One line per epoch: training loss (with AR/TAR) and validation
    perplexity, marked when it was measured with the averaged weights."""

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.averaging = False  # whether this epoch's validation used w̄

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        print(
            f"epoch {epoch + 1:2d}/{self.params['epochs']}  "
            f"train loss {logs['loss']:.4f} (cross-entropy + AR/TAR, with dropout)  "
            f"val ppl {math.exp(logs['val_loss']):7.3f}"
            f"{' (averaged)' if self.averaging else '           '}  "
            f"[{time.perf_counter() - self.start:5.1f} s]",
            flush=True,
        )
        # NTASGD (listed before this callback) checks the trigger first and
        # logs T; the next epoch's validation then runs with the average.
        self.averaging = logs.get("averaging_start", -1) >= 0


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


def first_batch_logits(model, inputs):
    """The logits of one batch from a zero state (stateful layers keep the
    state of whatever ran last, so it is reset first)."""
    reset_rnn_states(model)
    return keras.ops.convert_to_numpy(model.predict_on_batch(inputs))


def main():
    script_start = time.perf_counter()
    limit_torch_threads()
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")

    transitions = markov_chain(rng)
    pi = stationary_distribution(transitions)
    h_rate = entropy_rate(transitions, pi)
    corpus = sample_chain(transitions, pi, TRAIN_TOKENS + VALID_TOKENS, rng)
    train = BPTTSequence(corpus[:TRAIN_TOKENS], BATCH, BPTT, seed=SEED)
    valid = BPTTSequence(
        corpus[TRAIN_TOKENS:], BATCH, BPTT, variable_length=False, token_weights=True
    )

    # The true chain scored on exactly the validation targets the model
    # predicts: in each row, every token after the first.
    oracle_nll = -np.mean(np.log(transitions[valid.rows[:, :-1], valid.rows[:, 1:]]))
    unigram_ppl = math.exp(-(pi * np.log(pi)).sum())
    print(
        f"corpus: Markov chain over {VOCAB} words, {SUCCESSORS} successors each; "
        f"{train.rows.size:,} training tokens in {BATCH} rows, read in "
        f"{train.num_batches} batches of variable length (about {BPTT}) per epoch; "
        f"{valid.rows.size:,} validation tokens"
    )
    print(
        f"optimal perplexity exp(entropy rate) = {math.exp(h_rate):.3f}  "
        f"(true chain on these validation targets: {math.exp(oracle_nll):.3f}; "
        f"unigram {unigram_ppl:.1f}; uniform {VOCAB})"
    )

    model = awd_lstm()
    model.compile(
        optimizer=ASGD(LEARNING_RATE, global_clipnorm=CLIPNORM),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    print(
        f"model: {model.count_params():,} parameters (embedding tied to the softmax); "
        f"ASGD lr {LEARNING_RATE:g}, clip {CLIPNORM:g}; NT-ASGD nonmono {NONMONO}"
    )
    # NTASGD before EpochReport: it adds `averaging_start` to the epoch's logs.
    model.fit(
        train,
        epochs=EPOCHS,
        validation_data=valid,
        callbacks=[BPTTCallback(train), NTASGD(nonmono=NONMONO), EpochReport()],
        verbose=0,
    )
    optimizer = model.optimizer
    if optimizer.averaging:
        start = int(keras.ops.convert_to_numpy(optimizer.averaging_start))
        print(
            f"NT-ASGD started averaging at iteration {start} (end of epoch "
            f"{start // train.num_batches}); the model now holds the average of "
            f"the last {optimizer.average_count} iterates"
        )
    else:
        print("NT-ASGD did not trigger: the model holds the last SGD iterate")

    # ARTARRegularizer adds its loss only when training, and evaluate runs
    # with training=False, so this is the plain cross-entropy per token.
    reset_rnn_states(model)
    valid_loss = model.evaluate(valid, verbose=0)
    print(
        f"final validation perplexity {math.exp(valid_loss):.3f}  "
        f"vs optimal {math.exp(h_rate):.3f} "
        f"(ratio {math.exp(valid_loss - h_rate):.3f})"
    )

    batch = valid[0][0]
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "awd_lstm_demo.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
        reset_rnn_states(reloaded)
        reloaded_loss = reloaded.evaluate(valid, verbose=0)
        difference = np.max(
            np.abs(first_batch_logits(model, batch) - first_batch_logits(reloaded, batch))
        )
        print(
            f"saved and reloaded {os.path.basename(path)} "
            f"({os.path.getsize(path) / 1024:.0f} KiB): validation perplexity "
            f"{math.exp(reloaded_loss):.3f}, max |logit difference| {difference:.2e}"
        )
    print(f"done in {time.perf_counter() - script_start:.1f} s (after the imports)")
    if difference > 1e-4:
        raise SystemExit("the reloaded model does not match the trained one")


if __name__ == "__main__":
    main()
