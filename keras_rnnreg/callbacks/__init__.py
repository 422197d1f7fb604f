"""Callbacks: NT-ASGD's non-monotone averaging trigger, variable-length
BPTT's learning-rate scaling and state resets, and the AR/TAR terms in the
logs."""

from keras_rnnreg._stateful import reset_rnn_states
from keras_rnnreg.callbacks.bptt import BPTTCallback
from keras_rnnreg.callbacks.nt_asgd import NTASGD
from keras_rnnreg.callbacks.regularizer_logs import LogRegularizers

__all__ = ["BPTTCallback", "LogRegularizers", "NTASGD", "reset_rnn_states"]
