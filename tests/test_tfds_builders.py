"""The `ptb` and `wikitext2` TFDS builders and `load_corpus`.

PTB is built once per session from the standard split files (found through
`KERAS_RNNREG_PTB`, `../shared/data/ptb` beside the repository, or
`/work/shared/data/ptb`). WikiText-2 is not on the test machines, so its
builder runs on small files shaped like the real ones, which the tests write.
"""

import hashlib
import importlib
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from keras_rnnreg.data import load_ptb  # noqa: E402
from keras_rnnreg.datasets import tfds_builders  # noqa: E402
from keras_rnnreg.datasets.tfds_builders import (  # noqa: E402
    DatasetError,
    Ptb,
    Wikitext2,
    load_corpus,
)

PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
WIKI_FILES = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")


def _ptb_dir():
    candidates = [
        os.environ.get("KERAS_RNNREG_PTB"),
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb",
        "/work/shared/data/ptb",
    ]
    for candidate in candidates:
        if candidate and all(os.path.isfile(os.path.join(candidate, f)) for f in PTB_FILES):
            return Path(candidate)
    return None


PTB_DIR = _ptb_dir()
needs_ptb = pytest.mark.skipif(
    PTB_DIR is None,
    reason="Penn Treebank files (ptb.train.txt, ptb.valid.txt, ptb.test.txt) not "
    "found in $KERAS_RNNREG_PTB, ../shared/data/ptb or /work/shared/data/ptb",
)

# WikiText-2's layout: lines start and end with a space, headings are
# "= Title =", and blank lines (a lone space) separate paragraphs.
WIKI_TEXT = {
    "wiki.train.tokens": (
        " \n"
        " = Valkyria Chronicles III = \n"
        " \n"
        " Senjō no Valkyria 3 : <unk> Chronicles ( Japanese : 戦場のヴァルキュリア3 ) \n"
        " \n"
        " = = Gameplay = = \n"
        " \n"
        " The game 's battle system , the <unk> system , is carried over . \n"
    ),
    "wiki.valid.tokens": (
        " \n"
        " = Homarus gammarus = \n"
        " \n"
        " The game is a system . \n"
    ),
    "wiki.test.tokens": (
        " \n"
        " = Robert Boulter = \n"
        " \n"
        " Robert Boulter is an English actor . \n"
    ),
}


def _expected_wiki_corpus():
    """The streams spelled out: every line's words then <eos>, blank or not."""
    def tokens(name):
        return [w for line in WIKI_TEXT[name].splitlines() for w in line.split() + ["<eos>"]]

    train = tokens("wiki.train.tokens")
    vocab = list(dict.fromkeys(train))
    ids = {word: i for i, word in enumerate(vocab)}
    streams = [
        [ids.get(word, ids["<unk>"]) for word in tokens(name)] for name in WIKI_FILES
    ]
    return streams, vocab


def _write_wiki(directory, files=WIKI_FILES):
    directory.mkdir(parents=True, exist_ok=True)
    for name in files:
        (directory / name).write_text(WIKI_TEXT[name], encoding="utf-8")
    return directory


def _assert_corpus(corpus, streams, vocab):
    for got, want in zip(corpus[:3], streams):
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, np.asarray(want, dtype="int32"))
    assert corpus.vocab == vocab


@pytest.fixture(scope="module", autouse=True)
def _quiet_tfds():
    tfds.display_progress_bar(False)
    yield
    tfds.display_progress_bar(True)


@pytest.fixture(scope="module")
def ptb_build(tmp_path_factory):
    if PTB_DIR is None:
        pytest.skip("Penn Treebank files not found")
    data_dir = tmp_path_factory.mktemp("tfds")
    return data_dir, load_corpus("ptb", data_dir=data_dir, manual_dir=PTB_DIR)


# --- PTB from the standard files --------------------------------------------


@needs_ptb
def test_ptb_token_counts_and_vocabulary(ptb_build):
    _, corpus = ptb_build
    assert [len(s) for s in corpus[:3]] == [929_589, 73_760, 82_430]
    assert len(corpus.vocab) == 10_000
    assert "<unk>" in corpus.vocab and "<eos>" in corpus.vocab
    assert all(s.min() >= 0 and s.max() < 10_000 for s in corpus[:3])


@needs_ptb
def test_ptb_equals_load_ptb_token_for_token(ptb_build):
    _, corpus = ptb_build
    reference = load_ptb(PTB_DIR)
    _assert_corpus(corpus, reference[:3], reference.vocab)


