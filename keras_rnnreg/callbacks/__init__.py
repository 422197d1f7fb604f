"""Callbacks: NT-ASGD's non-monotone averaging trigger and variable-length
BPTT's learning-rate scaling and state resets."""

from keras_rnnreg._stateful import reset_rnn_states
from keras_rnnreg.callbacks.bptt import BPTTCallback
from keras_rnnreg.callbacks.nt_asgd import NTASGD

__all__ = ["BPTTCallback", "NTASGD", "reset_rnn_states"]
