"""The run's perplexity plot (matplotlib, the `plot` extra)."""

import csv
import warnings


def history_figure(history_path, oracle_perplexity=None, title=None):
    """A matplotlib `Figure` of the run's train and validation perplexity per
    epoch (log scale), a dashed line at NT-ASGD's trigger, a dotted one at
    the oracle. Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib import pyplot, ticker

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
    # Perplexities as plain numbers (200, 300, ...), not matplotlib's default
    # 2×10², on the log axis's own ticks: the decades, and the multiples
    # between them over spans up to two decades (some) or half a decade (all).
    axes.yaxis.set_major_formatter(ticker.LogFormatter(labelOnlyBase=False))
    axes.yaxis.set_minor_formatter(
        ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    axes.set_xlabel("epoch")
    axes.set_ylabel("perplexity")
    if title:
        axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    return figure


def plot_history(history_path, image_path, oracle_perplexity=None, title=None):
    """`history_figure` saved to `image_path`. Returns the image path, or
    None (with a warning) when matplotlib is not installed."""
    try:
        figure = history_figure(history_path, oracle_perplexity, title)
    except ImportError as error:
        if (getattr(error, "name", None) or "").split(".")[0] != "matplotlib":
            raise
        warnings.warn('No plot: matplotlib is missing (pip install "keras-rnnreg[plot]").',
                      stacklevel=2)
        return None
    from matplotlib import pyplot

    figure.savefig(image_path, dpi=100)
    pyplot.close(figure)
    return image_path
