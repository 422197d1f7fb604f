"""Training throughput (tokens/s) of NoisinLSTM against the two Keras LSTMs.

The same 2-layer LM as benchmarks/throughput.py (vocabulary 10000, embedding
200, two recurrent layers of 200 units, batch 20, BPTT 35), with three kinds
of recurrent layer:

    noisin      NoisinLSTM(200, noise="bernoulli", noise_level=0.5)
    noisin_cell_call  the same through NoisinRNN's generic loop (a cell call
                per step: how NoisinLSTM ran before its own LSTM loop)
    cell_loop   keras.layers.RNN(keras.layers.LSTMCell(200)): the per-step
                cell loop, the implementation Noisin must use (fresh noise at
                every step cannot go through a fused kernel)
    fused       keras.layers.LSTM(200): the backend's fused kernel where it has
                one (cuDNN on GPUs, torch's CPU kernel), else the same loop

    pytorch     a hand-written PyTorch LM (no Keras): nn.Embedding, two
                nn.LSTMCell loops whose emitted state is multiplied by the
                same Bernoulli noise (drawn for the sequence before each
                loop), nn.Linear; torch.optim.SGD with clip_grad_norm_ 0.25

Targets (issue 10): noisin >= 1.0 x pytorch on every backend; noisin >= 0.9 x
cell_loop. The gap to `fused` is what running the cell loop costs here.

The decoder is the one `keras_rnnreg.models.language_model` builds
(`TokenDense`: Keras's Dense with its matmul over the flattened tokens,
which XLA on a CPU runs faster than the same over (batch, time)).
Training is stateless on random token ids; SGD(lr=1, global_clipnorm=0.25)
and keras_rnnreg's TokenCrossEntropy (what its language models compile with;
Keras's sparse cross-entropy would run a non-contiguous log-softmax on
torch). Every model is compiled
and warmed up first; then each repeat runs `--batches` timed
`train_on_batch` steps of every variant in turn (interleaved, so drifts of a
shared machine hit all variants alike). Reported: the median tokens/s over
repeats and the ratios of medians.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/noisin_throughput.py
    KERAS_BACKEND=torch .venv/bin/python benchmarks/noisin_throughput.py --threads 1
"""

import argparse
import datetime
import functools

import keras
import numpy as np

from _interleaved import print_medians, set_threads, time_interleaved
from keras_rnnreg.layers import NoisinCell, NoisinLSTM, NoisinRNN
from keras_rnnreg.layers._projection import TokenDense
from keras_rnnreg.losses import TokenCrossEntropy

VOCAB = 10000
EMBEDDING = 200
HIDDEN = 200
BATCH = 20
BPTT = 35

class _LSTMCellCalledPerStep(keras.layers.LSTMCell):
    """Not Keras's own class, so NoisinRNN runs its generic loop (a cell call
    per step, as NoisinLSTM did before its LSTM loop): the `noisin_cell_call`
    variant."""


RECURRENT = {
    "noisin": lambda units: NoisinLSTM(
        units, noise="bernoulli", noise_level=0.5, return_sequences=True
    ),
    "noisin_cell_call": lambda units: NoisinRNN(
        NoisinCell(_LSTMCellCalledPerStep(units), "bernoulli", 0.5), return_sequences=True
    ),
    "cell_loop": lambda units: keras.layers.RNN(
        keras.layers.LSTMCell(units), return_sequences=True
    ),
    "fused": lambda units: keras.layers.LSTM(units, return_sequences=True),
}


def build_model(variant):
    tokens = keras.Input((BPTT,), batch_size=BATCH, dtype="int32")
    x = keras.layers.Embedding(VOCAB, EMBEDDING)(tokens)
    x = RECURRENT[variant](HIDDEN)(x)
    x = RECURRENT[variant](HIDDEN)(x)
    # The decoder `language_model` builds: Dense over the flattened tokens.
    model = keras.Model(tokens, TokenDense(VOCAB)(x))
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0, global_clipnorm=0.25),
        loss=TokenCrossEntropy(),
    )
    return model


class TorchNoisinLM:
    """The `pytorch` variant: a PyTorch Noisin LM written by hand, with a
    `train_on_batch` like Keras's, so it runs in the same timing loop."""

    def __init__(self, seed=0, noise_level=0.5):
        import torch

        self.torch = torch
        torch.manual_seed(seed)
        nn = torch.nn
        self.embedding = nn.Embedding(VOCAB, EMBEDDING)
        self.cells = nn.ModuleList([nn.LSTMCell(EMBEDDING, HIDDEN), nn.LSTMCell(HIDDEN, HIDDEN)])
        self.decoder = nn.Linear(HIDDEN, VOCAB)
        self.modules = nn.ModuleList([self.embedding, self.cells, self.decoder])
        self.optimizer = torch.optim.SGD(self.modules.parameters(), lr=1.0)
        self.keep = noise_level

    def forward(self, tokens):
        torch = self.torch
        x = self.embedding(tokens)  # (batch, time, features)
        for cell in self.cells:
            batch, steps = x.shape[0], x.shape[1]
            noise = torch.bernoulli(torch.full((steps, batch, HIDDEN), self.keep)) / self.keep
            h = x.new_zeros(batch, HIDDEN)
            c = x.new_zeros(batch, HIDDEN)
            outputs = []
            for t in range(steps):
                h, c = cell(x[:, t], (h, c))
                h = h * noise[t]  # the noised state is emitted and fed back
                outputs.append(h)
            x = torch.stack(outputs, dim=1)
        return self.decoder(x)

    def train_on_batch(self, x, y):
        torch = self.torch
        tokens, targets = torch.from_numpy(x).long(), torch.from_numpy(y).long()
        logits = self.forward(tokens)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.modules.parameters(), 0.25)
        self.optimizer.step()
        return loss.detach().numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=5, help="timed steps per variant per repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None,
        help="intra-op threads for torch and TensorFlow (default: the framework's). "
        "On a shared machine torch's thread pool can stall for whole time slices "
        "when a core is busy; --threads 1 avoids that. JAX ignores it.",
    )
    parser.add_argument("--quick", action="store_true", help="2 repeats x 1 step: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batches, args.warmup = 2, 1, 1

    backend = keras.backend.backend()
    set_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    data = rng.integers(0, VOCAB, size=(50, BATCH, BPTT + 1), dtype=np.int32)
    x, y = data[:, :, :-1], data[:, :, 1:]
    tokens_per_step = BATCH * BPTT
    print(
        f"date: {datetime.date.today()}  backend: {backend}  keras {keras.__version__}  "
        f"threads: {args.threads or 'framework default'}"
    )
    print(
        f"model: vocab {VOCAB}, embedding {EMBEDDING}, 2 x {HIDDEN} units, batch {BATCH}, "
        f"bptt {BPTT}; {args.repeats} repeats x {args.batches} steps, interleaved"
    )

    builders = {name: functools.partial(build_model, name) for name in RECURRENT}
    builders["pytorch"] = functools.partial(TorchNoisinLM, args.seed)
    rates = time_interleaved(
        builders, x, y, tokens_per_step, args.repeats, args.batches, args.warmup
    )
    median = print_medians(backend, rates)
    print(
        f"\nnoisin / pytorch = {median['noisin'] / median['pytorch']:.3f} (target >= 1.0); "
        f"noisin / cell_loop = {median['noisin'] / median['cell_loop']:.3f} (target >= 0.9); "
        f"noisin / noisin_cell_call = {median['noisin'] / median['noisin_cell_call']:.3f}; "
        f"noisin / fused = {median['noisin'] / median['fused']:.3f}; "
        f"cell_loop / fused = {median['cell_loop'] / median['fused']:.3f}"
    )


if __name__ == "__main__":
    main()
