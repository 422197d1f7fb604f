"""Dynamic evaluation (Krause et al. 2018): adapt to the test text while scoring it."""

import types
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_rnnreg._keras_compat import nested_layers
from keras_rnnreg._stateful import reset_rnn_states, sync_backend_state
from keras_rnnreg._validation import check_positive_int
from keras_rnnreg.data.bptt import BPTTSequence
from keras_rnnreg.evaluation.optimizer import DynamicEvaluationOptimizer, _check_finite
from keras_rnnreg.losses import token_cross_entropy

#: Krause, Kahembwe, Murray & Renals (2018)'s settings for AWD-LSTM on PTB,
#: with which they report 51.6 / 51.1 validation / test perplexity (the
#: AWD-LSTM paper: 60.0 / 57.3 without). All are the defaults of the authors'
#: `dynamiceval.py`
#: (github.com/benkrause/dynamic-evaluation), which its README says are
#: tuned for AWD-LSTM on PTB: `--lr 0.00005` (η), `--lamb 0.002` (λ),
#: `--epsilon 0.00002` (ε), `--bptt 5` (the segment length, also used for
#: the statistics), `--batch_size 100` (the statistics' batch size, over the
#: whole training set), and evaluation with batch size 1 (one stream). They
#: are the paper's (lr 0.002, λ 0.02, ε 0.001) rescaled to the code's
#: equations (the README's `--oldhyper`). Use as
#: `evaluate_dynamic(model, tokens, training_tokens=train,
#: **DYNAMIC_EVALUATION_DEFAULTS["ptb"])`.
DYNAMIC_EVALUATION_DEFAULTS = types.MappingProxyType(
    {
        "ptb": types.MappingProxyType(
            {
                "learning_rate": 5e-5,
                "decay": 2e-3,
                "epsilon": 2e-5,
                "segment_length": 5,
                "batch_size": 1,
                "statistics_batch_size": 100,
            }
        ),
    }
)

# The static pass's window: any length gives the same perplexity (the state
# is carried); a long one is fast.
_STATIC_WINDOW = 70


class DynamicEvaluation(NamedTuple):
    """What `evaluate_dynamic` returns.

    Attributes:
        perplexity: The perplexity with dynamic evaluation, exp(loss).
        static_perplexity: The model's own perplexity on the same streams
            (weights fixed), exp(static_loss).
        loss: The mean negative log-likelihood per token (nats) with
            dynamic evaluation.
        static_loss: The same without.
        num_tokens: The number of tokens predicted (and averaged over).
        statistics_tokens: The number of training tokens the RMS statistics
            were gathered on; 0 without `training_tokens` (plain SGD).
    """

    perplexity: float
    static_perplexity: float
    loss: float
    static_loss: float
    num_tokens: int
    statistics_tokens: int


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model (e.g. from "
            "`keras_rnnreg.models.language_model`). Received: model of type "
            f"{type(model).__name__}"
        )
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise TypeError(
            "Argument `model` must be a functional (or Sequential) keras.Model with "
            "one input, the token ids, as `language_model` builds: dynamic "
            "evaluation works on a copy of it built for its own batch sizes. "
            f"Received: a {type(model).__name__} with "
            f"{'no known' if not inputs else len(inputs)} inputs"
        )
    recurrent = [
        layer for layer in nested_layers(model)
        if hasattr(layer, "stateful") and hasattr(layer, "reset_state")
    ]
    # A model without recurrent layers (a bigram model) has no state to carry.
    stateless = [layer.name for layer in recurrent if not layer.stateful]
    if stateless:
        raise ValueError(
            "evaluate_dynamic carries the recurrent state from one segment to "
            "the next, which needs stateful recurrent layers. Received a model "
            f"whose layers {stateless} are not stateful. Build one with "
            "`language_model(..., stateful=True, batch_size=B)` and copy the "
            "weights with `set_weights`."
        )


def _copy(model, batch_size):
    """`model` rebuilt for `batch_size` streams, with its weights and zero states."""
    sync_backend_state(model)
    spec = model.inputs[0]
    inputs = keras.Input(batch_shape=(batch_size, *spec.shape[1:]), dtype=spec.dtype)
    copy = keras.models.clone_model(model, input_tensors=inputs)
    copy.set_weights(model.get_weights())
    reset_rnn_states(copy)
    return copy


