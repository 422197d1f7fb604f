"""The keras-rnnreg command line end to end on a tiny corpus, on the
current backend: train -> evaluate -> generate, exact resume after an
interruption, and one clear line (no traceback) for each bad input."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import suite_compilation_cache_suspended
from keras_rnnreg import cli
from keras_rnnreg.app import training

WORDS = "the cat sat on a mat and dog ran to big red house we saw".split()
# A tiny model with fixed-length BPTT (one compiled shape on JAX).
SMALL = ["--preset", "awd-lstm-cpu", "--hidden-size", "16", "--embedding-size", "8",
         "--num-layers", "2", "--batch-size", "4", "--bptt", "10", "--variable-bptt", "false",
         "--quiet"]


def write_corpus(directory, seed, train_lines, other_lines):
    rng = np.random.default_rng(seed)
    for name, lines in (("train.txt", train_lines), ("valid.txt", other_lines),
                        ("test.txt", other_lines)):
        text = "\n".join(" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(lines))
        (directory / name).write_text(text + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), 0, 120, 20)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a run without --output writes runs/ here


@pytest.fixture(autouse=True, scope="module")
def _no_papers_protocol_evaluation():
    """The runs here end without the test perplexity at the paper's batch
    size (a second model, compiled for it: seconds a run on JAX);
    test_cli_commands.py checks that evaluation."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "protocol_batch_size", lambda preset, split: preset.batch_size)
        yield


