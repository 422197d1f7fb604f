import keras
from keras import ops


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
    fused kernel gets a copy.
    """

    @property
    def variables(self):
        variables = super().variables
        if self.stateful and self.states is not None:
            seen = {id(v) for v in variables}
            variables += [s for s in keras.tree.flatten(self.states) if id(s) not in seen]
        return variables

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if self.stateful and keras.backend.backend() == "torch":
            initial_state = [ops.copy(state) for state in initial_state]
        return super().inner_loop(sequences, initial_state, mask=mask, training=training)
