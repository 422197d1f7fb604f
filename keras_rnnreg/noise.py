"""The noise of Noisin: eight distributions, rescaled as in the paper's Table 2.

Dieng, Ranganath, Altosaar & Blei (2018), *Noisin: Unbiased Regularization
for Recurrent Neural Networks*. Noisin multiplies (or adds) noise ε to the
hidden state of an RNN at every time step. For the noisy RNN to equal the
underlying RNN on average (the unbiasedness condition, Eq. 12) ε must have
mean 1 (multiplicative, Eq. 14) or mean 0 (additive, Eq. 13). Table 2 rescales
a raw draw η of each distribution to a zero-mean ε whose variance is set by
the spread γ (`noise_level`); η is what the table's first columns name:

    distribution  raw η                     scaled ε                                 Var(ε)
    gaussian      N(0, γ) (std γ)           η                                        γ²
    bernoulli     Bernoulli(γ) (keep prob.) η / γ              (mean 1, not 0)       (1-γ)/γ
    gamma         Gamma(shape α, scale γ)   (η - αγ) / √α                            γ²
    gumbel        Gumbel(0, γ)              √6 (η - δγ) / π,  δ = Euler's constant   γ²
    laplace       Laplace(0, γ)             η / √2                                   γ²
    logistic      Logistic(0, γ)            √3 η / π                                 γ²
    beta          Beta(α, γ)                (α+γ) √((α+γ+1)/α) (η - α/(α+γ))         γ
    chi_square    χ²(γ)                     (η - γ) / √2                             γ

The zero-mean ε is used as is for additive noise and as 1 + ε for
multiplicative noise; Bernoulli's η/γ already has mean 1 (multiplicative)
and becomes η/γ - 1 for additive noise. The two modes' ε differ by the
constant 1 only, so both have the variance of Table 2.

Everything is drawn with `keras.random`, so it runs on every backend, and
`seed` takes what `keras.random` takes: an int (the same values at every
call), a `keras.random.SeedGenerator` (fresh values at every call) or None.

Each row of the table is one `NoiseDistribution` record in `_REGISTRY`: its
raw draw, its scaling, its variance, the domain of γ and its shape
parameters. The argument checks, `noise_moments` and `sample_noise` read
only the records, so adding a distribution is adding one record.
"""

import dataclasses
import math
from typing import Callable, Optional

import keras
from keras import ops

from keras_rnnreg._validation import check_choice, check_real

MODES = ("multiplicative", "additive")

# The Euler-Mascheroni constant, Table 2's δ (printed there rounded to 0.5772;
# the full value keeps the Gumbel noise exactly zero-mean).
EULER_GAMMA = 0.5772156649015329


@dataclasses.dataclass(frozen=True)
class NoiseDistribution:
    """One noise distribution of Noisin: a row of Table 2 and the domain of γ.

    Everything `sample_noise`, `noise_moments` and the layers' argument
    checks know about a distribution is in its record, so adding a
    distribution is adding one record to `_REGISTRY`. The functions receive
    γ as a Python float and `params`, the shape parameters completed with
    their defaults, as a dict.

    Args:
        name: The `noise` argument that selects the distribution.
        draw: `draw(shape, gamma, params, seed, dtype)`, the raw draw η of
            Table 2's first column, made with `keras.random` in `dtype`.
        scale: `scale(eta, gamma, params, dtype)`, Table 2's rescaling of η
            shifted to mean 0: the ε of additive noise (multiplicative noise
            uses 1 + ε).
        variance: `variance(gamma, params)`, Var(ε) as a Python float
            (Table 2's last column).
        low: γ must be > `low`.
        high: γ must be <= `high`.
        domain: That domain as error messages print it.
        meaning: What γ is, for error messages.
        shape_defaults: `((name, default), ...)`, the shape parameters the
            distribution takes (each must be in (0, inf)) and their defaults.
        scale_mean_one: None, or `scale_mean_one(eta, gamma, params, dtype)`
            giving the multiplicative ε directly, for a distribution whose
            Table 2 form already has mean 1: adding 1 to the zero-mean ε
            would round a second time and differ from it in the last bit.

    Example:

    A uniform noise with standard deviation γ:

    ```python
    NoiseDistribution(
        "uniform",
        draw=lambda shape, gamma, params, seed, dtype: keras.random.uniform(
            shape, -math.sqrt(3.0) * gamma, math.sqrt(3.0) * gamma,
            dtype=dtype, seed=seed),
        scale=lambda eta, gamma, params, dtype: eta,
        variance=lambda gamma, params: gamma**2,
    )
    ```
    """

    name: str
    draw: Callable
    scale: Callable
    variance: Callable
    low: float = 0.0
    high: float = math.inf
    domain: str = "(0, inf)"
    meaning: str = "a spread"
    shape_defaults: tuple = ()
    scale_mean_one: Optional[Callable] = None


