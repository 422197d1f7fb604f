"""Every use of Keras internals in keras_rnnreg, in one place.

keras_rnnreg subclasses Keras's own layers, optimizers and data adapters
rather than copying them, and a few of the hooks that makes possible are not
part of Keras's public API. They are all here, each with why we need it, so
that a Keras release that moves one breaks one place. `INTERNALS` lists them
with a probe each; `tests/test_keras_compat.py` runs every probe, and a probe
that fails names what moved and in which Keras version.

The supported Keras range (`KERAS_RANGE`) is what CI runs: the newest Keras
3 in the three-backend run and `KERAS_MINIMUM` in a torch-backend run.
"""

import inspect

import keras

KERAS_MINIMUM = "3.12.0"
KERAS_RANGE = f">={KERAS_MINIMUM},<4"


class KerasInternalMoved(ImportError):
    """A Keras internal that keras_rnnreg relies on is missing or changed."""


def _moved(name, detail):
    return KerasInternalMoved(
        f"keras_rnnreg relies on the Keras internal `{name}`, which Keras "
        f"{keras.__version__} does not provide as expected: {detail}. "
        f"keras_rnnreg is tested on Keras {KERAS_RANGE}; install a Keras in "
        "that range or update keras_rnnreg/_keras_compat.py."
    )


# Base classes are needed when our modules are imported; a clear error then
# beats an AttributeError deep inside a class statement.
try:
    # Noisin wraps a cell and must look like a DropoutRNNCell so that
    # `keras.layers.RNN` prepares the wrapped cell's dropout masks before the
    # loop (inside a JAX scan they would leak); Keras does not export it.
    from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell
except ImportError as error:  # pragma: no cover - depends on the Keras release
    raise _moved("keras.src.layers.rnn.dropout_rnn_cell.DropoutRNNCell", error) from error

try:
    # BPTTSequence is a DataAdapter, Keras's own extension point for `fit`:
    # a PyDataset cannot declare an open time axis (keras-team/keras#19124)
    # and is shuffled unless told otherwise. Not exported under `keras.*`.
    from keras.src.trainers.data_adapters.data_adapter import DataAdapter
except ImportError as error:  # pragma: no cover
    raise _moved("keras.src.trainers.data_adapters.data_adapter.DataAdapter", error) from error


def backend_rnn(step_function, inputs, initial_states, **kwargs):
    """`keras.src.backend.rnn`: the backends' scan over time steps.

    NoisinRNN runs its own loop (to slice per-step noise) with the same
    backend scan `keras.layers.RNN` uses; there is no public `keras.ops.rnn`.
    """
    from keras.src import backend

    return backend.rnn(step_function, inputs, initial_states, **kwargs)


def backend_lstm(*args, **kwargs):
    """`keras.src.backend.lstm`: the backend's fused LSTM (cuDNN), which
    raises NotImplementedError where it does not apply. The LSTM engine
    (`keras_rnnreg._lstm`) calls it as `LSTM.inner_loop` does, with U' as
    the recurrent kernel."""
    from keras.src import backend

    return backend.lstm(*args, **kwargs)


def backend_gru(*args, **kwargs):
    """`keras.src.backend.gru`: as `backend_lstm`, for the GRU."""
    from keras.src import backend

    return backend.gru(*args, **kwargs)


def keras_mask(x):
    """`keras.src.backend.get_keras_mask`: the mask Keras attached to a
    layer's output, or None. Perplexity weighs tokens by it as Keras's own
    metrics do; Keras exports no accessor."""
    from keras.src.backend import get_keras_mask

    return get_keras_mask(x)


def torch_dataloader(iterable):
    """Keras's wrapper that turns a batch iterator into a torch DataLoader,
    which the torch trainer expects from a DataAdapter."""
    from keras.src.trainers.data_adapters import data_adapter_utils

    return data_adapter_utils.get_torch_dataloader(iterable)


def random_seed_dtype():
    """The dtype of a `keras.random` seed tensor on this backend (uint32,
    int64 or int32); GradientNoise builds its step-derived seeds in it."""
    from keras.src.backend import random_seed_dtype as seed_dtype

    return seed_dtype()


def torch_dropout_generator(seed, noise_shape):
    """The `torch.Generator` Keras's torch `dropout` would draw its mask
    with for `seed` (a SeedGenerator, an int or None), advancing the seed
    generator as it does; None where Keras would take its unseeded path
    (`torch.nn.functional.dropout` on the global generator)."""
    from keras.src.backend.torch.random import torch_seed_generator

    unseeded = seed is None or (
        isinstance(seed, keras.random.SeedGenerator) and seed._initial_seed is None
    )
    if unseeded and noise_shape is None:
        return None
    return torch_seed_generator(seed)


