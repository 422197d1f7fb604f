"""Input pipelines: truncated BPTT over token streams (fixed or variable
length, AWD-LSTM section 4.1) and a PTB-style corpus reader."""

from keras_rnnreg.data.bptt import (
    BPTTCallback,
    BPTTSequence,
    batchify,
    reset_rnn_states,
)
from keras_rnnreg.data.corpus import Corpus, load_ptb

__all__ = [
    "BPTTCallback",
    "BPTTSequence",
    "Corpus",
    "batchify",
    "load_ptb",
    "reset_rnn_states",
]
