"""Noisin for any Keras RNN cell: `NoisinCell` and the `NoisinRNN` that runs it.

Dieng, Ranganath, Altosaar & Blei (2018), *Noisin: Unbiased Regularization for
Recurrent Neural Networks*, sections 3-5 and Algorithm 1.

How the noise reaches each time step
------------------------------------
Algorithm 1 needs fresh noise at every time step. Drawing it inside the
cell's `call` with a `keras.random.SeedGenerator` is not correct on every
backend: on JAX the RNN loop is a `lax.scan` whose body is traced once, so a
draw inside the cell returns the same values at every step, and under `jit`
the generator's state update cannot leave the scan (an UnexpectedTracerError).
(On TensorFlow, where the update is a resource-variable assignment inside
`tf.while_loop`, and on torch, whose loop is Python, it happens to work.) So
nothing is drawn in the loop, on any backend: `NoisinRNN` draws the noise of
the whole sequence, one `keras.random` call of shape (batch, time, units) per
`NoisinCell`, before the loop, and the loop slices it like any other per-step
input (the backend's `rnn` scans nested inputs). Each step hands its slice
ε_t to the NoisinCells just before the cell runs. This is correct on all
three backends, gives the same noise for a seed however the loop is run,
works for a NoisinCell inside `keras.layers.StackedRNNCells` (whose cells pass
each other plain tensors, so the noise cannot travel as part of the cell's
input), and is also the fastest option: one RNG call per layer and batch
instead of one per time step.

A NoisinCell used in `keras.layers.RNN` directly has no noise in training and
raises an error pointing to `NoisinRNN`; a cell can also be given its noise
explicitly as the pair `(x_t, eps_t)`.
"""

import contextlib
import inspect

import keras
from keras import ops
from keras import tree
from keras_rnnreg._config import from_wrapper_config
from keras_rnnreg._keras_compat import DropoutRNNCell, backend_rnn
from keras_rnnreg._lstm.layer import NOISE_SEED_OFFSET, draw_noise
from keras_rnnreg._lstm.loop import pack
from keras_rnnreg._lstm.math import apply_noise
from keras_rnnreg._stateful import CarriedStates
from keras_rnnreg._validation import check_seed
from keras_rnnreg.noise import SHAPE_PARAMETERS, _check_noise

# Bound during `RNN.call`'s warm-up pass over stacked cells (it only sizes
# dropout masks): the NoisinCell runs as the plain wrapped cell there.
_NO_NOISE = object()

_MISSING_NOISE = (
    "NoisinCell has no noise for this time step. In training its noise is "
    "drawn for the whole sequence outside the RNN loop (on JAX a draw inside "
    "the loop would repeat the same values at every step), so "
    "run it with keras_rnnreg.layers.NoisinRNN instead of keras.layers.RNN "
    "(or use NoisinLSTM / NoisinGRU), e.g. NoisinRNN(NoisinCell(cell)) or "
    "NoisinRNN([NoisinCell(cell_1), NoisinCell(cell_2)]); or call the cell "
    "yourself with inputs=(x_t, eps_t), eps_t from "
    "keras_rnnreg.noise.sample_noise."
)


def _check_noisin_arguments(noise, noise_level, mode, seed, kwargs):
    """Checks the noise arguments of `NoisinCell` and `NoisinLSTM`/`NoisinGRU`.

    Both constructors call it first, so the same bad argument raises the same
    error from either, and the layers raise it before building their cell.

    Args:
        noise: As for `NoisinCell`.
        noise_level: As for `NoisinCell`.
        mode: As for `NoisinCell`.
        seed: As for `NoisinCell`.
        kwargs: The constructor's `**kwargs`; the shape parameters of the
            noise (`keras_rnnreg.noise.SHAPE_PARAMETERS`) are popped from it.

    Returns:
        `(noise, noise_level, mode, seed, noise_params)`, validated:
        `noise_level` a float and `noise_params` the shape parameters
        completed with the distribution's defaults.
    """
    noise_params = {k: kwargs.pop(k) for k in SHAPE_PARAMETERS if k in kwargs}
    noise, noise_level, mode, noise_params = _check_noise(
        noise, noise_level, mode, **noise_params
    )
    return noise, noise_level, mode, check_seed(seed), noise_params


class _StepNoise:
    """Where `NoisinRNN`'s loop puts a NoisinCell's ε_t for the cell's next
    call: a plain holder, which Keras does not track as layer state."""

    value = None


