"""log_prob agrees with scipy.stats at random parameters and points (hypothesis)."""

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import ppl.stdlib as D

SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
pos = st.floats(0.2, 8.0)
real = st.floats(-5.0, 5.0)
unit = st.floats(0.02, 0.98)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# name -> (strategy of params, ppl builder, scipy frozen builder, strategy of a point given params)
UNIVARIATE = {
    "Normal": (st.tuples(real, pos), lambda m, s: D.Normal(t(m), t(s)),
               lambda m, s: stats.norm(m, s), lambda m, s: real),
    "LogNormal": (st.tuples(real, pos), lambda m, s: D.LogNormal(t(m), t(s)),
                  lambda m, s: stats.lognorm(s, scale=math.exp(m)), lambda m, s: pos),
    "HalfNormal": (st.tuples(pos), lambda s: D.HalfNormal(t(s)),
                   lambda s: stats.halfnorm(scale=s), lambda s: pos),
    "HalfCauchy": (st.tuples(pos), lambda s: D.HalfCauchy(t(s)),
                   lambda s: stats.halfcauchy(scale=s), lambda s: pos),
    "Cauchy": (st.tuples(real, pos), lambda m, s: D.Cauchy(t(m), t(s)),
               lambda m, s: stats.cauchy(m, s), lambda m, s: real),
    "StudentT": (st.tuples(pos, real, pos), lambda df, m, s: D.StudentT(t(df), t(m), t(s)),
                 lambda df, m, s: stats.t(df, m, s), lambda *_: real),
    "Laplace": (st.tuples(real, pos), lambda m, s: D.Laplace(t(m), t(s)),
                lambda m, s: stats.laplace(m, s), lambda m, s: real),
    "Gumbel": (st.tuples(real, pos), lambda m, s: D.Gumbel(t(m), t(s)),
               lambda m, s: stats.gumbel_r(m, s), lambda m, s: real),
    "Exponential": (st.tuples(pos), lambda r: D.Exponential(t(r)),
                    lambda r: stats.expon(scale=1 / r), lambda r: pos),
    "Gamma": (st.tuples(pos, pos), lambda a, b: D.Gamma(t(a), t(b)),
              lambda a, b: stats.gamma(a, scale=1 / b), lambda a, b: pos),
    "InverseGamma": (st.tuples(pos, pos), lambda a, b: D.InverseGamma(t(a), t(b)),
                     lambda a, b: stats.invgamma(a, scale=b), lambda a, b: pos),
    "Chi2": (st.tuples(pos), lambda k: D.Chi2(t(k)), lambda k: stats.chi2(k), lambda k: pos),
    "Beta": (st.tuples(pos, pos), lambda a, b: D.Beta(t(a), t(b)),
             lambda a, b: stats.beta(a, b), lambda a, b: unit),
    "Uniform": (st.tuples(real, pos), lambda lo, w: D.Uniform(t(lo), t(lo + w)),
                lambda lo, w: stats.uniform(lo, w), lambda lo, w: st.floats(lo, lo + w * 0.999)),
    "Weibull": (st.tuples(pos, pos), lambda s, k: D.Weibull(t(s), t(k)),
                lambda s, k: stats.weibull_min(k, scale=s), lambda s, k: pos),
    "Pareto": (st.tuples(pos, pos), lambda s, a: D.Pareto(t(s), t(a)),
               lambda s, a: stats.pareto(a, scale=s), lambda s, a: st.floats(s, s + 10)),
    "VonMises": (st.tuples(st.floats(-3, 3), pos), lambda m, k: D.VonMises(t(m), t(k)),
                 lambda m, k: stats.vonmises(k, loc=m), lambda m, k: st.floats(m - 3, m + 3)),
    "TruncatedNormal": (
        st.tuples(real, pos, real, pos),
        lambda m, s, lo, w: D.TruncatedNormal(t(m), t(s), t(lo), t(lo + w)),
        lambda m, s, lo, w: stats.truncnorm((lo - m) / s, (lo + w - m) / s, loc=m, scale=s),
        lambda m, s, lo, w: st.floats(lo, lo + w),
    ),
    "Poisson": (st.tuples(pos), lambda r: D.Poisson(t(r)), lambda r: stats.poisson(r),
                lambda r: st.integers(0, 30)),
    "Bernoulli": (st.tuples(unit), lambda p: D.Bernoulli(probs=t(p)),
                  lambda p: stats.bernoulli(p), lambda p: st.integers(0, 1)),
    "Binomial": (st.tuples(st.integers(0, 20), unit), lambda n, p: D.Binomial(t(float(n)), t(p)),
                 lambda n, p: stats.binom(n, p), lambda n, p: st.integers(0, n)),
    "Geometric": (st.tuples(unit), lambda p: D.Geometric(probs=t(p)),
                  lambda p: stats.geom(p, loc=-1), lambda p: st.integers(0, 30)),
    # torch counts successes (prob p) before total_count failures; scipy the reverse
    "NegativeBinomial": (st.tuples(pos, unit), lambda n, p: D.NegativeBinomial(t(n), t(p)),
                         lambda n, p: stats.nbinom(n, 1 - p), lambda n, p: st.integers(0, 40)),
    "BetaBinomial": (
        st.tuples(pos, pos, st.integers(0, 20)),
        lambda a, b, n: D.BetaBinomial(t(a), t(b), t(float(n))),
        lambda a, b, n: stats.betabinom(n, a, b),
        lambda a, b, n: st.integers(0, n),
    ),
    "NegativeBinomial2": (
        st.tuples(pos, pos),
        lambda mu, phi: D.NegativeBinomial2(t(mu), t(phi)),
        lambda mu, phi: stats.nbinom(phi, phi / (phi + mu)),
        lambda mu, phi: st.integers(0, 40),
    ),
}


