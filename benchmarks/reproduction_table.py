"""Markdown tables from the JSON records of `reproduce.py --json`.

    python benchmarks/reproduction_table.py benchmarks/results/h100-2026-11-22

prints, per preset, validation perplexity per epoch of every run beside the
reference (full variant), each as a ratio to the reference at that epoch,
then the ablation table (each variant's last common epoch).
"""

import glob
import json
import os
import sys


def _load(directory):
    runs = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as f:
            record = json.load(f)
        runs[os.path.basename(path)[:-5]] = record
    return runs


def _label(record):
    if record["side"] == "reference":
        side = "reference (torch)"
    else:
        side = f"keras ({record['backend']})"
        if record["initialization"] != "paper":
            side += f", init {record['initialization']}"
    if record["variant"] != "full":
        side += f", {record['variant']}"
    return side


def _ppl(record, epoch):
    history = record["history"]
    return history[epoch - 1]["valid_perplexity"] if epoch <= len(history) else None


def main(directory):
    runs = _load(directory)
    for preset in sorted({r["preset"] for r in runs.values()}):
        group = {k: r for k, r in runs.items() if r["preset"] == preset}
        reference = next(r for r in group.values()
                         if r["side"] == "reference" and r["variant"] == "full")
        others = [r for r in group.values() if r is not reference and r["variant"] == "full"]
        others.sort(key=lambda r: (r["initialization"] != "paper", r["backend"]))
        epochs = max(len(r["history"]) for r in others)
        print(f"### {preset}: validation perplexity per epoch (ratio to the reference)\n")
        print("| epoch | reference (torch) | " + " | ".join(_label(r) for r in others) + " |")
        print("| ---: | ---: |" + " ---: |" * len(others))
        for epoch in range(1, epochs + 1):
            ref = _ppl(reference, epoch)
            cells = []
            for r in others:
                value = _ppl(r, epoch)
                cells.append("—" if value is None else f"{value:.1f} ({value / ref:.3f}×)")
            print(f"| {epoch} | {ref:.1f} | " + " | ".join(cells) + " |")
        rest = len(reference["history"]) - epochs
        if rest > 0:
            tail = ", ".join(f"{e}: {_ppl(reference, e):.1f}"
                             for e in range(epochs + 1, len(reference["history"]) + 1))
            print(f"\nReference, later epochs: {tail}.")
        ablations = [r for r in group.values() if r["variant"] != "full"]
        if ablations:
            print(f"\n### {preset}: ablations (validation perplexity; Δ vs the same side's full model)\n")
            print("| side | variant | epochs run | at epoch | valid ppl | full model, same epoch | Δ |")
            print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
            full = {(r["side"], r["backend"] if r["side"] == "keras" else None): r
                    for r in group.values()
                    if r["variant"] == "full" and r["initialization"] == "paper"}
            for r in sorted(ablations, key=lambda r: (r["side"], r["variant"])):
                base = full[(r["side"], r["backend"] if r["side"] == "keras" else None)]
                epoch = min(len(r["history"]), len(base["history"]))
                value, reference_value = _ppl(r, epoch), _ppl(base, epoch)
                print(f"| {_label(base).split(',')[0]} | {r['variant']} | {len(r['history'])} | "
                      f"{epoch} | {value:.1f} | {reference_value:.1f} | "
                      f"{(value / reference_value - 1) * 100:+.1f}% |")
        print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results")
