"""The package itself: a lazy `keras_rnnreg` whose command line imports no
Keras before it has chosen the backend, classes that `keras.saving.load_model`
finds under the registration rule of keras_rnnreg/__init__.py, a quiet
command start-up; and the package as it ships: one version, extras that
hold what the code imports, a wheel and an sdist that `python -m build`
makes and a fresh environment installs and runs."""

import ast
import email
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import keras
import pytest

import keras_rnnreg
from keras_rnnreg import cli
from keras_rnnreg.models import get_preset
from test_cli import SMALL, write_corpus

FRAMEWORKS = ("keras", "tensorflow", "jax", "torch")
SUBMODULES = {"callbacks", "data", "evaluation", "layers", "losses", "metrics", "models", "noise",
              "optimizers"}
CLASSES = {"ARTARRegularizer", "EmbeddingDropout", "LockedDropout", "MixtureOfSoftmaxes",
           "NoisinCell", "NoisinGRU",
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


# ------------------------------------------------------------ the package as it ships
ROOT = Path(__file__).resolve().parents[1]
# The extras that are the project's own tooling, not the package's.
TOOLING_EXTRAS = {"test", "docs", "bench"}


def pyproject():
    import tomllib  # Python 3.11+, like the suite (the Makefile's python3.11)

    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_names(extras, project=None):
    """The canonical names of the distributions that installing the package
    with `extras` asks for directly (its dependencies and those extras,
    through the extras' `keras-rnnreg[...]` references to one another)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = project or pyproject()["project"]
    names, pending, seen = set(), list(extras), set()
    for text in project["dependencies"]:
        names.add(canonicalize_name(Requirement(text).name))
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                pending.extend(requirement.extras)
            else:
                names.add(canonicalize_name(requirement.name))
    return names


def on_the_minimum_keras():
    """Whether this is `make test`'s pass on the minimum Keras: Keras from
    PYTHONPATH (.keras-minimum/), not this venv's."""
    return not Path(keras.__file__).resolve().is_relative_to(Path(sys.prefix).resolve())


def distributions_of(modules):
    """{top-level module: canonical names of the installed distributions
    that provide it}, for the third-party modules among `modules`."""
    from packaging.utils import canonicalize_name

    provided = importlib.metadata.packages_distributions()
    third_party = sorted(set(modules) - set(sys.stdlib_module_names) - {"keras_rnnreg"})
    missing = [m for m in third_party if m not in provided]
    assert not missing, f"no installed distribution provides {missing}"
    return {m: {canonicalize_name(d) for d in provided[m]} for m in third_party}


def test_the_version_has_one_source():
    project, setuptools = pyproject()["project"], pyproject()["tool"]["setuptools"]
    assert "version" not in project and "version" in project["dynamic"]
    assert setuptools["dynamic"]["version"] == {"attr": "keras_rnnreg.__version__"}
    # setuptools reads a literal from the syntax tree; anything else it would
    # get by importing the package, at build time, where Keras may be absent.
    tree = ast.parse((ROOT / "keras_rnnreg" / "__init__.py").read_text(encoding="utf-8"))
    values = [node.value for node in tree.body if isinstance(node, ast.Assign)
              and any(getattr(t, "id", None) == "__version__" for t in node.targets)]
    assert len(values) == 1 and isinstance(values[0], ast.Constant)
    assert values[0].value == keras_rnnreg.__version__
    from packaging.version import Version

    assert str(Version(keras_rnnreg.__version__)) == keras_rnnreg.__version__  # PEP 440, normalized


# What every import statement (and importlib.import_module call) in the
# package's own modules names, recorded while the command runs.
RECORD_IMPORTS = r"""
import builtins, importlib, json, sys

names = set()

def record(name, importer):
    if importer.partition(".")[0] == "keras_rnnreg" and not name.startswith("."):
        names.add(name.partition(".")[0])

real_import, real_import_module = builtins.__import__, importlib.import_module

def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0:
        record(name, (globals or {}).get("__name__", ""))
    return real_import(name, globals, locals, fromlist, level)

def recording_import_module(name, package=None):
    record(name, sys._getframe(1).f_globals.get("__name__", ""))
    return real_import_module(name, package)

builtins.__import__, importlib.import_module = recording_import, recording_import_module
from keras_rnnreg import cli

status = cli.main(sys.argv[1:])
print("\nIMPORTED " + json.dumps({"status": status, "names": sorted(names)}))
"""


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory):
    """The default job's path (`keras-rnnreg train`: the default preset's
    model and recipe, training, evaluation, checkpoint, plot, saved model),
    one epoch of a tiny model on a tiny corpus: the synthetic corpus's 60k
    tokens (and its test split at the paper's batch 1) would take minutes
    on the CI machine. keras_rnnreg.datasets.synthetic, which the default
    job adds, imports only NumPy besides the standard library (the static
    test below reads every module's imports)."""
    corpus = write_corpus(tmp_path_factory.mktemp("corpus"), 0, 120, 20)
    return ["train", "--data-dir", str(corpus), *SMALL, "--epochs", "1"]


