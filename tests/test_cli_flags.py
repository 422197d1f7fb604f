"""The command line's flags as a new user meets them (issue 27): `none`
for every flag that takes it, no abbreviations, flags that would do nothing
are errors, missing extras are named, `tune`'s help, grid and output
directory, and the plot's axis. Nothing here trains: each check fails (or
stops) before a training, or calls the command's parts directly."""

import json
import re
import sys

import keras
import numpy as np
import pytest

from keras_rnnreg import cli
from keras_rnnreg.app import training
from keras_rnnreg.models import get_preset
from test_cli import SMALL, run, write_corpus


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing lands in the checkout


def _config(argv):
    return cli._train_config(cli.build_parser().parse_args([str(a) for a in argv]))


def _one_line(err):
    assert len(err.strip().splitlines()) == 1, err
    return err


# ------------------------------------------------------------ none
# Each flag that can say `none`, on a preset whose own value is not None
# (with what else the recipe then needs), and the field that must read None.
NONE_FLAGS = [
    ("--noise", ["--preset", "noisin-cpu"], "noise"),
    ("--noise-level", ["--preset", "noisin-cpu", "--noise", "none"], "noise_level"),
    ("--decay-start", ["--preset", "zaremba-small", "--schedule", "plateau"], "decay_start"),
    ("--decay-factor", ["--preset", "artar-cpu", "--schedule", "constant"], "decay_factor"),
    ("--nonmono", ["--preset", "noisin-cpu"], "nonmono"),
    # A fine-tuning recipe: the command runs no fine-tuning, so it is dropped.
    ("--nonmono", ["--preset", "awd-lstm-cpu"], "nonmono"),
    ("--length-bucket", ["--preset", "awd-lstm-cpu", "--length-bucket", "8"], "length_bucket"),
]


@pytest.mark.parametrize("flag, argv, field", NONE_FLAGS)
@pytest.mark.parametrize("spelling", ["none", "off"])
def test_each_flag_that_takes_none_sets_none(flag, argv, field, spelling):
    given = _config(["train", *argv])
    before = training.resolve_preset(given)
    value = (before.model_arguments.get(field) if field in before.model_arguments
             else getattr(before, field))
    assert value is not None, (field, value)  # the flag has something to turn off
    config = _config(["train", *argv, flag, spelling])
    assert field in config["overrides"] and config["overrides"][field] is None  # config.json
    preset = training.resolve_preset(config)
    after = (preset.model_arguments.get(field) if field in preset.model_arguments
             else getattr(preset, field))
    assert after is None
    if field == "nonmono" and get_preset(argv[1]).finetune:
        assert config["overrides"]["finetune"] is False and not preset.finetune


def test_a_flag_that_cannot_be_none_names_its_argument(capsys):
    status, _, err = run(["train", "--preset", "awd-lstm-cpu", "--learning-rate", "none",
                          "--output", "out"], capsys)
    assert status == 1 and "learning_rate" in _one_line(err) and "None" in err


def test_tune_reads_its_flags_as_train_does():
    args = cli.build_parser().parse_args(["tune", "--learning-rate", "30", "--noise", "none",
                                          "--hidden-size", "32"])
    overrides = cli._overrides(args)
    assert overrides == {"learning_rate": 30.0, "noise": None, "hidden_size": 32}
    assert type(overrides["learning_rate"]) is float and type(overrides["hidden_size"]) is int


# ------------------------------------------------------------ abbreviations
def test_no_parser_takes_abbreviations(capsys):
    parsers = cli._all_parsers(cli.build_parser())
    assert len(parsers) == 1 + len(cli.COMMANDS)
    assert all(parser.allow_abbrev is False for parser in parsers)
    for argv, flag in ((["evaluate", "run", "--spli", "valid"], "--spli"),
                       (["tune", "--max-trial", "3"], "--max-trial"),
                       (["generate", "run", "--temp", "0.5"], "--temp")):
        with pytest.raises(SystemExit) as exit:
            cli.main(argv)
        err = _one_line(capsys.readouterr().err)
        assert exit.value.code == 2 and f"unrecognized arguments: {flag}" in err


