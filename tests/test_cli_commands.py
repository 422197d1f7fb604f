"""The keras-rnnreg command line, what tests/test_cli.py leaves out:
`evaluate` checked against numbers computed here (a NumPy perplexity from
the saved model's logits, the library's neural cache with the flags'
settings), `presets`, no command, `--debug`, both spellings of `--backend`,
`--synthetic-seed`, custom split file names, and `tune` with the Bayesian
and Hyperband tuners and a named preset."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_rnnreg import cache, cli
from keras_rnnreg.app import training
from keras_rnnreg.datasets import make_synthetic_corpus
from keras_rnnreg.models import PRESETS
from test_cli import SMALL, WORDS, run, write_corpus

# SMALL's batch size and BPTT length: what evaluate reads the splits with.
BATCH, BPTT = 4, 10


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing lands in the checkout


def _printed(pattern, text):
    match = re.search(pattern, text)
    assert match, (pattern, text)
    return [float(group) for group in match.groups()]


def _assert_printed(printed, expected):
    """`printed` is `expected` written with two decimals."""
    assert abs(printed - expected) <= 0.005 + 1e-5 * expected, (printed, expected)


# ------------------------------------------------------------ evaluate
def _split_ids(path, vocab):
    """The split as load_ptb reads it: each line's words, then <eos>."""
    ids = {word: index for index, word in enumerate(vocab)}
    return np.array([ids[word] for line in path.read_text(encoding="utf-8").splitlines()
                     for word in line.split() + ["<eos>"]], dtype="int32")


