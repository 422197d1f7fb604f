"""Every Keras internal keras_rnnreg relies on is where we expect it.

A failure names the internal and the Keras version that moved it; see
keras_rnnreg/_keras_compat.py for why each one is needed.
"""

import keras
import pytest

from keras_rnnreg import _keras_compat


@pytest.mark.parametrize("name", sorted(_keras_compat.INTERNALS))
def test_keras_internal_is_where_we_expect_it(name):
    _keras_compat.check(name)


def test_a_moved_internal_is_reported_by_name(monkeypatch):
    reason, _ = _keras_compat.INTERNALS["keras.src.backend.rnn"]
    monkeypatch.setitem(
        _keras_compat.INTERNALS, "keras.src.backend.rnn", (reason, lambda: "it is gone")
    )
    with pytest.raises(_keras_compat.KerasInternalMoved) as error:
        _keras_compat.check("keras.src.backend.rnn")
    message = str(error.value)
    assert "`keras.src.backend.rnn`" in message and "it is gone" in message
    assert keras.__version__ in message and _keras_compat.KERAS_RANGE in message


def test_the_declared_keras_range_is_the_installed_packages():
    # Read pyproject.toml, not the installed metadata: the suite also runs
    # from a plain checkout on PYTHONPATH (the GPU machine), where no
    # distribution metadata exists.
    import pathlib
    import tomllib

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    pyproject = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
    with open(pyproject, "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    declared = [Requirement(r) for r in dependencies]
    keras_requirements = [r.specifier for r in declared if r.name == "keras" and not r.marker]
    assert keras_requirements == [SpecifierSet(_keras_compat.KERAS_RANGE)], keras_requirements


def test_installed_keras_is_in_the_supported_range():
    from packaging.version import Version

    assert Version(_keras_compat.KERAS_MINIMUM) <= Version(keras.__version__) < Version("4")


def test_no_keras_internal_is_used_outside_the_compat_module():
    import pathlib
    import re

    package = pathlib.Path(_keras_compat.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        if path.name == "_keras_compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"keras\.src|\._(flatten_layers|clip_gradients|trainable_variables"
                         r"|get_variable_index|variables)\b|jax_state_sync", line):
                offenders.append(f"{path.relative_to(package)}:{number}: {line.strip()}")
    assert not offenders, "Keras internals outside _keras_compat:\n" + "\n".join(offenders)
