"""Input pipelines: truncated BPTT over token streams (fixed or variable
length, AWD-LSTM section 4.1), its length sampler as pure functions of a NumPy
generator, and a PTB-style corpus reader."""

import warnings

from keras_rnnreg._stateful import reset_rnn_states
from keras_rnnreg.data.bptt import BPTTSequence, batchify
from keras_rnnreg.data.corpus import Corpus, load_ptb
from keras_rnnreg.data.lengths import (
    draw_epoch_bounds,
    draw_lengths,
    most_frequent_batch_count,
)

__all__ = [
    "BPTTSequence",
    "Corpus",
    "batchify",
    "draw_epoch_bounds",
    "draw_lengths",
    "load_ptb",
    "most_frequent_batch_count",
    "reset_rnn_states",
]


def __getattr__(name):
    # BPTTCallback moved to keras_rnnreg.callbacks (it is a Keras callback);
    # the old path keeps working.
    if name == "BPTTCallback":
        warnings.warn(
            "keras_rnnreg.data.BPTTCallback moved to "
            "keras_rnnreg.callbacks.BPTTCallback; the old name will be removed.",
            DeprecationWarning,
            stacklevel=2,
        )
        from keras_rnnreg.callbacks.bptt import BPTTCallback

        return BPTTCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
