"""The Python examples of README.md and docs/, and the scripts in examples/,
run as written.

Each page's ```python blocks run in order in one namespace, as a reader
pasting them would run them, in a scratch directory. What would take hours
runs small, and nothing else is changed: the corpus paths the examples name
(`path/to/ptb`, `data/ptb`) hold the first few thousand tokens of the Penn
Treebank (or of the synthetic corpus where ../shared/data/ptb is absent),
read by the real `load_ptb`; `fit` runs one epoch; a keras-tuner search one
trial. A page may give the names its blocks take as given (`_page_names`).
docs/index.md repeats README.md's examples and is checked to. The scripts
in examples/ run with their corpus sizes cut the same way.
"""

import builtins
import functools
import html.parser
import importlib.util
import math
import re
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[1]
PTB = ROOT.parent / "shared" / "data" / "ptb"
CORPUS_DIRS = ("path/to/ptb", "data/ptb")
SPLIT_TOKENS = {"train": 3200, "valid": 800, "test": 800}
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(path):
    return BLOCK.findall(path.read_text())


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_PAGES = [page for page in PAGES if page.name != "index.md" and python_blocks(page)]


def test_index_repeats_the_readme_examples():
    assert python_blocks(ROOT / "docs" / "index.md") == python_blocks(ROOT / "README.md")


def test_every_page_with_examples_is_run():
    assert {page.name for page in RUN_PAGES} >= {
        "README.md", "bptt.md", "models.md", "noisin.md", "tuner.md", "weight-drop.md",
    }


def test_the_preset_table_is_the_registry(monkeypatch):
    """docs/models.md's preset table is `keras-rnnreg presets --markdown`,
    and its table of the -cpu twins names them all: a preset added or
    changed without the page fails here."""
    from keras_rnnreg import cli
    from keras_rnnreg.models import PRESETS, initializers

    # A count does not read the values: zeros skip the random draws, each of
    # which costs a compilation per new shape on JAX.
    monkeypatch.setattr(initializers, "uniform", lambda scale, seed=None: "zeros")
    page = (ROOT / "docs" / "models.md").read_text()
    table = re.search(r"^<!-- presets -->\n(.*?)\n<!-- /presets -->$", page,
                      re.DOTALL | re.MULTILINE)
    assert table, "docs/models.md: the <!-- presets --> markers are gone"
    assert table.group(1) == cli._markdown_presets(PRESETS), (
        "docs/models.md: put `keras-rnnreg presets --markdown` between the markers")
    twins = re.findall(r"^\| `([a-z0-9-]+)` \| ≈", page, re.MULTILINE)
    assert twins == [name for name, preset in PRESETS.items() if preset.twin_of]


@functools.cache
def _split_text(split):
    """Whole lines of `split` up to its token budget (the `<eos>` each line
    gets counted), from PTB or, without it, from the synthetic corpus."""
    budget = SPLIT_TOKENS[split]
    source = PTB / f"ptb.{split}.txt"
    if source.is_file():
        lines = source.read_text().splitlines()
    else:
        from keras_rnnreg.datasets import make_synthetic_corpus

        corpus = make_synthetic_corpus(seed=0)
        ids = getattr(corpus, split)[: 2 * budget]
        lines = [" ".join(f"w{i}" for i in ids[j : j + 19]) for j in range(0, len(ids), 19)]
    kept, count = [], 0
    for line in lines:
        kept.append(line)
        count += len(line.split()) + 1
        if count >= budget:
            return "\n".join(kept) + "\n"
    raise AssertionError(f"the {split} source holds fewer than {budget} tokens")


def _tiny_corpus_files(directory):
    for relative in CORPUS_DIRS:
        folder = directory / relative
        folder.mkdir(parents=True)
        for split in SPLIT_TOKENS:
            (folder / f"ptb.{split}.txt").write_text(_split_text(split))


def _page_names(tmp_path):
    from keras_rnnreg.data import load_ptb
    from keras_rnnreg.noise import NoiseDistribution

    corpus = load_ptb(tmp_path / "data" / "ptb")
    return {
        # The record the page shows, as it stands in noise.py's registry.
        "noisin.md": {"NoiseDistribution": NoiseDistribution, "math": math},
        "tuner.md": {
            "vocab_size": len(corpus.vocab),
            "train_ids": corpus.train,
            "valid_ids": corpus.valid,
        },
    }


