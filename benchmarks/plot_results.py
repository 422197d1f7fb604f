"""The documentation's plots, from the recorded benchmark results.

    python benchmarks/plot_results.py            # writes docs/img/*.png

- `init-finding.png`: validation perplexity per epoch of `awd-lstm-cpu` on PTB,
  keras_rnnreg with the papers' initialization and with Keras's defaults,
  beside the PyTorch reference (benchmarks/results/h100-2026-11-22, and the
  TensorFlow run of benchmarks/results/cpu-keras-tensorflow-2026-11-22.json).
- `paper-size.png`: the same for the paper-size `awd-lstm`.
- `throughput.png`: training tokens/s of each regularizer relative to the
  plain LSTM language model, per backend (docs/benchmarks.md).
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
H100 = os.path.join(RESULTS, "h100-2026-11-22")

# The "× plain" column of the quiet runs in docs/benchmarks.md, "Results"
# (2-core shared CPU VM, 2026-11-22, 04:01-04:03 UTC, Keras 3.15.1), made by
#   KERAS_BACKEND=<backend> .venv/bin/python benchmarks/throughput.py
# (`--threads 1` for torch). throughput.py prints its tables and writes no
# JSON record, so the figures are copied here.
THROUGHPUT_VARIANTS = ("weight_drop", "locked_dropout", "embedding_dropout", "artar", "tied")
THROUGHPUT = {
    "TensorFlow 2.21": (0.983, 1.007, 0.974, 0.997, 0.986),
    "JAX 0.10.2": (0.963, 0.985, 0.988, 0.958, 1.141),
    "torch 2.13 (1 thread)": (0.973, 0.978, 1.020, 0.967, 0.959),
}


def _history(path):
    with open(path) as f:
        record = json.load(f)
    epochs = [e["epoch"] for e in record["history"]]
    return epochs, [e["valid_perplexity"] for e in record["history"]]


def _curves(ax, runs, max_epoch=None):
    for label, path, style in runs:
        epochs, ppl = _history(path)
        if max_epoch is not None:
            kept = [(e, p) for e, p in zip(epochs, ppl) if e <= max_epoch]
            epochs, ppl = [e for e, _ in kept], [p for _, p in kept]
        ax.plot(epochs, ppl, style, label=label, markersize=4)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation perplexity (PTB)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()


def _curve_figure(path, title, runs, max_epoch=None):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _curves(ax, runs, max_epoch=max_epoch)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_init_finding(path):
    _curve_figure(path, "awd-lstm-cpu: the papers' initialization vs Keras defaults", [
        ("PyTorch reference (paper init)", os.path.join(H100, "cpu-reference.json"), "k-o"),
        ("keras_rnnreg, JAX, paper init", os.path.join(H100, "cpu-keras-jax.json"), "C0-o"),
        ("keras_rnnreg, torch, paper init", os.path.join(H100, "cpu-keras-torch.json"), "C2-s"),
        ("keras_rnnreg, TensorFlow (CPU), paper init",
         os.path.join(RESULTS, "cpu-keras-tensorflow-2026-11-22.json"), "C4-^"),
        ("keras_rnnreg, JAX, Keras default init",
         os.path.join(H100, "cpu-keras-jax-kerasinit.json"), "C3--o"),
    ], max_epoch=10)


def plot_paper_size(path):
    _curve_figure(path, "awd-lstm (24M parameters) on an H100, paper initialization", [
        ("PyTorch reference", os.path.join(H100, "paper-reference.json"), "k-o"),
        ("keras_rnnreg, JAX", os.path.join(H100, "paper-keras-jax.json"), "C0-o"),
        ("keras_rnnreg, torch", os.path.join(H100, "paper-keras-torch.json"), "C2-s"),
    ])


def plot_throughput(path):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    width = 0.26
    for i, (backend, ratios) in enumerate(THROUGHPUT.items()):
        xs = [j + (i - 1) * width for j in range(len(THROUGHPUT_VARIANTS))]
        ax.bar(xs, ratios, width, label=backend)
    ax.axhline(1.0, color="k", linewidth=0.8)
    ax.axhline(0.97, color="C3", linewidth=0.8, linestyle="--", label="target 0.97")
    ax.set_xticks(range(len(THROUGHPUT_VARIANTS)))
    ax.set_xticklabels(["+ " + v for v in THROUGHPUT_VARIANTS], rotation=15)
    ax.set_ylim(0.85, 1.2)
    ax.set_ylabel("tokens/s relative to plain LSTM LM")
    ax.set_title("Cumulative regularizers, CPU, 2026-11-22 (quiet runs)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "img"))
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    plot_init_finding(os.path.join(args.output, "init-finding.png"))
    plot_paper_size(os.path.join(args.output, "paper-size.png"))
    plot_throughput(os.path.join(args.output, "throughput.png"))


if __name__ == "__main__":
    main()
