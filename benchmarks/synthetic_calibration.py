"""Calibration of the synthetic corpus: does an unregularized model overfit
it while a regularized one keeps improving towards the oracle?

Trains two two-layer LSTM language models of the same size on
`make_synthetic_corpus(...)` (its defaults unless `--corpus` says otherwise),
one with every regularizer off (untied, as Zaremba et al.'s small model) and
one with AWD-LSTM's (embedding dropout, locked dropout, weight drop, AR/TAR,
tied weights), and prints each epoch's validation perplexity beside the
source's oracle perplexity on the validation split and the seconds the epoch
took, then the test perplexity of each model at its best validation epoch.

Run (JAX is the fastest backend on a small CPU):

    KERAS_BACKEND=jax nice -n 5 .venv/bin/python benchmarks/synthetic_calibration.py

The defaults are the calibration run: 2 x 256 LSTMs (embedding 256), Adam
at 0.01 with global clipping at 0.25, the rate halved whenever the
validation loss does not improve, batch 32, BPTT 35 (fixed length), 10
epochs. Measured on the default corpus (60k/10k/10k tokens, 2,000 words,
oracle perplexity 41.59 on valid, 42.53 on test), JAX, Keras 3.15, a shared
2-core CPU, about 16 s per epoch:

    epoch            1     2     3     4     5     6     7     8     9    10
    unregularized  85.0  73.8  62.9  57.4  56.8  57.3  56.8  57.7  58.8  59.2
    regularized     (*)  70.0  64.4  59.1  55.4  54.3  53.8  53.5  54.1  53.3

(*) 5488: Adam at 0.01 overshoots once at the start with tied weights;
the model recovers in the next epoch. The unregularized model (2.08M
parameters) is best after 5 epochs (test 57.81, 1.36 x the oracle) and
then overfits; the regularized one (1.56M; dropouts 0.1 embedding, 0.3
input, 0.2 hidden, 0.3 output, weight drop 0.3, AR 2, TAR 1) keeps
improving (test 54.10, 1.27 x the oracle).

A small regularized model within two minutes (what a demo can afford):

    --models regularized --hidden 128 --embedding 128 --learning-rate 0.005 --epochs 16

reaches a validation perplexity of 52.26 (1.26 x the oracle; test 53.03,
1.25 x) in 101 s of training (about 6 s per epoch; the first, compiling,
12 s). The same model unregularized and untied stalls at 58.2 (test 59.28).
With plain SGD (the library's presets have no Adam), the `awd-lstm-cpu`
recipe at 2 layers of 128 units, embedding 64, lr 30, clipping 0.25, the
plateau schedule and the dropouts 0.05/0.2/0.1/0.2, weight drop 0.2 takes
about 4 s per epoch and learns the number agreement only after a plateau:
68.81 after 8 epochs, 64.72 after 12, 54.03 (1.30 x) after 24 (104 s).

Both models use truncated BPTT over stateful layers with fixed-length
batches (`BPTTSequence(variable_length=False)`): on JAX every distinct batch
length compiles a train step, which at this scale would cost more than the
training (docs/bptt.md); `--variable-bptt` turns AWD-LSTM's lengths on.
"""

import argparse
import json
import math
import time

import keras
import numpy as np

from keras_rnnreg.callbacks import BPTTCallback
from keras_rnnreg.data import BPTTSequence
from keras_rnnreg.datasets import make_synthetic_corpus
from keras_rnnreg.losses import TokenCrossEntropy
from keras_rnnreg.models import language_model

MODELS = ("unregularized", "regularized")


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated subset of: " + ", ".join(MODELS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--embedding", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--variable-bptt", action="store_true")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="adam")
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--clipnorm", type=float, default=0.25)
    parser.add_argument("--plateau-factor", type=float, default=2.0,
                        help="divide the learning rate by this whenever the "
                             "validation loss does not improve (0: constant)")
    # Regularized model's rates (AWD-LSTM's parts, lighter than its PTB rates).
    parser.add_argument("--embedding-dropout", type=float, default=0.1)
    parser.add_argument("--input-dropout", type=float, default=0.3)
    parser.add_argument("--hidden-dropout", type=float, default=0.2)
    parser.add_argument("--output-dropout", type=float, default=0.3)
    parser.add_argument("--weight-dropout", type=float, default=0.3)
    parser.add_argument("--alpha", type=float, default=2.0)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--untied", action="store_true",
                        help="untie the regularized model's softmax too")
    parser.add_argument("--seed", type=int, default=0, help="model seed")
    parser.add_argument("--corpus", default="{}",
                        help="JSON dict of make_synthetic_corpus arguments")
    parser.add_argument("--json", help="write the per-epoch numbers to this file")
    return parser.parse_args()