# ------------------------------------------------------------ flags that would do nothing
@pytest.fixture
def run_dir(tmp_path):
    """A directory holding a run's config.json (what --resume reads first)."""
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / training.CONFIG_FILE).write_text(json.dumps(
        {"dataset": {"name": "synthetic", "seed": 0}, "preset": "awd-lstm-cpu",
         "overrides": {}, "seed": None, "epochs": 1}))
    return directory


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--epochs", "0"], "--epochs must be >= 1"),
    (["tune", "--epochs", "0"], "--epochs must be >= 1"),
    (["tune", "--max-trials", "0"], "--max-trials and --epochs must be >= 1"),
    (["train", "--data-dir", "d", "--manual-dir", "m"], "--manual-dir: for --dataset ptb"),
    (["train", "--test-file", "t"], "--test-file: name files in --data-dir"),
    (["train", "--data-dir", "d", "--synthetic-seed", "0"], "--synthetic-seed is for the"),
    (["tune", "--dataset", "ptb", "--synthetic-seed", "1"], None),  # tune has no such flag
    (["evaluate", "run", "--window", "5"], "--window: settings of the neural cache"),
    (["evaluate", "run", "--theta", "2", "--lambd", "0.1"], "--lambd, --theta: settings"),
    (["tune", "--tuner", "hyperband", "--max-trials", "2"], "--max-trials sizes a random"),
])
def test_flags_that_would_do_nothing_are_errors(argv, fragment, tmp_path, capsys):
    try:
        status, _, err = run(argv, capsys)
    except SystemExit as exit:  # argparse: not a flag of this command at all
        assert fragment is None and exit.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err
        return
    assert status == 2 and fragment in _one_line(err), err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("flags", [["--seed", "0"], ["--synthetic-seed", "0"],
                                   ["--dataset", "synthetic"], ["--noise", "none"],
                                   ["--preset", "awd-lstm-cpu"]])
def test_resume_refuses_given_flags_even_at_their_defaults(flags, run_dir, capsys):
    # 0, synthetic, none and the run's own preset are values the run has:
    # given, they are still refused, as --resume takes the run's configuration.
    status, _, err = run(["train", "--resume", run_dir, *flags], capsys)
    assert status == 2 and f"drop {flags[0]}" in _one_line(err)
    assert sorted(p.name for p in run_dir.iterdir()) == [training.CONFIG_FILE]


# ------------------------------------------------------------ missing extras
def test_ptb_without_the_data_extra_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    status, _, err = run(["train", "--dataset", "ptb", "--output", tmp_path / "out"], capsys)
    assert status == 1 and "--dataset ptb needs tensorflow_datasets" in _one_line(err)
    assert 'pip install "keras-rnnreg[data]"' in err and not any(tmp_path.iterdir())


def test_tensorboard_without_tensorflow_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    status, _, err = run(["train", "--tensorboard", "--output", tmp_path / "out"], capsys)
    assert status == 1 and "--tensorboard" in _one_line(err)
    assert 'pip install "keras-rnnreg[tensorflow]"' in err and not any(tmp_path.iterdir())


def test_tune_without_keras_tuner_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_tuner", None)
    status, _, err = run(["tune", "--output", tmp_path / "out"], capsys)
    assert status == 1 and "needs keras_tuner" in _one_line(err)
    assert 'pip install "keras-rnnreg[tuner]"' in err and not any(tmp_path.iterdir())


def test_a_failed_import_inside_a_command_names_the_extra(capsys, monkeypatch):
    # What _require does not foresee: the import's own error, its module named.
    monkeypatch.setitem(sys.modules, "keras_tuner", None)

    def presets(args):
        import keras_tuner  # noqa: F401

    monkeypatch.setitem(cli.COMMANDS, "presets", presets)
    status, _, err = run(["presets"], capsys)
    assert status == 1 and 'pip install "keras-rnnreg[tuner]"' in _one_line(err)