def run(argv, capsys):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def final_weights(directory):
    model = keras.saving.load_model(os.path.join(directory, training.MODEL_FILE))
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_train_evaluate_generate(corpus_dir, tmp_path, capsys):
    out_dir = tmp_path / "run"
    status, out, err = run(["train", "--data-dir", corpus_dir, *SMALL, "--epochs", "2",
                            "--output", out_dir], capsys)
    assert status == 0, err
    for name in ("config.json", "vocab.json", "history.csv", "model.keras", "summary.json",
                 "checkpoint.npz", training.PLOT_FILE):
        assert (out_dir / name).is_file(), name
    summary = json.loads((out_dir / "summary.json").read_text())
    assert 1 < summary["test_perplexity"] < 3 * len(WORDS)  # finite, near uniform after 2 short epochs
    assert "test ppl" in out
    rows = (out_dir / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + 2 epochs

    status, out, err = run(["evaluate", out_dir], capsys)
    assert status == 0, err
    reported = float(out.split("test perplexity ")[1].split()[0])
    assert reported == pytest.approx(summary["test_perplexity"], rel=1e-3)

    status, out, err = run(["evaluate", out_dir, "--cache", "--window", "30"], capsys)
    assert status == 0, err
    assert "with the neural cache (window=30, lambd=0.1, theta=1.0)" in out

    status, out, err = run(["generate", out_dir, "--length", "12", "--seed", "1",
                            "--prompt", "the cat"], capsys)
    assert status == 0, err
    words = out.split()
    assert words[:2] == ["the", "cat"] and len(words) == 14
    assert set(words) <= set(WORDS)  # never <unk>/<eos> unless asked


def test_tune_writes_a_preset_file_that_train_accepts(corpus_dir, tmp_path, capsys):
    pytest.importorskip("keras_tuner")
    search = tmp_path / "search"
    status, out, err = run(["tune", "--data-dir", corpus_dir, *SMALL[:-1], "--max-trials", "2",
                            "--epochs", "1", "--output", search], capsys)
    assert status == 0, err
    record = json.loads((search / "best_preset.json").read_text())
    assert record["preset"] == "awd-lstm-cpu" and record["overrides"]["hidden_size"]
    assert record["search"]["best_val_perplexity"] > 1
    status, out, err = run(["train", "--data-dir", corpus_dir, "--preset-file",
                            search / "best_preset.json", "--epochs", "1", "--quiet",
                            "--output", tmp_path / "run"], capsys)
    assert status == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    # train adds only its padding on JAX without a GPU (SMALL: BPTT 10, fixed)
    padding = {"length_bucket": 10} if _jax_without_a_gpu() else {}
    assert config["overrides"] == {**record["overrides"], **padding}


def test_wikitext2_through_tfds_from_a_manual_directory(corpus_dir, tmp_path, capsys):
    pytest.importorskip("tensorflow_datasets")
    manual = tmp_path / "wikitext-2"
    manual.mkdir()
    for ours, theirs in (("train", "train"), ("valid", "valid"), ("test", "test")):
        text = (corpus_dir / f"{ours}.txt").read_text().replace("mat", "<unk>")
        (manual / f"wiki.{theirs}.tokens").write_text(text, encoding="utf-8")
    out_dir = tmp_path / "run"
    status, out, err = run(["train", "--dataset", "wikitext2", "--manual-dir", manual,
                            "--tfds-dir", tmp_path / "tfds", *SMALL, "--epochs", "1",
                            "--tensorboard", "--output", out_dir], capsys)
    assert status == 0, err
    vocab = json.loads((out_dir / "vocab.json").read_text())
    assert "<unk>" in vocab and "<eos>" in vocab and "mat" not in vocab
    events = list((out_dir / "tensorboard").rglob("*tfevents*"))
    assert events
    header = (out_dir / "history.csv").read_text().splitlines()[0].split(",")
    logged = {"perplexity", "val_perplexity", "learning_rate", "averaging_start",
              "ar_loss", "tar_loss"}
    assert logged <= set(header)
    import tensorflow as tf

    records = [r.numpy() for path in events for r in tf.data.TFRecordDataset(str(path))]
    tags = {value.tag for record in records
            for value in tf.compat.v1.Event.FromString(record).summary.value}
    # (validation values go to their own directory, under the same tags)
    assert {f"epoch_{name.removeprefix('val_')}" for name in logged} <= tags, tags


# Variable-length BPTT (per-batch learning-rate scales) on a corpus of ~6
# batches an epoch, with both callbacks that keep state across epochs: the
# plateau schedule (patience 0) decays the rate after the second epoch, and
# NT-ASGD triggers at the end of epoch `TRIGGER_EPOCH` (0-based), so that
# interruptions fall before and after it.
MID_EPOCH = ["--preset", "awd-lstm-cpu", "--hidden-size", "16", "--embedding-size", "8",
             "--num-layers", "2", "--batch-size", "4", "--bptt", "10", "--variable-bptt", "true",
             "--schedule", "plateau", "--decay-factor", "4", "--nonmono", "1",
             "--seed", "3", "--quiet"]
EPOCHS = 4
TRIGGER_EPOCH = 2


@contextlib.contextmanager
def _trigger_at_epoch(epoch):
    """NT-ASGD's criterion answers yes at the check of epoch `epoch`: when
    `epoch` values are logged. A tiny model's validation values are too
    close to one another for the real test to fire at a known epoch on every
    backend (test_nt_asgd.py tests the criterion itself). The count comes
    from the validation log the checkpoint holds, so a resume that lost the
    log would trigger at another epoch."""
    from keras_rnnreg.callbacks import NTASGD

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NTASGD, "non_monotone", lambda self, value: len(self.history) == epoch)
        yield


@pytest.fixture
def scheduled_trigger():
    with _trigger_at_epoch(TRIGGER_EPOCH):
        yield