@needs_ptb
def test_ptb_builder_is_registered_with_one_example_per_line(ptb_build):
    data_dir, _ = ptb_build
    builder = tfds.builder("ptb", data_dir=data_dir)
    assert isinstance(builder, Ptb) and builder.is_prepared()
    assert str(builder.info.version) == "1.0.0"
    assert {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")} == {
        "train": 42_068,
        "validation": 3_370,
        "test": 3_761,
    }
    first = next(iter(tfds.as_numpy(builder.as_dataset(split="test", shuffle_files=False))))
    with open(PTB_DIR / "ptb.test.txt", encoding="utf-8") as file:
        assert first["text"].decode() == " ".join(file.readline().split())


@needs_ptb
def test_ptb_recorded_checksums_match_the_standard_files():
    for item in Ptb.DOWNLOADS:
        data = (PTB_DIR / item.filename).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (item.size, item.sha256)
    assert set(Ptb.url_infos) == {item.url for item in Ptb.DOWNLOADS}


# --- WikiText-2 on fixture files ----------------------------------------------


def test_wikitext2_builds_from_manual_files(tmp_path):
    manual = _write_wiki(tmp_path / "manual")
    corpus = load_corpus("wikitext2", data_dir=tmp_path / "tfds", manual_dir=manual)
    streams, vocab = _expected_wiki_corpus()
    _assert_corpus(corpus, streams, vocab)
    # Blank lines become a lone <eos>; unseen valid/test words become <unk>.
    assert corpus.vocab[corpus.train[0]] == "<eos>"
    assert "Homarus" not in corpus.vocab
    assert [corpus.vocab[i] for i in corpus.valid[1:5]] == ["=", "<unk>", "<unk>", "="]
    # Once prepared, it loads without the files and without a download.
    again = load_corpus("wikitext2", data_dir=tmp_path / "tfds", download=False)
    _assert_corpus(again, streams, vocab)


def test_wikitext2_finds_the_archive_subfolder(tmp_path):
    manual = tmp_path / "manual"
    _write_wiki(manual / "wikitext-2")
    corpus = load_corpus("wikitext2", data_dir=tmp_path / "tfds", manual_dir=manual)
    _assert_corpus(corpus, *_expected_wiki_corpus())


def test_builder_names_are_registered():
    import keras_rnnreg.datasets as datasets

    assert (datasets.load_corpus, datasets.Ptb, datasets.Wikitext2) == (load_corpus, Ptb, Wikitext2)
    assert tfds.builder_cls("ptb") is Ptb
    assert tfds.builder_cls("wikitext2") is Wikitext2


# --- downloads and checksums ----------------------------------------------------


def _zip_wiki(tmp_path):
    source = _write_wiki(tmp_path / "zip_source")
    archive = tmp_path / "served" / "wikitext-2-v1.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for name in WIKI_FILES:
            zf.write(source / name, f"wikitext-2/{name}")
    return archive


def _serve(monkeypatch, archive, size, sha256):
    # A local file stands in for the S3 URL; TFDS copies non-http URLs.
    download = tfds_builders._Download(archive.as_uri(), size, sha256, archive.name)
    monkeypatch.setattr(Wikitext2, "DOWNLOADS", (download,))


def test_download_with_matching_checksum_builds(tmp_path, monkeypatch):
    archive = _zip_wiki(tmp_path)
    data = archive.read_bytes()
    _serve(monkeypatch, archive, len(data), hashlib.sha256(data).hexdigest())
    corpus = load_corpus("wikitext2", data_dir=tmp_path / "tfds")
    _assert_corpus(corpus, *_expected_wiki_corpus())


def test_download_with_wrong_checksum_is_reported(tmp_path, monkeypatch):
    archive = _zip_wiki(tmp_path)
    _serve(monkeypatch, archive, 4475746, Wikitext2.DOWNLOADS[0].sha256)
    with pytest.raises(DatasetError, match="wrong checksum") as info:
        load_corpus("wikitext2", data_dir=tmp_path / "tfds")
    message = str(info.value)
    assert "92675f1d63015c1c" in message and "manual_dir" in message
    assert "wiki.train.tokens" in message
    assert not tfds.builder("wikitext2", data_dir=tmp_path / "tfds").is_prepared()


