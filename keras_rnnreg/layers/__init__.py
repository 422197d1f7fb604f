"""Keras layers for regularizing recurrent networks."""

from keras_rnnreg.layers.artar import ARTARRegularizer
from keras_rnnreg.layers.embedding_dropout import EmbeddingDropout
from keras_rnnreg.layers.locked_dropout import LockedDropout
from keras_rnnreg.layers.mixture_of_softmaxes import MixtureOfSoftmaxes
from keras_rnnreg.layers.noisin import NoisinGRU, NoisinLSTM
from keras_rnnreg.layers.noisin_cell import NoisinCell, NoisinRNN
from keras_rnnreg.layers.tied_output import TiedEmbedding
from keras_rnnreg.layers.weight_drop import WeightDropGRU, WeightDropLSTM

__all__ = [
    "ARTARRegularizer",
    "EmbeddingDropout",
    "LockedDropout",
    "MixtureOfSoftmaxes",
    "NoisinCell",
    "NoisinGRU",
    "NoisinLSTM",
    "NoisinRNN",
    "TiedEmbedding",
    "WeightDropGRU",
    "WeightDropLSTM",
]
