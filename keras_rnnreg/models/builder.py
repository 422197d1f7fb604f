"""`language_model`: word-level RNN language models assembled from the library's parts."""

import types

import keras

from keras_rnnreg._validation import (
    check_bool,
    check_choice,
    check_int,
    check_non_negative,
    check_positive_int,
    check_rate,
    check_real,
    check_seed,
)
from keras_rnnreg.layers import (
    ARTARRegularizer,
    EmbeddingDropout,
    LockedDropout,
    MixtureOfSoftmaxes,
    NoisinGRU,
    NoisinLSTM,
    WeightDropGRU,
    WeightDropLSTM,
)
from keras_rnnreg.layers._projection import TokenDense
from keras_rnnreg.models.initializers import (
    check_initialization,
    decoder_initializers,
    derive_seed,
    embedding_initializer,
    hidden_scale,
    recurrent_initializers,
    uniform,
)
from keras_rnnreg.noise import _check_noise

#: The builder's arguments and their defaults: a plain two-layer LSTM
#: language model of Zaremba et al.'s small size (2 x 200, embedding 200,
#: untied), every regularizer off, the papers' initialization.
DEFAULT_ARGUMENTS = types.MappingProxyType(
    {
        "embedding_size": 200,
        "hidden_size": 200,
        "num_layers": 2,
        "cell": "lstm",
        "weight_dropout": 0.0,
        "noise": None,
        "noise_level": 0.5,
        "embedding_dropout": 0.0,
        "input_dropout": 0.0,
        "hidden_dropout": 0.0,
        "output_dropout": 0.0,
        "dropout_type": "locked",
        "tie_weights": False,
        "num_experts": 1,
        "latent_dropout": 0.0,
        "alpha": 0.0,
        "beta": 0.0,
        "stateful": False,
        "batch_size": None,
        "initialization": "paper",
        "padding_id": None,
        "seed": None,
        "name": None,
    }
)

CELLS = ("lstm", "gru")
DROPOUT_TYPES = ("locked", "standard")
# The parts of a model that draw random numbers; each gets its own seed,
# derive_seed(seed, part[, layer index]).
(_EMBEDDING, _EMBEDDING_MASK, _INPUT_DROPOUT, _LAYER_WEIGHTS, _LAYER_MASKS,
 _HIDDEN_DROPOUT, _OUTPUT_DROPOUT, _DECODER, _MIXTURE, _LATENT_DROPOUT) = range(10)
_RATES = (
    "weight_dropout",
    "embedding_dropout",
    "input_dropout",
    "hidden_dropout",
    "output_dropout",
    "latent_dropout",
)


def _check_names(arguments):
    unknown = sorted(set(arguments) - set(DEFAULT_ARGUMENTS))
    if unknown:
        # The builder once took `preset=`: say where it went.
        hint = (" For a preset: get_preset(name).build(vocab_size, **overrides)."
                if "preset" in unknown else "")
        raise ValueError(
            f"Unknown language_model argument(s): {', '.join(unknown)}. "
            f"Valid arguments: {', '.join(DEFAULT_ARGUMENTS)}.{hint}"
        )


def resolve_arguments(**arguments):
    """The builder arguments `language_model(..., **arguments)` uses.

    `DEFAULT_ARGUMENTS` replaced by `arguments`, then validated. A preset's
    arguments are `Preset.arguments(**overrides)`.

    Returns:
        A dict with every name of `DEFAULT_ARGUMENTS`, validated, plus
        `hidden_sizes`: the list of each layer's units.
    """
    _check_names(arguments)
    return _check_arguments({**DEFAULT_ARGUMENTS, **arguments}, explicit=set(arguments))


def _hidden_sizes(arguments, explicit):
    num_layers = check_positive_int("num_layers", arguments["num_layers"])
    embedding_size = arguments["embedding_size"]
    hidden = arguments["hidden_size"]
    if not isinstance(hidden, (list, tuple)):
        sizes = [check_positive_int("hidden_size", hidden)] * num_layers
        if arguments["tie_weights"]:
            # AWD-LSTM §4.5: only the last layer's size is tied to the embedding
            # (with a mixture of softmaxes too: the MoS code's default nhidlast).
            sizes[-1] = embedding_size
        return sizes
    sizes = [check_positive_int(f"hidden_size[{i}]", h) for i, h in enumerate(hidden)]
    if not sizes:
        raise ValueError("Argument `hidden_size` must not be an empty list.")
    if "num_layers" in explicit and num_layers != len(sizes):
        raise ValueError(
            f"Argument `hidden_size` lists {len(sizes)} layer sizes but "
            f"num_layers={num_layers}. Give one size per layer, or omit `num_layers`."
        )
    # A mixture of softmaxes projects the last layer onto latent contexts of
    # the embedding's size, so that layer's own size is free (MoS: 620 and 280).
    mixture = arguments["num_experts"] > 1
    if arguments["tie_weights"] and not mixture and sizes[-1] != embedding_size:
        raise ValueError(
            "With tie_weights=True the softmax reuses the embedding matrix, so "
            "the last recurrent layer's size must equal the embedding size "
            f"(AWD-LSTM §4.5), unless num_experts > 1 (a mixture of softmaxes). "
            f"Received: last hidden size {sizes[-1]} "
            f"(hidden_size={list(sizes)}) and embedding_size={embedding_size}"
        )
    return sizes