def _make_test(name):
    params_strategy, build, reference, point = UNIVARIATE[name]

    @SETTINGS
    @given(st.data())
    def test(data):
        params = data.draw(params_strategy)
        x = data.draw(point(*params))
        d, ref = build(*params), reference(*params)
        expected = ref.logpmf(x) if hasattr(ref, "logpmf") else ref.logpdf(x)
        actual = d.log_prob(t(float(x))).item()
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-8)
        if hasattr(d, "cdf") and name in ("TruncatedNormal", "Normal", "Uniform"):
            np.testing.assert_allclose(d.cdf(t(float(x))).item(), ref.cdf(x), atol=1e-8)

    test.__name__ = f"test_log_prob_matches_scipy_{name}"
    return test


for _name in UNIVARIATE:
    globals()[f"test_log_prob_matches_scipy_{_name}"] = _make_test(_name)


def _simplex(k):
    return st.lists(st.floats(0.05, 1.0), min_size=k, max_size=k).map(
        lambda w: np.array(w) / np.sum(w)
    )


@SETTINGS
@given(_simplex(4), _simplex(4), st.integers(1, 9))
def test_categorical_multinomial_dirichlet(p, q, n):
    k = (np.array(q) * n).round()
    k[-1] = n - k[:-1].sum()
    if k[-1] < 0:
        return
    probs = t(p)
    assert math.isclose(D.Categorical(probs=probs).log_prob(t(2.0)).item(), math.log(p[2]))
    assert math.isclose(
        D.OneHotCategorical(logits=probs.log()).log_prob(t(np.eye(4)[1])).item(), math.log(p[1])
    )
    np.testing.assert_allclose(
        D.Multinomial(n, probs=probs).log_prob(t(k)).item(), stats.multinomial(n, p).logpmf(k)
    )
    alpha = t(q * 5)
    np.testing.assert_allclose(
        D.Dirichlet(alpha).log_prob(probs).item(), stats.dirichlet(q * 5).logpdf(p), rtol=1e-8
    )


@SETTINGS
@given(st.integers(0, 10_000), st.floats(3.0, 8.0))
def test_multivariate_normal_low_rank_wishart(seed, df):
    g = np.random.default_rng(seed)
    a = g.normal(size=(3, 3))
    cov = a @ a.T + np.eye(3)
    loc, x = g.normal(size=3), g.normal(size=3)
    ref = stats.multivariate_normal(loc, cov).logpdf(x)
    for kw in ({"covariance_matrix": t(cov)}, {"precision_matrix": t(np.linalg.inv(cov))},
               {"scale_tril": t(np.linalg.cholesky(cov))}):
        np.testing.assert_allclose(D.MultivariateNormal(t(loc), **kw).log_prob(t(x)).item(), ref)
    w, diag = g.normal(size=(3, 2)), g.uniform(0.5, 2, size=3)
    np.testing.assert_allclose(
        D.LowRankMultivariateNormal(t(loc), t(w), t(diag)).log_prob(t(x)).item(),
        stats.multivariate_normal(loc, w @ w.T + np.diag(diag)).logpdf(x),
    )
    s = stats.wishart(df, cov).rvs(random_state=g)
    np.testing.assert_allclose(
        D.Wishart(t(df), covariance_matrix=t(cov)).log_prob(t(s)).item(),
        stats.wishart(df, cov).logpdf(s),
    )


@SETTINGS
@given(st.floats(0.3, 5.0), st.floats(-0.95, 0.95))
def test_lkj_cholesky_two_by_two_is_beta(eta, r):
    # in 2-D the only free coordinate is r = L[1, 0] and (r + 1) / 2 ~ Beta(eta, eta)
    chol = t([[1.0, 0.0], [r, math.sqrt(1 - r * r)]])
    expected = stats.beta(eta, eta).logpdf((r + 1) / 2) - math.log(2)
    np.testing.assert_allclose(D.LKJCholesky(2, t(eta)).log_prob(chol).item(), expected)