def _open_uniform(shape, seed, dtype):
    """Uniform on the open interval (0, 1), so that log(u) and log(1 - u) are finite."""
    tiny = 1e-30 if dtype == "float32" else 1e-300
    u = keras.random.uniform(shape, dtype=dtype, seed=seed)
    return ops.clip(u, tiny, 1.0 - 2.0**-24 if dtype == "float32" else 1.0 - 2.0**-53)


def _laplace(shape, gamma, params, seed, dtype):
    # The difference of two Exp(1) draws is Laplace(0, 1); one uniform call
    # draws both, so an int seed cannot give the two the same stream.
    u = _open_uniform((2,) + shape, seed, dtype)
    return gamma * (ops.log(u[0]) - ops.log(u[1]))


def _logistic(shape, gamma, params, seed, dtype):
    u = _open_uniform(shape, seed, dtype)
    return gamma * (ops.log(u) - ops.log1p(-u))


def _beta_scale(eta, gamma, params, dtype):
    alpha = params["alpha"]
    scale = (alpha + gamma) * math.sqrt((alpha + gamma + 1.0) / alpha)
    return scale * (eta - alpha / (alpha + gamma))


def _bernoulli_values(kept, dropped):
    """A scaling of Bernoulli's η: `kept(γ)` where η = 1, `dropped` where η = 0.

    The two values are computed in Python floats and rounded to the dtype
    once, so that 1/γ keeps every bit the dtype can hold.
    """
    return lambda eta, gamma, params, dtype: ops.where(
        eta, ops.cast(kept(gamma), dtype), ops.cast(dropped, dtype)
    )


def _gamma_is_std(gamma, params):
    return gamma**2


def _gamma_is_variance(gamma, params):
    return gamma