def test_the_readme_install_line_covers_the_default_job(tiny_job, tmp_path):
    """`pip install "keras-rnnreg[app,<backend>]"` (README.md) asks for every
    third-party distribution whose modules the package's code imports while
    `keras-rnnreg train` runs its default job on this backend. Imports made
    by Keras or other dependencies themselves are theirs to declare."""
    if on_the_minimum_keras():
        pytest.skip("the package's own imports do not change with the Keras version: "
                    "the torch pass on this venv's Keras has checked them")
    backend = keras.backend.backend()
    result = subprocess.run(
        [sys.executable, "-c", RECORD_IMPORTS, *tiny_job, "--output", "run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "KERAS_BACKEND": backend})
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.rpartition("\nIMPORTED ")[2])
    assert record["status"] == 0 and (tmp_path / "run" / "perplexity.png").exists()
    needed = distributions_of(record["names"])
    # The recorder saw the job's own imports: the plot's and the library's.
    assert {"keras", "numpy", "matplotlib"} <= set(needed)
    allowed = requirement_names(["app", backend])
    assert {m: d for m, d in needed.items() if not d & allowed} == {}
    # and the job needs neither the data nor the tuner extra: plot and the
    # backend suffice (the wheel test below runs it with just those).
    lean = requirement_names(["plot", backend])
    extra_needed = {m: d for m, d in needed.items() if not d & lean}
    if backend == "tensorflow" or "tensorflow" not in extra_needed:
        assert extra_needed == {}
    else:  # the command imports TensorFlow first wherever it is installed (cli._quiet_start)
        assert set(extra_needed) == {"tensorflow"}


# Imported by the package but declared by the distribution named beside it,
# which the package's extras ask for: checked against that one's metadata.
COMES_WITH = {"absl-py": "keras", "etils": "tensorflow-datasets"}
# Asked for by the app extra without being imported by the package: the
# distribution that imports it for the package (keras.callbacks.TensorBoard,
# for `train --tensorboard`).
USED_THROUGH = {"tensorboard": "keras"}


def test_the_extras_hold_what_the_code_imports_and_nothing_more():
    """Every third-party module that any module of the package imports
    (optional imports included) comes from a distribution the package or
    one of its extras asks for; every distribution the `app` extra asks for
    is imported by the package or by the one it serves."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    imported = set()
    for path in (ROOT / "keras_rnnreg").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.partition(".")[0])
    project = pyproject()["project"]
    extras = set(project["optional-dependencies"]) - TOOLING_EXTRAS
    declared = requirement_names(extras)
    used = set()
    for module, names in distributions_of(imported).items():
        used |= names
        if names & declared:
            continue
        guarantor = COMES_WITH.get(min(names))
        assert len(names) == 1 and guarantor in declared, (
            f"keras_rnnreg imports {module} ({', '.join(sorted(names))}), which neither the "
            "package nor any of its extras asks for")
        unconditional = {canonicalize_name(Requirement(r).name)
                         for r in importlib.metadata.requires(guarantor) or []
                         if "extra" not in str(Requirement(r).marker or "")}
        assert names <= unconditional, f"{guarantor} does not bring {module} along"
    for name in requirement_names(["app"]) - requirement_names([]):
        assert name in used or USED_THROUGH.get(name) in used, (
            f"the app extra asks for {name}, which nothing imports")


def test_the_docs_install_lines_name_real_extras():
    extras = set(pyproject()["project"]["optional-dependencies"])
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in re.finditer(r"keras-rnnreg\[([a-z,\s]+)\]", path.read_text(encoding="utf-8")):
            found.append((path.name, {e.strip() for e in match.group(1).split(",")}))
    assert ("README.md", {"app", "tensorflow"}) in found
    assert [(name, wanted - extras) for name, wanted in found if wanted - extras] == []


# ------------------------------------------------------------ the wheel
def _once_per_make_test():
    """The wheel tests build and install the package: once per `make test`,
    on its torch pass (the tensorflow and jax passes, and the pass on the
    minimum Keras, which runs on torch with Keras from PYTHONPATH, would
    only repeat them)."""
    if keras.backend.backend() != "torch":
        pytest.skip("the wheel is built and installed on the torch pass only; "
                    "this backend's pass would repeat it")
    if on_the_minimum_keras():
        pytest.skip("the wheel is built and installed on the torch pass only; the "
                    "minimum-Keras pass (Keras from PYTHONPATH) would repeat it")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`python -m build` (an sdist, then the wheel from it) on a copy of the
    checkout as git sees it (tracked and new files, without what .gitignore
    names): the build writes no egg-info into the checkout others read."""
    _once_per_make_test()
    source, dist = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (ROOT / name).is_file():  # not a tracked file deleted from the tree
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    # --no-isolation: the build backend is this venv's setuptools (the test
    # extra asks for it), so the build needs no index and takes seconds.
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                             str(dist), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,), (sdist,) = dist.glob("*.whl"), dist.glob("*.tar.gz")
    return source, wheel, sdist