def _history(path, perplexities):
    lines = ["epoch,perplexity,val_perplexity"]
    lines += [f"{i},{p * 1.1},{p}" for i, p in enumerate(perplexities)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_plot_without_matplotlib_names_the_extra(tmp_path, monkeypatch):
    from keras_rnnreg.app import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.warns(UserWarning, match=re.escape('pip install "keras-rnnreg[plot]"')):
        assert plot.plot_history(_history(tmp_path / "h.csv", [300, 200]),
                                 tmp_path / "p.png") is None
    assert not (tmp_path / "p.png").exists()


# ------------------------------------------------------------ the plot's axis
@pytest.mark.parametrize("low, high", [(40.0, 1000.0), (150.0, 400.0), (52.0, 61.0)])
def test_the_plot_labels_perplexities_as_plain_numbers(low, high, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib import pyplot

    from keras_rnnreg.app import plot

    values = np.geomspace(high, low, 6)
    figure = plot.history_figure(_history(tmp_path / "h.csv", values), oracle_perplexity=low)
    try:
        figure.canvas.draw()
        (axes,) = figure.axes
        bottom, top = axes.get_ylim()
        labels = [(label.get_position()[1], label.get_text())
                  for minor in (False, True) for label in axes.get_yticklabels(minor=minor)
                  if label.get_text() and bottom <= label.get_position()[1] <= top]
    finally:
        pyplot.close(figure)
    assert len(labels) >= 2, labels  # the axis is read from its labels
    for position, text in labels:  # "200", not "$\mathdefault{2\times10^{2}}$"
        assert re.fullmatch(r"\d+(\.\d+)?", text), text
        assert float(text) == pytest.approx(position, rel=1e-6)


# ------------------------------------------------------------ tune: help, grid, output
def test_tune_help_says_which_flags_centre_the_search_and_which_fix(capsys):
    with pytest.raises(SystemExit):
        cli.main(["tune", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # unwrapped
    centre, fix = out.split("These centre the search")[1].split("These fix their value")
    names = cli._override_names()
    for name in names:
        flag = f"--{name.replace('_', '-')}"
        assert re.search(rf"{flag}\b(?!-)", centre if name in cli.SEARCHED else fix), flag
        assert not re.search(rf"{flag}\b(?!-)", fix if name in cli.SEARCHED else centre), flag


def test_the_searched_flags_are_the_search_space():
    pytest.importorskip("keras_tuner")
    import keras_tuner

    from keras_rnnreg.tuner import LanguageModelHyperModel

    hp = keras_tuner.HyperParameters()
    LanguageModelHyperModel(50, preset="noisin-cpu").declare_hyperparameters(hp)
    space = {re.sub(r"^noise_level_.*", "noise_level", entry.name) for entry in hp.space}
    space -= {"gradient_noise", "gradient_noise_eta", "gradient_noise_gamma"}  # no flag
    assert space == set(cli.SEARCHED) & set(cli._override_names())


@pytest.mark.parametrize("centre", [4, 8, 16, 32, 33, 200, 650, 1150])
def test_tune_searches_sizes_on_a_grid_of_eight_through_the_centre(centre):
    pytest.importorskip("keras_tuner")
    import keras_tuner

    from keras_rnnreg.tuner import LanguageModelHyperModel

    hp = keras_tuner.HyperParameters()
    LanguageModelHyperModel(50, preset="awd-lstm-cpu", hidden_size=centre,
                            embedding_size=8).declare_hyperparameters(hp)
    entry = next(e for e in hp.space if e.name == "hidden_size")
    sizes = list(range(entry.min_value, entry.max_value + 1, entry.step))
    assert centre in sizes and entry.default == centre
    assert entry.step == (8 if centre >= 16 else centre // 2)
    if centre % 8 == 0 and centre >= 16:
        assert all(size % 8 == 0 for size in sizes)  # 16, 24, ..., 64 around 32
    assert centre / 2 <= sizes[0] < centre / 2 + entry.step
    assert 2 * centre - entry.step < sizes[-1] <= 2 * centre


@pytest.fixture(scope="module")
def tune_corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("tune_corpus"), 5, 12, 6)


def test_a_stopped_search_keeps_the_previous_result(tune_corpus, tmp_path, capsys,
                                                   monkeypatch):
    pytest.importorskip("keras_tuner")
    from keras_rnnreg.tuner import LanguageModelHyperModel

    output = tmp_path / "tuning"
    (output / "search" / "trial_0").mkdir(parents=True)
    (output / "search" / "trial_0" / "trial.json").write_text('{"old": true}')
    (output / "best_preset.json").write_text('{"old": true}')
    built = []

    def fit(self, hp, model, *args, **kwargs):
        built.append(model)
        raise KeyboardInterrupt  # Ctrl-C in the middle of the first trial

    monkeypatch.setattr(LanguageModelHyperModel, "fit", fit)
    status, _, err = run(["tune", "--data-dir", tune_corpus, *SMALL[:-1], "--max-trials", "1",
                          "--epochs", "1", "--output", output], capsys)
    assert status == 130 and len(built) == 1, err
    assert json.loads((output / "best_preset.json").read_text()) == {"old": True}
    assert sorted(p.name for p in output.iterdir()) == ["best_preset.json", "search"]
    assert [p.name for p in (output / "search").iterdir()] == ["trial_0"]
    keras.backend.clear_session(free_memory=False)


def test_a_search_that_fails_before_it_starts_writes_nothing(tune_corpus, tmp_path, capsys):
    pytest.importorskip("keras_tuner")
    status, _, err = run(["tune", "--data-dir", tune_corpus, "--hidden-dropout", "1.5",
                          "--output", tmp_path / "tuning"], capsys)
    assert status == 1 and "hidden_dropout" in _one_line(err)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------ the papers' protocol
@pytest.mark.parametrize("preset, sizes", [
    ("zaremba-small", (20, 1)), ("zaremba-cpu", (20, 1)), ("artar-650", (10, 10)),
    ("noisin-medium", (10, 1)), ("awd-lstm", (10, 1)), ("awd-lstm-wt2", (10, 1)),
    ("awd-lstm-cpu", (10, 1)),
])
def test_presets_carry_their_papers_evaluation_batch_sizes(preset, sizes):
    chosen = get_preset(preset)
    assert chosen.evaluation_batch_sizes == sizes
    assert training.protocol_batch_size(chosen, "valid") == sizes[0]
    assert training.protocol_batch_size(chosen, "test") == sizes[1]
    plain = chosen.replace(evaluation_batch_sizes=None)
    assert training.protocol_batch_size(plain, "test") == chosen.batch_size


def test_every_preset_names_its_papers_evaluation_batch_sizes():
    from keras_rnnreg.models import PRESETS

    assert [name for name, p in PRESETS.items() if p.evaluation_batch_sizes is None] == []


@pytest.mark.parametrize("sizes", [(10,), (10, 0), (10, 1.5), 10])
def test_evaluation_batch_sizes_are_validated(sizes):
    with pytest.raises((ValueError, TypeError), match="evaluation_batch_sizes"):
        get_preset("awd-lstm-cpu").replace(evaluation_batch_sizes=sizes)


def test_the_summary_line_reports_the_papers_protocol():
    summary = {"preset": "awd-lstm-cpu", "dataset": "ptb", "valid_perplexity": 300.0,
               "test_perplexity": 290.0, "batch_size": 40, "protocol_test_batch_size": 1,
               "protocol_test_perplexity": 280.5, "wall_seconds": 5.0}
    line = training.summary_line(summary)
    assert "test ppl 290.00 at batch 40" in line
    assert "test ppl 280.50 at batch 1 (the paper's protocol)" in line
    same = training.summary_line({**summary, "protocol_test_batch_size": 40})
    assert "paper" not in same and "at batch" not in same
