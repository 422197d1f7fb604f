"""The neural cache pointer: AWD-LSTM §7 over Grave et al.'s continuous cache."""

import math
import re
import types
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_rnnreg._keras_compat import nested_layers
from keras_rnnreg._stateful import rnn_states_set_aside
from keras_rnnreg._validation import (
    check_bool,
    check_non_negative,
    check_positive_int,
    check_probability,
)
from keras_rnnreg.data.bptt import BPTTSequence

#: The (window, λ, θ) tuned on the validation sets in AWD-LSTM §7 (Merity,
#: Keskar & Socher 2017), with which Table 1 reports 53.9 / 52.8 (PTB) and
#: Table 2 53.8 / 52.0 (WikiText-2) validation / test perplexity. Use as
#: `evaluate_with_cache(model, tokens, **NEURAL_CACHE_DEFAULTS["ptb"])`.
#: (The reference code's README runs PTB with a window of 500 instead.)
NEURAL_CACHE_DEFAULTS = types.MappingProxyType(
    {
        "ptb": types.MappingProxyType({"window": 2000, "lambd": 0.1, "theta": 1.0}),
        "wikitext2": types.MappingProxyType({"window": 3785, "lambd": 0.1279, "theta": 0.662}),
    }
)

_RECURRENT_NAME = re.compile(r"^(lstm|gru)_(\d+)$")

__all__ = [
    "NEURAL_CACHE_DEFAULTS",
    "CacheEvaluation",
    "CacheHistory",
    "NeuralCache",
    "cache_nll",
    "evaluate_with_cache",
]


class CacheHistory(NamedTuple):
    """What a neural cache carries from one call to the next.

    Attributes:
        hidden: Float32 `(batch, window, units)`, the last `window` hidden
            states of each stream, oldest first.
        targets: Int32 `(batch, window)`, the word that followed each of them.
        length: Python int, the number of steps each stream has seen so
            far, which may exceed `window`: slots of `hidden` and `targets`
            older than the stream's start are padding.
    """

    hidden: object
    targets: object
    length: object


class CacheEvaluation(NamedTuple):
    """What `evaluate_with_cache` returns.

    Attributes:
        perplexity: The model's perplexity alone, exp(loss).
        cache_perplexity: The perplexity with the cache, exp(cache_loss).
        loss: The model's mean negative log-likelihood per token (nats).
        cache_loss: The same with the cache.
        num_tokens: The number of tokens predicted (and averaged over).
    """

    perplexity: float
    cache_perplexity: float
    loss: float
    cache_loss: float
    num_tokens: int


def _check_parameters(window, theta, lambd, wait_for_full_window):
    window = check_positive_int("window", window)
    theta = check_non_negative("theta", theta)
    if theta == math.inf:
        raise ValueError(
            "Argument `theta` must be finite (it scales the cache's scores). "
            f"Received: theta={theta}"
        )
    lambd = check_probability("lambd", lambd)
    wait_for_full_window = check_bool("wait_for_full_window", wait_for_full_window)
    return window, theta, lambd, wait_for_full_window


def _static_shape(x):
    return tuple(None if d is None else int(d) for d in x.shape)


def _check_inputs(logits, hidden, targets):
    logits = ops.convert_to_tensor(logits)
    hidden = ops.convert_to_tensor(hidden)
    targets = ops.convert_to_tensor(targets)
    for name, x, rank, axes in (
        ("logits", logits, 3, "(batch, time, vocab)"),
        ("hidden", hidden, 3, "(batch, time, units)"),
        ("targets", targets, 2, "(batch, time)"),
    ):
        if len(x.shape) != rank:
            raise ValueError(
                f"Argument `{name}` must be {rank}D {axes}. Received: {name} with "
                f"shape {_static_shape(x)} ({len(x.shape)}D)"
            )
    if not keras.backend.standardize_dtype(targets.dtype).startswith(("int", "uint")):
        raise TypeError(
            "Argument `targets` must hold integer token ids. Received: targets "
            f"of dtype {keras.backend.standardize_dtype(targets.dtype)}"
        )
    shapes = {n: _static_shape(x) for n, x in (("logits", logits), ("hidden", hidden),
                                                  ("targets", targets))}
    for axis, axis_name in ((0, "batch"), (1, "time")):
        sizes = {n: s[axis] for n, s in shapes.items() if s[axis] is not None}
        if len(set(sizes.values())) > 1:
            raise ValueError(
                f"Arguments `logits`, `hidden` and `targets` must agree on the "
                f"{axis_name} axis (axis {axis}). Received shapes: "
                + ", ".join(f"{n}={s}" for n, s in shapes.items())
            )
    # float32 even under mixed precision: float16 scores θ h_t·h_i overflow.
    return ops.cast(logits, "float32"), ops.cast(hidden, "float32"), ops.cast(targets, "int32")