def build(arguments, vocab_size, regularized):
    common = {
        "embedding_size": arguments.embedding,
        "hidden_size": arguments.hidden,
        "num_layers": 2,
        "stateful": True,
        "batch_size": arguments.batch_size,
        "seed": arguments.seed,
    }
    if not regularized:
        # Zaremba et al.'s small model: untied, no regularizer at all.
        return language_model(vocab_size, tie_weights=False, **common)
    return language_model(
        vocab_size,
        tie_weights=not arguments.untied,
        embedding_dropout=arguments.embedding_dropout,
        input_dropout=arguments.input_dropout,
        hidden_dropout=arguments.hidden_dropout,
        output_dropout=arguments.output_dropout,
        weight_dropout=arguments.weight_dropout,
        alpha=arguments.alpha,
        beta=arguments.beta,
        **common,
    )


def optimizer(arguments):
    if arguments.optimizer == "adam":
        return keras.optimizers.Adam(arguments.learning_rate, global_clipnorm=arguments.clipnorm)
    return keras.optimizers.SGD(arguments.learning_rate, global_clipnorm=arguments.clipnorm)


class EpochReport(keras.callbacks.Callback):
    def __init__(self, label, oracle, history):
        super().__init__()
        self.label, self.oracle, self.history = label, oracle, history

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        perplexity = math.exp(logs["val_loss"])
        self.history.append({"epoch": epoch + 1, "valid_perplexity": perplexity,
                             "train_loss": logs["loss"], "seconds": seconds})
        print(
            f"{self.label:14s} epoch {epoch + 1:2d}  train loss {logs['loss']:.3f}  "
            f"valid ppl {perplexity:8.2f}  (oracle {self.oracle:.2f}, "
            f"ratio {perplexity / self.oracle:.3f})  [{seconds:5.1f} s]",
            flush=True,
        )


class KeepBest(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the lowest validation loss."""

    def __init__(self):
        super().__init__()
        self.best, self.weights = math.inf, None

    def on_epoch_end(self, epoch, logs=None):
        if logs["val_loss"] < self.best:
            self.best, self.weights = logs["val_loss"], self.model.get_weights()


def main():
    arguments = parse_arguments()
    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(1)  # see examples/awd_lstm_demo.py
    start = time.perf_counter()
    corpus = make_synthetic_corpus(**json.loads(arguments.corpus))
    made = time.perf_counter() - start
    oracle = {split: math.exp(value) for split, value in corpus.oracle_cross_entropy.items()}
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}; corpus "
        f"{corpus.config} made in {made:.1f} s: vocabulary {len(corpus.vocab)}, "
        f"{corpus.train.size:,} / {corpus.valid.size:,} / {corpus.test.size:,} tokens; "
        f"oracle perplexity train {oracle['train']:.2f}, valid {oracle['valid']:.2f}, "
        f"test {oracle['test']:.2f}",
        flush=True,
    )
    valid = BPTTSequence(corpus.valid, arguments.batch_size, arguments.bptt,
                         variable_length=False, token_weights=True)
    test = BPTTSequence(corpus.test, arguments.batch_size, arguments.bptt,
                        variable_length=False, token_weights=True)
    results = {"corpus": corpus.config, "oracle_perplexity": oracle,
               "arguments": vars(arguments), "models": {}}
    for label in arguments.models.split(","):
        if label not in MODELS:
            raise SystemExit(f"unknown model {label!r}; choose from {MODELS}")
        keras.utils.set_random_seed(arguments.seed)
        train = BPTTSequence(corpus.train, arguments.batch_size, arguments.bptt,
                             variable_length=arguments.variable_bptt, seed=arguments.seed)
        model = build(arguments, len(corpus.vocab), regularized=label == "regularized")
        model.compile(optimizer=optimizer(arguments), loss=TokenCrossEntropy())
        print(f"{label}: {model.count_params():,} parameters", flush=True)
        history, best = [], KeepBest()
        callbacks = [BPTTCallback(train), best, EpochReport(label, oracle["valid"], history)]
        if arguments.plateau_factor:
            # After BPTTCallback, which restores the unscaled rate at epoch ends.
            callbacks.insert(1, keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=1.0 / arguments.plateau_factor, patience=0,
                min_delta=0.0))
        fit_start = time.perf_counter()
        model.fit(train, validation_data=valid, epochs=arguments.epochs, verbose=0,
                  callbacks=callbacks)
        seconds = time.perf_counter() - fit_start
        model.set_weights(best.weights)
        callback = BPTTCallback(train)  # resets the states before evaluating
        test_perplexity = math.exp(model.evaluate(test, verbose=0, callbacks=[callback]))
        best_epoch = int(np.argmin([row["valid_perplexity"] for row in history])) + 1
        print(
            f"{label}: best valid ppl {math.exp(best.best):.2f} at epoch {best_epoch}; "
            f"its test ppl {test_perplexity:.2f} vs oracle {oracle['test']:.2f} "
            f"(ratio {test_perplexity / oracle['test']:.3f}); fit took {seconds:.0f} s",
            flush=True,
        )
        results["models"][label] = {"epochs": history, "best_epoch": best_epoch,
                                    "test_perplexity": test_perplexity, "fit_seconds": seconds}
    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
