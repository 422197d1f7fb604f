"""The papers' weight initialization, as plain Keras initializers.

AWD-LSTM (Merity et al. 2017, §5), AR/TAR (Merity, McCann & Socher 2017,
§3) and Noisin (Dieng et al. 2018, §5) state the same recipe:

    embeddings                      U(-0.1, 0.1)
    every other weight              U(-1/√H, 1/√H),  H the layer's hidden size

which is PyTorch's `nn.LSTM`/`nn.GRU` default, with one exception: Noisin
initializes all biases to 0. The softmax follows AWD-LSTM's reference code
(`init_weights`): decoder bias 0, an untied decoder's weights U(-0.1, 0.1).
Zaremba et al. (2014, §4) instead draw every parameter from U(-s, s) with
s = 0.1 / 0.05 / 0.04 for the small / medium / large model (sources:
docs/models.md, "Where Zaremba's numbers come from").

Keras's defaults differ everywhere (Glorot-uniform kernels, orthogonal
recurrent kernels, zero biases plus a forget-gate bias of 1, embeddings
U(-0.05, 0.05)), and the papers' constant SGD learning rates are tuned for
their initialization: with Keras's defaults a paper-size AWD-LSTM trains
markedly worse at the same rate (measured: docs/models.md, "Initialization").

Every function returns stock `keras.initializers.RandomUniform`/`Zeros`
objects, so models built with them save and load without custom objects.
"""

import math
import numbers

import keras
import numpy as np

from keras_rnnreg._validation import check_choice, check_positive_int

#: Half-width of the embedding initialization (AWD-LSTM §5, AR/TAR §3, Noisin §5).
EMBEDDING_SCALE = 0.1
#: Half-width of an untied decoder's weights (AWD-LSTM's reference `init_weights`).
DECODER_SCALE = 0.1
#: The named schemes; a positive float s is also a scheme, U(-s, s) for everything.
SCHEMES = ("paper", "keras")


def check_initialization(value):
    """"paper", "keras" or a positive float s (Zaremba's U(-s, s)); returns it
    as given, a number as a float."""
    if isinstance(value, str):
        return check_choice("initialization", value, SCHEMES)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        0.0 < float(value) < math.inf
    ):
        raise ValueError(
            "Argument `initialization` must be 'paper', 'keras' or a positive "
            "float s (every weight drawn from U(-s, s), as in Zaremba et al.). "
            f"Received: initialization={value!r}"
        )
    return float(value)


def uniform(scale, seed=None):
    """U(-scale, scale) as a `keras.initializers.RandomUniform`."""
    return keras.initializers.RandomUniform(-scale, scale, seed=seed)


def hidden_scale(units):
    """1/√H, the half-width of a recurrent layer's weights with H = `units`."""
    return 1.0 / math.sqrt(check_positive_int("units", units))


def derive_seed(seed, *path):
    """A seed for one part of a model, derived from the model's `seed`.

    None stays None (Keras then draws a seed). Otherwise the int is hashed
    with `path` (NumPy's `SeedSequence`), so parts get unrelated seeds: an
    int-seeded Keras initializer gives the same values at every call, and
    on the torch backend neighbouring small seeds (s, s + 1, ...) give
    measurably less uniform first draws.
    """
    if seed is None:
        return None
    # SeedSequence takes non-negative ints; Keras seeds may be negative.
    entropy = [seed % 2**64, *path]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


def embedding_initializer(initialization, seed=None):
    """The embedding matrix's initializer under `initialization`."""
    initialization = check_initialization(initialization)
    if initialization == "keras":
        return "uniform"  # keras.layers.Embedding's default, U(-0.05, 0.05)
    scale = EMBEDDING_SCALE if initialization == "paper" else initialization
    return uniform(scale, seed)


def recurrent_initializers(initialization, units, cell="lstm", zero_bias=False, seed=None):
    """Initializer arguments for one recurrent layer of `units` units.

    Args:
        initialization: "paper", "keras" or a float s.
        units: H, the layer's hidden size.
        cell: "lstm" or "gru" (only the LSTM has `unit_forget_bias`).
        zero_bias: Bool; with "paper", biases 0 instead of U(±1/√H), as
            Noisin §5 states for its models.
        seed: Optional int; each weight gets a seed derived from it.

    Returns:
        A dict of keyword arguments for `WeightDropLSTM`/`GRU` or
        `NoisinLSTM`/`GRU`: empty for "keras" (the layer's defaults), else
        `kernel_initializer`, `recurrent_initializer`, `bias_initializer`
        and, for the LSTM, `unit_forget_bias=False` (neither the papers nor
        PyTorch add 1 to the forget-gate bias).
    """
    initialization = check_initialization(initialization)
    check_choice("cell", cell, ("lstm", "gru"))
    if initialization == "keras":
        return {}
    scale = hidden_scale(units) if initialization == "paper" else initialization
    kernel_seed, recurrent_seed, bias_seed = (derive_seed(seed, i) for i in range(3))
    if initialization == "paper" and zero_bias:
        bias = keras.initializers.Zeros()
    else:
        bias = uniform(scale, bias_seed)
    arguments = {
        "kernel_initializer": uniform(scale, kernel_seed),
        "recurrent_initializer": uniform(scale, recurrent_seed),
        "bias_initializer": bias,
    }
    if cell == "lstm":
        arguments["unit_forget_bias"] = False
    return arguments


def decoder_initializers(initialization, seed=None):
    """`kernel_initializer` and `bias_initializer` of an untied softmax `Dense`.

    "paper": weights U(±0.1), bias 0 (AWD-LSTM's reference `init_weights`);
    "keras": `Dense`'s defaults (Glorot-uniform, zeros); a float s: both
    U(±s).
    """
    initialization = check_initialization(initialization)
    if initialization == "keras":
        return {}
    if initialization == "paper":
        return {
            "kernel_initializer": uniform(DECODER_SCALE, seed),
            "bias_initializer": keras.initializers.Zeros(),
        }
    kernel_seed, bias_seed = derive_seed(seed, 0), derive_seed(seed, 1)
    return {
        "kernel_initializer": uniform(initialization, kernel_seed),
        "bias_initializer": uniform(initialization, bias_seed),
    }