def _sequence(name, tokens, batch_size, length, vocab_size, batch_name="batch_size"):
    try:
        sequence = BPTTSequence(tokens, batch_size, length, variable_length=False)
    except (ValueError, TypeError) as error:
        # BPTTSequence's message, with this function's argument names.
        message = str(error).replace("`tokens`", f"`{name}`").replace(
            "batch_size=", f"{batch_name}=")
        raise type(error)(message) from None
    if vocab_size is not None and sequence.rows.max() >= vocab_size:
        raise ValueError(
            f"Argument `{name}` must hold ids in [0, {vocab_size}), the model's "
            f"vocabulary. Received: ids up to {int(sequence.rows.max())}"
        )
    return sequence


def _token_nll(logits, targets):
    # In float32 whatever the compute dtype, as the scores are summed over
    # the whole stream.
    return token_cross_entropy(targets, ops.cast(logits, "float32"))


class _Stepper:
    """Runs a model over consecutive segments, its states carried, with gradients.

    `squared_gradients` adds each segment's squared gradient to running sums;
    `adapt` scores a segment and then applies the optimizer's step. JAX runs
    a pure function of the variables' values (`stateless_call`, compiled);
    TensorFlow (compiled `tf.function`) and torch update the model's
    variables in place, as Keras's own trainers do on each backend: Keras's
    TensorFlow optimizer has no `stateless_apply`.
    """

    def __init__(self, model, optimizer=None):
        self.model = model
        self.optimizer = optimizer
        self.backend = keras.backend.backend()
        self._compiled = {}
        if self.backend == "jax":
            self.trainable = [v.value for v in model.trainable_variables]
            self.non_trainable = [v.value for v in model.non_trainable_variables]
            self.optimizer_values = (
                [v.value for v in optimizer.variables] if optimizer is not None else None
            )

    # ----------------------------------------------------------- gradients
    def _loss(self, logits, targets):
        nll = _token_nll(logits, targets)
        # The segment's mean loss, whose gradient the rule steps on.
        return ops.mean(nll), ops.sum(nll)

    def _jax_gradients(self, trainable, non_trainable, inputs, targets):
        import jax

        def loss(values):
            logits, new_non_trainable = self.model.stateless_call(
                values, non_trainable, inputs, training=False
            )
            mean, total = self._loss(logits, targets)
            return mean, (total, new_non_trainable)

        (_, (total, new_non_trainable)), gradients = jax.value_and_grad(loss, has_aux=True)(
            trainable
        )
        return total, gradients, new_non_trainable

    def _gradients(self, inputs, targets):
        """TensorFlow and torch: (sum of NLLs, gradients); the model's states advance."""
        variables = self.model.trainable_variables
        if self.backend == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                mean, total = self._loss(self.model(inputs, training=False), targets)
            # Dense: the rule moves every row of an embedding, seen or not.
            gradients = [tf.convert_to_tensor(g) for g in tape.gradient(mean, variables)]
            return total, gradients
        import torch

        mean, total = self._loss(self.model(inputs, training=False), targets)
        gradients = torch.autograd.grad(mean, [v.value for v in variables])
        return total.detach(), gradients

    # ----------------------------------------------------------- compiled steps
    def _compile(self, name, function, donate=()):
        if name not in self._compiled:
            if self.backend == "jax":
                import jax

                # Donated: the step writes its new values into the old
                # buffers instead of copying every weight and slot.
                function = jax.jit(function, donate_argnums=donate)
            elif self.backend == "tensorflow":
                import tensorflow as tf

                function = tf.function(function, reduce_retracing=True, autograph=False)
            self._compiled[name] = function
        return self._compiled[name]

    def squared_gradients(self, inputs, targets, sums):
        """`sums` plus the squared gradient of this segment's mean NLL."""
        inputs, targets = ops.convert_to_tensor(inputs), ops.convert_to_tensor(targets)
        if self.backend == "jax":
            def accumulate(trainable, non_trainable, sums, inputs, targets):
                _, gradients, non_trainable = self._jax_gradients(
                    trainable, non_trainable, inputs, targets
                )
                return non_trainable, [s + ops.square(g) for s, g in zip(sums, gradients)]

            self.non_trainable, sums = self._compile("accumulate", accumulate, (1, 2))(
                self.trainable, self.non_trainable, sums, inputs, targets
            )
            return sums

        if self.backend == "torch":
            import torch

            _, gradients = self._gradients(inputs, targets)
            with torch.no_grad():
                for s, g in zip(sums, gradients):
                    s.addcmul_(g, g)  # in place: no pass of its own for g²
            return sums

        def accumulate(sums, inputs, targets):
            _, gradients = self._gradients(inputs, targets)
            return [s + ops.square(g) for s, g in zip(sums, gradients)]

        return self._compile("accumulate", accumulate)(sums, inputs, targets)

    def adapt(self, inputs, targets):
        """The sum of the segment's NLLs under the current weights, then one update."""
        inputs, targets = ops.convert_to_tensor(inputs), ops.convert_to_tensor(targets)
        if self.backend == "jax":
            def step(trainable, non_trainable, optimizer_values, inputs, targets):
                total, gradients, non_trainable = self._jax_gradients(
                    trainable, non_trainable, inputs, targets
                )
                trainable, optimizer_values = self.optimizer.stateless_apply(
                    optimizer_values, gradients, trainable
                )
                return total, trainable, non_trainable, optimizer_values

            total, self.trainable, self.non_trainable, self.optimizer_values = self._compile(
                "adapt", step, (0, 1, 2)
            )(self.trainable, self.non_trainable, self.optimizer_values, inputs, targets)
            return total

        if self.backend == "torch":
            import torch

            total, gradients = self._gradients(inputs, targets)
            with torch.no_grad():
                self.optimizer.apply(gradients, self.model.trainable_variables)
            return total

        def step(inputs, targets):
            total, gradients = self._gradients(inputs, targets)
            self.optimizer.apply(gradients, self.model.trainable_variables)
            return total

        return self._compile("adapt", step)(inputs, targets)


