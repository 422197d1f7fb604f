"""`keras_rnnreg.cache`: the neural cache pointer's former home.

The cache now lives in `keras_rnnreg.evaluation` beside dynamic evaluation
(`keras_rnnreg.evaluation.cache`); this module re-exports its public names so
that code importing `keras_rnnreg.cache` keeps working.
"""

from keras_rnnreg.evaluation import cache as _cache
from keras_rnnreg.evaluation.cache import *  # noqa: F401,F403

__all__ = _cache.__all__