@pytest.fixture
def small_runs(monkeypatch):
    """`fit` for one epoch and keras-tuner searches of one trial."""
    fit = keras.Model.fit

    def one_epoch_fit(self, *args, **kwargs):
        kwargs["epochs"] = 1
        kwargs.pop("initial_epoch", None)
        kwargs.setdefault("verbose", 0)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", one_epoch_fit)
    try:
        import keras_tuner
    except ImportError:
        return
    for name in ("RandomSearch", "BayesianOptimization", "Hyperband"):
        tuner_class = getattr(keras_tuner, name)

        def __init__(self, *args, _tuner_class=tuner_class, **kwargs):
            if "max_trials" in kwargs:
                kwargs["max_trials"] = 1
            if "max_epochs" in kwargs:
                kwargs["max_epochs"] = 1
            _tuner_class.__init__(self, *args, **kwargs)

        monkeypatch.setattr(keras_tuner, name, type(name, (tuner_class,), {"__init__": __init__}))


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda page: page.name)
def test_page_examples_run(page, tmp_path, monkeypatch, small_runs):
    _tiny_corpus_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__", "__builtins__": builtins}
    namespace.update(_page_names(tmp_path).get(page.name, {}))
    for number, code in enumerate(python_blocks(page), start=1):
        try:
            exec(compile(code, f"{page.name} example {number}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{page.name}, example {number} failed: {error!r}") from error


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_awd_lstm_demo_runs(monkeypatch, small_runs, capsys):
    demo = _load_example("awd_lstm_demo")
    monkeypatch.setattr(demo, "TRAIN_TOKENS", 3200)
    monkeypatch.setattr(demo, "VALID_TOKENS", 1200)
    demo.main()  # raises if the reloaded model's logits differ
    assert "final validation perplexity" in capsys.readouterr().out


def test_noisin_lm_runs(tmp_path, capsys):
    _tiny_corpus_files(tmp_path)
    noisin_lm = _load_example("noisin_lm")
    noisin_lm.main(["--data-dir", str(tmp_path / "data" / "ptb"), "--train-tokens", "0",
                    "--valid-tokens", "0", "--units", "16", "--epochs", "1"])
    assert "best validation perplexity" in capsys.readouterr().out



class _RenderedPage(html.parser.HTMLParser):
    """A built page's equations, the elements pymdownx.arithmatex marks with
    class "arithmatex" (what MathJax typesets), and the rest of its visible
    text, with code and scripts left out."""

    SKIPPED = {"code", "pre", "script", "style", "textarea", "kbd", "samp"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.inside = None  # [tag, "math" or "skip", depth] of the element we are in
        self.equations = []  # (tag, TeX source as the page holds it)
        self.text = []

    def handle_starttag(self, tag, attrs):
        if self.inside:
            self.inside[2] += tag == self.inside[0]
        elif "arithmatex" in (dict(attrs).get("class") or "").split():
            self.inside = [tag, "math", 1]
            self.equations.append((tag, []))
        elif tag in self.SKIPPED:
            self.inside = [tag, "skip", 1]

    def handle_endtag(self, tag):
        if self.inside and tag == self.inside[0]:
            self.inside[2] -= 1
            if not self.inside[2]:
                self.inside = None

    def handle_data(self, data):
        if self.inside is None:
            self.text.append(data)
        elif self.inside[1] == "math":
            self.equations[-1][1].append(data)


#: TeX outside an equation: a delimiter MathJax would not see there ($$ is
#: not one of ours at all) or a command such as \frac, \sum, \mathbf.
_STRAY_TEX = re.compile(r"\$\$|\\[()\[\]]|\\[A-Za-z]+")


def _math_problems(html_text):
    """What is wrong with a built page's math: equations not wrapped in the
    delimiters the MathJax configuration (docs/javascripts/mathjax.js) reads,
    \\( \\) inline and \\[ \\] displayed, and TeX outside any equation."""
    page = _RenderedPage()
    page.feed(html_text)
    problems = []
    for tag, parts in page.equations:
        tex = "".join(parts).strip()
        opening, closing = ("\\(", "\\)") if tag == "span" else ("\\[", "\\]")
        if not (tex.startswith(opening) and tex.endswith(closing)):
            problems.append(f"equation not in {opening} {closing}: {tex[:60]!r}")
    for text in page.text:
        for stray in _STRAY_TEX.finditer(text):
            context = text[max(0, stray.start() - 30):stray.end() + 30]
            problems.append(f"{stray.group()!r} outside an equation: {context!r}")
    return page.equations, problems


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    """The site as `make docs` builds it (mkdocs.yml; not strict: `make
    docs` checks the warnings), into a scratch directory."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    site = tmp_path_factory.mktemp("site")
    build(load_config(str(ROOT / "mkdocs.yml"), site_dir=str(site)))
    return site


def test_every_equation_of_the_built_site_is_inside_the_math_delimiters(built_site):
    pages = sorted(built_site.rglob("*.html"))
    problems, equations = [], 0
    for page in pages:
        found, wrong = _math_problems(page.read_text())
        equations += len(found)
        problems += [f"{page.relative_to(built_site)}: {problem}" for problem in wrong]
    assert not problems, "\n".join(problems)
    # The check saw the equations: Noisin's displayed Eq. (12)-(14) among them.
    noisin, _ = _math_problems((built_site / "noisin" / "index.html").read_text())
    displayed = ["".join(tex) for tag, tex in noisin if tag == "div"]
    assert any("\\tag{14}" in tex for tex in displayed), displayed
    assert equations >= 20


@pytest.mark.parametrize("html_text, problem", [
    ('<p>\\[ x \\tag{14}\n] Under this</p>', "outside an equation"),  # Eq. (14) as it was
    ('<p>so $$x^2$$ here</p>', "'$$' outside"),
    ('<p>a \\frac{1}{2} b</p>', "'\\\\frac' outside"),
    ('<div class="arithmatex">x = 1</div>', "equation not in"),
    ('<span class="arithmatex">\\[x\\]</span>', "equation not in"),
])
def test_the_math_check_finds_broken_equations(html_text, problem):
    _, problems = _math_problems(html_text)
    assert any(problem in found for found in problems), problems


def test_the_math_check_passes_equations_in_their_delimiters_and_code():
    equations, problems = _math_problems(
        '<p>a <span class="arithmatex">\\(x\\)</span> <code>"\\n" \\frac</code></p>'
        '<div class="arithmatex">\\[\\frac{1}{2} <span>\\sum</span>\\]</div>')
    assert problems == []
    assert [(tag, "".join(tex)) for tag, tex in equations] == [
        ("span", "\\(x\\)"), ("div", "\\[\\frac{1}{2} \\sum\\]")]
