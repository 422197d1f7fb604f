"""A PyTorch reference AWD-LSTM, written from the paper, to check keras_rnnreg against.

Merity, Keskar & Socher 2017, *Regularizing and Optimizing LSTM Language
Models* (/work/shared/papers/awd-lstm.txt), §2-5, re-implemented here in
plain PyTorch (not taken from the authors' code or any other project), with
the hyperparameters of keras_rnnreg's `awd-lstm-cpu` preset, read from the
preset object so that the two sides cannot drift apart:

* weight drop (§2): DropConnect on each LSTM layer's hidden-to-hidden
  matrix W_hh (all four gates), one mask for the whole batch and every time
  step, redrawn at every forward pass, inverted scaling 1/(1-p);
* locked (variational) dropout (§4.2): one Bernoulli mask per sequence and
  feature, reused at every time step, on the embedding output (dropouti),
  between LSTM layers (dropouth) and on the last LSTM output (dropout);
* embedding dropout (§4.3): whole rows (word types) of the embedding matrix
  dropped per forward pass, survivors scaled by 1/(1-p_e);
* weight tying (§4.4) with an independent embedding size (§4.5): the last
  LSTM layer has the embedding's size; the decoder reuses the embedding
  matrix and has its own bias;
* AR/TAR (§4.6) on the last layer: α·mean((m⊙h)²) + β·mean((h_{t+1}−h_t)²),
  AR on the dropped output, TAR on the raw output;
* initialization (§5): embedding U(−0.1, 0.1), every LSTM weight and bias
  U(−1/√H, 1/√H) with H that layer's hidden size, decoder bias 0;
* optimization (§3, §5): SGD with a constant rate, global gradient clipping
  at 0.25, coupled weight decay (gradient + λ·w, torch's SGD `weight_decay`,
  added after clipping); variable-length BPTT (§4.1): base length bptt with
  probability 0.95 else bptt/2, length ~ N(base, 5) with a floor of 5, the
  batch's learning rate scaled by seq_len/bptt; stateful training, the hidden
  state carried across batches and detached (truncated BPTT), reset at each
  epoch start;
* evaluation: fixed-length BPTT windows, state reset at the start and
  carried through the split, perplexity = exp(mean token cross-entropy).

NT-ASGD's averaging cannot trigger before its 7th validation (n = 5), so for
the few epochs this reference is run for, plain SGD is exactly the recipe;
averaging is not implemented here.

Only torch and numpy are used for the model and the training loop;
`keras_rnnreg.data.load_ptb` reads PTB (importing keras_rnnreg imports
Keras, but no Keras code runs in the loop) and `keras_rnnreg.models` supplies
the hyperparameters.

Usage: `python benchmarks/reproduce.py --side reference --epochs 1`, or

>>> from benchmarks.reference_awd_lstm import train
>>> history = train(1, train_ids=corpus.train, valid_ids=corpus.valid,
...                 vocab_size=len(corpus.vocab))
"""

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PRESET_NAME = "awd-lstm-cpu"


def preset_hyperparameters(preset=None, **overrides):
    """The recipe of `preset` (default `awd-lstm-cpu`) as a plain dict.

    The preset's builder arguments (its model arguments, resolved the way
    `language_model` resolves them, so the last layer's size follows tying)
    plus the recipe fields this reference uses. `overrides` are builder
    arguments (e.g. `weight_dropout=0.0`), applied as in `preset.build`.
    """
    from keras_rnnreg.models import get_preset
    from keras_rnnreg.models.builder import resolve_arguments

    preset = get_preset(PRESET_NAME) if preset is None else preset
    arguments = resolve_arguments(**preset.arguments(**overrides))
    unsupported = {
        "cell": ("lstm",),
        "noise": (None,),
        "dropout_type": ("locked",),
        "initialization": ("paper",),
    }
    for name, allowed in unsupported.items():
        if arguments[name] not in allowed:
            raise ValueError(
                f"The PyTorch reference implements only {name} in {allowed}. "
                f"Received: {name}={arguments[name]!r}"
            )
    return {
        "embedding_size": arguments["embedding_size"],
        "hidden_sizes": list(arguments["hidden_sizes"]),
        "tie_weights": arguments["tie_weights"],
        "weight_dropout": arguments["weight_dropout"],
        "embedding_dropout": arguments["embedding_dropout"],
        "input_dropout": arguments["input_dropout"],
        "hidden_dropout": arguments["hidden_dropout"],
        "output_dropout": arguments["output_dropout"],
        "alpha": arguments["alpha"],
        "beta": arguments["beta"],
        "learning_rate": preset.learning_rate,
        "clipnorm": preset.clipnorm,
        "weight_decay": preset.weight_decay,
        "batch_size": preset.batch_size,
        "bptt": preset.bptt,
        "variable_bptt": preset.variable_bptt,
        "seed": preset.seed,
        "optimizer": preset.optimizer,
        "nonmono": preset.nonmono,
    }


