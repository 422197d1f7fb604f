"""Optimizers: annealed gradient noise and (NT-)ASGD iterate averaging."""

from keras_rnnreg.optimizers.averaging import ASGD
from keras_rnnreg.optimizers.gradient_noise import GradientNoise

__all__ = ["ASGD", "GradientNoise"]
