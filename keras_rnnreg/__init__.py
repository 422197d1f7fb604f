"""keras-rnnreg: regularization and optimization for recurrent networks in Keras 3."""

from keras_rnnreg._startup import quiet_tensorflow_import

quiet_tensorflow_import()  # only when started as the `keras-rnnreg` command

from keras_rnnreg import callbacks, layers, losses, metrics, models, optimizers
from keras_rnnreg import noise
from keras_rnnreg import data
from keras_rnnreg.layers import (
    ARTARRegularizer,
    EmbeddingDropout,
    LockedDropout,
    NoisinCell,
    NoisinGRU,
    NoisinLSTM,
    NoisinRNN,
    TiedEmbedding,
    WeightDropGRU,
    WeightDropLSTM,
)

from keras_rnnreg.callbacks import NTASGD, BPTTCallback
from keras_rnnreg.data import BPTTSequence
from keras_rnnreg.optimizers import ASGD, GradientNoise

__version__ = "0.1.0.dev0"