# ----------------------------------------------------------------- layers
def locked_dropout(x, rate, training):
    """x: (time, batch, features); one mask per (batch, feature), all steps."""
    if not training or rate == 0.0:
        return x
    mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1.0 - rate) / (1.0 - rate)
    return x * mask


def embedding_dropout(weight, rate, training):
    """Drops whole rows (word types) of the embedding matrix, scales the rest."""
    if not training or rate == 0.0:
        return weight
    mask = weight.new_empty(weight.size(0), 1).bernoulli_(1.0 - rate) / (1.0 - rate)
    return weight * mask


class WeightDropLSTMLayer(nn.Module):
    """One LSTM layer with DropConnect on its hidden-to-hidden matrix.

    How the fresh mask per forward pass is applied: the layer keeps the raw
    parameters (W_ih, W_hh, b_ih, b_hh, laid out as nn.LSTM's: gates i, f,
    g, o stacked on the rows) and, at every forward call, computes the
    dropped matrix W_hh' = dropout(W_hh) (a new Bernoulli mask over the
    matrix, so one mask for all examples and all time steps) as an ordinary
    autograd operation, then runs torch's own fused LSTM kernel
    (`torch._VF.lstm`, what `nn.LSTM.forward` calls) with the weight list
    [W_ih, W_hh', b_ih, b_hh]. Gradients flow through the mask back to the
    raw W_hh, the LSTM kernel itself is unmodified (as the paper stresses),
    and no parameter is ever overwritten in place (which is what makes the
    "recompute the weight of an nn.LSTM and then call it" approaches fragile).
    """

    def __init__(self, input_size, hidden_size, weight_dropout):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_dropout = weight_dropout
        gates = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(gates))
        self.bias_hh = nn.Parameter(torch.empty(gates))
        self.reset_parameters()

    def reset_parameters(self):
        # §5: every weight other than the embedding U(-1/√H, 1/√H).
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(self, x, state):
        """x: (time, batch, input_size); state: (h, c), each (1, batch, H)."""
        weight_hh = F.dropout(self.weight_hh, self.weight_dropout, self.training)
        weights = [self.weight_ih, weight_hh, self.bias_ih, self.bias_hh]
        # _VF.lstm(input, hx, params, has_biases, num_layers, dropout, train,
        #          bidirectional, batch_first)
        output, h, c = torch._VF.lstm(
            x, state, weights, True, 1, 0.0, self.training, False, False
        )
        return output, (h, c)