def _empty_history(batch_size, window, units):
    return CacheHistory(
        hidden=ops.zeros((batch_size, window, units), "float32"),
        targets=ops.zeros((batch_size, window), "int32"),
        length=0,
    )


def _check_history(history, batch_size, window, units):
    if history is None:
        return _empty_history(batch_size, window, units)
    if not isinstance(history, tuple) or len(history) != 3:
        raise TypeError(
            "Argument `history` must be None (an empty cache) or the "
            "CacheHistory returned by the previous call. Received: history of "
            f"type {type(history).__name__}"
        )
    hidden, targets, length = history
    expected = {"hidden": (batch_size, window, units), "targets": (batch_size, window)}
    for name, x in (("hidden", hidden), ("targets", targets)):
        shape = _static_shape(ops.convert_to_tensor(x))
        if len(shape) != len(expected[name]) or any(
            s is not None and e is not None and s != e for s, e in zip(shape, expected[name])
        ):
            raise ValueError(
                f"Argument `history` does not fit this call: history.{name} has "
                f"shape {shape}, but window={window} and these inputs need "
                f"{expected[name]} (batch, window{', units' if name == 'hidden' else ''}). "
                "Keep `window` and the batch fixed along a stream, or start "
                "over with history=None."
            )
    if isinstance(length, np.integer):
        length = int(length)
    length = check_positive_int("history.length", length, minimum=0)
    return CacheHistory(ops.cast(hidden, "float32"), ops.cast(targets, "int32"), length)


def _window_masks(steps, window, seen, wait_for_full_window):
    """Which memory slots each step reads, and which steps read any.

    Built in NumPy from Python ints: on JAX every eager op compiles once per
    shape, and these masks would add a dozen ops to each new segment length.
    """
    # Memory = the history's `window` slots, then this call's steps: step t
    # is slot window + t and reads the slots [t, t + window) before it.
    slot = np.arange(window + steps)[None, :]
    step = np.arange(steps)[:, None]
    offset = slot - step
    # Slots from before the stream's first step are padding, never candidates.
    in_window = (offset >= 0) & (offset < window) & (slot >= window - seen)
    earlier = np.arange(steps) + seen
    use_cache = earlier > window if wait_for_full_window else earlier >= 1
    return in_window[None], use_cache[None]


def _cache_nll(logits, hidden, targets, history, window, theta, lambd, wait_for_full_window):
    """`cache_nll` after validation; also returns the model's own NLL."""
    steps = ops.shape(logits)[1]
    log_p_model = ops.take_along_axis(
        ops.log_softmax(logits, axis=-1), ops.expand_dims(targets, -1), axis=-1
    )[..., 0]

    # The cache is the `window` (h_i, x_{i+1}) pairs before each step, so step
    # t of this call reads memory positions [t, t + window) of the history
    # followed by this call's own steps; position window + t is step t itself.
    memory_h = ops.concatenate([history.hidden, hidden], axis=1)
    memory_y = ops.concatenate([history.targets, targets], axis=1)
    new_history = CacheHistory(
        memory_h[:, steps:], memory_y[:, steps:], history.length + steps
    )
    if lambd == 0.0:
        return -log_p_model, -log_p_model, new_history

    in_window, use_cache = _window_masks(
        steps, window, history.length, wait_for_full_window
    )
    in_window = ops.convert_to_tensor(in_window)
    use_cache = ops.convert_to_tensor(use_cache)

    scores = theta * ops.einsum("btu,bsu->bts", hidden, memory_h)
    scores = ops.where(in_window, scores, float("-inf"))
    top = ops.max(scores, axis=-1, keepdims=True)
    top = ops.where(ops.isfinite(top), top, ops.zeros_like(top))
    weights = ops.exp(scores - top)  # exactly 0 outside the window
    matches = ops.equal(ops.expand_dims(memory_y, 1), ops.expand_dims(targets, -1))
    hits = ops.sum(ops.where(matches, weights, ops.zeros_like(weights)), axis=-1)
    # p_cache(y_t) = Σ_{i: x_{i+1} = y_t} softmax_i(θ h_t·h_i); -inf if y_t
    # is not in the window. NaN where the window is empty, which `use_cache`
    # masks out below.
    log_p_cache = ops.log(hits) - ops.log(ops.sum(weights, axis=-1))
    log_1m = math.log1p(-lambd) if lambd < 1.0 else -math.inf
    # logaddexp is exact when one side is -inf (λ = 1, or a word absent from
    # the cache) and gives -inf, not NaN, when both are.
    mixed = ops.logaddexp(log_1m + log_p_model, math.log(lambd) + log_p_cache)
    log_p = ops.where(use_cache, mixed, log_p_model)
    return -log_p, -log_p_model, new_history


