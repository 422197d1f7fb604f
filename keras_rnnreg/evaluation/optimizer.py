"""Krause et al.'s dynamic-evaluation update rule as a Keras optimizer."""

import math

import keras
from keras import ops

from keras_rnnreg._keras_compat import optimizer_trainable_variables, optimizer_variable_index
from keras_rnnreg._validation import check_non_negative, check_probability


def _check_finite(name, value, positive=False):
    value = check_non_negative(name, value)
    if value == math.inf or (positive and value == 0.0):
        raise ValueError(
            f"Argument `{name}` must be {'> 0' if positive else '>= 0'} and finite. "
            f"Received: {name}={value}"
        )
    return value


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class DynamicEvaluationOptimizer(keras.optimizers.Optimizer):
    """The update of dynamic evaluation: a normalized step and a decay back.

    Dynamic evaluation (Krause, Kahembwe, Murray & Renals 2018, *Dynamic
    Evaluation of Neural Sequence Models*, §5) adapts a trained model to the
    text it is scoring: after each segment s_i has been scored, one step on
    the gradient ∇L(s_i) of the segment's mean negative log-likelihood moves
    the weights θ, and a decay pulls them back towards the trained weights
    θ_g, so that the model remembers recent text and forgets it again:

        θ ← θ − η ∇L(s_i) / (RMS + ε) + λ r ⊙ (θ_g − θ)

    RMS is each weight's root-mean-square gradient on the training data,
    gathered once before evaluation (`set_statistics`): weights whose
    gradients are small in training take larger normalized steps (the
    paper's RMSprop-derived rule, with training-set statistics in place of a
    running average). The decay rate of each weight is its RMS relative to
    the average RMS,

        r = min(RMS / mean(RMS), 1 / λ),

    so that weights that move more in training also decay faster; the clip
    at 1/λ keeps λ r ≤ 1, a step that never overshoots θ_g. mean(RMS) is the
    mean over the weight tensors of each tensor's mean RMS, as in the
    authors' code (github.com/benkrause/dynamic-evaluation, `gradstat`).

    Without statistics (`set_statistics` never called) the rule is plain SGD
    with the same decay, the paper's "SGD + global prior" (§5.1):
    θ ← θ − η ∇L(s_i) + λ (θ_g − θ).

    θ_g is the value each variable has when the optimizer is built. The
    update uses no gradient history, so it is a Keras optimizer with three
    slots per variable (θ_g, 1 / (RMS + ε) and r); `evaluate_dynamic` drives
    it. Weight decay, clipping and EMA are not part of the rule: leave them
    off.

    Args:
        learning_rate: Float >= 0, η. With training statistics Krause et
            al.'s PTB value is 5e-5 (`DYNAMIC_EVALUATION_DEFAULTS`); plain
            SGD steps are unnormalized and need a larger one.
        decay: Float in [0, 1], λ, the pull towards the trained weights per
            step (PTB: 2e-3).
        epsilon: Float > 0, ε, added to the RMS (PTB: 2e-5).
        name: Optional name.
        **kwargs: Other `keras.optimizers.Optimizer` arguments.

    Example:

    ```python
    optimizer = DynamicEvaluationOptimizer(learning_rate=5e-5, decay=2e-3)
    optimizer.build(model.trainable_variables)      # θ_g = the weights now
    optimizer.set_statistics(rms)                   # one array per variable
    optimizer.apply(gradients, model.trainable_variables)  # after each segment
    ```
    """

    def __init__(self, learning_rate=5e-5, decay=2e-3, epsilon=2e-5,
                 name="dynamic_evaluation", **kwargs):
        learning_rate = _check_finite("learning_rate", learning_rate)
        decay = check_probability("decay", decay)
        epsilon = _check_finite("epsilon", epsilon, positive=True)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.decay = decay
        self.epsilon = epsilon
        self.has_statistics = False

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._references = []
        self._gradient_scales = []
        self._decay_rates = []
        for variable in variables:
            reference = self.add_variable_from_reference(variable, name="reference")
            reference.assign(ops.copy(variable))  # its own buffer: JAX donates both
            self._references.append(reference)
            self._gradient_scales.append(
                self.add_variable_from_reference(variable, "gradient_scale", "ones")
            )
            # λ r, the fraction of the way back to θ_g each step goes.
            self._decay_rates.append(self.add_variable_from_reference(
                variable, "decay_rate", keras.initializers.Constant(self.decay)
            ))

    def set_statistics(self, rms):
        """Sets each weight's training-data RMS gradient (Krause et al. §5.2).

        Args:
            rms: One array per variable the optimizer was built with, in the
                same order and shapes: sqrt of the mean over training batches
                of the squared gradient of each batch's mean loss (see
                `keras_rnnreg.evaluation.gradient_rms`).
        """
        if not self.built:
            raise ValueError(
                "Call `build(variables)` before `set_statistics`: the statistics "
                "are one array per variable."
            )
        rms = list(rms)
        if len(rms) != len(self._references):
            raise ValueError(
                f"Argument `rms` must hold one array per variable "
                f"({len(self._references)}). Received: {len(rms)} arrays"
            )
        rms = [ops.cast(ops.convert_to_tensor(value), "float32") for value in rms]
        for index, (value, reference) in enumerate(zip(rms, self._references)):
            if tuple(value.shape) != tuple(reference.shape):
                raise ValueError(
                    f"Argument `rms[{index}]` must have the shape of variable "
                    f"{optimizer_trainable_variables(self)[index].path!r}, "
                    f"{tuple(reference.shape)}. Received: shape {tuple(value.shape)}"
                )
            smallest = float(ops.min(value)) if ops.size(value) else 0.0
            if not smallest >= 0.0 or not math.isfinite(float(ops.max(value))):
                raise ValueError(
                    f"Argument `rms[{index}]` must hold finite values >= 0 (root "
                    f"mean squares). Received: values from {smallest} to "
                    f"{float(ops.max(value))}"
                )
        # The authors' normalizer: the mean over tensors of each tensor's mean,
        # not over all weights (a big embedding would otherwise dominate).
        mean_rms = sum(float(ops.mean(value)) for value in rms) / len(rms)
        if not mean_rms > 0.0:
            raise ValueError(
                "Argument `rms` is zero everywhere: the gradients gathered on "
                "the training data were all zero, so no weight has a decay rate."
            )
        limit = 1.0 / self.decay if self.decay > 0 else math.inf
        for value, scale, rate in zip(rms, self._gradient_scales, self._decay_rates):
            scale.assign(ops.cast(1.0 / (value + self.epsilon), scale.dtype))
            rate.assign(ops.cast(self.decay * ops.minimum(value / mean_rms, limit), rate.dtype))
        self.has_statistics = True

    def update_step(self, gradient, variable, learning_rate):
        index = optimizer_variable_index(self, variable)
        reference = self._references[index]
        rate, scale = self._decay_rates[index], self._gradient_scales[index]
        gradient = ops.cast(gradient, variable.dtype)
        # Every weight moves at every step, so this, not the segment's
        # gradient, is most of a step's cost: XLA fuses it into one pass,
        # torch's eager ops would make each product a pass of its own.
        if keras.backend.backend() == "torch":
            self.assign(variable, _torch_update(variable, reference, rate, scale, gradient,
                                                learning_rate))
            return
        learning_rate = ops.cast(learning_rate, variable.dtype)
        pull = rate * (reference - variable)
        self.assign(variable, variable + pull - learning_rate * gradient * scale)

    def get_config(self):
        config = super().get_config()
        config.update({"decay": self.decay, "epsilon": self.epsilon})
        return config


def _torch_update(variable, reference, rate, scale, gradient, learning_rate):
    """θ + λr (θ_g − θ) − η g s in two passes: a lerp and an in-place addcmul."""
    import torch

    with torch.no_grad():
        new = torch.lerp(variable.value, reference.value, rate.value)
        return new.addcmul_(gradient, scale.value, value=-float(learning_rate))
