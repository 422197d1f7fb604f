"""`keras-rnnreg tune`: a keras-tuner search around a preset, whose best
configuration becomes a preset file for `keras-rnnreg train --preset-file`."""

import json
import os

from keras_rnnreg.app.data import load_dataset

DEFAULT_MAX_TRIALS = 4
TUNERS = {"random": "RandomSearch", "bayesian": "BayesianOptimization", "hyperband": "Hyperband"}


def run_search(args, dataset_spec, flag_overrides=None):
    import keras_tuner

    from keras_rnnreg.app import training
    from keras_rnnreg.tuner import LanguageModelHyperModel

    corpus, _ = load_dataset(dataset_spec)
    if args.preset:
        preset, overrides = args.preset, {}
    elif dataset_spec["name"] == "synthetic":
        preset = training.SYNTHETIC_DEFAULT["preset"]
        overrides = dict(training.SYNTHETIC_DEFAULT["overrides"])
    else:
        preset, overrides = training.DEFAULT_PRESET, {}
    overrides.update(flag_overrides or {})
    max_trials = args.max_trials
    if args.tuner == "hyperband":
        if max_trials is not None:
            raise ValueError("--max-trials sizes a random or bayesian search; hyperband "
                             "runs the trials its --epochs (max_epochs) imply. Received: "
                             f"--max-trials {max_trials} --tuner hyperband")
    elif max_trials is None:
        max_trials = DEFAULT_MAX_TRIALS
    if (max_trials is not None and max_trials < 1) or args.epochs < 1:
        raise ValueError("--max-trials and --epochs must be >= 1. Received: "
                         f"--max-trials {max_trials} --epochs {args.epochs}")
    hypermodel = LanguageModelHyperModel(len(corpus.vocab), preset=preset, **overrides)
    train, valid = hypermodel.sequences(corpus.train, corpus.valid)
    kind = getattr(keras_tuner, TUNERS[args.tuner])
    common = dict(hypermodel=hypermodel, objective=hypermodel.objective,
                  directory=args.output, project_name="search", overwrite=True)
    if args.tuner == "hyperband":
        tuner = kind(max_epochs=args.epochs, **common)
    else:
        tuner = kind(max_trials=max_trials, **common)
    search = {} if args.tuner == "hyperband" else {"epochs": args.epochs}
    tuner.search(train, validation_data=valid, verbose=0, **search)
    best = tuner.get_best_hyperparameters(1)[0]
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
                                         "best_val_perplexity": tuner.oracle.get_best_trials(1)[0].score}}
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "best_preset.json")
    with open(path, "w") as file:
        json.dump(record, file, indent=1)
    return path