def autocast_scope(dtype):
    """`keras.src.backend.AutocastScope`: inside it, float variables read as
    `dtype`. The weight-dropped LSTM reads its float32 weights unrounded under
    a 16-bit policy where it hands the fused kernel float32 (JAX on GPUs)."""
    from keras.src.backend import AutocastScope

    return AutocastScope(dtype)


# -- optimizers --------------------------------------------------------------
def own_optimizer_variables(optimizer):
    """The variables an optimizer created itself (`_variables`): a wrapper
    lists these plus its inner optimizer's, as LossScaleOptimizer does."""
    return optimizer._variables


def clip_gradients(optimizer, grads):
    """`Optimizer._clip_gradients`: clipnorm, global_clipnorm or clipvalue
    exactly as Keras applies them, reused by GradientNoise so that clipping
    happens before the noise."""
    return optimizer._clip_gradients(grads)


def optimizer_trainable_variables(optimizer):
    """The model variables a built optimizer updates, in its build order
    (`_trainable_variables`); ASGD keeps one average per entry."""
    return optimizer._trainable_variables


def optimizer_variable_index(optimizer, variable):
    """`Optimizer._get_variable_index`: the slot of `variable` in the
    optimizer's lists, as Keras's own update steps look up their slots."""
    return optimizer._get_variable_index(variable)


# -- models ------------------------------------------------------------------
def nested_layers(model):
    """Every layer inside `model`, at any depth (`_flatten_layers`); Keras 3
    has no `Model.reset_states()` and stateful layers can sit in submodels."""
    return list(model._flatten_layers(include_self=False))


