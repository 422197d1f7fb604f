"""The AWD-LSTM ablation (issue #8 §4, AWD-LSTM Table 4) on the embedded
synthetic corpus, where the best perplexity (the oracle) is known and the
model overfits within the run, the regime in which regularizers pay.

    KERAS_BACKEND=tensorflow python benchmarks/ablation_synthetic.py --epochs 8

Each variant is the `keras-rnnreg train` default configuration (awd-lstm-cpu's
recipe at the synthetic corpus's size) with one regularizer removed; all
share the seed. Prints per-epoch validation perplexity, then a Markdown
table of each variant's best and final validation perplexity and test
perplexity beside the oracle.
"""

import argparse
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reproduce import VARIANTS as PTB_VARIANTS  # noqa: E402  the PTB ablation's variants

#: The PTB ablation's variants, plus a model with every regularizer off.
VARIANTS = {
    **PTB_VARIANTS,
    "none": {"weight_dropout": 0.0, "alpha": 0.0, "beta": 0.0, "embedding_dropout": 0.0,
             "input_dropout": 0.0, "hidden_dropout": 0.0, "output_dropout": 0.0},
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the demo's")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=1111)
    args = parser.parse_args(argv)

    import keras

    from keras_rnnreg.app.training import SYNTHETIC_DEFAULT, evaluate_perplexity, resolve_preset
    from keras_rnnreg.datasets import make_synthetic_corpus

    corpus = make_synthetic_corpus()
    oracle_valid = math.exp(corpus.oracle_cross_entropy["valid"])
    oracle_test = corpus.oracle_perplexity
    epochs = args.epochs or SYNTHETIC_DEFAULT["epochs"]
    print(f"# synthetic corpus {corpus.config}; oracle valid {oracle_valid:.2f}, test "
          f"{oracle_test:.2f}; {keras.backend.backend()} backend; {epochs} epochs", flush=True)
    rows = []
    for name in args.variants:
        config = {"preset": SYNTHETIC_DEFAULT["preset"],
                  "overrides": {**SYNTHETIC_DEFAULT["overrides"], **VARIANTS[name]},
                  "seed": args.seed}
        preset = resolve_preset(config)
        keras.utils.set_random_seed(args.seed)
        model = preset.build(len(corpus.vocab))
        preset.compile(model)
        train, valid, test = preset.sequences(corpus.train, corpus.valid, corpus.test)
        start = time.perf_counter()
        history = model.fit(train, validation_data=valid, epochs=epochs, verbose=0,
                            callbacks=preset.callbacks(train)).history
        curve = history["val_perplexity"]
        test_ppl = evaluate_perplexity(model, test)
        print(f"{name}: valid " + " ".join(f"{v:.2f}" for v in curve)
              + f"; test {test_ppl:.2f}; {time.perf_counter() - start:.0f} s", flush=True)
        rows.append((name, min(curve), curve.index(min(curve)) + 1, curve[-1], test_ppl))
    print()
    print("| variant | best valid ppl (epoch) | final valid ppl | test ppl | test / oracle |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, best, at, final, test_ppl in rows:
        print(f"| {name} | {best:.2f} ({at}) | {final:.2f} | {test_ppl:.2f} | "
              f"{test_ppl / oracle_test:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
