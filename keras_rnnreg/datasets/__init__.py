"""Datasets: an embedded synthetic corpus with a known optimum (NumPy only),
and TensorFlow Datasets builders for PTB and WikiText-2 (the `data` extra).

The TFDS builders import `tensorflow_datasets`, an optional dependency, so
they load on first use: `keras_rnnreg.datasets.load_corpus("ptb", ...)`.
"""

from keras_rnnreg.datasets.synthetic import SyntheticCorpus, make_synthetic_corpus

__all__ = ["SyntheticCorpus", "make_synthetic_corpus", "load_corpus"]

_TFDS_NAMES = ("load_corpus", "Ptb", "Wikitext2")


def __getattr__(name):
    if name in _TFDS_NAMES:
        from keras_rnnreg.datasets import tfds_builders

        return getattr(tfds_builders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
