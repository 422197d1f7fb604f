"""The corpora a run can train on, by name: the embedded synthetic corpus,
PTB and WikiText-2 (TensorFlow Datasets builders), or a directory of plain
text files."""

import contextlib
import io
import os

from keras_rnnreg.data import load_ptb

DATASETS = ("synthetic", "ptb", "wikitext2")
#: Default split file names of a `--data-dir` corpus, tried in order.
DIRECTORY_LAYOUTS = (
    ("train.txt", "valid.txt", "test.txt"),
    ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
)


class DataError(ValueError):
    """A corpus that cannot be read; the message says what to fix."""


def _check_text_files(directory, names):
    for name in names:
        path = os.path.join(directory, name)
        if os.path.getsize(path) == 0:
            raise DataError(f"{path} is empty: a split needs at least one line of text.")
        with open(path, "rb") as file:
            data = file.read()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(
                f"{path} is not UTF-8 text (byte {error.start}: {data[error.start:error.start + 1]!r})."
            ) from None


def load_directory(directory, files=None):
    """A `Corpus` from plain text files: each line's words plus `<eos>`."""
    if not os.path.isdir(directory):
        raise DataError(f"--data-dir {directory!r} is not a directory.")
    if files is None:
        present = [layout for layout in DIRECTORY_LAYOUTS
                   if all(os.path.isfile(os.path.join(directory, n)) for n in layout)]
        if not present:
            expected = " or ".join("/".join(layout) for layout in DIRECTORY_LAYOUTS)
            found = sorted(os.listdir(directory))
            raise DataError(
                f"--data-dir {directory!r} must hold the three splits as {expected} "
                f"(or name them with --train-file/--valid-file/--test-file); found: "
                f"{', '.join(found) or 'nothing'}."
            )
        files = present[0]
    missing = [n for n in files if not os.path.isfile(os.path.join(directory, n))]
    if missing:
        raise DataError(f"--data-dir {directory!r} lacks {', '.join(missing)}.")
    _check_text_files(directory, files)
    return load_ptb(directory, filenames=tuple(files))


def load_dataset(spec):
    """`(corpus, oracle_cross_entropy or None)` for a run's dataset record.

    `spec`: {"name": "synthetic"|"ptb"|"wikitext2"|"directory", ...} as
    `keras_rnnreg.cli` writes it into the run's configuration.
    """
    name = spec["name"]
    if name == "synthetic":
        from keras_rnnreg.datasets import make_synthetic_corpus

        corpus = make_synthetic_corpus(seed=spec.get("seed", 0))
        return corpus, corpus.oracle_cross_entropy
    if name == "directory":
        return load_directory(spec["path"], spec.get("files")), None
    if name in ("ptb", "wikitext2"):
        import tensorflow_datasets as tfds

        from keras_rnnreg.datasets import load_corpus

        # TFDS's per-split progress bars are a screenful on first use, and
        # its first build prints "Downloading and preparing dataset Unknown
        # size ..." and an absl warning about the folder it is about to fill:
        # noise to a user of the command. Failures still raise (one line).
        tfds.disable_progress_bar()
        from absl import logging as absl_logging

        verbosity = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                corpus = load_corpus(
                    name, data_dir=spec.get("tfds_dir"), manual_dir=spec.get("manual_dir")
                )
        finally:
            absl_logging.set_verbosity(verbosity)
        return corpus, None
    raise DataError(f"Unknown dataset {name!r}. Valid: {', '.join(DATASETS)}, or --data-dir.")