def _check_arguments(arguments, explicit=()):
    checked = dict(arguments)
    checked["embedding_size"] = check_positive_int("embedding_size", arguments["embedding_size"])
    checked["tie_weights"] = check_bool("tie_weights", arguments["tie_weights"])
    checked["num_experts"] = check_positive_int("num_experts", arguments["num_experts"])
    checked["hidden_sizes"] = _hidden_sizes(checked, explicit)
    checked["num_layers"] = len(checked["hidden_sizes"])
    check_choice("cell", arguments["cell"], CELLS)
    check_choice("dropout_type", arguments["dropout_type"], DROPOUT_TYPES)
    for name in _RATES:
        checked[name] = check_rate(name, arguments[name])
    checked["alpha"] = check_non_negative("alpha", arguments["alpha"])
    checked["beta"] = check_non_negative("beta", arguments["beta"])
    if arguments["noise"] is not None:
        # The domain of γ depends on the distribution; without noise it is unused.
        checked["noise_level"] = check_real("noise_level", arguments["noise_level"])
        _check_noise(arguments["noise"], checked["noise_level"])
    checked["stateful"] = check_bool("stateful", arguments["stateful"])
    if arguments["batch_size"] is not None:
        checked["batch_size"] = check_positive_int("batch_size", arguments["batch_size"])
    elif checked["stateful"]:
        raise ValueError(
            "A stateful model carries one state per row of the batch, so it "
            "needs a fixed `batch_size`. Received: stateful=True, batch_size=None"
        )
    checked["initialization"] = check_initialization(arguments["initialization"])
    if arguments["padding_id"] is not None:
        checked["padding_id"] = check_int("padding_id", arguments["padding_id"])
    checked["seed"] = check_seed(arguments["seed"])
    if arguments["name"] is not None and not isinstance(arguments["name"], str):
        raise TypeError(f"Argument `name` must be a str. Received: name={arguments['name']!r}")
    return checked


def _dropout(kind, rate, seed, name):
    if rate == 0.0:
        return lambda x: x
    if kind == "locked":
        return LockedDropout(rate, seed=seed, name=name)
    return keras.layers.Dropout(rate, seed=seed, name=name)


def _recurrent_layer(config, index, units):
    cell = config["cell"]
    seed = config["seed"]
    initializers = recurrent_initializers(
        config["initialization"],
        units,
        cell=cell,
        # Noisin §5: "All the biases were initialized to 0."
        zero_bias=config["noise"] is not None,
        seed=derive_seed(seed, _LAYER_WEIGHTS, index),
    )
    common = {
        "return_sequences": True,
        "stateful": config["stateful"],
        "seed": derive_seed(seed, _LAYER_MASKS, index),
        "name": f"{cell}_{index + 1}",
        **initializers,
    }
    if config["noise"] is not None:
        layer = NoisinLSTM if cell == "lstm" else NoisinGRU
        return layer(units, noise=config["noise"], noise_level=config["noise_level"],
                     weight_dropout=config["weight_dropout"], **common)
    # Also for weight_dropout=0: WeightDropLSTM/GRU carry a stateful model's
    # state between fit batches on JAX, where Keras's own layers do not.
    layer = WeightDropLSTM if cell == "lstm" else WeightDropGRU
    return layer(units, weight_dropout=config["weight_dropout"], **common)


