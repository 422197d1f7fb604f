"""The package itself: a lazy `keras_rnnreg` whose command line imports no
Keras before it has chosen the backend, classes that `keras.saving.load_model`
finds under the registration rule of keras_rnnreg/__init__.py, and a quiet
command start-up."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import pytest

import keras_rnnreg
from keras_rnnreg import cli
from keras_rnnreg.models import get_preset

FRAMEWORKS = ("keras", "tensorflow", "jax", "torch")
SUBMODULES = {"callbacks", "data", "layers", "losses", "metrics", "models", "noise", "optimizers"}
CLASSES = {"ARTARRegularizer", "EmbeddingDropout", "LockedDropout", "NoisinCell", "NoisinGRU",
           "NoisinLSTM", "NoisinRNN", "TiedEmbedding", "WeightDropGRU", "WeightDropLSTM",
           "NTASGD", "BPTTCallback", "BPTTSequence", "ASGD", "GradientNoise"}


def python(code, **env):
    """Runs `code` in a fresh interpreter on this process's backend; its stdout."""
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), **env}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_importing_the_command_line_imports_no_framework():
    loaded = python(
        "import sys, keras_rnnreg, keras_rnnreg.cli\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(FRAMEWORKS)}))\n"
        "print(keras_rnnreg.__version__)")
    assert loaded.split("\n")[:2] == ["[]", keras_rnnreg.__version__]


def test_every_public_name_resolves_to_its_module():
    assert sorted(keras_rnnreg.__all__) == sorted(SUBMODULES | CLASSES)
    assert set(keras_rnnreg.__all__) <= set(dir(keras_rnnreg))
    for name in SUBMODULES:
        assert getattr(keras_rnnreg, name).__name__ == f"keras_rnnreg.{name}"
    for name in CLASSES:
        value = getattr(keras_rnnreg, name)
        assert value.__name__ == name and value.__module__.startswith("keras_rnnreg.")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        keras_rnnreg.nope


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A preset model with the library's layers, optimizer, loss and metric."""
    preset = get_preset("awd-lstm-cpu").replace(
        hidden_size=6, embedding_size=4, batch_size=2, bptt=3)
    model = preset.compile(preset.build(20))
    model.fit(keras.ops.ones((2, 3), "int32"), keras.ops.ones((2, 3), "int32"), verbose=0)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path


REGISTERED = "sorted(k for k in keras.saving.get_custom_objects() if k.startswith('keras_rnnreg>'))"


@pytest.mark.parametrize("imports", [
    "import keras, keras_rnnreg",  # Keras first: the import registers
    "import keras_rnnreg, keras; keras_rnnreg.BPTTSequence",  # a public name registers
])
def test_a_fresh_process_loads_a_saved_model_under_the_registration_rule(imports, saved_model):
    printed = python(
        f"{imports}\nprint({REGISTERED})\n"
        f"model = keras.saving.load_model({str(saved_model)!r})\n"
        "print(type(model.optimizer).__name__, type(model.loss).__name__)\n"
        "print(sorted(type(layer).__name__ for layer in model.layers))")
    names, compiled, layers = printed.splitlines()
    # Before the load: every class the package registers (this process has
    # imported them all), whichever module holds it.
    assert names == str(eval(REGISTERED)) and "'keras_rnnreg>WeightDropLSTM'" in names
    assert compiled == "ASGD TokenCrossEntropy"
    for layer in ("EmbeddingDropout", "LockedDropout", "WeightDropLSTM", "ARTARRegularizer"):
        assert f"'{layer}'" in layers


def test_backend_flag_naming_another_loaded_backend_is_a_one_line_error(capsys):
    other = next(b for b in cli.BACKENDS if b != keras.backend.backend())
    assert cli.main(["evaluate", "nowhere", "--backend", other]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--backend {other}: this Python process has Keras" in err
    # The loaded backend is fine: the command runs (and finds no run).
    assert cli.main(["evaluate", "nowhere", "--backend", keras.backend.backend()]) == 2
    assert "There is no run in 'nowhere'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["module", "script"])
def test_the_command_starts_quietly(command):
    """TensorFlow's start-up lines (no CUDA driver, CPU features) stay off stderr."""
    if command == "module":
        argv = [sys.executable, "-m", "keras_rnnreg"]
    else:
        script = Path(sys.executable).parent / "keras-rnnreg"
        if not script.exists():
            script = shutil.which("keras-rnnreg")
        if script is None:
            pytest.skip("no keras-rnnreg script installed")
        argv = [str(script)]
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    for variable in ("TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL"):
        env.pop(variable, None)
    result = subprocess.run([*argv, "presets"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0 and "awd-lstm-cpu" in result.stdout
    assert result.stderr == ""
