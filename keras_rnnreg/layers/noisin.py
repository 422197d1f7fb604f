"""Noisin: unbiased noise injection into the hidden states of any Keras RNN.

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
from keras_rnnreg._fused_rnn import _FLOATS, standard_activations
from keras_rnnreg._jax_lstm import lstm_scan
from keras_rnnreg._keras_compat import DropoutRNNCell, backend_rnn
from keras_rnnreg._stateful import CarriedStates
from keras_rnnreg._tf_lstm import lstm_loop
from keras_rnnreg._validation import check_seed
from keras_rnnreg.noise import SHAPE_PARAMETERS, _check_noise, sample_noise

# Seeds the noise generator apart from the wrapped cell's dropout generator:
# two SeedGenerators with one seed yield the same stream.
_NOISE_SEED_OFFSET = 0x4015E

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


def _apply_noise(h, eps, mode):
    """h ⊙ ε or h + ε, in ε's dtype (float32 under mixed precision), cast back to h's."""
    if eps.dtype != h.dtype:
        noised = _apply_noise(ops.cast(h, eps.dtype), eps, mode)
        return ops.cast(noised, h.dtype)
    return h * eps if mode == "multiplicative" else h + eps


@contextlib.contextmanager
def _noise_bound(cells, noises):
    """Gives each NoisinCell its noise for the calls made inside the block."""
    previous = [cell._step_noise for cell in cells]
    for cell, noise in zip(cells, noises):
        # object.__setattr__: a transient tensor, not state for Keras to track.
        object.__setattr__(cell, "_step_noise", noise)
    try:
        yield
    finally:
        for cell, noise in zip(cells, previous):
            object.__setattr__(cell, "_step_noise", noise)


def _pack(parts):
    """The loop's input made of `parts` (each (batch, time, features)), and
    the step's function that gives a step's slice back as the parts.

    On TensorFlow one tensor: its loop cannot slice several inputs along a
    time axis of unknown length (variable-length BPTT batches). The common
    dtype holds every part exactly (16-bit inputs widen to the noise's
    float32); each step casts its slice back into the part's own dtype. The
    other backends' loops take the parts as they are.
    """
    if keras.backend.backend() != "tensorflow":
        return tuple(parts), list
    dtypes = [keras.backend.standardize_dtype(part.dtype) for part in parts]
    common = keras.backend.result_type(*dtypes)
    packed = ops.concatenate([ops.cast(part, common) for part in parts], axis=-1)
    bounds = [0]
    for part in parts:
        bounds.append(bounds[-1] + part.shape[-1])

    def unpack(row):
        return [
            row[:, start:end] if dtype == common else ops.cast(row[:, start:end], dtype)
            for start, end, dtype in zip(bounds[:-1], bounds[1:], dtypes)
        ]

    return packed, unpack


def _plain_lstm_cell(cell):
    """The `keras.layers.LSTMCell` inside a NoisinCell when the fast loop
    computes exactly what it would: no dropout masks, Keras's own class."""
    if not isinstance(cell, NoisinCell) or type(cell.cell) is not keras.layers.LSTMCell:
        return None
    lstm = cell.cell
    if lstm.dropout or lstm.recurrent_dropout:
        return None
    return lstm


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
            None if seed is None else seed + _NOISE_SEED_OFFSET
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
        self._step_noise = None
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
        dtype = keras.backend.standardize_dtype(self.compute_dtype)
        if dtype in ("float16", "bfloat16"):
            dtype = "float32"
        return sample_noise(
            self.noise,
            shape,
            self.noise_level,
            self.mode,
            seed=self.seed_generator,
            dtype=dtype,
            **self.noise_params,
        )

    def call(self, inputs, states, training=False):
        noise = self._step_noise
        if isinstance(inputs, (list, tuple)):
            inputs, noise = inputs
        kwargs = {"training": training} if self._cell_takes_training else {}
        call = self.cell.call if self._call_cell_directly else self.cell
        output, new_states = call(inputs, states, **kwargs)
        if not training or noise is _NO_NOISE:
            return output, new_states
        if noise is None:
            raise ValueError(_MISSING_NOISE)
        z = _apply_noise(output, noise, self.mode)
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
        config = dict(config)
        cell = keras.saving.deserialize_keras_object(
            config.pop("cell"), custom_objects=custom_objects
        )
        return cls(cell, **config)


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
        lstm = _plain_lstm_cell(self.cell)
        if lstm is not None:
            return self._lstm_loop(lstm, sequences, noises[0], initial_state, mask, copy_states)
        cell_kwargs = {}
        if "training" in inspect.signature(self.cell.call).parameters:
            cell_kwargs["training"] = training
        # One tensor (batch, time, features + units of each cell) for the
        # loop: TensorFlow's loop cannot slice several inputs along a time
        # axis of unknown length (variable-length BPTT batches). The common
        # dtype holds every part exactly (16-bit inputs widen to the noise's
        # float32); each step slices the parts back into their own dtypes.
        packed, unpack = _pack((sequences, *noises))

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

    def _lstm_loop(self, lstm, sequences, noise, initial_state, mask, copy_states):
        """Noisin's LSTM recurrence with the work outside the loop taken out.

        The input projections x_t W + b of all steps are one matmul before
        the loop (as Keras's torch LSTM fallback does), so each step is the
        recurrent matmul h_{t-1} U, the gates, and the noise (Noisin
        Algorithm 1): z_t = o_t ⊙ tanh(c_t) ⊙ ε_t, the state fed on. The
        same arithmetic as `LSTMCell.call` (gate order i, f, c, o), without a
        layer call per step.
        """
        dtype = sequences.dtype
        if self._own_loop_applies(lstm, dtype, noise):
            loop = lstm_scan if keras.backend.backend() == "jax" else lstm_loop
            return loop(
                sequences, ops.cast(lstm.kernel, dtype), ops.cast(lstm.recurrent_kernel, dtype),
                ops.cast(lstm.bias, dtype) if lstm.use_bias else None, initial_state, mask,
                self.go_backwards, self.zero_output_for_mask, noise, self.cell.mode,
            )
        projected = ops.matmul(sequences, ops.cast(lstm.kernel, dtype))
        if lstm.use_bias:
            projected = projected + ops.cast(lstm.bias, dtype)
        recurrent_kernel = ops.cast(lstm.recurrent_kernel, dtype)
        activation, recurrent_activation = lstm.activation, lstm.recurrent_activation
        if keras.backend.backend() == "torch" and mask is None and not self.unroll:
            return self._torch_lstm_loop(
                projected, recurrent_kernel, noise, initial_state, activation,
                recurrent_activation, copy_states,
            )
        packed, unpack = _pack((projected, noise))

        def step(inputs, states):
            projected_t, noise_t = unpack(inputs)
            if copy_states:
                states = tree.map_structure(ops.copy, states)
            h, c = states[0], states[1]
            z = projected_t + ops.matmul(h, recurrent_kernel)
            z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
            c = recurrent_activation(z_f) * c + recurrent_activation(z_i) * activation(z_c)
            h = _apply_noise(recurrent_activation(z_o) * activation(c), noise_t, self.cell.mode)
            return h, [h, c]

        return self._loop(step, packed, initial_state, mask, sequences.shape[1])

    def _own_loop_applies(self, lstm, dtype, noise):
        """On JAX and TensorFlow (every device: Noisin has no fused kernel
        to keep), the loop with a hand-written backward pass (`lstm_scan`,
        `_tf_lstm.lstm_loop`), for tanh/sigmoid LSTMs in float32/float64
        with noise of that dtype."""
        dtype = keras.backend.standardize_dtype(dtype)
        return (
            keras.backend.backend() in ("jax", "tensorflow")
            and not self.unroll
            and standard_activations(lstm.activation, lstm.recurrent_activation)
            and dtype in _FLOATS
            and keras.backend.standardize_dtype(noise.dtype) == dtype
        )

    def _torch_lstm_loop(self, projected, recurrent_kernel, noise, initial_state,
                         activation, recurrent_activation, copy_states):
        """`_lstm_loop`'s steps as plain torch calls, for eager torch.

        Keras's generic loop runs in Python on torch, and there each step
        went through the loop's bookkeeping and `keras.ops`' conversions
        around every one of its ten operations; a step here is one addmm
        (x_t W + b + h_{t-1} U), the gates and the noise, as a hand-written
        PyTorch loop would issue them. Same arithmetic, same outputs, last
        output and states as the generic loop (outputs in processing order
        with `go_backwards`).
        """
        import torch

        # The standard activations straight from torch, skipping ops'
        # conversions; any other activation is called as given.
        direct = {keras.activations.tanh: torch.tanh, keras.activations.sigmoid: torch.sigmoid}
        activation = direct.get(activation, activation)
        recurrent_activation = direct.get(recurrent_activation, recurrent_activation)
        h, c = initial_state[0], initial_state[1]
        if copy_states:  # stateful: Keras later writes the new state into these
            h, c = h.clone(), c.clone()
        # unbind: one backward node for all steps; indexing step t would
        # make each step's backward write a zero tensor of the whole sequence.
        projected_steps, noise_steps = projected.unbind(1), noise.unbind(1)
        steps = len(projected_steps)
        order = range(steps - 1, -1, -1) if self.go_backwards else range(steps)
        mode = self.cell.mode
        outputs = []
        for t in order:
            z = torch.addmm(projected_steps[t], h, recurrent_kernel)
            z_i, z_f, z_c, z_o = z.chunk(4, dim=-1)
            c = recurrent_activation(z_f) * c + recurrent_activation(z_i) * activation(z_c)
            h = _apply_noise(recurrent_activation(z_o) * activation(c), noise_steps[t], mode)
            outputs.append(h)
        sequence = torch.stack(outputs, dim=1) if self.return_sequences else h[:, None]
        return h, sequence, [h, c]