class AWDLSTM(nn.Module):
    """Embedding -> [weight-dropped LSTM] x L -> tied softmax, AWD's dropouts."""

    def __init__(self, vocab_size, config):
        super().__init__()
        self.config = config
        embedding_size = config["embedding_size"]
        sizes = config["hidden_sizes"]
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.layers = nn.ModuleList(
            WeightDropLSTMLayer(n_in, n_out, config["weight_dropout"])
            for n_in, n_out in zip([embedding_size] + sizes[:-1], sizes)
        )
        if config["tie_weights"]:
            if sizes[-1] != embedding_size:
                raise ValueError("Tying needs the last layer's size = embedding size.")
            self.decoder_weight = None
        else:
            self.decoder_weight = nn.Parameter(torch.empty(vocab_size, sizes[-1]))
            nn.init.uniform_(self.decoder_weight, -0.1, 0.1)
        self.decoder_bias = nn.Parameter(torch.zeros(vocab_size))  # §5: bias 0
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)  # §5: U(-0.1, 0.1)

    def init_state(self, batch_size):
        weight = self.embedding.weight
        return [
            (weight.new_zeros(1, batch_size, layer.hidden_size),
             weight.new_zeros(1, batch_size, layer.hidden_size))
            for layer in self.layers
        ]

    def forward(self, tokens, state):
        """tokens: (time, batch) int64. Returns logits (time, batch, V), the
        new state, the last layer's raw output h and its dropped output m⊙h."""
        c = self.config
        weight = embedding_dropout(self.embedding.weight, c["embedding_dropout"], self.training)
        x = locked_dropout(F.embedding(tokens, weight), c["input_dropout"], self.training)
        new_state = []
        for index, layer in enumerate(self.layers):
            h, layer_state = layer(x, state[index])
            new_state.append(layer_state)
            if index < len(self.layers) - 1:
                x = locked_dropout(h, c["hidden_dropout"], self.training)
        dropped_h = locked_dropout(h, c["output_dropout"], self.training)
        decoder = self.embedding.weight if self.decoder_weight is None else self.decoder_weight
        logits = F.linear(dropped_h, decoder, self.decoder_bias)
        return logits, new_state, h, dropped_h


def detach(state):
    return [(h.detach(), c.detach()) for h, c in state]


# ------------------------------------------------------------------- data
def batchify(tokens, batch_size):
    """(time, batch) int64 tensor: the stream cut into `batch_size`
    contiguous columns, the remainder dropped."""
    tokens = np.asarray(tokens, dtype=np.int64)
    n = len(tokens) // batch_size
    return torch.from_numpy(tokens[: n * batch_size].reshape(batch_size, n).T.copy())


def variable_lengths(total, bptt, rng, p=0.95, s=5.0, floor=5):
    """§4.1's random BPTT lengths covering `total` steps: base bptt with
    probability p else bptt/2, length ~ N(base, s) rounded, at least `floor`,
    the last batch cut at the end of the data."""
    lengths, position = [], 0
    while position < total:
        base = bptt if rng.random() < p else bptt / 2.0
        length = max(floor, int(round(rng.normal(base, s))))
        length = min(length, total - position)
        lengths.append(length)
        position += length
    return lengths


# --------------------------------------------------------------- training
def evaluate(model, data, bptt, batch_size):
    """Perplexity over `data` ((time, batch) ids), fixed-length windows, the
    state reset at the start and carried through."""
    model.eval()
    state = model.init_state(batch_size)
    total_loss, total_tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, data.size(0) - 1, bptt):
            length = min(bptt, data.size(0) - 1 - start)
            inputs = data[start : start + length]
            targets = data[start + 1 : start + 1 + length]
            logits, state, _, _ = model(inputs, state)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
            )
            total_loss += float(loss)
            total_tokens += targets.numel()
    return math.exp(total_loss / total_tokens)


def train_step(model, optimizer, config, inputs, targets, state):
    """One truncated-BPTT step: the carried state detached, cross-entropy
    plus AR/TAR (§4.6) backpropagated, the global norm clipped, one SGD
    step. Returns the cross-entropy (a tensor) and the new state."""
    state = detach(state)
    optimizer.zero_grad(set_to_none=True)
    logits, state, h, dropped_h = model(inputs, state)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
    penalty = 0.0
    if config["alpha"]:
        penalty = penalty + config["alpha"] * dropped_h.pow(2).mean()
    if config["beta"] and h.size(0) > 1:
        penalty = penalty + config["beta"] * (h[1:] - h[:-1]).pow(2).mean()
    (loss + penalty).backward()
    if config["clipnorm"]:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["clipnorm"])
    optimizer.step()
    return loss, state