def sync_jax_state(model):
    """On JAX, write `fit`'s functional training state back into the model's
    variables (`jax_state_sync`) before a callback reads or assigns them
    mid-epoch. Other backends keep no such copy: a no-op there."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


# -- probes ------------------------------------------------------------------
def _has_parameters(function, names):
    parameters = inspect.signature(function).parameters
    missing = [name for name in names if name not in parameters]
    return f"its parameters {list(parameters)} lack {missing}" if missing else None


def _probe_attribute(owner, attribute, parameters=None):
    def probe():
        value = getattr(owner, attribute, None)
        if value is None:
            return f"{owner.__name__} has no `{attribute}`"
        if parameters is not None:
            return _has_parameters(value, parameters)
        return None

    return probe


def _probe_import(module, attribute, parameters=None):
    def probe():
        import importlib

        try:
            value = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as error:
            return str(error)
        if parameters is not None:
            return _has_parameters(value, parameters)
        return None

    return probe


def _probe_torch_seed_generator():
    if keras.backend.backend() != "torch":
        return None  # imported only on the torch backend
    problem = _probe_import("keras.src.backend.torch.random", "torch_seed_generator", ["seed"])()
    if problem:
        return problem
    if not hasattr(keras.random.SeedGenerator(1), "_initial_seed"):
        return "SeedGenerator has no `_initial_seed`"
    return None


def _probe_bidirectional_reads_use_cudnn():
    # WeightDropLSTM reports use_cudnn=False to readers outside its
    # inner_loop so that Bidirectional runs each direction through the layer
    # (where the weight mask applies) instead of the fused bidirectional
    # kernel with the raw recurrent kernels. That relies on Bidirectional
    # deciding by reading the built layers' `use_cudnn`. (Before Keras 3.14
    # Bidirectional had no fused path and called each layer: nothing to avoid.)
    source = inspect.getsource(keras.layers.Bidirectional)
    if "backend.bidirectional_" in source and "use_cudnn" not in source:
        return "Bidirectional calls a fused kernel without reading `use_cudnn`"
    return None


def _probe_jax_state_sync():
    try:
        from keras.src.backend.jax.trainer import JAXTrainer
    except ImportError:
        return None  # JAX is not installed: nothing to sync
    return _probe_attribute(JAXTrainer, "jax_state_sync")()


def _probe_optimizer_internals():
    optimizer = keras.optimizers.SGD(1.0, global_clipnorm=1.0)
    variable = keras.Variable([1.0, 2.0])
    optimizer.build([variable])
    for attribute in ("_variables", "_trainable_variables"):
        if not isinstance(getattr(optimizer, attribute, None), list):
            return f"a built optimizer has no list `{attribute}`"
    if optimizer_variable_index(optimizer, variable) != 0:
        return "`_get_variable_index` does not index the built variables"
    clipped = clip_gradients(optimizer, [keras.ops.convert_to_tensor([3.0, 4.0])])
    norm = float(keras.ops.convert_to_numpy(keras.ops.norm(clipped[0])))
    if abs(norm - 1.0) > 1e-5:
        return f"`_clip_gradients` with global_clipnorm=1 gave a norm of {norm}"
    return None


def _probe_flatten_layers():
    inner = keras.Sequential([keras.layers.Dense(2)])
    model = keras.Sequential([keras.Input((3,)), inner])
    layers = nested_layers(model)
    if inner.layers[0] not in layers:
        return "`_flatten_layers(include_self=False)` does not reach nested layers"
    return None


_RNN_LOOP = ("sequences", "initial_state", "mask", "training")

# name -> (why keras_rnnreg needs it, probe returning None or what is wrong)
INTERNALS = {
    "keras.src.backend.rnn": (
        "the LSTM engine's generic loop and NoisinRNN's, with per-step noise and U'",
        _probe_import("keras.src.backend", "rnn", ["step_function", "inputs", "initial_states",
                                                    "go_backwards", "mask", "unroll",
                                                    "input_length", "zero_output_for_mask",
                                                    "return_all_outputs"]),
    ),
    "keras.src.layers.rnn.dropout_rnn_cell.DropoutRNNCell": (
        "NoisinCell must be one for RNN to prepare the wrapped cell's dropout masks",
        _probe_import("keras.src.layers.rnn.dropout_rnn_cell", "DropoutRNNCell"),
    ),
    "keras.src.backend.lstm": (
        "the LSTM engine's call of the fused LSTM (cuDNN) with U'",
        _probe_import("keras.src.backend", "lstm", ["inputs", "initial_state_h",
                                                    "initial_state_c", "mask", "kernel",
                                                    "recurrent_kernel", "bias", "activation",
                                                    "recurrent_activation", "return_sequences",
                                                    "go_backwards", "unroll"]),
    ),
    "keras.src.backend.gru": (
        "the LSTM engine's call of the fused GRU (cuDNN) with U'",
        # Keras 3.12 wraps it as gru(*args, **kwargs): only its presence is checked.
        _probe_import("keras.src.backend", "gru"),
    ),
    "keras.src.backend.get_keras_mask": (
        "Perplexity leaves masked steps (padding) out of its token mean",
        _probe_import("keras.src.backend", "get_keras_mask", ["x"]),
    ),
    "keras.src.trainers.data_adapters.data_adapter.DataAdapter": (
        "BPTTSequence feeds fit/evaluate with an open time axis, in order",
        _probe_import("keras.src.trainers.data_adapters.data_adapter", "DataAdapter"),
    ),
    "keras.src.trainers.data_adapters.data_adapter_utils.get_torch_dataloader": (
        "BPTTSequence's batches for the torch trainer",
        _probe_import("keras.src.trainers.data_adapters.data_adapter_utils",
                      "get_torch_dataloader"),
    ),
    "keras.src.backend.random_seed_dtype": (
        "GradientNoise's step-derived seed tensors",
        _probe_import("keras.src.backend", "random_seed_dtype"),
    ),
    "keras.src.backend.torch.random.torch_seed_generator, SeedGenerator._initial_seed": (
        "LockedDropout's and weight drop's masks on torch, drawn as Keras's dropout draws them",
        _probe_torch_seed_generator,
    ),
    "keras.src.backend.AutocastScope": (
        "the engine reads float32 weights under a 16-bit policy (cuDNN on JAX GPUs)",
        _probe_import("keras.src.backend", "AutocastScope"),
    ),
    "Optimizer._variables, _trainable_variables, _get_variable_index, _clip_gradients": (
        "GradientNoise (clip, then noise) and ASGD (one average per variable)",
        _probe_optimizer_internals,
    ),
    "Layer._flatten_layers": (
        "finding stateful RNN layers at any depth to reset their states",
        _probe_flatten_layers,
    ),
    "JAXTrainer.jax_state_sync": (
        "NTASGD and BPTTCallback touch variables mid-epoch on JAX",
        _probe_jax_state_sync,
    ),
    "LSTM.inner_loop, GRU.inner_loop, RNN.inner_loop": (
        "the hook where our LSTM and GRU layers hand U' and noise to the engine",
        lambda: (_has_parameters(keras.layers.LSTM.inner_loop, _RNN_LOOP)
                 or _has_parameters(keras.layers.GRU.inner_loop, _RNN_LOOP)
                 or _has_parameters(keras.layers.RNN.inner_loop, _RNN_LOOP)),
    ),
    "Bidirectional reads use_cudnn of its built layers": (
        "weight drop and noise must not be bypassed by the fused bidirectional kernel",
        _probe_bidirectional_reads_use_cudnn,
    ),
    "Embedding.variable_serialization_spec": (
        "TiedEmbedding saves its output bias beside the embeddings",
        lambda: None
        if isinstance(
            getattr(keras.layers.Embedding(2, 2), "variable_serialization_spec", None), dict
        )
        else "Embedding has no dict `variable_serialization_spec`",
    ),
}


def check(name):
    """Runs the probe of one internal; raises KerasInternalMoved if it fails."""
    _, probe = INTERNALS[name]
    problem = probe()
    if problem:
        raise _moved(name, problem)