def cache_nll(
    logits, hidden, targets, history, window, theta, lambd, wait_for_full_window=False
):
    """Per-token negative log-likelihoods with the neural cache pointer.

    The continuous cache (Grave, Joulin & Usunier 2016, Eq. 2-3; AWD-LSTM,
    Merity, Keskar & Socher 2017, §7) keeps, for each stream, the last
    `window` hidden states h_i of the last recurrent layer with the word
    x_{i+1} that followed each, and turns them into a distribution over words
    at step t:

        p_cache(w | h_t) ∝ Σ_{i in window, x_{i+1} = w} exp(θ h_t · h_i)
        p(w | h_t) = (1 - λ) p_model(w | h_t) + λ p_cache(w | h_t)

    Nothing is trained: the cache is added to a trained model at evaluation.
    Only the targets' probabilities are formed, so the cost is
    O(batch · time · (window + time) · units), not a vocabulary-sized scatter.

    Semantics (those of `pointer.py` in the AWD-LSTM reference code,
    salesforce/awd-lstm-lm, where they apply):

    - Step t's own pair (h_t, x_{t+1}) is not in its cache: the window is the
      `window` steps before t, a sliding window; step t then enters the
      caches of the steps after it.
    - Each batch row is its own stream with its own cache.
    - A step with an empty cache (a stream's first step) uses the model's
      distribution alone, p = p_model, not (1 - λ) p_model, as the reference
      does wherever its cache is off.
    - A partly filled cache (fewer than `window` earlier steps) is used as
      is, which is Grave et al.'s cache. The reference instead switches the
      cache on only at steps with more than `window` earlier steps (and, an
      off-by-one there, not on the first step of each later BPTT segment);
      `wait_for_full_window=True` reproduces the former.
    - The scores are raw dot products θ h_t · h_i (the released reference
      and Grave et al.; a pre-release commit of the reference used cosines).

    Splitting a stream over several calls, passing each call's returned
    history to the next, gives the same values as one call over the whole
    stream (`evaluate_with_cache` relies on it to walk BPTT windows).

    Args:
        logits: Float `(batch, time, vocab)`, the model's next-word logits.
        hidden: Float `(batch, time, units)`, the last recurrent layer's
            output at the same steps (before output dropout).
        targets: Int `(batch, time)`, the next word at each step, ids in
            `[0, vocab)`.
        history: None at the start of the streams, else the `CacheHistory`
            the previous call returned.
        window: Int >= 1, the number of earlier steps the cache holds.
        theta: Float >= 0, θ, the flatness of the cache distribution (0 is
            uniform over the window).
        lambd: Float in [0, 1], λ, the weight of the cache in the mixture;
            0 gives the model's own NLL exactly.
        wait_for_full_window: Bool; True leaves the cache off until a stream
            has seen more than `window` steps, as the reference does.

    Returns:
        A tuple `(nll, history)`: float32 `(batch, time)` values
        -log p(targets), and the `CacheHistory` to pass to the next call.

    Example:

    >>> history = None
    >>> for logits, hidden, targets in segments:   # consecutive, per stream
    ...     nll, history = cache_nll(logits, hidden, targets, history,
    ...                              window=2000, theta=1.0, lambd=0.1)
    """
    window, theta, lambd, wait_for_full_window = _check_parameters(
        window, theta, lambd, wait_for_full_window
    )
    logits, hidden, targets = _check_inputs(logits, hidden, targets)
    batch_size, _, units = ops.shape(hidden)
    history = _check_history(history, batch_size, window, units)
    nll, _, history = _cache_nll(
        logits, hidden, targets, history, window, theta, lambd, wait_for_full_window
    )
    return nll, history


