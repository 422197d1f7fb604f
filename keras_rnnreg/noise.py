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
"""

import math

import keras
from keras import ops

from keras_rnnreg._validation import check_choice, check_real

DISTRIBUTIONS = (
    "gaussian",
    "bernoulli",
    "gamma",
    "gumbel",
    "laplace",
    "logistic",
    "beta",
    "chi_square",
)
MODES = ("multiplicative", "additive")

# The Euler-Mascheroni constant, Table 2's δ (printed there rounded to 0.5772;
# the full value keeps the Gumbel noise exactly zero-mean).
EULER_GAMMA = 0.5772156649015329

# Shape parameters, with their defaults. Gamma's shape 2 is the paper's Table 5
# setting; the paper gives none for Beta (see docs/noisin.md).
_DEFAULT_PARAMS = {"gamma": {"alpha": 2.0}, "beta": {"alpha": 1.0}}
SHAPE_PARAMETERS = ("alpha",)  # every name used in _DEFAULT_PARAMS

# The domain of γ: low < γ <= high, written out, and what γ is.
_SPREAD_DOMAIN = {"bernoulli": (0.0, 1.0, "(0, 1]", "a keep probability")}
_DEFAULT_DOMAIN = (0.0, math.inf, "(0, inf)", "a spread")


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
    low, high, domain, meaning = _SPREAD_DOMAIN.get(distribution, _DEFAULT_DOMAIN)
    if not low < noise_level <= high:
        raise ValueError(
            f"noise_level={noise_level} is outside the domain of the {distribution} "
            f"noise: it is {meaning} and must be in {domain}."
        )
    defaults = _DEFAULT_PARAMS.get(distribution, {})
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

    Returns:
        A pair of Python floats `(mean, variance)`.
    """
    distribution, gamma, mode, params = _check_noise(
        distribution, noise_level, mode, **params
    )
    mean = 1.0 if mode == "multiplicative" else 0.0
    if distribution == "bernoulli":
        return mean, (1.0 - gamma) / gamma
    if distribution in ("beta", "chi_square"):
        return mean, gamma
    return mean, gamma**2


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
    eps = _draw(distribution, tuple(shape), noise_level, mode, params, seed, sample_dtype)
    return ops.cast(eps, dtype) if dtype != sample_dtype else eps


def _draw(distribution, shape, gamma, mode, params, seed, dtype):
    """ε for an already validated specification, in `dtype`."""
    if distribution == "bernoulli":
        keep = keras.random.uniform(shape, dtype=dtype, seed=seed) < gamma  # η
        if mode == "multiplicative":
            return ops.where(keep, ops.cast(1.0 / gamma, dtype), ops.cast(0.0, dtype))
        return ops.where(keep, ops.cast(1.0 / gamma - 1.0, dtype), ops.cast(-1.0, dtype))
    eps = _zero_mean_draw(distribution, shape, gamma, params, seed, dtype)
    return eps + 1.0 if mode == "multiplicative" else eps


def _zero_mean_draw(distribution, shape, gamma, params, seed, dtype):
    if distribution == "gaussian":
        return keras.random.normal(shape, stddev=gamma, dtype=dtype, seed=seed)
    if distribution == "gamma":
        alpha = params["alpha"]
        eta = gamma * keras.random.gamma(shape, alpha, dtype=dtype, seed=seed)
        return (eta - alpha * gamma) / math.sqrt(alpha)
    if distribution == "gumbel":
        u = _open_uniform(shape, seed, dtype)
        eta = -gamma * ops.log(-ops.log(u))
        return math.sqrt(6.0) * (eta - EULER_GAMMA * gamma) / math.pi
    if distribution == "laplace":
        # The difference of two Exp(1) draws is Laplace(0, 1); one uniform call
        # draws both, so an int seed cannot give the two the same stream.
        u = _open_uniform((2,) + shape, seed, dtype)
        eta = gamma * (ops.log(u[0]) - ops.log(u[1]))
        return eta / math.sqrt(2.0)
    if distribution == "logistic":
        u = _open_uniform(shape, seed, dtype)
        eta = gamma * (ops.log(u) - ops.log1p(-u))
        return math.sqrt(3.0) * eta / math.pi
    if distribution == "beta":
        alpha = params["alpha"]
        eta = keras.random.beta(shape, alpha, gamma, dtype=dtype, seed=seed)
        scale = (alpha + gamma) * math.sqrt((alpha + gamma + 1.0) / alpha)
        return scale * (eta - alpha / (alpha + gamma))
    if distribution == "chi_square":
        # χ²(k) is Gamma(shape k/2, scale 2).
        eta = 2.0 * keras.random.gamma(shape, gamma / 2.0, dtype=dtype, seed=seed)
        return (eta - gamma) / math.sqrt(2.0)
    raise AssertionError(distribution)  # _check_noise rejects other names


def _open_uniform(shape, seed, dtype):
    """Uniform on the open interval (0, 1), so that log(u) and log(1 - u) are finite."""
    tiny = 1e-30 if dtype == "float32" else 1e-300
    u = keras.random.uniform(shape, dtype=dtype, seed=seed)
    return ops.clip(u, tiny, 1.0 - 2.0**-24 if dtype == "float32" else 1.0 - 2.0**-53)