def train(
    epochs,
    train_ids=None,
    valid_ids=None,
    vocab_size=None,
    data_path="/work/shared/data/ptb",
    train_tokens=None,
    eval_batch_size=None,
    seed=None,
    preset=None,
    device="cpu",
    log=print,
    stop=None,
    **overrides,
):
    """Trains the reference AWD-LSTM and validates after every epoch.

    Args:
        epochs: Number of epochs.
        train_ids, valid_ids, vocab_size: Token streams and vocabulary size;
            None reads PTB from `data_path` with `keras_rnnreg.data.load_ptb`.
        train_tokens: Optional int, train on this prefix of the training split.
        eval_batch_size: Validation batch size; default the training batch
            size (as keras_rnnreg's `Preset.sequences` evaluates, so both
            sides see the same validation windows).
        seed: Torch/NumPy seed; default the preset's (1111).
        preset: A keras_rnnreg `Preset`; default `awd-lstm-cpu`.
        device: torch device to train on ("cpu", "cuda").
        log: Called with one line per epoch (None: silent).
        stop: Optional callable, given each epoch's record; True ends training.
        **overrides: Builder arguments changed from the preset, e.g.
            `weight_dropout=0.0`, `alpha=0.0, beta=0.0`.

    Returns:
        A list of dicts, one per epoch: epoch, valid_perplexity,
        tokens_per_second (training tokens over training time, validation
        excluded), train_seconds, wall_seconds (training + validation),
        train_loss (mean cross-entropy, without AR/TAR).
    """
    config = preset_hyperparameters(preset, **overrides)
    if train_ids is None or valid_ids is None or vocab_size is None:
        from keras_rnnreg.data import load_ptb

        corpus = load_ptb(data_path)
        train_ids, valid_ids, vocab_size = corpus.train, corpus.valid, len(corpus.vocab)
    if train_tokens is not None:
        train_ids = train_ids[:train_tokens]
    seed = config["seed"] if seed is None else seed
    seed = 0 if seed is None else seed
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    batch_size, bptt = config["batch_size"], config["bptt"]
    train_data = batchify(train_ids, batch_size).to(device)
    valid_data = batchify(valid_ids, eval_batch_size or batch_size).to(device)
    model = AWDLSTM(vocab_size, config).to(device)
    base_lr = config["learning_rate"]
    optimizer = torch.optim.SGD(
        model.parameters(), lr=base_lr, weight_decay=config["weight_decay"]
    )
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        state = model.init_state(batch_size)
        steps = train_data.size(0) - 1
        if config["variable_bptt"]:
            lengths = variable_lengths(steps, bptt, rng)
        else:
            lengths = [min(bptt, steps - i) for i in range(0, steps, bptt)]
        position, loss_sum, token_count = 0, 0.0, 0
        for length in lengths:
            inputs = train_data[position : position + length]
            targets = train_data[position + 1 : position + 1 + length]
            position += length
            # §4.1: the batch's rate scaled by its length over the base length.
            for group in optimizer.param_groups:
                group["lr"] = base_lr * length / bptt
            loss, state = train_step(model, optimizer, config, inputs, targets, state)
            # A device tensor: no host sync per batch on a GPU.
            loss_sum = loss_sum + loss.detach() * targets.numel()
            token_count += targets.numel()
        loss_sum = float(loss_sum)
        train_seconds = time.perf_counter() - start
        valid_ppl = evaluate(model, valid_data, bptt, eval_batch_size or batch_size)
        wall = time.perf_counter() - start
        record = {
            "epoch": epoch,
            "valid_perplexity": valid_ppl,
            "tokens_per_second": token_count / train_seconds,
            "train_seconds": train_seconds,
            "wall_seconds": wall,
            "train_loss": loss_sum / token_count,
        }
        history.append(record)
        if log is not None:
            log(
                f"epoch {epoch}: valid ppl {valid_ppl:.2f}, "
                f"{record['tokens_per_second']:.0f} tokens/s, wall {wall:.1f} s "
                f"(train ppl {math.exp(record['train_loss']):.2f})"
            )
        if stop is not None and stop(record):
            break
    return history


if __name__ == "__main__":
    train(1, train_tokens=20000)