_REGISTRY = {
    record.name: record
    for record in (
        NoiseDistribution(
            "gaussian",
            draw=lambda shape, gamma, params, seed, dtype: keras.random.normal(
                shape, stddev=gamma, dtype=dtype, seed=seed
            ),
            scale=lambda eta, gamma, params, dtype: eta,
            variance=_gamma_is_std,
        ),
        NoiseDistribution(
            "bernoulli",
            # η = 1 (keep) with probability γ, as a bool.
            draw=lambda shape, gamma, params, seed, dtype: (
                keras.random.uniform(shape, dtype=dtype, seed=seed) < gamma
            ),
            scale=_bernoulli_values(lambda gamma: 1.0 / gamma - 1.0, -1.0),
            variance=lambda gamma, params: (1.0 - gamma) / gamma,
            high=1.0,
            domain="(0, 1]",
            meaning="a keep probability",
            # Table 2's η/γ itself: in float32, (1/γ - 1) + 1 is not 1/γ for
            # about one γ in eight (0.43, for one).
            scale_mean_one=_bernoulli_values(lambda gamma: 1.0 / gamma, 0.0),
        ),
        NoiseDistribution(
            "gamma",
            draw=lambda shape, gamma, params, seed, dtype: gamma * keras.random.gamma(
                shape, params["alpha"], dtype=dtype, seed=seed
            ),
            scale=lambda eta, gamma, params, dtype: (
                (eta - params["alpha"] * gamma) / math.sqrt(params["alpha"])
            ),
            variance=_gamma_is_std,
            # Shape 2 is the paper's Table 5 setting.
            shape_defaults=(("alpha", 2.0),),
        ),
        NoiseDistribution(
            "gumbel",
            draw=lambda shape, gamma, params, seed, dtype: (
                -gamma * ops.log(-ops.log(_open_uniform(shape, seed, dtype)))
            ),
            scale=lambda eta, gamma, params, dtype: (
                math.sqrt(6.0) * (eta - EULER_GAMMA * gamma) / math.pi
            ),
            variance=_gamma_is_std,
        ),
        NoiseDistribution(
            "laplace",
            draw=_laplace,
            scale=lambda eta, gamma, params, dtype: eta / math.sqrt(2.0),
            variance=_gamma_is_std,
        ),
        NoiseDistribution(
            "logistic",
            draw=_logistic,
            scale=lambda eta, gamma, params, dtype: math.sqrt(3.0) * eta / math.pi,
            variance=_gamma_is_std,
        ),
        NoiseDistribution(
            "beta",
            draw=lambda shape, gamma, params, seed, dtype: keras.random.beta(
                shape, params["alpha"], gamma, dtype=dtype, seed=seed
            ),
            scale=_beta_scale,
            variance=_gamma_is_variance,  # as printed in Table 2, not γ²
            # The paper gives no shape for Beta (see docs/noisin.md).
            shape_defaults=(("alpha", 1.0),),
        ),
        NoiseDistribution(
            "chi_square",
            # χ²(k) is Gamma(shape k/2, scale 2).
            draw=lambda shape, gamma, params, seed, dtype: 2.0 * keras.random.gamma(
                shape, gamma / 2.0, dtype=dtype, seed=seed
            ),
            scale=lambda eta, gamma, params, dtype: (eta - gamma) / math.sqrt(2.0),
            variance=_gamma_is_variance,  # as printed in Table 2, not γ²
        ),
    )
}

DISTRIBUTIONS = tuple(_REGISTRY)
# Every shape parameter a distribution takes, in order of first appearance.
SHAPE_PARAMETERS = tuple(
    dict.fromkeys(name for record in _REGISTRY.values() for name, _ in record.shape_defaults)
)


def _check_noise(distribution, noise_level, mode="multiplicative", **params):
    """Validates a Noisin noise specification.

    Returns `(distribution, noise_level, mode, params)` with `noise_level` a
    float and `params` completed with the distribution's defaults. Raises
    ValueError for an unknown distribution or mode (listing the valid ones),
    for a `noise_level` outside the distribution's domain (naming the
    distribution, the value and the domain), and for shape parameters the
    distribution does not take or outside (0, inf).
    """
    check_choice("noise", distribution, DISTRIBUTIONS)
    check_choice("mode", mode, MODES)
    noise_level = check_real("noise_level", noise_level)
    record = _REGISTRY[distribution]
    if not record.low < noise_level <= record.high:
        raise ValueError(
            f"noise_level={noise_level} is outside the domain of the {distribution} "
            f"noise: it is {record.meaning} and must be in {record.domain}."
        )
    defaults = dict(record.shape_defaults)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        takes = ", ".join(f"`{name}`" for name in defaults) or "no shape parameter"
        raise ValueError(
            f"The {distribution} noise takes {takes}. "
            f"Received unexpected keyword argument(s): {', '.join(unknown)}"
        )
    checked = {}
    for name, default in defaults.items():
        value = check_real(name, params.get(name, default))
        if not value > 0:
            raise ValueError(
                f"{name}={value} is outside the domain of the {distribution} noise's "
                f"shape parameter: it must be in (0, inf)."
            )
        checked[name] = value
    return distribution, noise_level, mode, checked