def language_model(vocab_size, **arguments):
    """A word-level recurrent language model with the papers' regularizers.

    Assembles, as a functional `keras.Model` from the library's layers,

        tokens -> EmbeddingDropout -> dropout (input_dropout)
               -> [recurrent layer -> dropout (hidden_dropout)] x (num_layers - 1)
               -> recurrent layer -> dropout (output_dropout)
               -> ARTARRegularizer([h, dropped_h])     (if alpha or beta > 0)
               -> softmax logits: the embedding's reverse call (tied) or a Dense,
                  or with num_experts > 1 a MixtureOfSoftmaxes (log-probabilities)

    which covers the models of Zaremba et al. (2014; standard dropout on the
    non-recurrent connections only), AR/TAR (Merity, McCann & Socher 2017,
    §3), Noisin (Dieng et al. 2018, §5: noise on every layer's hidden state)
    and AWD-LSTM (Merity, Keskar & Socher 2017, §2 and §4: weight drop,
    locked dropout, embedding dropout, weight tying with an independent
    embedding size, AR/TAR on the last layer). The recurrent layers are
    `WeightDropLSTM`/`WeightDropGRU` (`NoisinLSTM`/`NoisinGRU` when `noise`
    is set), with `return_sequences=True`.

    With `tie_weights=True` the softmax reuses the embedding matrix (AWD-LSTM
    §4.4) and adds a per-word bias, as AWD-LSTM's decoder does, so the last
    recurrent layer's size is the embedding size; the other layers keep
    `hidden_size` (§4.5).

    With `num_experts` K > 1 the output is a mixture of K softmaxes (Yang et
    al. 2018, AWD-LSTM-MoS; `MixtureOfSoftmaxes`): the last layer's output
    goes through K latent contexts of the embedding's size, each projected
    through the (tied) embedding matrix, and the model returns float32
    log-probabilities, which the losses and metrics take as logits. The
    last layer's size is then free (a `hidden_size` list may end in any
    size; an int still gives it the embedding size). K = 1 is the single
    softmax above.

    Initialization ("paper", the default) follows AWD-LSTM §5, AR/TAR §3
    and Noisin §5 (and, for a mixture's prior and latent weights, the MoS
    code's PyTorch default U(±1/√H), H the last layer's units): embeddings
    U(-0.1, 0.1); each recurrent layer's kernel, recurrent kernel and bias
    U(-1/√H, 1/√H) with H that layer's units, no
    forget-gate bias of 1 (PyTorch's LSTM default, which the papers' code
    used); with `noise`, biases 0 (Noisin §5). The softmax is initialized
    as in AWD-LSTM's reference code: bias 0, an untied decoder's weights
    U(-0.1, 0.1). "keras" keeps every layer's Keras defaults; a float s
    draws every weight, biases included (the tied softmax bias too), from
    U(-s, s) (Zaremba et al. §4). The papers' learning rates assume their
    initialization: see docs/models.md for the measured difference.

    Each argument defaults to `DEFAULT_ARGUMENTS`. A paper's model is
    `get_preset(name).build(vocab_size, **overrides)`, which calls this
    builder with the preset's arguments.

    Args:
        vocab_size: Int >= 2, the number of word types.
        **arguments: Any of (defaults in brackets):
            embedding_size: Int (200).
            hidden_size: Int, or a list with one size per layer (200).
            num_layers: Int >= 1 (2); inferred from a `hidden_size` list.
            cell: "lstm" or "gru" ("lstm").
            weight_dropout: DropConnect rate on the recurrent kernel
                (AWD-LSTM §2) (0); with `noise` the Noisin layers are
                weight-dropped too (Noisin's AWD-LSTM + Noisin, Table 5).
            noise: None or a Noisin distribution ("bernoulli", "gaussian",
                ..., `keras_rnnreg.noise.DISTRIBUTIONS`): every recurrent
                layer is then a Noisin layer with multiplicative noise (None).
            noise_level: γ, the spread of the noise (0.5); unused without
                `noise`.
            embedding_dropout: Fraction of word types dropped (AWD §4.3) (0).
            input_dropout: Dropout on the embedding output (AWD's dropouti) (0).
            hidden_dropout: Dropout between recurrent layers (dropouth) (0).
            output_dropout: Dropout on the last layer's output (dropout) (0).
            dropout_type: "locked" (`LockedDropout`, one mask per sequence,
                AWD §4.2) or "standard" (`keras.layers.Dropout`, a fresh
                mask per step, Zaremba et al.) ("locked").
            tie_weights: Bool (False).
            num_experts: Int >= 1, K, the softmaxes mixed (1: one softmax,
                no mixture layer).
            latent_dropout: Locked dropout on the mixture's latent contexts
                (the MoS code's dropoutl) (0); unused with num_experts=1.
            alpha, beta: AR and TAR coefficients on the last layer (0, 0).
            stateful: Bool; carry each row's state to the next batch, for
                truncated BPTT over a stream (False).
            batch_size: Int, required when stateful (None).
            initialization: "paper", "keras" or a positive float ("paper").
            padding_id: Optional int; the embedding masks steps holding it,
                which `BPTTSequence(pad_to_multiple=k)` pads with (-1 by
                default). Masked steps add no loss and leave the state as it
                was (None: no mask; a mask keeps torch and JAX off the fused
                LSTM kernel).
            seed: Optional int making initialization and masks reproducible;
                each part of the model gets its own seed derived from it (None).
            name: Optional model name (None: "language_model").

    Returns:
        A `keras.Model` from int token ids `(batch, time)` to logits
        `(batch, time, vocab_size)` in the compute dtype (float16/bfloat16
        under mixed precision; `TokenCrossEntropy` computes in float32);
        with num_experts > 1, float32 log-probabilities.

    Raises:
        ValueError: For an unknown argument name (listing the valid ones), a
            tied model whose explicit last hidden size differs from the
            embedding size (single softmax), a rate outside [0, 1), a size or
            `num_experts` < 1, `vocab_size`
            < 2, a stateful model without `batch_size`, ...

    Example:

    ```python
    model = get_preset("awd-lstm").build(10000)             # AWD-LSTM, PTB
    model = language_model(10000, hidden_size=650, embedding_size=650,
                           num_layers=2, tie_weights=True, alpha=5.0, beta=2.0,
                           input_dropout=0.5, hidden_dropout=0.4,
                           output_dropout=0.5, dropout_type="standard")
    logits = model(keras.ops.ones((2, 35), dtype="int32"))  # (2, 35, 10000)
    ```
    """
    vocab_size = check_positive_int("vocab_size", vocab_size, minimum=2)
    config = resolve_arguments(**arguments)
    seed = config["seed"]
    initialization = config["initialization"]

    def dropout(rate, name, *part):
        return _dropout(config["dropout_type"], rate, derive_seed(seed, *part), name)

    tokens = keras.Input(
        shape=(None,), batch_size=config["batch_size"], dtype="int32", name="tokens"
    )
    embedding = EmbeddingDropout(
        vocab_size,
        config["embedding_size"],
        rate=config["embedding_dropout"],
        seed=derive_seed(seed, _EMBEDDING_MASK),
        use_output_bias=config["tie_weights"],
        padding_id=config["padding_id"],
        embeddings_initializer=embedding_initializer(initialization, derive_seed(seed, _EMBEDDING)),
        name="embedding",
    )
    x = dropout(config["input_dropout"], "input_dropout", _INPUT_DROPOUT)(embedding(tokens))
    sizes = config["hidden_sizes"]
    for index, units in enumerate(sizes):
        h = _recurrent_layer(config, index, units)(x)
        if index < len(sizes) - 1:
            name = f"hidden_dropout_{index + 1}"
            x = dropout(config["hidden_dropout"], name, _HIDDEN_DROPOUT, index)(h)
    dropped_h = dropout(config["output_dropout"], "output_dropout", _OUTPUT_DROPOUT)(h)
    if config["alpha"] > 0 or config["beta"] > 0:
        # AR reads the dropped output m ⊙ h, TAR the raw h (AWD-LSTM §4.6).
        dropped_h = ARTARRegularizer(
            config["alpha"], config["beta"], name="activation_regularization"
        )([h, dropped_h])
    if config["num_experts"] > 1:
        logits = _mixture(config, vocab_size, embedding, sizes[-1])(dropped_h)
    elif config["tie_weights"]:
        logits = embedding(dropped_h, reverse=True)
    else:
        logits = TokenDense(
            vocab_size,
            name="decoder",
            **decoder_initializers(initialization, derive_seed(seed, _DECODER)),
        )(dropped_h)
    if config["tie_weights"] and isinstance(initialization, float):
        # TiedEmbedding starts its bias at 0; Zaremba's scheme draws every
        # parameter, this one too.
        bias = uniform(initialization, derive_seed(seed, _DECODER))((vocab_size,))
        embedding.output_bias.assign(bias)
    return keras.Model(tokens, logits, name=config["name"] or "language_model")


