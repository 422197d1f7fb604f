"""Stateful RNNs across Keras's trainers: every workaround in one module.

Truncated BPTT needs a stateful RNN whose state at the end of one batch is
the initial state of the next, on every backend, inside `fit`. Keras 3.15
does not carry it on JAX and breaks the backward pass on torch; these helpers
make our layers carry it (`CarriedStates`), reset it (`reset_rnn_states`),
warn where a layer that is not ours would drop it, and sync JAX's functional
training state before a callback touches variables mid-epoch.
"""

import contextlib
import warnings

import keras
from keras import ops

from keras_rnnreg._keras_compat import nested_layers, sync_jax_state


def variables_with_states(layer, variables):
    """`variables` and, for a stateful layer, its state variables."""
    if layer.stateful and layer.states is not None:
        seen = {id(v) for v in variables}
        variables += [s for s in keras.tree.flatten(layer.states) if id(s) not in seen]
    return variables


class CarriedStates:
    """Mixin for Keras RNN layers: `stateful=True` carries state in `fit` everywhere.

    Keras 3.15 keeps a stateful RNN's state variables out of the layer's
    `variables`. The JAX trainer threads only `model.variables` through its
    compiled train and test steps, so inside `fit`/`evaluate` every batch
    starts from the zero state and truncated BPTT silently becomes stateless.
    Listing the states among `variables` (as Keras lists seed-generator
    state), but not among `weights`, carries them without changing
    `get_weights`/`set_weights` or what is saved. On PyTorch the fused
    LSTM/GRU receives the state variables' tensors and Keras then assigns
    the new state into them in place, which breaks the backward pass: the
    loop gets a copy. (The layers on the LSTM engine, `_lstm.EngineRNN`,
    do the same.)
    """

    @property
    def variables(self):
        return variables_with_states(self, super().variables)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if self.stateful and keras.backend.backend() == "torch":
            initial_state = [ops.copy(state) for state in initial_state]
        return super().inner_loop(sequences, initial_state, mask=mask, training=training)


def _stateful_layers(model):
    return [
        layer
        for layer in nested_layers(model)
        if getattr(layer, "stateful", False) and hasattr(layer, "reset_state")
    ]


def reset_rnn_states(model):
    """Zeroes the state of every stateful recurrent layer inside `model`.

    Keras 3 has no `Model.reset_states()`; stateful RNN layers (and
    `Bidirectional`) each have `reset_state()`. Nested layers are found too.
    """
    for layer in _stateful_layers(model):
        layer.reset_state()


@contextlib.contextmanager
def rnn_states_set_aside(model):
    """Zero states inside the block, the states from before it afterwards.

    For an evaluation in the middle of a training epoch: it must start from
    zero states, and training must go on from the state its last batch left.
    """
    sync_backend_state(model)
    layers = [layer for layer in _stateful_layers(model) if getattr(layer, "states", None)]
    saved = [
        [ops.copy(state) for state in keras.tree.flatten(layer.states)] for layer in layers
    ]
    reset_rnn_states(model)
    try:
        yield
    finally:
        sync_backend_state(model)
        for layer, values in zip(layers, saved):
            for state, value in zip(keras.tree.flatten(layer.states), values):
                state.assign(value)


def warn_if_states_are_not_carried(model):
    """JAX's trainer carries only `model.non_trainable_variables` from one
    compiled step to the next, and Keras (3.15) keeps stateful RNN states out
    of them, so under `fit`/`evaluate` every batch starts from the state the
    step was compiled with. Eager calls (`model(x)`) do carry."""
    if keras.backend.backend() != "jax":
        return
    carried = {id(v) for v in model.non_trainable_variables}
    stranded = [
        layer.name
        for layer in _stateful_layers(model)
        if any(id(v) not in carried for v in keras.tree.flatten(layer.states or []))
    ]
    if stranded:
        warnings.warn(
            "On the JAX backend Keras does not carry the state of stateful RNN "
            f"layers ({', '.join(stranded)}) from one fit/evaluate batch to the "
            "next: their state variables are not among the model's "
            "non_trainable_variables, which is all JAX's compiled train and "
            "test steps pass on. Every batch starts from the state held when "
            "the step was compiled (zero, after BPTTCallback's reset): "
            "stateless truncated BPTT. keras_rnnreg's WeightDropLSTM and "
            "WeightDropGRU (weight_dropout=0.0 for a plain LSTM/GRU) carry it "
            "on every backend.",
            stacklevel=3,
        )


def sync_backend_state(model):
    """On JAX, write the train loop's state back into the variables.

    The JAX trainer keeps the variables' values outside the model during an
    epoch; a callback that reads or assigns them mid-epoch must sync first.
    Elsewhere this does nothing.
    """
    sync_jax_state(model)