def history_rows(directory):
    import csv

    with open(directory / "history.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def short_corpus_dir(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("short_corpus"), 1, 40, 12)


@pytest.fixture(scope="module")
def uninterrupted_run(short_corpus_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("uninterrupted") / "run"
    with _trigger_at_epoch(TRIGGER_EPOCH):
        assert cli.main([str(a) for a in ["train", "--data-dir", short_corpus_dir, *MID_EPOCH,
                                          "--epochs", EPOCHS, "--output", directory]]) == 0
    # The interruptions below fall before and after NT-ASGD's trigger, and
    # the plateau schedule has acted before either.
    starts = [float(row["averaging_start"]) for row in history_rows(directory)]
    assert starts.index(max(starts)) == TRIGGER_EPOCH and max(starts) > 0, starts
    rates = [float(row["learning_rate"]) for row in history_rows(directory)]
    assert rates[TRIGGER_EPOCH] < rates[0], rates
    return directory


def _interrupt_at(monkeypatch, epoch, batch, action):
    """Runs `action()` from EpochLine's batch end at (epoch, batch)."""
    original_end = training.EpochLine.on_train_batch_end
    original_begin = training.EpochLine.on_epoch_begin

    def end(self, index, logs=None):
        if self._epoch == epoch and index == batch:
            action()
        return original_end(self, index, logs)

    def begin(self, index, logs=None):
        self._epoch = index
        return original_begin(self, index, logs)

    monkeypatch.setattr(training.EpochLine, "on_train_batch_end", end)
    monkeypatch.setattr(training.EpochLine, "on_epoch_begin", begin)


def _assert_same_run(whole, parts):
    for a, b in zip(final_weights(whole), final_weights(parts), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    history, expected = history_rows(parts), history_rows(whole)
    assert len(history) == len(expected) == EPOCHS
    assert list(history[0]) == list(expected[0])  # the same columns
    for row, expected_row in zip(history, expected):  # epochs, losses, rates, trigger
        np.testing.assert_allclose([float(x) for x in row.values()],
                                   [float(x) for x in expected_row.values()],
                                   rtol=1e-5, atol=1e-6, err_msg=str(row))
    whole_summary = json.loads((whole / "summary.json").read_text())
    parts_summary = json.loads((parts / "summary.json").read_text())
    for key in ("valid_perplexity", "test_perplexity"):
        assert parts_summary[key] == pytest.approx(whole_summary[key], rel=1e-5)


def test_an_interrupted_run_resumes_from_its_last_epoch_checkpoint(
        short_corpus_dir, uninterrupted_run, scheduled_trigger, tmp_path, capsys, monkeypatch):
    parts = tmp_path / "parts"

    def kill():  # no checkpoint within epochs: the last is the trigger epoch's
        raise KeyboardInterrupt

    _interrupt_at(monkeypatch, epoch=TRIGGER_EPOCH + 1, batch=2, action=kill)
    status, _, err = run(["train", "--data-dir", short_corpus_dir, *MID_EPOCH, "--epochs", EPOCHS,
                          "--output", parts], capsys)
    assert status == 130 and f"--resume {parts}" in err and "Traceback" not in err
    monkeypatch.undo()
    from keras_rnnreg.app.checkpoint import checkpoint_position

    assert checkpoint_position(parts) == (TRIGGER_EPOCH + 1, 0)
    status, out, err = run(["train", "--resume", parts], capsys)
    assert status == 0, err
    _assert_same_run(uninterrupted_run, parts)


def test_a_killed_run_resumes_from_its_last_batch_checkpoint(
        short_corpus_dir, uninterrupted_run, scheduled_trigger, tmp_path, capsys, monkeypatch):
    parts = tmp_path / "parts"

    def kill():  # what a killed process leaves: the checkpoint after batch 2
        raise KeyboardInterrupt

    # In the epoch after NT-ASGD's trigger: the checkpoint holds w_k and w̄.
    _interrupt_at(monkeypatch, epoch=TRIGGER_EPOCH + 1, batch=2, action=kill)
    status, _, err = run(["train", "--data-dir", short_corpus_dir, *MID_EPOCH, "--epochs", EPOCHS,
                          "--checkpoint-every", "2", "--output", parts], capsys)
    assert status == 130 and "Traceback" not in err, err
    monkeypatch.undo()
    from keras_rnnreg.app.checkpoint import read_checkpoint

    meta, _ = read_checkpoint(parts)
    assert (meta["epochs_done"], meta["batches_done"]) == (TRIGGER_EPOCH + 1, 2)
    status, out, err = run(["train", "--resume", parts], capsys)
    assert status == 0, err
    assert f"Resuming epoch {TRIGGER_EPOCH + 2} at batch 3" in out
    _assert_same_run(uninterrupted_run, parts)


def test_ctrl_c_saves_after_the_batch_and_resume_loses_nothing(
        short_corpus_dir, uninterrupted_run, scheduled_trigger, tmp_path, capsys, monkeypatch):
    parts = tmp_path / "parts"
    # As in a terminal, whatever this test runs under (a background job
    # starts with SIGINT ignored, and the command then leaves it so).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    # A real SIGINT, as a Ctrl-C sends it, in the middle of the epoch at
    # whose end NT-ASGD triggers (after the resume).
    _interrupt_at(monkeypatch, epoch=TRIGGER_EPOCH, batch=3,
                  action=lambda: os.kill(os.getpid(), signal.SIGINT))
    status, _, err = run(["train", "--data-dir", short_corpus_dir, *MID_EPOCH, "--epochs", EPOCHS,
                          "--checkpoint-every", "0", "--output", parts], capsys)
    assert status == 130 and "Traceback" not in err
    assert f"stopped in epoch {TRIGGER_EPOCH + 1} after batch 4, checkpoint saved" in err
    assert f"--resume {parts}" in err
    monkeypatch.undo()
    try:
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        signal.signal(signal.SIGINT, previous)
    status, out, err = run(["train", "--resume", parts, "--checkpoint-every", "0"], capsys)
    assert status == 0, err
    assert f"Resuming epoch {TRIGGER_EPOCH + 1} at batch 5" in out
    _assert_same_run(uninterrupted_run, parts)


def _files(directory):
    return {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}


def test_resuming_a_finished_run_changes_nothing(uninterrupted_run, tmp_path, capsys):
    finished = tmp_path / "finished"
    shutil.copytree(uninterrupted_run, finished)
    before = _files(finished)
    for argv in (["--resume", finished], ["--resume", finished, "--epochs", EPOCHS]):
        status, out, err = run(["train", *argv, "--quiet"], capsys)
        assert status == 0, err
        assert f"has finished its {EPOCHS} epochs; nothing to do" in out
    for epochs in (EPOCHS - 1, 0):
        status, _, err = run(["train", "--resume", finished, "--epochs", epochs], capsys)
        assert status == 2 and "Traceback" not in err, err
        assert "--epochs" in err and str(epochs) in err
        assert len(err.strip().splitlines()) == 1
    assert _files(finished) == before  # the averaged model, the summary, the config


def test_a_run_stopped_before_saving_its_model_saves_the_averaged_one(
        uninterrupted_run, tmp_path, capsys):
    # Killed after the last epoch's checkpoint, before model.keras was written:
    # the checkpoint holds w_k and w̄, and the model to save is w̄.
    stopped = tmp_path / "stopped"
    shutil.copytree(uninterrupted_run, stopped)
    (stopped / training.MODEL_FILE).unlink()
    (stopped / training.SUMMARY_FILE).unlink()
    status, out, err = run(["train", "--resume", stopped, "--quiet"], capsys)
    assert status == 0, err
    for a, b in zip(final_weights(uninterrupted_run), final_weights(stopped), strict=True):
        np.testing.assert_array_equal(a, b)
    expected = json.loads((uninterrupted_run / "summary.json").read_text())
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["test_perplexity"] == pytest.approx(expected["test_perplexity"], rel=1e-6)


def test_a_finished_run_trains_on_with_its_average(
        short_corpus_dir, uninterrupted_run, scheduled_trigger, tmp_path, capsys):
    # Finished after the trigger epoch, its model.keras holds w̄; asked for
    # one more epoch, it goes on from w_k and w̄ as if never stopped.
    shorter = tmp_path / "shorter"
    status, _, err = run(["train", "--data-dir", short_corpus_dir, *MID_EPOCH,
                          "--epochs", EPOCHS - 1, "--output", shorter], capsys)
    assert status == 0, err
    status, out, err = run(["train", "--resume", shorter, "--epochs", EPOCHS], capsys)
    assert status == 0, err
    _assert_same_run(uninterrupted_run, shorter)
    config = json.loads((shorter / "config.json").read_text())
    assert config["epochs"] == EPOCHS


@pytest.mark.parametrize("value", ["-1", "ten", "5x", "0m"])
def test_checkpoint_every_rejects_bad_values(value, capsys):
    status, _, err = run(["train", "--checkpoint-every", value], capsys)
    assert status == 2 and "--checkpoint-every must be" in err and repr(value) in err


def test_checkpoint_every_reads_batches_and_durations():
    assert training.parse_checkpoint_every("0") == (None, None)
    assert training.parse_checkpoint_every(25) == (25, None)
    assert training.parse_checkpoint_every("90s") == (None, 90.0)
    assert training.parse_checkpoint_every("10m") == (None, 600.0)
    assert training.parse_checkpoint_every("1.5h") == (None, 5400.0)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--preset", "nope"], "Valid presets: zaremba-small"),
        (["train", "--data-dir", "/nonexistent/dir"], "is not a directory"),
        (["train", "--resume", "/nonexistent/run"], "Nothing to resume"),
        (["train", "--preset-file", "/nonexistent.json"], "is not a preset file"),
        (["train", "--preset", "awd-lstm-cpu", "--hidden-sise", "3"], None),  # argparse
        (["train", "--preset", "awd-lstm-cpu", "--weight-dropout", "1.5"], "weight_dropout"),
        (["evaluate", "/nonexistent/run"], "There is no run in '/nonexistent/run': no such directory"),
        (["generate", "/"], "There is no run in '/' (no config.json)"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(argv, fragment, capsys):
    try:
        status, out, err = run(argv, capsys)
    except SystemExit as exit:  # argparse's own usage error
        assert fragment is None and exit.code == 2
        assert "unrecognized arguments: --hidden-sise" in capsys.readouterr().err
        return
    assert status != 0
    assert fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_data_directory_errors(tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "train.txt").write_text("a b\n")
    status, _, err = run(["train", "--data-dir", partial], capsys)
    assert status == 1 and "must hold the three splits" in err and "train.txt" in err
    for name, content, fragment in (("empty", b"", "is empty"),
                                    ("latin1", "caf\xe9\n".encode("latin-1"), "is not UTF-8")):
        directory = tmp_path / name
        directory.mkdir()
        for split in ("train.txt", "valid.txt", "test.txt"):
            (directory / split).write_bytes(b"a b c\n")
        (directory / "valid.txt").write_bytes(content)
        status, _, err = run(["train", "--data-dir", directory], capsys)
        assert status == 1 and fragment in err and "valid.txt" in err


def test_resume_refuses_other_settings_and_finished_outputs(corpus_dir, tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert run(["train", "--data-dir", corpus_dir, *SMALL, "--epochs", "1",
                "--output", out_dir], capsys)[0] == 0
    status, _, err = run(["train", "--resume", out_dir, "--hidden-size", "32"], capsys)
    assert status == 2 and "--hidden-size" in err
    status, _, err = run(["train", "--data-dir", corpus_dir, *SMALL, "--output", out_dir], capsys)
    assert status == 2 and "already holds a run" in err


def test_the_module_entry_point_prints_no_traceback():
    env = dict(os.environ)
    result = subprocess.run([sys.executable, "-m", "keras_rnnreg", "train", "--preset", "nope"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("keras-rnnreg train: error: Unknown preset")


def test_the_default_run_is_a_valid_adam_preset():
    preset = training.resolve_preset({"preset": training.SYNTHETIC_DEFAULT["preset"],
                                      "overrides": training.SYNTHETIC_DEFAULT["overrides"]})
    optimizer = preset.make_optimizer()
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert optimizer.global_clipnorm == 0.25 and preset.nonmono is None
    assert preset.callbacks(preset.sequences(np.arange(2000) % 50)[0])  # BPTT, plateau


def _jax_without_a_gpu():
    if keras.backend.backend() != "jax":
        return False
    import jax

    return all(device.platform == "cpu" for device in jax.devices())


@pytest.mark.parametrize("variable, bucket", [("true", 8), ("false", 10), ("false", None)])
def test_train_pads_batches_to_few_shapes_on_jax_without_a_gpu(corpus_dir, variable, bucket):
    # Variable lengths: multiples of 8. Fixed length: the short last batch
    # padded to `bptt`, so every batch has one shape. `--length-bucket 0`: off.
    argv = ["train", "--data-dir", corpus_dir, *SMALL, "--variable-bptt", variable]
    if bucket is None:
        argv += ["--length-bucket", "0"]
    config = cli._train_config(cli.build_parser().parse_args([str(a) for a in argv]))
    expected = bucket if _jax_without_a_gpu() else None
    assert config["overrides"].get("length_bucket") == expected
    preset = training.resolve_preset(config)
    # 4 rows of 250 tokens: 249 steps, 24 batches of 10 and a last one of 9
    (train,) = preset.sequences(np.arange(1003) % 50)
    shapes = {x.shape[1] for x, _ in train}
    if variable == "false":
        assert shapes == ({10} if expected else {10, 9})
    else:
        assert all(length % (expected or 1) == 0 for length in shapes)


def test_a_run_started_with_sigint_ignored_leaves_it_ignored(corpus_dir, tmp_path, capsys,
                                                             monkeypatch):
    """`nohup keras-rnnreg train &` must not start catching Ctrl-C."""
    seen = []

    def fit(self, *args, **kwargs):
        seen.append(signal.getsignal(signal.SIGINT))
        raise KeyboardInterrupt  # enough: the handler in force during fit is known

    monkeypatch.setattr(keras.Model, "fit", fit)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        status, _, err = run(["train", "--data-dir", corpus_dir, *SMALL, "--epochs", "1",
                              "--output", tmp_path / "run"], capsys)
        assert seen == [signal.SIG_IGN]
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert status == 130 and "Traceback" not in err


@pytest.fixture
def compilation_events(monkeypatch):
    """JAX's persistent-cache events during the test (with every compilation
    worth caching: the tiny model compiles in well under JAX's 1 s default)."""
    if keras.backend.backend() != "jax":
        yield None
        return
    import jax
    import jax.monitoring

    events = []

    def listener(event, **kwargs):
        if event.startswith("/jax/compilation_cache/cache_"):
            events.append(event.rsplit("/", 1)[1])

    previous = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.monitoring.register_event_listener(listener)
    try:
        with suite_compilation_cache_suspended():  # the command line's own cache, as a user's
            yield events
    finally:
        jax.monitoring.unregister_event_listener(listener)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", previous)


def test_a_resumed_run_and_evaluate_load_the_compiled_steps(corpus_dir, tmp_path, capsys,
                                                            compilation_events):
    out_dir = tmp_path / "run"
    argv = ["train", "--data-dir", corpus_dir, *SMALL, "--epochs", "1", "--output", out_dir]
    assert run(argv, capsys)[0] == 0
    cache = out_dir / "jax-cache"
    if compilation_events is None:  # TensorFlow and torch compile nothing to keep
        assert not cache.exists()
        return
    import jax

    assert "cache_misses" in compilation_events and any(cache.iterdir())
    assert jax.config.jax_compilation_cache_dir is None  # only during the command
    moved = tmp_path / "moved"  # a copied or moved run finds its entries too
    shutil.copytree(out_dir, moved)
    for argv in (["train", "--resume", moved, "--epochs", "2", "--quiet"], ["evaluate", moved]):
        compilation_events.clear()
        status, _, err = run(argv, capsys)
        assert status == 0, err
        # Every step compiled anew is loaded from the first run's cache.
        assert "cache_hits" in compilation_events, argv[0]
        assert "cache_misses" not in compilation_events, argv[0]


def test_a_compilation_cache_the_user_set_is_kept(corpus_dir, tmp_path, capsys,
                                                   compilation_events):
    if compilation_events is None:
        pytest.skip("JAX's compilation cache: the test above checks the others make none")
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    mine = tmp_path / "my-cache"
    compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", str(mine))
    try:
        argv = ["train", "--data-dir", corpus_dir, *SMALL, "--epochs", "1",
                "--output", tmp_path / "run"]
        assert run(argv, capsys)[0] == 0
        assert jax.config.jax_compilation_cache_dir == str(mine)
    finally:
        jax.config.update("jax_compilation_cache_dir", None)
        compilation_cache.reset_cache()
    assert any(mine.iterdir()) and not (tmp_path / "run" / "jax-cache").exists()