class NeuralCache:
    """A neural cache pointer that remembers its streams between calls.

    The stateful form of `cache_nll` (AWD-LSTM, Merity, Keskar & Socher
    2017, §7; Grave et al. 2016): each call scores the next segment of the
    streams and appends it to the cache; `reset()` starts new streams. See
    `cache_nll` for the formula and the semantics.

    Args:
        window: Int >= 1, the number of earlier steps the cache holds.
        theta: Float >= 0, θ, the flatness of the cache distribution.
        lambd: Float in [0, 1], λ, the weight of the cache in the mixture.
        wait_for_full_window: Bool; True leaves the cache off until a stream
            has seen more than `window` steps, as the reference code does.

    Attributes:
        history: The `CacheHistory` carried to the next call (None when empty).

    Example:

    >>> cache = NeuralCache(**NEURAL_CACHE_DEFAULTS["ptb"])
    >>> for logits, hidden, targets in segments:
    ...     nll = cache(logits, hidden, targets)      # (batch, time)
    >>> cache.reset()
    """

    def __init__(self, window, theta, lambd, wait_for_full_window=False):
        (self.window, self.theta, self.lambd, self.wait_for_full_window) = _check_parameters(
            window, theta, lambd, wait_for_full_window
        )
        self.history = None

    def reset(self):
        """Empties the cache, for new streams."""
        self.history = None

    def __call__(self, logits, hidden, targets):
        """The cache-mixed NLL `(batch, time)` of the streams' next segment."""
        nll, self.history = cache_nll(
            logits, hidden, targets, self.history,
            self.window, self.theta, self.lambd, self.wait_for_full_window,
        )
        return nll

    def __repr__(self):
        return (
            f"NeuralCache(window={self.window}, theta={self.theta}, "
            f"lambd={self.lambd}, wait_for_full_window={self.wait_for_full_window})"
        )


def _find_hidden_layer(model, hidden_layer):
    if hidden_layer is None:
        found = [
            (int(match.group(2)), layer)
            for layer in model.layers
            if (match := _RECURRENT_NAME.match(layer.name))
        ]
        if not found:
            raise ValueError(
                "Could not find the last recurrent layer: `model` has no layer "
                "named 'lstm_<k>' or 'gru_<k>' as `language_model` names them. "
                "Pass its name as `hidden_layer`. Received layers: "
                f"{[layer.name for layer in model.layers]}"
            )
        return max(found, key=lambda pair: pair[0])[1]
    if isinstance(hidden_layer, keras.layers.Layer):
        return hidden_layer
    if isinstance(hidden_layer, str):
        try:
            return model.get_layer(hidden_layer)
        except ValueError:
            raise ValueError(
                f"Argument `hidden_layer` must name a layer of `model`. Received: "
                f"hidden_layer={hidden_layer!r}; the layers are "
                f"{[layer.name for layer in model.layers]}"
            ) from None
    raise TypeError(
        "Argument `hidden_layer` must be None, a layer name or a keras Layer. "
        f"Received: hidden_layer={hidden_layer!r} of type {type(hidden_layer).__name__}"
    )


def _check_model(model, batch_size):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model (e.g. from "
            "`keras_rnnreg.models.language_model`). Received: model of type "
            f"{type(model).__name__}"
        )
    recurrent = [
        layer for layer in nested_layers(model)
        if hasattr(layer, "stateful") and hasattr(layer, "reset_state")
    ]
    stateless = [layer.name for layer in recurrent if not layer.stateful]
    if not recurrent or stateless:
        raise ValueError(
            "evaluate_with_cache carries the recurrent state from one BPTT "
            "window to the next, which needs stateful recurrent layers. "
            f"Received a model whose layers {stateless or 'are not recurrent'} "
            "are not stateful. Build an evaluation copy with "
            "`language_model(..., stateful=True, batch_size=B)` and copy the "
            "weights with `set_weights`."
        )
    model_batch = model.inputs[0].shape[0]
    if batch_size is None:
        if model_batch is None:
            raise ValueError(
                "Argument `batch_size` is needed: `model` does not fix its batch "
                "size. Received: batch_size=None"
            )
        return model_batch
    batch_size = check_positive_int("batch_size", batch_size)
    if model_batch is not None and batch_size != model_batch:
        raise ValueError(
            f"Argument `batch_size` must match the stateful model's batch size "
            f"{model_batch}, one state per stream. Received: batch_size={batch_size}. "
            "For another batch size, build a copy with `language_model(..., "
            "batch_size=...)` and copy the weights with `set_weights`."
        )
    return batch_size


