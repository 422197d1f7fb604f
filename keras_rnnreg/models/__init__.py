"""Word-level language models: a builder over the library's layers, the
papers' initialization, and the papers' models and training recipes as presets."""

from keras_rnnreg.models import initializers
from keras_rnnreg.models.builder import DEFAULT_ARGUMENTS, language_model, resolve_arguments
from keras_rnnreg.models.presets import PRESETS, Preset, get_preset, list_presets

__all__ = [
    "DEFAULT_ARGUMENTS",
    "PRESETS",
    "Preset",
    "get_preset",
    "initializers",
    "language_model",
    "list_presets",
    "resolve_arguments",
]