class _NoisinCellLayer(NoisinRNN):
    """NoisinRNN(NoisinCell(cell_class(units, ...))) with a flat constructor."""

    _cell_class = None
    _cell_name = None

    @classmethod
    def _cell_argument_names(cls):
        names = inspect.signature(cls._cell_class.__init__).parameters
        return [n for n in names if n not in ("self", "units", "seed", "kwargs")] + [
            "implementation"
        ]

    def __init__(
        self,
        units,
        noise="bernoulli",
        noise_level=0.5,
        mode="multiplicative",
        seed=None,
        **kwargs,
    ):
        noise, noise_level, mode, seed, noise_params = _check_noisin_arguments(
            noise, noise_level, mode, seed, kwargs
        )
        cell_kwargs = {
            k: kwargs.pop(k) for k in self._cell_argument_names() if k in kwargs
        }
        dtype = kwargs.get("dtype")
        trainable = kwargs.get("trainable", True)
        cell = self._cell_class(
            units,
            seed=seed,
            dtype=dtype,
            trainable=trainable,
            name=self._cell_name,
            **cell_kwargs,
        )
        noisin_cell = NoisinCell(
            cell,
            noise,
            noise_level,
            mode,
            seed=seed,
            dtype=dtype,
            trainable=trainable,
            name="noisin_cell",
            **noise_params,
        )
        super().__init__(noisin_cell, **kwargs)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    @property
    def units(self):
        return self.cell.cell.units

    @property
    def noise(self):
        return self.cell.noise

    @property
    def noise_level(self):
        return self.cell.noise_level

    @property
    def mode(self):
        return self.cell.mode

    def get_config(self):
        config = super().get_config()
        del config["cell"]
        cell_config = self.cell.cell.get_config()
        config["units"] = self.units
        for name in self._cell_argument_names():
            if name in cell_config:
                config[name] = cell_config[name]
        config.update(
            noise=self.cell.noise,
            noise_level=self.cell.noise_level,
            mode=self.cell.mode,
            seed=self.cell.seed,
            **self.cell.noise_params,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class NoisinLSTM(_NoisinCellLayer):
    """An LSTM trained with Noisin: `NoisinRNN(NoisinCell(LSTMCell(units, ...)))`.

    Multiplicative noise replaces the LSTM's h_t = o_t ⊙ tanh(c_t) with
    z_t = o_t ⊙ tanh(c_t) ⊙ ε_t at every step (section 3); the memory cell c
    is not noised; z_t is the output and the next step's hidden state. At
    inference it computes exactly the LSTM. Noise per step requires the
    per-step cell loop (`keras.layers.RNN(keras.layers.LSTMCell)`), not the
    fused `keras.layers.LSTM` kernel; the weights have the same shapes and
    order as `keras.layers.LSTM`'s, so `set_weights(get_weights())` moves a
    trained model onto the fused layer for inference.

    Args:
        units: Positive int, dimensionality of the output space.
        noise: As for `NoisinCell`.
        noise_level: As for `NoisinCell`.
        mode: As for `NoisinCell`.
        seed: As for `NoisinCell`; it also seeds the LSTM's dropout masks.
        **kwargs: `alpha` (gamma and beta noise), any `keras.layers.LSTMCell`
            argument (`dropout`, `recurrent_dropout`, initializers, ...) and
            any `keras.layers.RNN` argument (`return_sequences`,
            `return_state`, `go_backwards`, `stateful`, `unroll`, ...).

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((35,), dtype="int32"),
        keras.layers.Embedding(10000, 650),
        NoisinLSTM(650, noise="bernoulli", noise_level=0.41,
                   return_sequences=True),
        NoisinLSTM(650, noise="bernoulli", noise_level=0.41,
                   return_sequences=True),
        keras.layers.Dense(10000),
    ])
    ```
    """

    _cell_class = keras.layers.LSTMCell
    _cell_name = "lstm_cell"


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class NoisinGRU(_NoisinCellLayer):
    """A GRU trained with Noisin: `NoisinRNN(NoisinCell(GRUCell(units, ...)))`.

    The GRU's emitted state h_t is noised at every step, z_t = h_t ⊙ ε_t
    (or h_t + ε_t), and fed back; at inference it computes exactly the GRU.

    Args:
        units: Positive int, dimensionality of the output space.
        noise: As for `NoisinCell`.
        noise_level: As for `NoisinCell`.
        mode: As for `NoisinCell`.
        seed: As for `NoisinCell`.
        **kwargs: `alpha`, any `keras.layers.GRUCell` argument and any
            `keras.layers.RNN` argument.

    Example:

    >>> layer = NoisinGRU(64, noise="gaussian", noise_level=0.5,
    ...                   return_sequences=True)
    >>> y = layer(keras.ops.ones((2, 7, 16)), training=True)
    """

    _cell_class = keras.layers.GRUCell
    _cell_name = "gru_cell"