def evaluate_with_cache(
    model,
    tokens,
    *,
    window,
    theta,
    lambd,
    batch_size=None,
    bptt=70,
    hidden_layer=None,
    wait_for_full_window=False,
):
    """Perplexity of a language model on a token stream, without and with the cache.

    The neural cache pointer of AWD-LSTM §7 (Merity, Keskar & Socher 2017;
    Grave et al. 2016's continuous cache): at evaluation the model's
    distribution is mixed with a cache distribution over the words that
    followed the last `window` hidden states, p = (1 - λ) p_model + λ
    p_cache (see `cache_nll` for the formula and its semantics). With
    (window, λ, θ) = (2000, 0.1, 1.0) on PTB it takes AWD-LSTM from 60.0 /
    57.3 to 53.9 / 52.8 validation / test perplexity (Table 1); see
    `NEURAL_CACHE_DEFAULTS`.

    The stream is cut into `batch_size` contiguous rows (`batchify`) and read
    in windows of `bptt` steps with the recurrent state carried across them,
    as `BPTTSequence(..., variable_length=False)` serves them. A sub-model
    returning the last recurrent layer's output (before output dropout) and
    the logits is run on each window (`predict_on_batch`, so dropout is off),
    and each row keeps its own cache across windows: the result does not
    depend on `bptt`. The states are zeroed first and restored afterwards, so
    this can run in the middle of training.

    The reference code evaluates the cache with batch size 1, one stream.
    With batch_size > 1 the rows are independent streams: each row's first
    steps have an empty or short cache and its state starts from zero, so
    the numbers differ slightly from batch size 1 (more rows, more
    difference). Pass batch_size=1 (with a model built for it) to match.

    Args:
        model: A stateful language model from
            `keras_rnnreg.models.language_model` (or any keras.Model mapping
            int tokens `(batch, time)` to logits `(batch, time, vocab)` whose
            recurrent layers are all stateful).
        tokens: 1D array-like of token ids in `[0, vocab)`, one stream (e.g.
            the validation split).
        window: Int >= 1, the number of earlier steps each cache holds.
        theta: Float >= 0, θ, the flatness of the cache distribution.
        lambd: Float in [0, 1], λ, the weight of the cache in the mixture.
        batch_size: Int >= 1, the number of parallel streams; None (the
            default) takes the model's fixed batch size, which a stateful
            model has and which must equal it.
        bptt: Int >= 1, the steps per window (70). It changes memory and
            speed, not the result.
        hidden_layer: None, or the layer (or its name) whose output is
            h_t. None takes the last of the layers named "lstm_<k>" /
            "gru_<k>", as `language_model` names them.
        wait_for_full_window: Bool; True leaves the cache off until a stream
            has seen more than `window` steps, as the reference code does.

    Returns:
        A `CacheEvaluation(perplexity, cache_perplexity, loss, cache_loss,
        num_tokens)`: perplexities without and with the cache, the mean
        NLLs (nats per token) and the number of tokens predicted,
        `batch_size * (len(tokens) // batch_size - 1)`.

    Example:

    ```python
    model = get_preset("awd-lstm").build(10000, stateful=True, batch_size=1)
    model.set_weights(trained.get_weights())
    result = evaluate_with_cache(model, valid_ids, **NEURAL_CACHE_DEFAULTS["ptb"])
    result.perplexity, result.cache_perplexity
    ```
    """
    cache = NeuralCache(window, theta, lambd, wait_for_full_window)
    bptt = check_positive_int("bptt", bptt)
    batch_size = _check_model(model, batch_size)
    layer = _find_hidden_layer(model, hidden_layer)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    stepper = keras.Model(inputs, [layer.output, model.outputs[0]], name="cache_stepper")
    vocab_size = stepper.outputs[1].shape[-1]

    sequence = BPTTSequence(tokens, batch_size, bptt, variable_length=False)
    if vocab_size is not None and sequence.rows.max() >= vocab_size:
        raise ValueError(
            f"Argument `tokens` must hold ids in [0, {vocab_size}), the model's "
            f"vocabulary. Received: ids up to {int(sequence.rows.max())}"
        )

    # Sums in float64 on the host: a split has up to millions of tokens.
    total, total_model, count = 0.0, 0.0, 0
    history = None
    with rnn_states_set_aside(model):
        for step_inputs, targets in sequence:
            hidden, logits = stepper.predict_on_batch(step_inputs)
            logits, hidden, targets = _check_inputs(logits, hidden, targets)
            if history is None:
                history = _empty_history(batch_size, cache.window, ops.shape(hidden)[-1])
            nll, nll_model, history = _cache_nll(
                logits, hidden, targets, history,
                cache.window, cache.theta, cache.lambd, cache.wait_for_full_window,
            )
            total += float(np.sum(ops.convert_to_numpy(nll), dtype="float64"))
            total_model += float(np.sum(ops.convert_to_numpy(nll_model), dtype="float64"))
            count += int(np.prod(targets.shape))
    loss, cache_loss = total_model / count, total / count
    return CacheEvaluation(
        # np.exp: inf rather than OverflowError for a hopeless λ = 1 cache.
        perplexity=float(np.exp(loss)),
        cache_perplexity=float(np.exp(cache_loss)),
        loss=loss,
        cache_loss=cache_loss,
        num_tokens=count,
    )
