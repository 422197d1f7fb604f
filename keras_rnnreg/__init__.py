"""keras-rnnreg: regularization and optimization for recurrent networks in Keras 3."""

from keras_rnnreg import layers
from keras_rnnreg.layers import (
    ARTARRegularizer,
    EmbeddingDropout,
    LockedDropout,
    TiedEmbedding,
    WeightDropGRU,
    WeightDropLSTM,
)

__version__ = "0.1.0.dev0"