def test_archive_in_manual_dir_is_checked_like_a_download(tmp_path, monkeypatch):
    archive = _zip_wiki(tmp_path)
    data = archive.read_bytes()
    # The recorded URL is unreachable: TFDS must take the manual copy.
    unreachable = tmp_path / "absent" / archive.name
    _serve(monkeypatch, unreachable, len(data), hashlib.sha256(data).hexdigest())
    builder = tfds.builder("wikitext2", data_dir=tmp_path / "tfds")
    config = tfds.download.DownloadConfig(manual_dir=archive.parent, try_download_gcs=False)
    builder.download_and_prepare(download_config=config)
    assert builder.info.splits["train"].num_examples == 8
    corpus = load_corpus("wikitext2", data_dir=tmp_path / "tfds", download=False)
    _assert_corpus(corpus, *_expected_wiki_corpus())

    _serve(monkeypatch, unreachable, len(data), "0" * 64)
    with pytest.raises(DatasetError, match="wrong checksum"):
        load_corpus("wikitext2", data_dir=tmp_path / "other", manual_dir=archive.parent)


def test_failed_download_says_which_files_to_put_where(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "wikitext-2-v1.zip"
    _serve(monkeypatch, missing, 1, "0" * 64)
    with pytest.raises(DatasetError, match="Could not download") as info:
        load_corpus("wikitext2", data_dir=tmp_path / "tfds")
    for name in WIKI_FILES:
        assert name in str(info.value)
    assert "manual_dir" in str(info.value)


# --- errors ---------------------------------------------------------------------


def test_missing_manual_dir(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as info:
        load_corpus("ptb", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "absent")
    assert str(tmp_path / "absent") in str(info.value)
    for name in PTB_FILES:
        assert name in str(info.value)


def test_empty_manual_dir_lists_files_and_places(tmp_path):
    (tmp_path / "manual").mkdir()
    with pytest.raises(DatasetError, match="Found no 'ptb' data") as info:
        load_corpus("ptb", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "manual")
    message = str(info.value)
    assert str(tmp_path / "manual" / "simple-examples" / "data") in message
    for name in PTB_FILES:
        assert name in message


def test_partial_manual_dir_lists_the_missing_file(tmp_path):
    manual = _write_wiki(tmp_path / "manual", files=WIKI_FILES[:2])
    with pytest.raises(DatasetError, match="missing wiki.test.tokens") as info:
        load_corpus("wikitext2", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert str(manual) in str(info.value)


def test_empty_split_file_is_named(tmp_path):
    manual = _write_wiki(tmp_path / "manual")
    (manual / "wiki.valid.tokens").write_bytes(b"")
    with pytest.raises(DatasetError, match="is empty") as info:
        load_corpus("wikitext2", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert str(manual / "wiki.valid.tokens") in str(info.value)
    # The failed build leaves nothing behind: fixing the file is enough.
    _write_wiki(manual)
    corpus = load_corpus("wikitext2", data_dir=tmp_path / "tfds", manual_dir=manual)
    _assert_corpus(corpus, *_expected_wiki_corpus())


def test_non_utf8_split_file_is_named_with_offset(tmp_path):
    manual = _write_wiki(tmp_path / "manual")
    (manual / "wiki.test.tokens").write_bytes(b" \n = Title = \n caf\xe9 \n")
    with pytest.raises(DatasetError, match="not UTF-8") as info:
        load_corpus("wikitext2", data_dir=tmp_path / "tfds", manual_dir=manual)
    message = str(info.value)
    assert str(manual / "wiki.test.tokens") in message
    assert "byte offset 18 (line 3)" in message


def test_not_prepared_and_no_download(tmp_path):
    with pytest.raises(DatasetError, match="download=False") as info:
        load_corpus("wikitext2", data_dir=tmp_path / "tfds", download=False)
    for name in WIKI_FILES:
        assert name in str(info.value)


def test_unknown_name_lists_the_datasets():
    with pytest.raises(ValueError, match="'ptb', 'wikitext2'.*name='ptb2'"):
        load_corpus("ptb2")


@pytest.mark.parametrize(
    "kwargs, argument",
    [({"name": 3}, "name"), ({"download": "yes"}, "download"), ({"manual_dir": 1}, "manual_dir")],
)
def test_argument_types(kwargs, argument):
    with pytest.raises(TypeError, match=f"`{argument}`"):
        load_corpus(**{"name": "ptb", **kwargs})


def test_missing_tensorflow_datasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    # monkeypatch puts the imported module back afterwards, so the builders
    # are not registered twice.
    monkeypatch.delitem(sys.modules, "keras_rnnreg.datasets.tfds_builders")
    with pytest.raises(ImportError, match=r"pip install keras-rnnreg\[data\]"):
        importlib.import_module("keras_rnnreg.datasets.tfds_builders")