def test_the_wheel_holds_the_package_and_its_metadata(built):
    source, wheel, sdist = built
    version = keras_rnnreg.__version__
    assert wheel.name == f"keras_rnnreg-{version}-py3-none-any.whl"
    assert sdist.name == f"keras_rnnreg-{version}.tar.gz"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = f"keras_rnnreg-{version}.dist-info"
        metadata = email.message_from_string(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        license_text = archive.read(f"{info}/licenses/LICENSE").decode()
    # Every module of the package, each subpackage's; nothing else (no
    # tests, docs, benchmarks or examples); the package has no data files.
    modules = {p.relative_to(source).as_posix() for p in (source / "keras_rnnreg").rglob("*.py")}
    assert {n for n in names if not n.startswith(info + "/")} == modules
    assert not [p for p in (source / "keras_rnnreg").rglob("*") if p.is_file()
                and p.suffix != ".py"], "package data: add it to the wheel and to this test"
    assert "keras-rnnreg = keras_rnnreg.cli:main" in entry_points
    assert license_text == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0" in license_text

    project = pyproject()["project"]
    assert metadata["Name"] == "keras-rnnreg" and metadata["Version"] == version
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] == project["requires-python"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert metadata.get_payload().strip() == readme.strip()
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert set(urls) >= {"Homepage", "Documentation", "Source", "Changelog"}
    assert urls["Changelog"].endswith("/CHANGELOG.md")
    classifiers = metadata.get_all("Classifier")
    assert "Programming Language :: Python :: 3" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # the expression says it
    assert set(metadata.get_all("Provides-Extra")) == set(project["optional-dependencies"])
    from packaging.requirements import Requirement

    required = {Requirement(r).name for r in metadata.get_all("Requires-Dist")
                if not Requirement(r).marker}
    assert required == {"keras", "numpy"}  # the library depends on Keras alone

    with tarfile.open(sdist) as archive:
        top = f"keras_rnnreg-{version}/"
        in_sdist = {n[len(top):] for n in archive.getnames()}
    assert {"pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md"} <= in_sdist
    assert modules <= in_sdist
    left_out = {"tests", "docs", "benchmarks", "examples"}
    assert not [n for n in in_sdist if n.split("/")[0] in left_out]


def test_the_wheel_installs_and_runs_in_a_fresh_environment(built, tiny_job, tmp_path):
    """The wheel in a new venv with one backend (torch) and the plot extra,
    nothing else: `keras-rnnreg presets` and one epoch of the default job,
    run from outside the checkout.

    The dependencies come from pip's own resolution of
    `<wheel>[torch,plot]`, but are linked from this venv rather than
    unpacked again: a real install of torch and the rest takes about a
    minute on the 2-core CI machine, the links a second. Only the wheel
    itself is installed by pip."""
    _, wheel, _ = built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    torch = f"torch=={importlib.metadata.version('torch')}"  # this venv's (CPU) build
    report = tmp_path / "report.json"
    result = subprocess.run([*pip, "install", "-q", "--dry-run", "--report", str(report), torch,
                             f"{wheel}[torch,plot]"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True).stdout.strip())
    from packaging.utils import canonicalize_name

    resolved = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]}
    assert resolved.pop("keras-rnnreg") == keras_rnnreg.__version__
    assert {"keras", "numpy", "torch", "matplotlib"} <= set(resolved)
    assert not {"tensorflow", "jax", "tensorflow-datasets", "keras-tuner"} & set(resolved)
    unpacked = []
    for name, version in resolved.items():
        try:
            here = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            here = None
        if here is None or here.version != version:
            unpacked.append(f"{name}=={version}")  # not this venv's: pip installs that one
            continue
        for top in {f.parts[0] for f in here.files if f.parts[0] not in ("..", "__pycache__")}:
            if not (site / top).exists():
                (site / top).symlink_to(here.locate_file(top))
    result = subprocess.run([*pip, "install", "-q", "--no-deps", str(wheel), *unpacked],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    # From a directory outside the checkout, with nothing on PYTHONPATH.
    work = tmp_path / "work"
    work.mkdir()
    env["KERAS_BACKEND"] = "torch"

    def run(*argv):
        result = subprocess.run(argv, cwd=work, capture_output=True, text=True, env=env,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    where = json.loads(run(str(python), "-c", (
        "import importlib.metadata, importlib.util, json, keras_rnnreg\n"
        "print(json.dumps([keras_rnnreg.__file__, keras_rnnreg.__version__,\n"
        "    importlib.metadata.version('keras-rnnreg'),\n"
        "    [m for m in ('tensorflow', 'jax') if importlib.util.find_spec(m)]]))")).stdout)
    assert Path(where[0]).is_relative_to(site) and not Path(where[0]).is_symlink()
    assert where[1:] == [keras_rnnreg.__version__, keras_rnnreg.__version__, []]
    script = venv / "bin" / "keras-rnnreg"
    assert "awd-lstm-cpu" in run(str(script), "presets").stdout
    result = run(str(script), *tiny_job, "--output", "run")
    assert "Traceback" not in result.stderr
    for name in ("config.json", "checkpoint.npz", "history.csv", "perplexity.png",
                 "model.keras", "summary.json"):
        assert (work / "run" / name).is_file(), name
