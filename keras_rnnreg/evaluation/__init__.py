"""Evaluation beyond a plain perplexity: dynamic evaluation and the neural cache.

Both change how a trained language model is scored, not how it is trained:
dynamic evaluation (Krause et al. 2018) adapts the weights to the text
already scored, the neural cache pointer (AWD-LSTM §7, Grave et al. 2016)
mixes in a distribution over the words that followed similar hidden states.
"""

from keras_rnnreg.evaluation.cache import (
    NEURAL_CACHE_DEFAULTS,
    CacheEvaluation,
    CacheHistory,
    NeuralCache,
    cache_nll,
    evaluate_with_cache,
)
from keras_rnnreg.evaluation.dynamic import (
    DYNAMIC_EVALUATION_DEFAULTS,
    DynamicEvaluation,
    evaluate_dynamic,
    gradient_rms,
)
from keras_rnnreg.evaluation.optimizer import DynamicEvaluationOptimizer

__all__ = [
    "DYNAMIC_EVALUATION_DEFAULTS",
    "NEURAL_CACHE_DEFAULTS",
    "CacheEvaluation",
    "CacheHistory",
    "DynamicEvaluation",
    "DynamicEvaluationOptimizer",
    "NeuralCache",
    "cache_nll",
    "evaluate_dynamic",
    "evaluate_with_cache",
    "gradient_rms",
]