def _mixture(config, vocab_size, embedding, units):
    """The `MixtureOfSoftmaxes` output of a model whose last layer has `units`."""
    initialization, seed = config["initialization"], config["seed"]
    initializers = {}
    if initialization != "keras":
        # "paper": the MoS code's prior and latent layers are PyTorch
        # `nn.Linear`s, U(±1/√fan_in) for weight and bias; its decoder is
        # AWD-LSTM's.
        scale = hidden_scale(units) if initialization == "paper" else initialization
        kernel_seed, bias_seed = derive_seed(seed, _MIXTURE, 0), derive_seed(seed, _MIXTURE, 1)
        initializers = {"kernel_initializer": uniform(scale, kernel_seed),
                        "bias_initializer": uniform(scale, bias_seed)}
        if not config["tie_weights"]:
            decoder = decoder_initializers(initialization, derive_seed(seed, _DECODER))
            initializers["decoder_initializer"] = decoder["kernel_initializer"]
            initializers["decoder_bias_initializer"] = decoder["bias_initializer"]
    return MixtureOfSoftmaxes(
        config["num_experts"],
        vocab_size,
        embedding=embedding if config["tie_weights"] else None,
        latent_size=config["embedding_size"],
        latent_dropout=config["latent_dropout"],
        seed=derive_seed(seed, _LATENT_DROPOUT),
        name="mixture_of_softmaxes",
        **initializers,
    )