def gradient_rms(model, tokens, *, segment_length=5, batch_size=100):
    """Each weight's root-mean-square gradient on training text (Krause et al. §5.2).

    The statistics of dynamic evaluation's normalized step: the stream is
    cut into `batch_size` rows and read in segments of `segment_length`
    steps with the recurrent state carried (no dropout: the model is called
    with `training=False`, as the authors' `gradstat` runs `model.eval()`),
    and for each weight

        RMS = sqrt( (1/N) Σ_k g_k² )

    over the N segments, g_k the gradient of segment k's mean negative
    log-likelihood. The authors read the whole PTB training set with
    batch size 100 and segments of 5.

    Args:
        model: A stateful language model (see `evaluate_dynamic`); it is not
            changed: the statistics are gathered on a copy built for
            `batch_size` streams.
        tokens: 1D array-like of token ids in `[0, vocab)`, the training text.
        segment_length: Int >= 1, the steps per segment (5).
        batch_size: Int >= 1, the number of rows (100).

    Returns:
        A list of float32 NumPy arrays, one per trainable variable of
        `model`, in `model.trainable_variables` order.

    Example:

    ```python
    rms = gradient_rms(model, corpus.train)
    ```
    """
    _check_model(model)
    segment_length = check_positive_int("segment_length", segment_length)
    batch_size = check_positive_int("batch_size", batch_size)
    vocab_size = model.outputs[0].shape[-1]
    sequence = _sequence("tokens", tokens, batch_size, segment_length, vocab_size)
    rms, _ = _gradient_rms(model, sequence)
    return [ops.convert_to_numpy(value) for value in rms]


def _gradient_rms(model, sequence):
    copy = _copy(model, sequence.batch_size)
    stepper = _Stepper(copy)
    sums = [ops.zeros(v.shape, "float32") for v in copy.trainable_variables]
    for inputs, targets in sequence:
        sums = stepper.squared_gradients(inputs, targets, sums)
    count = len(sequence)
    tokens = int(sum(sequence.lengths)) * sequence.batch_size
    del copy, stepper
    return [ops.sqrt(s / count) for s in sums], tokens


def _static_nll(model, tokens, batch_size):
    """The summed NLL and the count over `tokens`' streams, weights fixed."""
    sequence = BPTTSequence(tokens, batch_size, _STATIC_WINDOW, variable_length=False)
    total, count = 0.0, 0
    for inputs, targets in sequence:
        nll = _token_nll(model.predict_on_batch(inputs), ops.convert_to_tensor(targets))
        total += float(np.sum(ops.convert_to_numpy(nll), dtype="float64"))
        count += targets.size
    reset_rnn_states(model)
    return total, count


