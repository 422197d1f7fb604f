"""The run's perplexity plot (matplotlib, the `app` extra)."""

import csv
import warnings


def plot_history(history_path, image_path, oracle_perplexity=None, title=None):
    """Train and validation perplexity per epoch (log scale), a dashed line
    at NT-ASGD's trigger, a dotted one at the oracle. Returns the image path,
    or None (with a warning) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        from matplotlib import pyplot
    except ImportError:
        warnings.warn('No plot: matplotlib is missing (pip install "keras-rnnreg[app]").',
                      stacklevel=2)
        return None
    with open(history_path, newline="") as file:
        rows = list(csv.DictReader(file))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    for key, label in (("perplexity", "train (dropout on)"), ("val_perplexity", "valid")):
        if rows and key in rows[0]:
            axes.plot(epochs, [float(r[key]) for r in rows], marker="o", label=label)
    trigger = next((int(r["epoch"]) + 1 for r in rows if float(r.get("averaging_start", -1)) >= 0), None)
    if trigger is not None:
        axes.axvline(trigger, linestyle="--", color="grey", label=f"NT-ASGD averaging (epoch {trigger})")
    if oracle_perplexity:
        axes.axhline(oracle_perplexity, linestyle=":", color="black",
                     label=f"oracle {oracle_perplexity:.2f}")
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("perplexity")
    if title:
        axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(image_path, dpi=100)
    pyplot.close(figure)
    return image_path
