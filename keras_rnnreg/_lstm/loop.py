"""What every path shares: the input projection, the generic loop, the
time-major frame of the fast cores."""

import keras
from keras import ops
from keras import tree

from keras_rnnreg._keras_compat import backend_rnn
from keras_rnnreg._lstm.math import gru_cell, lstm_cell, project_tokens


def _split_bias(cell):
    """(input bias, recurrent bias): a GRU with `reset_after` keeps both in
    one (2, 3H) weight; every other cell has one bias, added to x_t W."""
    if not cell.use_bias:
        return None, None
    if getattr(cell, "reset_after", False):
        return cell.bias[0], cell.bias[1]
    return cell.bias, None


def input_dropout_mask(cell, sequences, training):
    """The cell's input dropout mask(s), as its `call` applies them (one for
    every step; with `implementation=1` a list, one per gate block), or None."""
    if training and 0.0 < cell.dropout < 1.0:
        return cell.get_dropout_mask(sequences[:, 0, :])
    return None


def project_inputs(cell, sequences, dropout_mask, dtype, time_major=False):
    """x_t W + b for every step at once, the input dropout applied, in
    `dtype`; `sequences` (batch, time, features), or (time, batch,
    features) with `time_major` (the mask's batch axis moves with it)."""
    def masked(m):
        return sequences * ops.cast(ops.expand_dims(m, 0 if time_major else 1), dtype)

    kernel = ops.cast(cell.kernel, dtype)
    bias, _ = _split_bias(cell)
    bias = None if bias is None else ops.cast(bias, dtype)
    if not isinstance(dropout_mask, (list, tuple)):
        x = sequences if dropout_mask is None else masked(dropout_mask)
        return project_tokens(x, kernel, bias)
    blocks = ops.split(kernel, len(dropout_mask), axis=-1)
    projected = ops.concatenate(
        [project_tokens(masked(m), k) for m, k in zip(dropout_mask, blocks)], -1
    )
    return projected if bias is None else projected + bias


def pack(parts):
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


def cell_loop(layer, sequences, initial_state, mask, training, recurrent_kernel=None,
              noise=None, noise_mode=None):
    """The loop of a `keras.layers.LSTM` or `GRU` for any configuration: the
    cell's equations (`math.lstm_cell`, `math.gru_cell`) with U (or U') and
    ε given, through the backend's scan as `keras.layers.RNN.inner_loop`
    runs it (masks, `go_backwards`, `unroll`, `zero_output_for_mask`), the
    input projections of all steps computed before it."""
    cell = layer.cell
    dtype = layer.compute_dtype
    x = ops.cast(sequences, dtype)
    projected = project_inputs(cell, x, input_dropout_mask(cell, x, training), dtype)
    kernel = ops.cast(cell.recurrent_kernel if recurrent_kernel is None else recurrent_kernel, dtype)
    recurrent_mask = None
    if training and 0.0 < cell.recurrent_dropout < 1.0:
        recurrent_mask = cell.get_recurrent_dropout_mask(initial_state[0])
    packed, unpack = pack((projected,) if noise is None else (projected, noise))
    copy_states = keras.backend.backend() == "torch" and layer.stateful
    options = dict(activation=cell.activation, recurrent_activation=cell.recurrent_activation,
                   recurrent_mask=recurrent_mask, noise_mode=noise_mode)
    lstm = isinstance(cell, keras.layers.LSTMCell)
    if not lstm:
        recurrent_bias = _split_bias(cell)[1]
        options.update(recurrent_bias=None if recurrent_bias is None else ops.cast(recurrent_bias, dtype),
                       reset_after=cell.reset_after)

    def step(inputs, states):
        p, *e = unpack(inputs)
        if copy_states:  # as `RNN.inner_loop`: Keras assigns the new states in place
            states = tree.map_structure(ops.copy, states)
        noise_t = e[0] if e else None
        if lstm:
            h, c = lstm_cell(p, states[0], states[1], kernel, noise=noise_t, **options)
            return h, [h, c]
        h = gru_cell(p, states[0], kernel, noise=noise_t, **options)
        return h, [h]

    if not tree.is_nested(initial_state):
        initial_state = [initial_state]
    return backend_rnn(
        step, packed, initial_state, go_backwards=layer.go_backwards, mask=mask,
        unroll=layer.unroll, input_length=sequences.shape[1],
        zero_output_for_mask=layer.zero_output_for_mask,
        return_all_outputs=layer.return_sequences,
    )


def time_major_loop(core, layer, sequences, initial_state, mask, training, recurrent_kernel,
                    noise, noise_mode):
    """The frame of the fast LSTM cores `core(projected, recurrent_kernel, h0,
    c0, mask, noise, zero_output, noise_mode) -> (outputs, h, c)`, all
    time-major: the input projections of all steps in one matmul, the mask
    a float (time, batch, 1) array, the steps reversed for `go_backwards`;
    Keras's `inner_loop` results back batch-major (outputs in processing
    order)."""
    cell = layer.cell
    dtype = layer.compute_dtype
    x = ops.swapaxes(ops.cast(sequences, dtype), 0, 1)
    dropout_mask = input_dropout_mask(cell, sequences, training)
    projected = project_inputs(cell, x, dropout_mask, dtype, time_major=True)
    kernel = ops.cast(cell.recurrent_kernel if recurrent_kernel is None else recurrent_kernel, dtype)
    if mask is not None:
        mask = ops.expand_dims(ops.swapaxes(ops.cast(mask, dtype), 0, 1), -1)
    if noise is not None:
        noise = ops.swapaxes(noise, 0, 1)
    if layer.go_backwards:
        projected, mask, noise = (None if t is None else ops.flip(t, 0) for t in (projected, mask, noise))
    h0, c0 = (ops.cast(state, dtype) for state in initial_state[:2])
    outputs, h, c = core(projected, kernel, h0, c0, mask, noise,
                         bool(layer.zero_output_for_mask), noise_mode)
    outputs = ops.swapaxes(outputs, 0, 1)
    return outputs[:, -1], outputs, [h, c]
