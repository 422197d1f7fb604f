"""`LanguageModelHyperModel`: a KerasTuner search space over every
regularizer of a language-model preset, centred on the preset's values."""

import math

import keras_tuner

from keras_rnnreg._validation import check_non_negative, check_positive_int, check_rate
from keras_rnnreg.data import BPTTSequence
from keras_rnnreg.models import get_preset, resolve_arguments
from keras_rnnreg.models.presets import Preset
from keras_rnnreg.noise import _REGISTRY, DISTRIBUTIONS
from keras_rnnreg.optimizers import GradientNoise

#: The value of the `noise` hyperparameter that turns Noisin off (the
#: builder's `noise=None`; KerasTuner's choices cannot hold None).
NOISE_OFF = "off"

#: The dropout rates, each tuned in a window around the preset's rate.
DROPOUT_RATES = (
    "embedding_dropout",
    "input_dropout",
    "hidden_dropout",
    "output_dropout",
    "weight_dropout",
)

#: Upper ends of the AR and TAR ranges when the preset has none: twice
#: AWD-LSTM's α = 2 and β = 1 (Merity, Keskar & Socher 2017, §5).
AR_TAR_FALLBACK_HIGH = {"alpha": 4.0, "beta": 2.0}

#: Var(ε) the Noisin levels are centred on when the preset has no Noisin:
#: that of noisin-medium-dropout's Bernoulli γ = 0.8, the paper's setting
#: for noise added to dropout (Dieng et al. 2018, Table 3).
DEFAULT_NOISE_VARIANCE = 0.25

#: γ of the gradient noise, Neelakantan et al. (2015)'s annealing exponent.
GRADIENT_NOISE_GAMMA = 0.55

#: Range of lr·√η, the standard deviation the gradient noise initially adds
#: to each weight's step, from which the η range is derived (see
#: `LanguageModelHyperModel`).
GRADIENT_NOISE_STEP_RANGE = (1e-4, 1e-2)

#: Upper end of the number of softmaxes mixed when the preset has one: the
#: MoS code's default `n_experts` (Yang et al. 2018 use 15 on PTB).
NUM_EXPERTS_FALLBACK_HIGH = 10

#: Learning rates are searched in [lr / factor, lr · factor], log-sampled.
LEARNING_RATE_FACTOR = 3.0


def _significant(value, digits=3):
    """`value` rounded to `digits` significant digits, for readable defaults."""
    return float(f"{value:.{digits}g}")


def _window(value, width, floor, ceiling):
    """[value - width, value + width] clipped to [floor, ceiling], widened
    to hold `value`; the ends rounded so that 0.1 + 0.2 prints as 0.3."""
    low = round(max(floor, value - width), 10)
    high = round(min(ceiling, value + width), 10)
    return min(low, value), max(high, value)


