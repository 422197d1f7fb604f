"""KerasTuner search spaces over this library's regularizers.

The package itself depends on Keras alone; this subpackage needs KerasTuner,
installed with the `tuner` extra (`pip install "keras-rnnreg[tuner]"`), which
also brings TensorBoard: on the TensorFlow backend KerasTuner imports it at
every trial, and TensorFlow no longer installs it.
"""

try:
    import keras_tuner  # noqa: F401
except ImportError as error:  # ModuleNotFoundError, or a broken install
    raise ImportError(
        "keras_rnnreg.tuner needs KerasTuner, which keras-rnnreg does not "
        'install by default. Install it with: pip install "keras-rnnreg[tuner]"'
    ) from error

from keras_rnnreg.tuner.hypermodel import LanguageModelHyperModel

__all__ = ["LanguageModelHyperModel"]