def _numpy_perplexity(model, tokens):
    """exp of the mean cross-entropy over every predicted token: the stream
    cut into BATCH contiguous rows (the tail dropped), read left to right in
    windows of BPTT steps (the last one shorter) with the recurrent state
    carried from window to window; log-softmax and NLL in float64 NumPy."""
    length = len(tokens) // BATCH
    rows = np.asarray(tokens[: length * BATCH]).reshape(BATCH, length)
    total, count = 0.0, 0
    for start in range(0, length - 1, BPTT):
        stop = min(start + BPTT, length - 1)
        logits = np.array(keras.ops.convert_to_numpy(
            model.predict_on_batch(rows[:, start:stop])), dtype="float64")
        logits -= logits.max(axis=-1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        targets = rows[:, start + 1 : stop + 1]
        total -= np.take_along_axis(log_p, targets[..., None], axis=-1).sum()
        count += targets.size
    assert count == BATCH * (length - 1)
    return float(np.exp(total / count))


def _load(directory):
    """A freshly loaded model.keras: its recurrent states are zero."""
    return keras.saving.load_model(os.path.join(directory, training.MODEL_FILE))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run, 1 epoch, and the perplexities computed here for it."""
    corpus = write_corpus(tmp_path_factory.mktemp("corpus"), 2, 80, 30)
    directory = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main([str(a) for a in ["train", "--data-dir", corpus, *SMALL, "--epochs", "1",
                                      "--checkpoint-every", "0", "--output", directory]]) == 0
    vocab = json.loads((directory / training.VOCAB_FILE).read_text())
    tokens = {split: _split_ids(corpus / f"{split}.txt", vocab) for split in ("valid", "test")}
    # A model loaded afresh for each split: each pass starts from zero states.
    reference = {split: _numpy_perplexity(_load(directory), tokens[split])
                 for split in ("valid", "test")}
    keras.backend.clear_session(free_memory=False)
    return directory, tokens, reference


def test_evaluate_prints_the_perplexity_computed_from_the_logits(trained, capsys):
    directory, _, reference = trained
    status, out, err = run(["evaluate", directory], capsys)
    assert status == 0, err
    (printed,) = _printed(r"^test perplexity ([\d.]+)", out)
    _assert_printed(printed, reference["test"])
    summary = json.loads((directory / training.SUMMARY_FILE).read_text())
    assert summary["test_perplexity"] == pytest.approx(reference["test"], rel=1e-4)


def test_evaluate_split_valid_reads_the_validation_split(trained, capsys):
    directory, _, reference = trained
    assert abs(reference["valid"] - reference["test"]) > 0.05  # the splits are told apart
    status, out, err = run(["evaluate", directory, "--split", "valid"], capsys)
    assert status == 0, err
    (printed,) = _printed(r"^valid perplexity ([\d.]+)", out)
    _assert_printed(printed, reference["valid"])
    summary = json.loads((directory / training.SUMMARY_FILE).read_text())
    assert summary["valid_perplexity"] == pytest.approx(reference["valid"], rel=1e-4)


CACHE_LINE = (r"test perplexity with the neural cache \(window=(\d+), lambd=([\d.]+), "
              r"theta=([\d.]+)\): ([\d.]+) \(without: ([\d.]+)\)")


def test_evaluate_cache_uses_the_flags_window_lambda_and_theta(trained, capsys):
    directory, tokens, reference = trained
    model = _load(directory)

    def library(**settings):
        return cache.evaluate_with_cache(model, tokens["test"], batch_size=BATCH, bptt=BPTT,
                                         **settings)

    plain = library(window=2000, lambd=0.0, theta=1.0)
    assert plain.cache_perplexity == plain.perplexity
    assert plain.perplexity == pytest.approx(reference["test"], rel=1e-4)
    # θ scales h_t·h_i, which is ~1e-3 in this barely trained model (|h| ~ 0.03):
    # a θ in the thousands is what gives it a visible effect here.
    chosen = {"window": 12, "lambd": 0.3, "theta": 10000.0}
    expected = library(**chosen).cache_perplexity
    # Each flag matters: another λ, or the default window or θ (PTB's 2000,
    # 1.0), gives another number than the printed one.
    other_lambd = library(**{**chosen, "lambd": 0.6}).cache_perplexity
    assert abs(other_lambd - expected) > 0.02
    for key, default in (("window", 2000), ("theta", 1.0)):
        assert abs(library(**{**chosen, key: default}).cache_perplexity - expected) > 0.02, key

    for lambd, value in ((0.3, expected), (0.6, other_lambd)):
        status, out, err = run(["evaluate", directory, "--cache", "--window", "12",
                                "--lambd", lambd, "--theta", "10000"], capsys)
        assert status == 0, err
        window, shown_lambd, theta, with_cache, without = _printed(CACHE_LINE, out)
        assert (window, shown_lambd, theta) == (12, lambd, 10000)
        _assert_printed(with_cache, value)
        _assert_printed(without, plain.perplexity)
        (printed,) = _printed(r"^test perplexity ([\d.]+)", out)
        _assert_printed(printed, reference["test"])


def _whole_rows_perplexity(directory, tokens, batch):
    """exp of the mean cross-entropy with `tokens` cut into `batch` rows (the
    tail dropped), each row read whole in one call of a non-stateful copy of
    the trained model: what reading it in BPTT windows with the state carried
    computes, at any batch size, with no state and no window."""
    config = json.loads((directory / training.CONFIG_FILE).read_text())
    vocab = json.loads((directory / training.VOCAB_FILE).read_text())
    whole = training.resolve_preset(config).build(len(vocab), stateful=False)
    whole.set_weights(_load(directory).get_weights())
    length = len(tokens) // batch
    rows = np.asarray(tokens[: length * batch]).reshape(batch, length)
    logits = np.array(keras.ops.convert_to_numpy(whole.predict_on_batch(rows[:, :-1])),
                      dtype="float64")
    logits -= logits.max(axis=-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(log_p, rows[:, 1:, None], axis=-1)
    return float(np.exp(nll.mean()))


def test_evaluate_at_another_batch_size_and_the_papers_protocol(trained, capsys):
    directory, tokens, reference = trained
    whole = {batch: _whole_rows_perplexity(directory, tokens["test"], batch) for batch in (1, 4)}
    # The reference read whole equals the windowed one at the training batch...
    assert whole[BATCH] == pytest.approx(reference["test"], rel=1e-4)
    assert abs(whole[1] - whole[BATCH]) > 0.01  # ...and the batch size changes the number.
    status, out, err = run(["evaluate", directory, "--batch-size", "1"], capsys)
    assert status == 0, err
    (printed,) = _printed(r"^test perplexity ([\d.]+) \(batch 1\)", out)
    _assert_printed(printed, whole[1])
    # `paper`: awd-lstm-cpu's protocol, AWD-LSTM's validation at batch 10.
    valid_10 = _whole_rows_perplexity(directory, tokens["valid"], 10)
    status, out, err = run(["evaluate", directory, "--split", "valid", "--batch-size", "paper"],
                           capsys)
    assert status == 0, err
    (printed,) = _printed(r"^valid perplexity ([\d.]+) \(batch 10\)", out)
    _assert_printed(printed, valid_10)
    # train's summary: the test perplexity at the paper's test batch, 1.
    summary = json.loads((directory / training.SUMMARY_FILE).read_text())
    assert summary["batch_size"] == BATCH and summary["protocol_test_batch_size"] == 1
    assert summary["protocol_test_perplexity"] == pytest.approx(whole[1], rel=1e-4)


@pytest.mark.parametrize("value", ["0", "-2", "ten"])
def test_evaluate_batch_size_is_a_positive_int_or_paper(value, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["evaluate", "run", "--batch-size", value])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "a batch size >= 1 or 'paper'" in err


# ------------------------------------------------------------ presets, usage, --debug
def test_presets_lists_every_preset_with_its_reported_perplexities(capsys):
    status, out, err = run(["presets"], capsys)
    assert status == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1 + len(PRESETS)
    for (name, preset), line in zip(PRESETS.items(), lines[1:], strict=True):
        assert line.split()[0] == name
        if preset.reported_test_perplexity:
            assert (f" {preset.reported_valid_perplexity}/{preset.reported_test_perplexity} "
                    in line)
        else:
            assert preset.twin_of and f"(twin of {preset.twin_of})" in line
        assert preset.description in line


def test_no_command_prints_the_help_and_exits_2(capsys):
    status, out, err = run([], capsys)
    assert status == 2
    assert out.startswith("usage: keras-rnnreg")
    for command in cli.COMMANDS:
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), command


@pytest.mark.parametrize(
    "argv, error, fragment",
    [
        (["train", "--preset", "nope"], ValueError, "Unknown preset 'nope'"),
        (["train", "--preset", "awd-lstm-cpu", "--preset-file", "p.json"], cli.CLIError,
         "--preset or --preset-file"),
        (["train", "--resume", "/nonexistent/run"], ValueError, "Nothing to resume"),
    ],
)
def test_debug_raises_instead_of_the_one_line(argv, error, fragment, capsys):
    status, _, err = run(argv, capsys)
    assert status in (1, 2) and fragment in err and len(err.strip().splitlines()) == 1
    with pytest.raises(error, match=re.escape(fragment)):
        cli.main(["--debug", *argv])


# ------------------------------------------------------------ --backend
@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("tiny_corpus"), 3, 12, 6)


@pytest.mark.parametrize("spelling", ["separate", "equals"])
def test_backend_flag_selects_the_backend_in_both_spellings(spelling, tiny_corpus, tmp_path):
    current = keras.backend.backend()
    target = "torch" if current != "torch" else "jax"  # another one than KERAS_BACKEND
    flag = ["--backend", target] if spelling == "separate" else [f"--backend={target}"]
    out_dir = tmp_path / "run"
    argv = ["train", *flag, "--data-dir", tiny_corpus, "--preset", "awd-lstm-cpu",
            "--hidden-size", "8", "--embedding-size", "8", "--num-layers", "1",
            "--batch-size", "2", "--bptt", "5", "--variable-bptt", "false", "--epochs", "1",
            "--checkpoint-every", "0", "--output", out_dir]
    env = {**os.environ, "KERAS_BACKEND": current}
    result = subprocess.run([sys.executable, "-m", "keras_rnnreg", *map(str, argv)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{target} backend -> {out_dir}" in result.stdout
    assert json.loads((out_dir / training.CONFIG_FILE).read_text())["backend"] == target
    assert json.loads((out_dir / training.SUMMARY_FILE).read_text())["backend"] == target


# ------------------------------------------------------------ the data flags
@pytest.fixture
def fit_stopped(monkeypatch):
    """`keras.Model.fit` records its training and validation batches'
    rows, then stops the command (as Ctrl-C would: exit 130)."""
    seen = []

    def fit(self, x=None, *args, validation_data=None, **kwargs):
        seen.append((np.array(x.rows), np.array(validation_data.rows)))
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "fit", fit)
    return seen


def _batchify(tokens):
    length = len(tokens) // BATCH
    return np.asarray(tokens[: length * BATCH]).reshape(BATCH, length)


def test_synthetic_seed_chooses_the_corpus(fit_stopped, tmp_path, capsys):
    configs = []
    for index, seed in enumerate((1, 2, 1)):
        out_dir = tmp_path / f"run{index}"
        status, _, err = run(["train", "--synthetic-seed", seed, *SMALL, "--epochs", "1",
                              "--output", out_dir], capsys)
        assert status == 130, err
        configs.append(json.loads((out_dir / training.CONFIG_FILE).read_text())["dataset"])
    assert configs == [{"name": "synthetic", "seed": seed} for seed in (1, 2, 1)]
    (train_1, valid_1), (train_2, _), (train_1_again, valid_1_again) = fit_stopped
    assert train_1.shape == train_2.shape and not np.array_equal(train_1, train_2)
    np.testing.assert_array_equal(train_1, train_1_again)
    np.testing.assert_array_equal(valid_1, valid_1_again)
    corpus = make_synthetic_corpus(seed=1)
    np.testing.assert_array_equal(train_1, _batchify(corpus.train))
    np.testing.assert_array_equal(valid_1, _batchify(corpus.valid))


@pytest.fixture
def named_splits(tmp_path):
    """A directory with split files of its own names, and decoys under the
    default names (other words) that must not be read."""
    directory = tmp_path / "named"
    directory.mkdir()
    rng = np.random.default_rng(4)
    texts = {}
    for split, extra in (("train", None), ("valid", "onlyvalid"), ("test", "onlytest")):
        lines = [" ".join(rng.choice(WORDS, size=6)) for _ in range(10)]
        if extra:
            lines[3] += " " + extra
        texts[split] = "\n".join(lines) + "\n"
        (directory / f"my.{split}").write_text(texts[split], encoding="utf-8")
        (directory / f"{split}.txt").write_text(f"decoy {split} words\n" * 10, encoding="utf-8")
    return directory


def test_split_file_flags_read_the_named_files(named_splits, fit_stopped, tmp_path, capsys):
    out_dir = tmp_path / "run"
    status, _, err = run(["train", "--data-dir", named_splits, "--train-file", "my.train",
                          "--valid-file", "my.valid", "--test-file", "my.test", *SMALL,
                          "--epochs", "1", "--output", out_dir], capsys)
    assert status == 130, err
    dataset = json.loads((out_dir / training.CONFIG_FILE).read_text())["dataset"]
    assert dataset["files"] == ["my.train", "my.valid", "my.test"]  # evaluate reads them too
    vocab = json.loads((out_dir / training.VOCAB_FILE).read_text())
    assert set(vocab) == {*WORDS, "<eos>", "onlyvalid", "onlytest"}  # no decoy word
    ((train, valid),) = fit_stopped
    np.testing.assert_array_equal(train, _batchify(_split_ids(named_splits / "my.train", vocab)))
    np.testing.assert_array_equal(valid, _batchify(_split_ids(named_splits / "my.valid", vocab)))


@pytest.mark.parametrize("given", [("train",), ("train", "valid"), ("test",), ("valid", "test")])
def test_split_file_flags_go_together(given, named_splits, fit_stopped, tmp_path, capsys):
    flags = [a for split in given for a in (f"--{split}-file", f"my.{split}")]
    status, _, err = run(["train", "--data-dir", named_splits, *flags, *SMALL, "--epochs", "1",
                          "--output", tmp_path / "run"], capsys)
    assert status == 2 and not fit_stopped
    assert "--train-file, --valid-file and --test-file go together" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


# ------------------------------------------------------------ tune
@pytest.fixture
def tuner_classes(monkeypatch):
    """The keras-tuner classes the command instantiates, by name."""
    keras_tuner = pytest.importorskip("keras_tuner")
    made = []

    def spy(name):
        class Spy(getattr(keras_tuner, name)):
            def __init__(self, *args, **kwargs):
                made.append(name)
                super().__init__(*args, **kwargs)

        return Spy

    for name in ("RandomSearch", "BayesianOptimization", "Hyperband"):
        monkeypatch.setattr(keras_tuner, name, spy(name))
    return made


TINY_TUNE = SMALL[2:-1]  # SMALL's model and recipe flags, without preset and --quiet


@pytest.mark.parametrize("tuner, kind", [("bayesian", "BayesianOptimization"),
                                         ("hyperband", "Hyperband")])
def test_tune_with_the_bayesian_and_hyperband_tuners(tuner, kind, tiny_corpus, tuner_classes,
                                                     tmp_path, capsys):
    search = tmp_path / "search"
    (search / "search" / "trial_old").mkdir(parents=True)  # a previous search's
    (search / "best_preset.json").write_text('{"old": true}')
    trials = [] if tuner == "hyperband" else ["--max-trials", "2"]  # hyperband sizes its own
    status, out, err = run(["tune", "--data-dir", tiny_corpus, "--tuner", tuner, *TINY_TUNE,
                            *trials, "--epochs", "1", "--output", search], capsys)
    assert status == 0, err
    assert tuner_classes == [kind]
    # The new search replaced the old one, and no staging directory is left.
    assert sorted(p.name for p in search.iterdir()) == ["best_preset.json", "search"]
    assert not (search / "search" / "trial_old").exists()
    record = json.loads((search / "best_preset.json").read_text())
    assert record["search"]["tuner"] == tuner and record["preset"] == "awd-lstm-cpu"
    assert record["search"]["max_trials"] == (None if tuner == "hyperband" else 2)
    assert record["search"]["best_val_perplexity"] > 1
    trials = [json.loads(path.read_text())
              for path in (search / "search").glob("trial_*/trial.json")]
    assert 1 <= len(trials) <= 2
    if tuner == "hyperband":  # Hyperband's own bookkeeping in every trial
        assert all("tuner/epochs" in t["hyperparameters"]["values"] for t in trials)
    # keras-tuner's display: each trial's result and the best so far; then the
    # best trial's validation perplexity beside the preset file.
    scores = [float(s) for s in re.findall(r"^val_perplexity: ([\d.]+)$", out, re.MULTILINE)]
    assert len(scores) == len(trials) and out.count("Best val_perplexity So Far") == len(trials)
    best = record["search"]["best_val_perplexity"]
    assert min(scores) == pytest.approx(best)
    assert (f"best trial: validation perplexity {best:.2f}; its configuration is "
            f"{search / 'best_preset.json'}") in out
    assert f"--preset-file {search / 'best_preset.json'}" in out


def test_tune_preset_searches_around_the_named_preset(tiny_corpus, tuner_classes, tmp_path,
                                                      capsys):
    search = tmp_path / "search"
    status, _, err = run(["tune", "--data-dir", tiny_corpus, "--preset", "zaremba-small",
                          "--hidden-size", "16", "--embedding-size", "8", "--batch-size", "4",
                          "--bptt", "10", "--max-trials", "1", "--epochs", "1",
                          "--output", search], capsys)
    assert status == 0, err
    assert tuner_classes == ["RandomSearch"]
    record = json.loads((search / "best_preset.json").read_text())
    assert record["preset"] == "zaremba-small"
    # zaremba-small's own fields where no flag overrode them (not awd-lstm-cpu's)
    preset = training.resolve_preset(record)
    assert preset.name == "zaremba-small" and preset.model_arguments.get("tie_weights") is False
    assert preset.bptt == 10 and preset.batch_size == 4


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--train-file", "a.txt"], "--train-file: name files in --data-dir"),
    (["train", "--dataset", "ptb", "--synthetic-seed", "3"], "--synthetic-seed is for the synthetic"),
    (["train", "--manual-dir", "x"], "--manual-dir: for --dataset ptb or wikitext2"),
    (["train", "--data-dir", "x", "--tfds-dir", "y"], "--tfds-dir: for --dataset ptb or wikitext2"),
    (["tune", "--tuner", "hyperband", "--max-trials", "3"], "--max-trials sizes a random or bayesian"),
    (["evaluate", "runs/x", "--lambd", "0.2"], "--lambd: settings of the neural cache; add --cache"),
])
def test_flags_the_command_would_not_use_are_errors(argv, fragment, capsys, tmp_path,
                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    if argv[0] == "tune":
        pytest.importorskip("keras_tuner")
    status, out, err = run(argv, capsys)
    assert status in (1, 2) and fragment in err, err
    assert len(err.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


def test_abbreviated_flags_are_not_read_as_another_flag(capsys):
    # `--dropout` once read as `--dropout-type`; `--backe jax` parsed but unseen
    for argv in (["train", "--dropout", "0.5"], ["train", "--backe", "jax"]):
        with pytest.raises(SystemExit) as exit:
            cli.main(argv)
        assert exit.value.code == 2
        assert f"unrecognized arguments: {argv[1]}" in capsys.readouterr().err


def _config(argv):
    return cli._train_config(cli.build_parser().parse_args([str(a) for a in argv]))


def test_none_flags_set_none_and_absent_flags_keep_the_preset():
    noisy = training.resolve_preset(_config(["train", "--preset", "noisin-medium"]))
    assert noisy.model_arguments["noise"] is not None and noisy.nonmono == 5
    config = _config(["train", "--preset", "noisin-medium", "--noise", "none",
                      "--nonmono", "off"])
    overrides = {k: v for k, v in config["overrides"].items() if k != "length_bucket"}
    assert overrides == {"noise": None, "nonmono": None}  # (JAX on a CPU adds its padding)
    preset = training.resolve_preset(config)
    assert preset.model_arguments["noise"] is None and preset.nonmono is None
    assert preset.learning_rate == noisy.learning_rate  # not given: the preset's


def test_numeric_flags_take_their_fields_type():
    config = _config(["train", "--preset", "awd-lstm-cpu", "--learning-rate", "30",
                      "--weight-dropout", "0", "--hidden-size", "32"])
    overrides = config["overrides"]
    assert overrides["learning_rate"] == 30.0 and type(overrides["learning_rate"]) is float
    assert type(overrides["weight_dropout"]) is float and type(overrides["hidden_size"]) is int
    optimizer = training.resolve_preset(config).make_optimizer()  # Keras refuses an int rate
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == 30.0


def test_a_bad_value_writes_nothing_and_a_run_without_checkpoint_is_no_run(
        tiny_corpus, tmp_path, capsys):
    out_dir = tmp_path / "run"
    status, _, err = run(["train", "--data-dir", tiny_corpus, *SMALL, "--hidden-dropout", "1.5",
                          "--output", out_dir], capsys)
    assert status == 1 and "hidden_dropout" in err and "1.5" in err
    assert not out_dir.exists()  # validated before anything is written
    out_dir.mkdir()  # what a run that failed before its first checkpoint leaves
    (out_dir / training.CONFIG_FILE).write_text("{}")
    status, _, err = run(["train", "--data-dir", tiny_corpus, *SMALL, "--epochs", "1",
                          "--output", out_dir], capsys)
    assert status == 0, err
    status, _, err = run(["train", "--data-dir", tiny_corpus, *SMALL, "--output", out_dir], capsys)
    assert status == 2 and "already holds a run" in err


def test_version(capsys):
    from keras_rnnreg import __version__

    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"keras-rnnreg {__version__}"


@pytest.mark.parametrize("module, extra", [("tensorflow_datasets", "data"),
                                           ("matplotlib.pyplot", "plot")])
def test_a_missing_extra_is_named(module, extra, capsys, monkeypatch):
    def missing(args):
        raise ModuleNotFoundError(f"No module named '{module}'", name=module)

    monkeypatch.setitem(cli.COMMANDS, "presets", missing)
    status, _, err = run(["presets"], capsys)
    assert status == 1 and f'pip install "keras-rnnreg[{extra}]"' in err
    assert len(err.strip().splitlines()) == 1


def test_an_unknown_flag_is_one_line_naming_the_closest_real_ones(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["train", "--dropout", "0.5"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "unrecognized arguments: --dropout 0.5" in err
    for flag in ("--input-dropout", "--hidden-dropout", "--output-dropout", "--weight-dropout"):
        assert flag in err
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "run", "--cach"])
    assert "--cach: did you mean --cache" in capsys.readouterr().err