def noise_moments(distribution, noise_level, mode="multiplicative", **params):
    """E[ε] and Var(ε) of the scaled noise, Table 2's last two columns.

    Useful to compare spreads across distributions: the paper found that the
    variance is the only property of the noise that matters.

    Args:
        distribution: One of `DISTRIBUTIONS`.
        noise_level: γ, as for `sample_noise`.
        mode: "multiplicative" or "additive".
        **params: The distribution's shape parameter, as for `sample_noise`.

    Returns:
        A pair of Python floats `(mean, variance)`: the mean unbiasedness
        asks of the mode (1, Eq. 14, or 0, Eq. 13) and the variance of
        Table 2, the same for both modes.

    Example:

    >>> noise_moments("gaussian", 0.5, "additive")
    (0.0, 0.25)
    >>> noise_moments("chi_square", 0.5)  # γ is χ²'s variance
    (1.0, 0.5)
    """
    distribution, gamma, mode, params = _check_noise(
        distribution, noise_level, mode, **params
    )
    mean = 1.0 if mode == "multiplicative" else 0.0
    return mean, _REGISTRY[distribution].variance(gamma, params)


def sample_noise(
    distribution,
    shape,
    noise_level,
    mode="multiplicative",
    seed=None,
    dtype=None,
    **params,
):
    """Draws Noisin noise ε, scaled as in Table 2 and ready to apply.

    Args:
        distribution: One of "gaussian", "bernoulli", "gamma", "gumbel",
            "laplace", "logistic", "beta", "chi_square".
        shape: The shape of ε, e.g. `(batch, time, units)`.
        noise_level: γ, the spread: the standard deviation of ε for gaussian,
            gamma, gumbel, laplace and logistic noise, its variance for beta
            and chi_square noise, and the keep probability for bernoulli
            noise (Var(ε) = (1 - γ)/γ). Must be > 0; for bernoulli in (0, 1].
        mode: "multiplicative" (E[ε] = 1, apply as h * ε) or "additive"
            (E[ε] = 0, apply as h + ε).
        seed: An int, a `keras.random.SeedGenerator` or None, as in
            `keras.random`.
        dtype: Float dtype of the result (default `keras.config.floatx()`).
            16-bit dtypes are sampled in float32 and then cast.
        **params: The distribution's shape parameter: `alpha` for gamma
            (default 2, the paper's Table 5) and for beta (default 1).

    Returns:
        A tensor of shape `shape` with E[ε] = 1 (multiplicative) or 0
        (additive) and the variance of Table 2 (see `noise_moments`).

    Example:

    >>> eps = sample_noise("bernoulli", (20, 35, 200), 0.5, seed=1)
    >>> # eps is 0 or 2 everywhere: mean 1, variance 1.
    """
    distribution, noise_level, mode, params = _check_noise(
        distribution, noise_level, mode, **params
    )
    dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
    if not keras.backend.is_float_dtype(dtype):
        raise ValueError(f"Argument `dtype` must be a float dtype. Received: dtype={dtype}")
    sample_dtype = "float64" if dtype == "float64" else "float32"
    record = _REGISTRY[distribution]
    eps = _draw(record, tuple(shape), noise_level, mode, params, seed, sample_dtype)
    return ops.cast(eps, dtype) if dtype != sample_dtype else eps


def _draw(record, shape, gamma, mode, params, seed, dtype):
    """ε for an already validated specification, in `dtype`."""
    eta = record.draw(shape, gamma, params, seed, dtype)
    if mode == "additive":
        return record.scale(eta, gamma, params, dtype)
    if record.scale_mean_one is not None:
        return record.scale_mean_one(eta, gamma, params, dtype)
    return record.scale(eta, gamma, params, dtype) + 1.0
