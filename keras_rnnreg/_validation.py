"""Argument checks shared by every public class, so errors read the same everywhere."""

import numbers


def _require_number(name, value, allowed, kind=numbers.Real):
    """TypeError unless `value` is a `kind` number (never a bool)."""
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(
            f"Argument `{name}` must be {allowed}. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )


def check_rate(name, value):
    """A dropout-style probability: a real number in [0, 1)."""
    _require_number(name, value, "a float in [0, 1)")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(
            f"Argument `{name}` must be in [0, 1): the fraction dropped, "
            f"where 1 would drop everything. Received: {name}={value}"
        )
    return float(value)


def check_non_negative(name, value):
    """A regularization coefficient: a real number >= 0."""
    _require_number(name, value, "a float >= 0")
    if not float(value) >= 0.0:  # also rejects NaN
        raise ValueError(
            f"Argument `{name}` must be >= 0. Received: {name}={value}"
        )
    return float(value)


def check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(
            f"Argument `{name}` must be a bool. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    return value


def check_seed(value):
    if value is not None:
        _require_number("seed", value, "an int or None", kind=int)
    return value


def check_rank(layer_name, argument, shape, rank):
    if shape is not None and len(shape) != rank:
        raise ValueError(
            f"{layer_name} expects a {rank}D input (batch, time, features) for "
            f"`{argument}`. Received: {argument} with shape {tuple(shape)} "
            f"({len(shape)}D)"
        )


def check_choice(name, value, choices):
    """One of a fixed set of names; the error lists the valid ones."""
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(choice) for choice in choices)
        raise ValueError(
            f"Argument `{name}` must be one of {valid}. Received: {name}={value!r}"
        )
    return value


def check_real(name, value):
    """A finite real number (not a bool), returned as a float."""
    _require_number(name, value, "a float")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"Argument `{name}` must be finite. Received: {name}={value}")
    return value


def check_positive_int(name, value, minimum=1):
    _require_number(name, value, f"an int >= {minimum}", kind=int)
    if value < minimum:
        raise ValueError(
            f"Argument `{name}` must be an int >= {minimum}. Received: {name}={value}"
        )
    return value


def check_probability(name, value):
    """A probability: a real number in [0, 1], both ends allowed."""
    _require_number(name, value, "a float in [0, 1]")
    if not 0.0 <= float(value) <= 1.0:  # also rejects NaN
        raise ValueError(
            f"Argument `{name}` must be a probability in [0, 1]. "
            f"Received: {name}={value}"
        )
    return float(value)


def check_int(name, value):
    """Any int (not a bool), e.g. a token id that may be negative."""
    _require_number(name, value, "an int", kind=int)
    return int(value)