def _size_grid(value):
    """`(low, high, step)` of the sizes searched around `value`: about
    [value/2, 2·value] in steps of 8 through `value` (multiples of 8 where it
    is one: 16, 24, ..., 64 around 32, never 33), finer below 16."""
    step = 8 if value >= 16 else max(1, value // 2)
    low = value - step * ((value - max(1, value // 2)) // step)
    return low, value + step * (value // step), step


def _noise_variance(distribution, level):
    record = _REGISTRY[distribution]
    return record.variance(level, dict(record.shape_defaults))


def _level_with_variance(distribution, variance):
    """The γ of `distribution` whose scaled noise ε has Var(ε) = `variance`.

    Noisin's paper found the variance of the noise to be the only property
    that matters, so every distribution's range is centred on the same
    variance. Var(ε) is monotone in γ for every distribution (Table 2), so
    a bisection on log γ over the domain finds it, whichever the direction.
    """
    record = _REGISTRY[distribution]
    low, high = max(record.low, 1e-9), min(record.high, 1e9)
    increasing = _noise_variance(distribution, high) > _noise_variance(distribution, low)
    for _ in range(200):
        middle = math.sqrt(low * high)
        if (_noise_variance(distribution, middle) < variance) == increasing:
            low = middle
        else:
            high = middle
    return _significant(math.sqrt(low * high))


def _declared(hp, name):
    """Whether `hp` already holds an entry called `name`, under any condition.

    KerasTuner matches an existing entry by name and conditions; a user's
    unconditional `hp.Fixed("noise_level_gaussian", ...)` would not match
    the conditional entry declared here, which would then be added beside
    it and sampled over it. Any entry of that name therefore wins.
    """
    return any(entry.name == name for entry in hp.space)


def _entry(hp, name):
    return next(entry for entry in reversed(hp.space) if entry.name == name)


def _possible_values(entry):
    """The values an Int, Choice or Fixed entry can take."""
    if hasattr(entry, "values"):
        return list(entry.values)
    if hasattr(entry, "min_value"):
        return list(range(entry.min_value, entry.max_value + 1, entry.step or 1))
    return [entry.value]


class LanguageModelHyperModel(keras_tuner.HyperModel):
    """A KerasTuner search space over every regularizer of a preset.

    Builds, compiles and trains the language models of a
    `keras_rnnreg.models` preset (`Preset.build`, `Preset.compile`,
    `Preset.callbacks`) with hyperparameters drawn around the preset's own
    values. The objective is the validation perplexity,
    `LanguageModelHyperModel.objective`
    (`keras_tuner.Objective("val_perplexity", "min")`), which the tuner must
    be given. Every search space entry is named after the `language_model`
    argument or recipe field it sets; v is the preset's value (after
    `overrides`), w is `rate_width` and c is `max_rate`:

    | name | kind | range | default |
    | --- | --- | --- | --- |
    | `learning_rate` | Float, log | [v/3, 3v] (the paper's units) | v |
    | `hidden_size` | Int, steps of 8 through v (finer below 16) | about [v/2, 2v] | v |
    | `{embedding,input,hidden,output}_dropout` | Float | [max(0, v−w), min(c, v+w)] | v |
    | `weight_dropout` | Float | as the rates | v |
    | `alpha`, `beta` (AR, TAR) | Float | [0, 2v]; [0, 4] and [0, 2] if v = 0 | v |
    | `num_experts` (softmaxes mixed) | Int | [1, 2v]; [1, 10] if v = 1 | v |
    | `latent_dropout`, only while `num_experts` > 1 | Float | as the rates | v |
    | `noise` | Choice | "off" and every Noisin distribution | the preset's, else "off" |
    | `noise_level_<distribution>` | Float, only while `noise` is it | see below | see below |
    | `gradient_noise` | Boolean | False, True | False |
    | `gradient_noise_eta` | Float, log, only with `gradient_noise` | see below | see below |
    | `gradient_noise_gamma` | Fixed, only with `gradient_noise` | 0.55 | 0.55 |

    Every range contains the preset's value and every default is it.
    Noisin: each distribution's γ is centred on the value giving Var(ε) of
    the preset's noise (`DEFAULT_NOISE_VARIANCE` without Noisin), Noisin
    having found the variance to be what matters; Bernoulli's keep
    probability is searched in [max(g−w, g/2), min(1, g+w)] around that
    centre g, the others' γ in [g/3, 3g], log-sampled. Weight drop is off
    while Noisin is on (Noisin layers have none). Gradient noise wraps the
    recipe's optimizer in `keras_rnnreg.optimizers.GradientNoise`; η is
    searched so that lr·√η, the noise's standard deviation on each weight's
    first step, spans [1e-4, 1e-2] for the preset's Keras learning rate lr
    (the paper's η of 0.01 to 1 go with Adam-like steps and would swamp
    these recipes' SGD steps). `hidden_size` sets every recurrent layer but
    the last of a tied model, which keeps the embedding size (or, with a
    mixture of softmaxes, the preset's last size); a per-layer list is
    scaled in proportion to its first entry. `num_experts` > 1 makes the
    output a `MixtureOfSoftmaxes` (each trial then costs more: K
    projections onto the vocabulary). docs/tuner.md gives the reasons and
    examples.

    Fixing and overriding, with KerasTuner's own mechanisms: an entry
    declared in the `hyperparameters` given to the tuner replaces the one
    above, whatever its conditions (`hp.Fixed("noise", "off")`,
    `hp.Fixed("gradient_noise", False)`, `hp.Float("learning_rate", 10,
    40)`, `hp.Choice("noise", ["off", "gaussian"])`); with
    `tune_new_entries=False` every undeclared entry keeps its default, i.e.
    the preset's value. Arguments the space does not tune (embedding size,
    number of layers, cell, dropout type, batch size, BPTT length, ...)
    are set with `overrides`.

    Training (`fit`): the tuner's `search(train, validation_data=valid,
    epochs=...)` takes the training and validation `BPTTSequence`s (see
    `sequences`), or the two token-id streams, which are then cut with the
    preset's recipe. The recipe's callbacks (`BPTTCallback`, the learning
    rate schedule, NT-ASGD) run before KerasTuner's; `epochs` and
    `initial_epoch` (which Hyperband sets) are passed on to `model.fit`.

    Args:
        vocab_size: Int >= 2, the number of word types.
        preset: A preset name (`keras_rnnreg.models.list_presets()`) or a
            `Preset`; its model and recipe are the centre of the space.
        rate_width: Float >= 0, w, the half-width of the dropout windows
            (and of Bernoulli's keep probability). Default 0.2.
        max_rate: Float in [0, 1), c, the highest dropout rate searched.
            Default 0.9.
        name: Optional name of the hypermodel.
        tunable: Bool, as for `keras_tuner.HyperModel`.
        **overrides: Recipe fields or `language_model` arguments changed
            before the space is derived (`Preset.replace`): they set the
            untuned arguments and move the centre of tuned ones.

    Attributes:
        preset: The `Preset` (with `overrides` applied).
        vocab_size: The vocabulary size.
        objective: `keras_tuner.Objective("val_perplexity", "min")`.

    Example:

    ```python
    import keras_tuner
    from keras_rnnreg.tuner import LanguageModelHyperModel

    hypermodel = LanguageModelHyperModel(10000, preset="awd-lstm-cpu")
    hp = keras_tuner.HyperParameters()
    hp.Fixed("noise", "off")  # no Noisin in this search
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective=hypermodel.objective, max_trials=20,
        hyperparameters=hp, directory="runs", project_name="awd")
    train, valid = hypermodel.sequences(train_ids, valid_ids)
    tuner.search(train, validation_data=valid, epochs=5)
    best = tuner.get_best_models(1)[0]
    ```
    """

    objective = keras_tuner.Objective("val_perplexity", direction="min")

    def __init__(
        self,
        vocab_size,
        preset="awd-lstm-cpu",
        rate_width=0.2,
        max_rate=0.9,
        name=None,
        tunable=True,
        **overrides,
    ):
        super().__init__(name=name, tunable=tunable)
        self.vocab_size = check_positive_int("vocab_size", vocab_size, minimum=2)
        if isinstance(preset, str):
            preset = get_preset(preset)
        elif not isinstance(preset, Preset):
            raise TypeError(
                "Argument `preset` must be a preset name or a "
                "keras_rnnreg.models.Preset. Received: "
                f"preset={preset!r} of type {type(preset).__name__}"
            )
        self.preset = preset.replace(**overrides) if overrides else preset
        self.rate_width = check_non_negative("rate_width", rate_width)
        self.max_rate = check_rate("max_rate", max_rate)
        # Validated once here, so a bad override fails now, not in trial 1.
        self._arguments = resolve_arguments(**self.preset.arguments())

    # ------------------------------------------------------------ the space
    def _rate_range(self, value):
        return _window(value, self.rate_width, 0.0, self.max_rate)

    def _hidden_centre(self):
        hidden = self._arguments["hidden_size"]
        return hidden[0] if isinstance(hidden, (list, tuple)) else hidden

    def _noise_levels(self):
        """{distribution: (low, high, sampling, default)} of Noisin's γ."""
        preset_noise = self._arguments["noise"]
        if preset_noise is None:
            variance = DEFAULT_NOISE_VARIANCE
        else:
            variance = _noise_variance(preset_noise, self._arguments["noise_level"])
        levels = {}
        for distribution in DISTRIBUTIONS:
            if distribution == preset_noise:
                centre = self._arguments["noise_level"]
            else:
                centre = _level_with_variance(distribution, variance)
            record = _REGISTRY[distribution]
            if record.high <= 1.0:  # a probability: a window, as for rates
                low, high = _window(centre, self.rate_width, centre / 2, record.high)
                levels[distribution] = (low, high, "linear", centre)
            else:  # a spread: a factor either side
                levels[distribution] = (centre / 3, centre * 3, "log", centre)
        return levels

    def _gradient_noise_etas(self):
        """(low, high, default) of η from `GRADIENT_NOISE_STEP_RANGE`."""
        rate = self.preset.keras_learning_rate
        low, high = GRADIENT_NOISE_STEP_RANGE
        middle = math.sqrt(low * high)
        return tuple(_significant((step / rate) ** 2) for step in (low, high, middle))

    def declare_hyperparameters(self, hp):
        """Declares the search space in `hp`, leaving alone any entry `hp`
        already has under the same name (the user's or an earlier call's).

        Args:
            hp: A `keras_tuner.HyperParameters`.
        """
        arguments = self._arguments

        def declare(kind, name, *args, **kwargs):
            if not _declared(hp, name):
                getattr(hp, kind)(name, *args, **kwargs)

        rate = self.preset.learning_rate
        declare(
            "Float", "learning_rate", rate / LEARNING_RATE_FACTOR,
            rate * LEARNING_RATE_FACTOR, sampling="log", default=rate,
        )
        hidden = self._hidden_centre()
        declare("Int", "hidden_size", *_size_grid(hidden), default=hidden)
        for name in DROPOUT_RATES[:-1]:
            declare("Float", name, *self._rate_range(arguments[name]), default=arguments[name])
        for name in ("alpha", "beta"):
            value = arguments[name]
            high = 2 * value if value > 0 else AR_TAR_FALLBACK_HIGH[name]
            declare("Float", name, 0.0, high, default=value)

        experts = arguments["num_experts"]
        high = 2 * experts if experts > 1 else NUM_EXPERTS_FALLBACK_HIGH
        declare("Int", "num_experts", 1, high, default=experts)
        # As for the noise levels: only where a mixture can be drawn.
        mixtures = [k for k in _possible_values(_entry(hp, "num_experts")) if k > 1]
        latent = arguments["latent_dropout"]
        if mixtures:
            declare("Float", "latent_dropout", *self._rate_range(latent), default=latent,
                    parent_name="num_experts", parent_values=mixtures)

        noise = arguments["noise"] or NOISE_OFF
        declare("Choice", "noise", [NOISE_OFF, *DISTRIBUTIONS], default=noise)
        # Only the distributions the `noise` entry can take (the user may
        # have narrowed it) get a level: a level whose condition can never
        # hold would make the tuner build a model just to look for it.
        entry = _entry(hp, "noise")
        choices = getattr(entry, "values", None) or [getattr(entry, "value", None)]
        # Weight drop composes with Noisin (AWD-LSTM + Noisin), so it is
        # tuned with or without noise.
        weight_dropout = arguments["weight_dropout"]
        declare("Float", "weight_dropout", *self._rate_range(weight_dropout),
                default=weight_dropout)
        for distribution, (low, high, sampling, default) in self._noise_levels().items():
            if distribution in choices:
                declare(
                    "Float", f"noise_level_{distribution}", low, high, sampling=sampling,
                    default=default, parent_name="noise", parent_values=[distribution],
                )

        declare("Boolean", "gradient_noise", default=False)
        low, high, default = self._gradient_noise_etas()
        declare(
            "Float", "gradient_noise_eta", low, high, sampling="log", default=default,
            parent_name="gradient_noise", parent_values=[True],
        )
        declare(
            "Fixed", "gradient_noise_gamma", GRADIENT_NOISE_GAMMA,
            parent_name="gradient_noise", parent_values=[True],
        )

    # ------------------------------------------------------------- a trial
    def _hidden_size(self, size, num_experts):
        hidden = self._arguments["hidden_size"]
        if not isinstance(hidden, (list, tuple)):
            return size
        sizes = [max(1, round(h * size / hidden[0])) for h in hidden]
        if self._arguments["tie_weights"]:
            # A single softmax ties the last layer to the (untuned) embedding
            # size; a mixture keeps the preset's last size (MoS: 620).
            mixture = num_experts > 1 and self._arguments["num_experts"] > 1
            sizes[-1] = hidden[-1] if mixture else self._arguments["embedding_size"]
        return sizes

    def trial_preset(self, hp):
        """The preset with the values of `hp` applied.

        Args:
            hp: A `keras_tuner.HyperParameters` holding the space's values
                (see `declare_hyperparameters`).

        Returns:
            A `Preset`: `preset.replace(...)` with the trial's learning rate
            and model arguments.
        """
        values = hp.values
        noise = values["noise"]
        experts = values["num_experts"]
        changes = {
            "learning_rate": values["learning_rate"],
            "hidden_size": self._hidden_size(values["hidden_size"], experts),
            "num_experts": experts,
            "alpha": values["alpha"],
            "beta": values["beta"],
            "weight_dropout": values["weight_dropout"],
            "noise": None if noise == NOISE_OFF else noise,
        }
        for name in DROPOUT_RATES[:-1]:
            changes[name] = values[name]
        if noise != NOISE_OFF:
            changes["noise_level"] = values[f"noise_level_{noise}"]
        if experts > 1 and "latent_dropout" in values:
            changes["latent_dropout"] = values["latent_dropout"]
        return self.preset.replace(**changes)

    def build(self, hp):
        """Builds and compiles the model of a trial.

        Declares the space in `hp` first (a no-op for the tuner's, which
        already holds it), so `build(keras_tuner.HyperParameters())` builds
        the preset's own model.

        Args:
            hp: A `keras_tuner.HyperParameters`.

        Returns:
            A `keras.Model` compiled with the recipe's optimizer (wrapped in
            `GradientNoise` if `gradient_noise` is on), `TokenCrossEntropy`
            and the `Perplexity` metric.
        """
        self.declare_hyperparameters(hp)
        preset = self.trial_preset(hp)
        model = preset.build(self.vocab_size)
        optimizer = preset.make_optimizer()
        if hp.values.get("gradient_noise"):
            optimizer = GradientNoise(
                optimizer,
                eta=hp.values["gradient_noise_eta"],
                gamma=hp.values["gradient_noise_gamma"],
                seed=preset.seed,
            )
        return preset.compile(model, optimizer=optimizer)

    def sequences(self, train_tokens, *evaluation_tokens):
        """The preset's `BPTTSequence`s for these token streams
        (`Preset.sequences`): pass them to the tuner's `search`."""
        return self.preset.sequences(train_tokens, *evaluation_tokens)

    def fit(self, hp, model, *args, **kwargs):
        """Trains a trial's model with the recipe's callbacks.

        Args:
            hp: The trial's `keras_tuner.HyperParameters`.
            model: The model `build` returned.
            *args: What the tuner's `search` was given positionally: `x`,
                the training `BPTTSequence` or a token-id stream cut with
                `sequences` (`x` may also come by name).
            **kwargs: What `search` was given by name, plus its `callbacks`
                (and `epochs`, `initial_epoch` from Hyperband):
                `validation_data`, the validation `BPTTSequence` or a
                token-id stream cut with `sequences`.

        Returns:
            The `History` of `model.fit`.
        """
        args = list(args)
        x = args.pop(0) if args else kwargs.pop("x", None)
        validation = kwargs.pop("validation_data", None)
        if validation is None:
            raise ValueError(
                "The objective is the validation perplexity (val_perplexity), "
                "so `search` needs `validation_data`: the validation "
                "BPTTSequence, or the validation token ids."
            )
        if not isinstance(x, BPTTSequence):
            x, validation = self.sequences(x, validation)
        # The trial's preset: a tuned learning rate also sets the schedule's.
        callbacks = self.trial_preset(hp).callbacks(x)
        callbacks += list(kwargs.pop("callbacks", None) or [])
        return model.fit(x, *args, validation_data=validation, callbacks=callbacks, **kwargs)
