"""The one LSTM (and GRU) engine behind WeightDrop* and Noisin* layers.

A layer's `inner_loop` hands its recurrent kernel (U, or weight drop's U')
and its noise ε to `lstm()`/`gru()`; `fast_lstm()`/`fast_gru()` (in
`paths`) hold every rule for choosing a fast path (device, dtype,
activations, masks, mixed precision, `go_backwards`, stateful), with one
core per backend (`jax_core`, `tf_core`, `torch_core`, Keras's cuDNN calls)
and the step math once in `keras.ops` (`math`). Everything else runs the
generic loop (`loop.cell_loop`). docs/gpu.md has the table.
"""

from keras_rnnreg._lstm.layer import EngineRNN, draw_noise
from keras_rnnreg._lstm.paths import (
    fast_gru,
    fast_lstm,
    fused_only_inside_the_engine,
    gru,
    keras_would_fuse,
    lstm,
    standard_activations,
)
