"""keras-rnnreg: regularization and optimization for recurrent networks in Keras 3.

The package is lazy (PEP 562): `import keras_rnnreg` imports no Keras (nor
TensorFlow, JAX or torch), and each public name imports its module when it
is first used. So the command line (`keras_rnnreg.cli`) can choose the Keras
backend and quiet TensorFlow's start-up before anything imports Keras.

Registration. `keras.saving.load_model` finds this library's classes
(`"keras_rnnreg>WeightDropLSTM"`, ...) in the registry that
`@keras.saving.register_keras_serializable` fills when their modules are
imported; it never imports a module of ours itself. A lazy package would
leave that registry empty, so the modules holding such classes (callbacks,
evaluation, layers, losses, metrics, optimizers) are all imported

- by `import keras_rnnreg` when Keras is already imported (`import keras`
  first, the order isort writes): Keras is paid for by then;
- by the first use of any public name (`keras_rnnreg.layers`,
  `keras_rnnreg.WeightDropLSTM`, `from keras_rnnreg import ASGD`).

Hence `import keras, keras_rnnreg; keras.saving.load_model(path)` works. A
submodule imported before Keras (`from keras_rnnreg.layers import
WeightDropLSTM` in a fresh process) registers its own classes only; and
`import keras_rnnreg` before `import keras`, with nothing of the package
used, registers none: there, import Keras first or use a name.
"""

import importlib
import sys

__version__ = "0.1.0.dev0"

_SUBMODULES = ("callbacks", "data", "evaluation", "layers", "losses", "metrics", "models", "noise",
               "optimizers")
# Each public class and the submodule that defines it.
_CLASSES = {
    **dict.fromkeys(
        ("ARTARRegularizer", "EmbeddingDropout", "LockedDropout", "MixtureOfSoftmaxes",
         "NoisinCell", "NoisinGRU", "NoisinLSTM", "NoisinRNN", "TiedEmbedding", "WeightDropGRU",
         "WeightDropLSTM"),
        "layers",
    ),
    "NTASGD": "callbacks",
    "BPTTCallback": "callbacks",
    "BPTTSequence": "data",
    "ASGD": "optimizers",
    "GradientNoise": "optimizers",
}
# The submodules whose import registers classes with Keras.
_SERIALIZABLE = ("callbacks", "evaluation", "layers", "losses", "metrics", "optimizers")

__all__ = [*_SUBMODULES, *_CLASSES]


def _register_with_keras():
    """Imports every module that registers classes with Keras (imports Keras)."""
    for name in _SERIALIZABLE:
        importlib.import_module(f"{__name__}.{name}")


def __getattr__(name):
    if name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _CLASSES:
        value = getattr(importlib.import_module(f"{__name__}.{_CLASSES[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _register_with_keras()
    globals()[name] = value  # later uses skip this function
    return value


def __dir__():
    return sorted({*globals(), *__all__})


if "keras" in sys.modules:
    _register_with_keras()