def evaluate_dynamic(
    model,
    tokens,
    *,
    learning_rate,
    decay,
    segment_length=5,
    batch_size=None,
    training_tokens=None,
    epsilon=2e-5,
    statistics_batch_size=100,
):
    """Perplexity of a language model on a token stream, without and with dynamic evaluation.

    Dynamic evaluation (Krause, Kahembwe, Murray & Renals 2018, *Dynamic
    Evaluation of Neural Sequence Models*) lets a trained model adapt to the
    text it is being evaluated on: the stream is read in segments s_1, s_2,
    ... of `segment_length` tokens, the state carried; each segment is
    scored with the current weights first, and only then the weights take
    one step on that segment's loss,

        θ ← θ − η ∇L(s_i) / (RMS + ε) + λ r ⊙ (θ_g − θ),
        r = min(RMS / mean(RMS), 1/λ),

    towards the words just seen, with a decay back towards the trained
    weights θ_g (`DynamicEvaluationOptimizer` holds the rule). RMS is each
    weight's root-mean-square gradient on `training_tokens`
    (`gradient_rms`); without training tokens the step is plain SGD with the
    same decay, θ ← θ − η ∇L(s_i) + λ (θ_g − θ). No segment is scored by
    weights that have seen it, so this is a proper (sequential) evaluation.
    With `DYNAMIC_EVALUATION_DEFAULTS["ptb"]` Krause et al. report 51.1
    test perplexity for AWD-LSTM on PTB (57.3 without, in the AWD-LSTM
    paper).

    Nothing of `model` changes: the work is done on copies built for
    `batch_size` (evaluation) and `statistics_batch_size` (statistics)
    streams, which start from zero states, are called with `training=False`
    (no dropout) and are discarded afterwards; `model`'s weights, recurrent
    states and compiled optimizer are left as they were. The static
    perplexity is measured on the same streams with the weights fixed.

    With batch_size > 1 the rows are independent streams that share one set
    of adapted weights (each update averages over the rows); Krause et al.
    evaluate one stream (batch_size=1, the defaults' value).

    Args:
        model: A stateful language model from
            `keras_rnnreg.models.language_model` (or any functional
            keras.Model with one input, int tokens `(batch, time)`, returning
            logits `(batch, time, vocab)`, whose recurrent layers, if any,
            are all stateful), e.g. a run's model as `keras-rnnreg train`
            saves it.
        tokens: 1D array-like of token ids in `[0, vocab)`, one stream (e.g.
            the test split).
        learning_rate: Float >= 0, η (PTB with statistics: 5e-5).
        decay: Float in [0, 1], λ (PTB: 2e-3).
        segment_length: Int >= 1, the tokens per segment, i.e. per update
            (5, the authors' `--bptt`).
        batch_size: None or int >= 1, the number of parallel streams of the
            evaluation. None takes the model's own fixed batch size.
        training_tokens: None, or 1D array-like of token ids, the training
            text the RMS statistics are gathered on (the whole PTB training
            split in the paper). None: plain SGD steps.
        epsilon: Float > 0, ε, added to the RMS (2e-5).
        statistics_batch_size: Int >= 1, the rows the statistics are
            gathered with (100), each read in segments of `segment_length`.

    Returns:
        A `DynamicEvaluation(perplexity, static_perplexity, loss,
        static_loss, num_tokens, statistics_tokens)`; `num_tokens` is
        `batch_size * (len(tokens) // batch_size - 1)`.

    Example:

    ```python
    result = evaluate_dynamic(model, corpus.test, training_tokens=corpus.train,
                              **DYNAMIC_EVALUATION_DEFAULTS["ptb"])
    result.static_perplexity, result.perplexity
    ```
    """
    _check_model(model)
    optimizer = DynamicEvaluationOptimizer(learning_rate, decay, epsilon)
    segment_length = check_positive_int("segment_length", segment_length)
    statistics_batch_size = check_positive_int("statistics_batch_size", statistics_batch_size)
    if batch_size is None:
        batch_size = model.inputs[0].shape[0]
        if batch_size is None:
            raise ValueError(
                "Argument `batch_size` is needed: `model` does not fix its batch "
                "size. Received: batch_size=None"
            )
    batch_size = check_positive_int("batch_size", batch_size)
    vocab_size = model.outputs[0].shape[-1]
    sequence = _sequence("tokens", tokens, batch_size, segment_length, vocab_size)
    training = None
    if training_tokens is not None:
        training = _sequence("training_tokens", training_tokens, statistics_batch_size,
                             segment_length, vocab_size, "statistics_batch_size")

    evaluator = _copy(model, batch_size)
    static_total, count = _static_nll(evaluator, sequence.rows.reshape(-1), batch_size)
    statistics_tokens = 0
    optimizer.build(evaluator.trainable_variables)
    if training is not None:
        rms, statistics_tokens = _gradient_rms(model, training)
        optimizer.set_statistics(rms)

    stepper = _Stepper(evaluator, optimizer)
    total = 0.0
    for inputs, targets in sequence:
        total += float(np.sum(ops.convert_to_numpy(stepper.adapt(inputs, targets)),
                              dtype="float64"))
    loss, static_loss = total / count, static_total / count
    with np.errstate(over="ignore"):  # inf, not a warning, for a diverging rate
        perplexity, static_perplexity = float(np.exp(loss)), float(np.exp(static_loss))
    return DynamicEvaluation(
        perplexity=perplexity,
        static_perplexity=static_perplexity,
        loss=loss,
        static_loss=static_loss,
        num_tokens=count,
        statistics_tokens=statistics_tokens,
    )