@contextlib.contextmanager
def _noise_bound(cells, noises):
    """Gives each NoisinCell its noise for the calls made inside the block."""
    previous = [cell._step_noise.value for cell in cells]
    for cell, noise in zip(cells, noises):
        cell._step_noise.value = noise
    try:
        yield
    finally:
        for cell, noise in zip(cells, previous):
            cell._step_noise.value = noise


def _noisin_cells(cell):
    """The NoisinCells of an RNN's cell: the cell itself or those of a stack."""
    if isinstance(cell, NoisinCell):
        return [cell]
    if isinstance(cell, keras.layers.StackedRNNCells):
        found = []
        for inner in cell.cells:
            found.extend(c for c in _noisin_cells(inner) if c not in found)
        return found
    return []


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class NoisinCell(keras.layers.Layer, DropoutRNNCell):
    """Wraps any RNN cell and injects unbiased noise into its hidden state.

    Noisin (Dieng et al. 2018, Algorithm 1): at every time step, for every
    example and unit, fresh noise ε_t multiplies (or is added to) the hidden
    state the cell emits,

        z_t = f_W(x_t, z_{t-1}) ⊙ ε_t,  E[ε_t] = 1    (multiplicative, Eq. 14)
        z_t = f_W(x_t, z_{t-1}) + ε_t,  E[ε_t] = 0    (additive, Eq. 13)

    and the noised z_t is both the step's output and the state the next step
    receives. The noise is unbiased: averaged over ε_t one step equals the
    deterministic step (weak unbiasedness, Eq. 12). For the LSTM only h is
    noised, z_t = o_t ⊙ tanh(c_t) ⊙ ε_t; the memory cell c is not. In general
    the noised state is the cell's output and its first state, which Keras's
    cell protocol makes the emitted hidden state (the state its masking
    carries as "the previous output"); other states pass through untouched.
    ε follows one of eight distributions rescaled as in the paper's Table 2
    (see `keras_rnnreg.noise.sample_noise`).

    Noise is applied only when `training=True`; at inference the wrapper is
    exactly the wrapped cell. The wrapped cell's own `dropout` and
    `recurrent_dropout` keep working (the paper's "D + Noisin" models); its
    dropout masks are prepared by the RNN layer as for the bare cell.

    In training the noise is drawn for the whole sequence before the RNN loop,
    so run the cell with `NoisinRNN` (or use `NoisinLSTM`/`NoisinGRU`), alone
    or inside `keras.layers.StackedRNNCells`; under a plain
    `keras.layers.RNN` training raises an error saying so (see the module
    docstring for why). To drive the cell yourself, call it with
    `inputs=(x_t, eps_t)`.

    Args:
        cell: An RNN cell: `keras.layers.LSTMCell`, `GRUCell`,
            `SimpleRNNCell` or a user cell following the cell protocol
            (`call(inputs, states)` returning `(output, new_states)`,
            `state_size`), whose output is its first state.
        noise: The noise distribution: "gaussian", "bernoulli", "gamma",
            "gumbel", "laplace", "logistic", "beta" or "chi_square".
        noise_level: γ, the spread of the noise (Table 2): Bernoulli's keep
            probability in (0, 1] (Var(ε) = (1-γ)/γ), else a value > 0 (the
            standard deviation of ε, or its variance for beta and
            chi_square). The paper's best PTB models use Bernoulli γ = 0.41
            (medium) / 0.33 (large) without dropout and 0.80 / 0.50 with it.
        mode: "multiplicative" (the paper's choice; uniformly better for the
            LSTM) or "additive".
        seed: Optional int for reproducible noise.
        **kwargs: The distribution's shape parameter (`alpha` for gamma,
            default 2, and for beta, default 1) and base layer keyword
            arguments (`name`, `dtype`, ...). The dtype defaults to the
            wrapped cell's.

    Call arguments:
        inputs: The step input x_t, or a pair `(x_t, eps_t)` with the noise
            for this step (`(batch, units)`, e.g. from `sample_noise`).
        states: The cell's states.
        training: Python bool; noise is applied only when True.

    Example:

    ```python
    cells = [NoisinCell(keras.layers.LSTMCell(650), "bernoulli", 0.41)
             for _ in range(2)]
    layer = NoisinRNN(cells, return_sequences=True)
    ```
    """

    def __init__(
        self,
        cell,
        noise="bernoulli",
        noise_level=0.5,
        mode="multiplicative",
        seed=None,
        **kwargs,
    ):
        noise, noise_level, mode, seed, noise_params = _check_noisin_arguments(
            noise, noise_level, mode, seed, kwargs
        )
        if isinstance(cell, NoisinCell):
            raise ValueError(
                "The cell is already a NoisinCell; wrap the underlying cell once."
            )
        if isinstance(cell, keras.layers.StackedRNNCells):
            raise ValueError(
                "NoisinCell noises the hidden state of one cell; to noise every "
                "level of a stack, wrap each cell of the stack in its own "
                "NoisinCell: NoisinRNN([NoisinCell(cell_1), NoisinCell(cell_2)])."
            )
        for attribute in ("call", "state_size"):
            if not hasattr(cell, attribute):
                raise ValueError(
                    f"Argument `cell` must be an RNN cell with a `{attribute}`. "
                    f"Received: cell={cell!r}"
                )
        if kwargs.get("dtype") is None and isinstance(cell, keras.layers.Layer):
            kwargs["dtype"] = cell.dtype_policy
        super().__init__(**kwargs)
        self.noise, self.noise_level, self.mode = noise, noise_level, mode
        self.noise_params = noise_params
        self.seed = seed
        self.cell = cell
        self.seed_generator = keras.random.SeedGenerator(
            None if seed is None else seed + NOISE_SEED_OFFSET
        )
        self._cell_takes_training = "training" in inspect.signature(cell.call).parameters
        # NoisinCell's own `Layer.__call__` already opens the autocast scope of
        # its dtype policy (by default the wrapped cell's); when the policies
        # agree, the wrapped (built) cell's `call` runs directly inside it.
        # This saves a second `Layer.__call__` per time step, which on torch
        # (where the loop is Python) costs as much as the LSTM step itself.
        self._call_cell_directly = not isinstance(cell, keras.layers.Layer) or (
            cell.dtype_policy.name == self.dtype_policy.name
        )
        self._step_noise = _StepNoise()
        self._check_emitted_state()

    def _check_emitted_state(self):
        state_size = self.cell.state_size
        first = state_size[0] if isinstance(state_size, (list, tuple)) else state_size
        if not isinstance(first, int):
            raise ValueError(
                "NoisinCell noises the hidden state a cell emits, its first "
                "state, which must be a single vector. Received a cell whose "
                f"first state has size {first!r}."
            )
        output_size = getattr(self.cell, "output_size", None)
        if output_size is not None and output_size != first:
            raise ValueError(
                "NoisinCell noises the cell's output and feeds it back as the "
                "first state, so they must have the same size. Received a cell "
                f"with output_size={output_size} and first state size {first}."
            )

    @property
    def state_size(self):
        return self.cell.state_size

    @property
    def output_size(self):
        state_size = self.cell.state_size
        return state_size[0] if isinstance(state_size, (list, tuple)) else state_size

    def build(self, input_shape):
        if input_shape and isinstance(input_shape[0], (list, tuple)):
            input_shape = input_shape[0]  # (x_t, eps_t) shapes
        if isinstance(self.cell, keras.layers.Layer) and not self.cell.built:
            self.cell.build(input_shape)
            self.cell.built = True

    def draw_noise(self, shape):
        """ε for `shape` (e.g. `(batch, time, units)`) from this cell's generator.

        Drawn in the compute dtype, or in float32 when that is a 16-bit float,
        so that the 1/γ rescaling is not rounded to a few bits (the noise is
        then applied in float32 and the result cast back).
        """
        return draw_noise(self, shape, self.seed_generator)

    def call(self, inputs, states, training=False):
        noise = self._step_noise.value
        if isinstance(inputs, (list, tuple)):
            inputs, noise = inputs
        kwargs = {"training": training} if self._cell_takes_training else {}
        call = self.cell.call if self._call_cell_directly else self.cell
        output, new_states = call(inputs, states, **kwargs)
        if not training or noise is _NO_NOISE:
            return output, new_states
        if noise is None:
            raise ValueError(_MISSING_NOISE)
        z = apply_noise(output, noise, self.mode)
        if tree.is_nested(new_states):
            new_states = type(new_states)([z, *new_states[1:]])
        else:
            new_states = z
        return z, new_states

    def get_initial_state(self, batch_size=None):
        if hasattr(self.cell, "get_initial_state"):
            return self.cell.get_initial_state(batch_size=batch_size)
        sizes = self.state_size if isinstance(self.state_size, (list, tuple)) else [self.state_size]
        return [ops.zeros((batch_size, size), dtype=self.compute_dtype) for size in sizes]

    # The RNN layer prepares dropout masks before its loop (inside the loop, a
    # JAX scan would leak them) for the DropoutRNNCells it sees; NoisinCell is
    # one so that the wrapped cell's masks are prepared as for the bare cell.
    def get_dropout_mask(self, step_input):
        if isinstance(self.cell, DropoutRNNCell):
            return self.cell.get_dropout_mask(step_input)
        return None

    def get_recurrent_dropout_mask(self, step_input):
        if isinstance(self.cell, DropoutRNNCell):
            return self.cell.get_recurrent_dropout_mask(step_input)
        return None

    def reset_dropout_mask(self):
        if isinstance(self.cell, DropoutRNNCell):
            self.cell.reset_dropout_mask()

    def reset_recurrent_dropout_mask(self):
        if isinstance(self.cell, DropoutRNNCell):
            self.cell.reset_recurrent_dropout_mask()

    def get_config(self):
        config = {
            "cell": keras.saving.serialize_keras_object(self.cell),
            "noise": self.noise,
            "noise_level": self.noise_level,
            "mode": self.mode,
            "seed": self.seed,
            **self.noise_params,
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return from_wrapper_config(cls, config, "cell", custom_objects)


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class NoisinRNN(CarriedStates, keras.layers.RNN):
    """`keras.layers.RNN` that gives its NoisinCells fresh noise at every step.

    In training, draws the noise of the whole sequence for each `NoisinCell`
    in its cell (the cell itself, or the cells of a
    `keras.layers.StackedRNNCells`, which a list of cells becomes) with one
    `keras.random` call of shape `(batch, time, units)`, and hands each time
    step its slice: fresh noise per step, example and unit on every backend
    (see the module docstring). At inference it is `keras.layers.RNN`. All of
    `keras.layers.RNN`'s arguments and behaviour apply: `return_sequences`,
    `return_state`, `go_backwards`, `stateful`, `unroll`, masking (a masked
    step carries the previous, noised, state and output forward unchanged).

    Args:
        cell: A `NoisinCell`, a list of cells or a `StackedRNNCells`
            containing NoisinCells (cells that are not NoisinCells run
            noiselessly).
        **kwargs: `keras.layers.RNN` arguments.

    Example:

    ```python
    layer = NoisinRNN(
        NoisinCell(keras.layers.GRUCell(256), "gaussian", 0.5),
        return_sequences=True,
    )
    ```
    """

    def call(self, sequences, initial_state=None, mask=None, training=False):
        # `RNN.call` runs the cells of a stack once before the loop to size
        # their dropout masks; there the NoisinCells need no noise.
        cells = _noisin_cells(self.cell)
        with _noise_bound(cells, [_NO_NOISE] * len(cells)):
            return super().call(
                sequences, initial_state=initial_state, mask=mask, training=training
            )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        cells = _noisin_cells(self.cell)
        if not training or not cells:
            return super().inner_loop(sequences, initial_state, mask=mask, training=training)
        if tree.is_nested(mask):
            mask = mask[0]
        if not tree.is_nested(initial_state):
            initial_state = [initial_state]
        batch_size, timesteps = ops.shape(sequences)[0], ops.shape(sequences)[1]
        noises = tuple(
            cell.draw_noise((batch_size, timesteps, cell.output_size)) for cell in cells
        )
        copy_states = keras.backend.backend() == "torch" and self.stateful
        cell_kwargs = {}
        if "training" in inspect.signature(self.cell.call).parameters:
            cell_kwargs["training"] = training
        # One tensor (batch, time, features + units of each cell) for the
        # loop: TensorFlow's loop cannot slice several inputs along a time
        # axis of unknown length (variable-length BPTT batches). The common
        # dtype holds every part exactly (16-bit inputs widen to the noise's
        # float32); each step slices the parts back into their own dtypes.
        packed, unpack = pack((sequences, *noises))

        def step(inputs, states):
            x_t, *noise_t = unpack(inputs)
            if copy_states:  # as in `RNN.inner_loop`: keeps torch autograd intact
                states = tree.map_structure(ops.copy, states)
            with _noise_bound(cells, noise_t):
                output, new_states = self.cell(x_t, states, **cell_kwargs)
            if not tree.is_nested(new_states):
                new_states = [new_states]
            return output, new_states

        return self._loop(step, packed, initial_state, mask, sequences.shape[1])

    def _loop(self, step, packed, initial_state, mask, timesteps):
        return backend_rnn(
            step,
            packed,
            initial_state,
            go_backwards=self.go_backwards,
            mask=mask,
            unroll=self.unroll,
            input_length=timesteps,
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )
