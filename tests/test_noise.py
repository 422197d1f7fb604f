"""keras_rnnreg.noise: Table 2 of Noisin (Dieng et al. 2018), on every backend.

The expected moments below are written out from the paper's Table 2 and the
textbook shape of each distribution, not taken from the module under test.
"""

import math

import keras
import numpy as np
import pytest

from keras_rnnreg.noise import DISTRIBUTIONS, noise_moments, sample_noise

N = 1_000_000
EULER = 0.5772156649015329
ZETA3 = 1.2020569031595942


def _beta_shape(a, b):
    skew = 2 * (b - a) * math.sqrt(a + b + 1) / ((a + b + 2) * math.sqrt(a * b))
    kurt = (
        6
        * ((a - b) ** 2 * (a + b + 1) - a * b * (a + b + 2))
        / (a * b * (a + b + 2) * (a + b + 3))
    )
    return skew, kurt


def _bernoulli_shape(p):
    q = 1 - p
    return (q - p) / math.sqrt(p * q), (1 - 6 * p * q) / (p * q)


# distribution -> (noise_level γ, shape params, Var(ε) from Table 2,
#                  skewness, excess kurtosis of the raw distribution)
# Rescaling by a positive factor and shifting keep skewness and kurtosis, so
# they identify which distribution was drawn.
CASES = {
    "gaussian": (1.10, {}, 1.10**2, 0.0, 0.0),
    "bernoulli": (0.41, {}, (1 - 0.41) / 0.41, *_bernoulli_shape(0.41)),
    "gamma": (0.4, {}, 0.4**2, 2 / math.sqrt(2), 6 / 2),  # shape α = 2 (Table 5)
    "gumbel": (1.06, {}, 1.06**2, 12 * math.sqrt(6) * ZETA3 / math.pi**3, 12 / 5),
    "laplace": (1.06, {}, 1.06**2, 0.0, 3.0),
    "logistic": (1.06, {}, 1.06**2, 0.0, 6 / 5),
    "beta": (1.07, {"alpha": 2.5}, 1.07, *_beta_shape(2.5, 1.07)),
    "chi_square": (1.5, {}, 1.5, math.sqrt(8 / 1.5), 12 / 1.5),
}


def _draw(distribution, mode, seed=7, n=N, **overrides):
    gamma, params, *_ = CASES[distribution]
    params = {**params, **overrides}
    eps = sample_noise(distribution, (n,), gamma, mode=mode, seed=seed, **params)
    return np.asarray(keras.ops.convert_to_numpy(eps), dtype=np.float64)


def _standardized_moments(x):
    d = x - x.mean()
    var = np.mean(d**2)
    return np.mean(d**3) / var**1.5, np.mean(d**4) / var**2 - 3.0


def test_cases_cover_every_distribution():
    assert set(CASES) == set(DISTRIBUTIONS)


@pytest.mark.parametrize("mode", ["multiplicative", "additive"])
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_moments_match_table_2(distribution, mode):
    _, _, var, skew, kurt = CASES[distribution]
    mean = 1.0 if mode == "multiplicative" else 0.0
    x = _draw(distribution, mode, seed=11 if mode == "additive" else 7)
    assert x.shape == (N,) and np.isfinite(x).all()

    # Standard errors from n and the distribution's own moments:
    # SE(mean) = sqrt(Var / n), SE(sample variance) = sqrt((μ4 - σ⁴) / n)
    # with μ4 = (kurt + 3) σ⁴.
    se_mean = math.sqrt(var / N)
    se_var = math.sqrt((kurt + 2.0) * var**2 / N)
    assert abs(x.mean() - mean) < 5 * se_mean, (x.mean(), mean, se_mean)
    assert abs(x.var() - var) < 5 * se_var, (x.var(), var, se_var)

    # The shape of the distribution (not only its first two moments): sample
    # skewness and excess kurtosis against theory, with standard errors from
    # 100 batch means.
    batches = np.array([_standardized_moments(b) for b in x.reshape(100, -1)])
    se_shape = batches.std(axis=0, ddof=1) / math.sqrt(len(batches))
    got_skew, got_kurt = _standardized_moments(x)
    assert abs(got_skew - skew) < 5 * se_shape[0] + 1e-3, (got_skew, skew, se_shape[0])
    assert abs(got_kurt - kurt) < 5 * se_shape[1] + 1e-3, (got_kurt, kurt, se_shape[1])


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_modes_differ_by_one(distribution):
    """Additive ε = multiplicative ε - 1 for one seed: the same draw, shifted."""
    mult = _draw(distribution, "multiplicative", seed=3, n=1000)
    add = _draw(distribution, "additive", seed=3, n=1000)
    np.testing.assert_allclose(add, mult - 1.0, atol=1e-6)


def test_noise_moments_is_table_2():
    assert noise_moments("gaussian", 0.5) == (1.0, 0.25)
    assert noise_moments("gaussian", 0.5, "additive") == (0.0, 0.25)
    assert noise_moments("bernoulli", 0.8) == (1.0, pytest.approx(0.25))
    for name in ("gamma", "gumbel", "laplace", "logistic"):
        assert noise_moments(name, 1.5) == (1.0, 2.25)
    assert noise_moments("beta", 0.7, alpha=3.0) == (1.0, 0.7)
    assert noise_moments("chi_square", 0.7, "additive") == (0.0, 0.7)


@pytest.mark.parametrize(
    "gamma, multiplicative_values, additive_values",
    [(0.25, [0.0, 4.0], [-1.0, 3.0]), (0.5, [0.0, 2.0], [-1.0, 1.0]), (1.0, [1.0], [0.0])],
)
def test_bernoulli_values(gamma, multiplicative_values, additive_values):
    """η ∈ {0, 1}: ε = η/γ (multiplicative) or η/γ - 1 (additive)."""
    mult = keras.ops.convert_to_numpy(sample_noise("bernoulli", (4000,), gamma, seed=1))
    add = keras.ops.convert_to_numpy(
        sample_noise("bernoulli", (4000,), gamma, "additive", seed=1)
    )
    np.testing.assert_allclose(np.unique(mult), multiplicative_values, atol=1e-6)
    np.testing.assert_allclose(np.unique(add), additive_values, atol=1e-6)


def test_gamma_default_shape_is_two_and_alpha_is_used():
    """Gamma's default α is 2 (Table 5); α changes the skewness 2/√α, not Var = γ²."""
    default = _draw("gamma", "additive", n=1000)
    explicit = _draw("gamma", "additive", n=1000, alpha=2.0)
    np.testing.assert_array_equal(default, explicit)
    skew8, _ = _standardized_moments(_draw("gamma", "additive", alpha=8.0))
    assert abs(skew8 - 2 / math.sqrt(8)) < 0.05
    # Lower bound of the support: (0 - αγ)/√α = -γ√α.
    assert default.min() >= -0.4 * math.sqrt(2) - 1e-6


def test_int_seed_repeats_and_seed_generator_advances():
    a = sample_noise("gaussian", (64,), 1.0, seed=5)
    b = sample_noise("gaussian", (64,), 1.0, seed=5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    gen = keras.random.SeedGenerator(5)
    c = keras.ops.convert_to_numpy(sample_noise("gaussian", (64,), 1.0, seed=gen))
    d = keras.ops.convert_to_numpy(sample_noise("gaussian", (64,), 1.0, seed=gen))
    assert not np.array_equal(c, d)
    again = keras.random.SeedGenerator(5)
    np.testing.assert_array_equal(
        c, keras.ops.convert_to_numpy(sample_noise("gaussian", (64,), 1.0, seed=again))
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_dtype(dtype):
    if dtype == "float64" and keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX has no float64 unless jax_enable_x64 is set; runs in the tensorflow and torch passes")
    for distribution in DISTRIBUTIONS:
        # (1000,): the shape test_modes_differ_by_one compiles on JAX already.
        eps = sample_noise(distribution, (1000,), 0.5, seed=2, dtype=dtype)
        assert keras.backend.standardize_dtype(eps.dtype) == dtype
        assert tuple(eps.shape) == (1000,)
        assert np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(eps, "float32"))).all()


def test_default_dtype_is_floatx():
    eps = sample_noise("laplace", (2, 2), 0.5, seed=1)
    assert keras.backend.standardize_dtype(eps.dtype) == keras.config.floatx()


def test_unknown_distribution_lists_the_valid_ones():
    with pytest.raises(ValueError, match="gaussian.*bernoulli.*chi_square.*Received: noise='normal'"):
        sample_noise("normal", (2,), 0.5)


def test_unknown_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="multiplicative.*additive"):
        sample_noise("gaussian", (2,), 0.5, mode="both")


@pytest.mark.parametrize(
    "distribution, gamma, domain",
    [
        ("bernoulli", 0.0, r"\(0, 1\]"),
        ("bernoulli", 1.2, r"\(0, 1\]"),
        ("bernoulli", -0.3, r"\(0, 1\]"),
        ("gaussian", 0.0, r"\(0, inf\)"),
        ("laplace", -1.0, r"\(0, inf\)"),
        ("chi_square", 0.0, r"\(0, inf\)"),
        ("beta", -0.5, r"\(0, inf\)"),
    ],
)
def test_noise_level_outside_domain(distribution, gamma, domain):
    with pytest.raises(ValueError, match=rf"noise_level={gamma}.*{distribution}.*{domain}"):
        sample_noise(distribution, (2,), gamma)


def test_noise_level_type_and_finiteness():
    with pytest.raises(TypeError, match="noise_level"):
        sample_noise("gaussian", (2,), "0.5")
    with pytest.raises(TypeError, match="noise_level"):
        sample_noise("bernoulli", (2,), True)
    with pytest.raises(ValueError, match="finite"):
        sample_noise("gaussian", (2,), float("inf"))


def test_shape_parameters():
    with pytest.raises(ValueError, match="gaussian noise takes no shape parameter.*alpha"):
        sample_noise("gaussian", (2,), 0.5, alpha=2.0)
    with pytest.raises(ValueError, match="gamma noise takes `alpha`.*beta"):
        sample_noise("gamma", (2,), 0.5, beta=2.0)
    with pytest.raises(ValueError, match=r"alpha=0.0.*beta.*\(0, inf\)"):
        sample_noise("beta", (2,), 0.5, alpha=0.0)


def test_integer_dtype_is_rejected():
    with pytest.raises(ValueError, match="float dtype"):
        sample_noise("gaussian", (2,), 0.5, dtype="int32")


def test_multiplicative_bernoulli_is_one_over_gamma_to_the_bit():
    """ε = η/γ with 1/γ rounded once: in float32, (1/γ - 1) + 1 != 1/γ for γ = 0.43."""
    assert np.float32(1 / 0.43 - 1) + np.float32(1) != np.float32(1 / 0.43)
    for dtype in ("float32", "float16"):
        eps = keras.ops.convert_to_numpy(
            sample_noise("bernoulli", (1000,), 0.43, seed=1, dtype=dtype)
        )
        assert set(np.unique(eps).tolist()) == {0.0, float(np.dtype(dtype).type(1 / 0.43))}


def test_registry_is_the_single_source():
    """DISTRIBUTIONS, SHAPE_PARAMETERS, domains and variances all come from the records."""
    from keras_rnnreg import noise

    names = tuple(record.name for record in noise._REGISTRY.values())
    assert DISTRIBUTIONS == tuple(noise._REGISTRY) == names
    assert noise.SHAPE_PARAMETERS == ("alpha",)
    assert dict(noise._REGISTRY["gamma"].shape_defaults) == {"alpha": 2.0}
    assert dict(noise._REGISTRY["beta"].shape_defaults) == {"alpha": 1.0}
    for name, record in noise._REGISTRY.items():
        assert isinstance(record, noise.NoiseDistribution)
        assert (record.low, record.high) == ((0.0, 1.0) if name == "bernoulli" else (0.0, math.inf))
    with pytest.raises(AttributeError):  # frozen: a record is changed only where it is written
        noise._REGISTRY["gaussian"].high = 1.0


def test_a_new_record_is_all_a_distribution_needs(monkeypatch):
    """Adding one record makes a distribution valid for checks, moments and sampling."""
    from keras_rnnreg import noise

    uniform = noise.NoiseDistribution(
        "uniform",
        draw=lambda shape, gamma, params, seed, dtype: keras.random.uniform(
            shape, -math.sqrt(3.0) * gamma, math.sqrt(3.0) * gamma, dtype=dtype, seed=seed
        ),
        scale=lambda eta, gamma, params, dtype: eta,
        variance=lambda gamma, params: gamma**2,
        high=2.0,
        domain="(0, 2]",
        shape_defaults=(("width", 1.0),),
    )
    monkeypatch.setattr(noise, "_REGISTRY", {**noise._REGISTRY, "uniform": uniform})
    monkeypatch.setattr(noise, "DISTRIBUTIONS", tuple(noise._REGISTRY))
    assert noise.noise_moments("uniform", 0.5, "additive") == (0.0, 0.25)
    eps = keras.ops.convert_to_numpy(noise.sample_noise("uniform", (20000,), 0.5, seed=3))
    assert abs(eps.mean() - 1.0) < 0.02 and abs(eps.var() - 0.25) < 0.02
    with pytest.raises(ValueError, match=r"noise_level=2.5.*uniform.*a spread.*\(0, 2\]"):
        noise.sample_noise("uniform", (2,), 2.5)
    with pytest.raises(ValueError, match=r"width=-1.0.*uniform"):
        noise.sample_noise("uniform", (2,), 0.5, width=-1.0)
