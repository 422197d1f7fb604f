"""`keras-rnnreg tune`: a keras-tuner search around a preset, whose best
configuration becomes a preset file for `keras-rnnreg train --preset-file`.

The output directory holds the last search that finished (`search/`, in
keras-tuner's layout) and its best configuration (`best_preset.json`). A new
search runs in a staging directory beside them and replaces both only once
it has a best trial, so a search that fails or is stopped leaves the
previous result as it was.
"""

import json
import os
import shutil
import sys
import tempfile

from keras_rnnreg.app.data import load_dataset

DEFAULT_MAX_TRIALS = 4
TUNERS = {"random": "RandomSearch", "bayesian": "BayesianOptimization", "hyperband": "Hyperband"}
SEARCH_DIR = "search"
PRESET_FILE = "best_preset.json"


def search_size(tuner, max_trials, epochs):
    """The number of trials to give the tuner (None for hyperband, which
    sizes its own from `epochs`); ValueError for a size that would be
    ignored or is not positive."""
    if tuner == "hyperband":
        if max_trials is not None:
            raise ValueError("--max-trials sizes a random or bayesian search; hyperband "
                             "runs the trials its --epochs (max_epochs) imply. Received: "
                             f"--max-trials {max_trials} --tuner hyperband")
    elif max_trials is None:
        max_trials = DEFAULT_MAX_TRIALS
    if (max_trials is not None and max_trials < 1) or epochs < 1:
        raise ValueError("--max-trials and --epochs must be >= 1. Received: "
                         f"--max-trials {max_trials} --epochs {epochs}")
    return max_trials


def run_search(args, dataset_spec, flag_overrides=None):
    """Runs the search `args` describe; returns `(preset file path, the best
    trial's validation perplexity)`."""
    import keras_tuner

    from keras_rnnreg.app import training
    from keras_rnnreg.models import get_preset
    from keras_rnnreg.tuner import LanguageModelHyperModel

    max_trials = search_size(args.tuner, args.max_trials, args.epochs)
    if args.preset:
        preset, overrides = args.preset, {}
    elif dataset_spec["name"] == "synthetic":
        preset = training.SYNTHETIC_DEFAULT["preset"]
        overrides = dict(training.SYNTHETIC_DEFAULT["overrides"])
    else:
        preset, overrides = training.DEFAULT_PRESET, {}
    overrides.update(flag_overrides or {})
    training.drop_finetuning_without_nonmono(get_preset(preset), overrides)
    # The data and the configuration are checked before the output exists.
    corpus, _ = load_dataset(dataset_spec)
    hypermodel = LanguageModelHyperModel(len(corpus.vocab), preset=preset, **overrides)
    train, valid = hypermodel.sequences(corpus.train, corpus.valid)
    kind = getattr(keras_tuner, TUNERS[args.tuner])

    created = not os.path.isdir(args.output)
    os.makedirs(args.output, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".search-", dir=args.output)
    try:
        common = dict(hypermodel=hypermodel, objective=hypermodel.objective,
                      directory=staging, project_name=SEARCH_DIR, overwrite=True)
        if args.tuner == "hyperband":
            tuner = kind(max_epochs=args.epochs, **common)
        else:
            tuner = kind(max_trials=max_trials, **common)
        search = {} if args.tuner == "hyperband" else {"epochs": args.epochs}
        # keras-tuner's own display: each trial's values, its result and the
        # best so far; Keras's progress bar on a terminal, else a line per epoch.
        tuner.search(train, validation_data=valid, verbose=1 if sys.stdout.isatty() else 2,
                     **search)
        best_trials = tuner.oracle.get_best_trials(1)
        if not best_trials or best_trials[0].score is None:
            raise ValueError("No trial of the search finished; nothing is written (the "
                             f"previous result in {args.output!r}, if any, is kept).")
        best = best_trials[0].hyperparameters
        score = float(best_trials[0].score)
        trial_preset = hypermodel.trial_preset(best)
        changed = {k: v for k, v in trial_preset.model_arguments.items()
                   if hypermodel.preset.model_arguments.get(k) != v}
        changed = {k: (list(v) if isinstance(v, tuple) else v) for k, v in changed.items()}
        if trial_preset.learning_rate != hypermodel.preset.learning_rate:
            changed["learning_rate"] = trial_preset.learning_rate
        record = {"preset": preset, "overrides": {**overrides, **changed},
                  "epochs": None, "search": {"tuner": args.tuner, "max_trials": max_trials,
                                             "epochs_per_trial": args.epochs,
                                             "dataset": dataset_spec["name"],
                                             "best_val_perplexity": score}}
        with open(os.path.join(staging, PRESET_FILE), "w") as file:
            json.dump(record, file, indent=1)
        # The swap: the old search is moved into the staging directory (which
        # is then deleted), the new one and its preset file into place.
        final = os.path.join(args.output, SEARCH_DIR)
        if os.path.exists(final):
            os.replace(final, os.path.join(staging, "previous"))
        os.replace(os.path.join(staging, SEARCH_DIR), final)
        path = os.path.join(args.output, PRESET_FILE)
        os.replace(os.path.join(staging, PRESET_FILE), path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not os.listdir(args.output):
            os.rmdir(args.output)
    return path, score
