"""Callbacks: NT-ASGD's non-monotone averaging trigger."""

from keras_rnnreg.callbacks.nt_asgd import NTASGD

__all__ = ["NTASGD"]
