from keras import ops

import keras


class CarriedStates:
    """Mixin for Keras RNN layers: `stateful=True` carries state in `fit` everywhere.

    Keras 3.15 creates a stateful RNN's state variables untracked. The JAX
    trainer threads only tracked variables through its compiled train step,
    so inside `fit`/`evaluate` every batch starts from the zero state and
    truncated BPTT silently becomes stateless. On PyTorch the fused LSTM/GRU
    receives the state variables' tensors and Keras then assigns the new
    state into them in place, which breaks the backward pass. Here the states
    are ordinary non-trainable weights (so they are carried, and saved with
    the model), and the fused kernel gets a copy of them.
    """

    def _create_state_variables(self, batch_size):
        self.states = [
            self.add_weight(
                shape=tuple(ops.shape(value)),
                initializer="zeros",
                dtype=self.variable_dtype,
                trainable=False,
                name="rnn_state",
            )
            for value in self.get_initial_state(batch_size)
        ]

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if self.stateful and keras.backend.backend() == "torch":
            initial_state = [ops.copy(state) for state in initial_state]
        return super().inner_loop(sequences, initial_state, mask=mask, training=training)
