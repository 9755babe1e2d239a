"""Samples agree with log_prob: KS tests (continuous), chi-square (discrete), projections
and moments (multivariate). 20k draws, fixed seed, reject at p < 1e-4."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import ppl.stdlib as D
from ppl.stdlib.testing import chi2_pvalue, ks_pvalue, numerical_cdf

N = 20_000
ALPHA = 1e-4


def t(*values):
    return torch.tensor(values[0] if len(values) == 1 else values, dtype=torch.float64)


CONTINUOUS = {
    "Normal": (lambda: D.Normal(t(0.5), t(2.0)), stats.norm(0.5, 2.0)),
    "LogNormal": (lambda: D.LogNormal(t(0.3), t(0.7)), stats.lognorm(0.7, scale=math.exp(0.3))),
    "HalfNormal": (lambda: D.HalfNormal(t(1.5)), stats.halfnorm(scale=1.5)),
    "HalfCauchy": (lambda: D.HalfCauchy(t(2.0)), stats.halfcauchy(scale=2.0)),
    "Cauchy": (lambda: D.Cauchy(t(-1.0), t(0.5)), stats.cauchy(-1.0, 0.5)),
    "StudentT": (lambda: D.StudentT(t(3.5), t(1.0), t(2.0)), stats.t(3.5, 1.0, 2.0)),
    "Laplace": (lambda: D.Laplace(t(0.5), t(1.5)), stats.laplace(0.5, 1.5)),
    "Gumbel": (lambda: D.Gumbel(t(1.0), t(2.0)), stats.gumbel_r(1.0, 2.0)),
    "Exponential": (lambda: D.Exponential(t(2.5)), stats.expon(scale=0.4)),
    "Gamma-small": (lambda: D.Gamma(t(0.7), t(2.0)), stats.gamma(0.7, scale=0.5)),
    "Gamma": (lambda: D.Gamma(t(3.0), t(0.5)), stats.gamma(3.0, scale=2.0)),
    "InverseGamma": (lambda: D.InverseGamma(t(3.0), t(2.0)), stats.invgamma(3.0, scale=2.0)),
    "Chi2": (lambda: D.Chi2(t(4.5)), stats.chi2(4.5)),
    "Beta": (lambda: D.Beta(t(0.5), t(2.5)), stats.beta(0.5, 2.5)),
    "Uniform": (lambda: D.Uniform(t(-1.0), t(3.0)), stats.uniform(-1.0, 4.0)),
    "Weibull": (lambda: D.Weibull(t(2.0), t(1.5)), stats.weibull_min(1.5, scale=2.0)),
    "Pareto": (lambda: D.Pareto(t(1.5), t(2.5)), stats.pareto(2.5, scale=1.5)),
    "TruncatedNormal": (
        lambda: D.TruncatedNormal(t(0.5), t(1.5), t(-1.0), t(2.0)),
        stats.truncnorm(-1.0, 1.0, loc=0.5, scale=1.5),
    ),
    "TruncatedNormal-right-tail": (
        lambda: D.TruncatedNormal(t(0.0), t(1.0), low=t(4.0)),
        stats.truncnorm(4.0, np.inf),
    ),
    "TruncatedNormal-left-tail": (
        lambda: D.TruncatedNormal(t(1.0), t(2.0), high=t(-11.0)),
        stats.truncnorm(-np.inf, -6.0, loc=1.0, scale=2.0),
    ),
    "TruncatedNormal-far-interval": (
        lambda: D.TruncatedNormal(t(0.0), t(1.0), t(8.0), t(8.5)),
        stats.truncnorm(8.0, 8.5),
    ),
}


class _NormalMixture:
    """0.3 N(-2, 0.5) + 0.7 N(1, 1), as a scipy-like frozen distribution."""

    weights, locs, scales = np.array([0.3, 0.7]), np.array([-2.0, 1.0]), np.array([0.5, 1.0])

    def cdf(self, x):
        return (self.weights * stats.norm.cdf(x[:, None], self.locs, self.scales)).sum(-1)

    def logpdf(self, x):
        return np.log((self.weights * stats.norm.pdf(x[:, None], self.locs, self.scales)).sum(-1))


CONTINUOUS["MixtureSameFamily"] = (
    lambda: D.MixtureSameFamily(
        D.Categorical(probs=t(0.3, 0.7)), D.Normal(t(-2.0, 1.0), t(0.5, 1.0))
    ),
    _NormalMixture(),
)


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_continuous_samples_fit_scipy_cdf(name):
    make, reference = CONTINUOUS[name]
    d = make()
    x = d.sample((N,))
    assert ks_pvalue(x, reference.cdf) > ALPHA
    # and log_prob is the density of that law
    if hasattr(reference, "logpdf"):
        np.testing.assert_allclose(
            d.log_prob(x[:100]).numpy(), reference.logpdf(x[:100].numpy()), rtol=1e-6, atol=1e-8
        )


def test_von_mises_centred_samples_fit_scipy():
    d = D.VonMises(t(1.0), t(2.5))
    x = d.sample((N,))
    assert ((x >= -math.pi) & (x <= math.pi)).all()
    centred = torch.remainder(x - 1.0 + math.pi, 2 * math.pi) - math.pi
    assert ks_pvalue(centred, stats.vonmises(2.5).cdf) > ALPHA


@pytest.mark.parametrize(
    "make, low, high",
    [
        (lambda: D.RelaxedBernoulli(t(1.5), probs=t(0.3)), 0.0, 1.0),
        (lambda: D.TruncatedNormal(t(0.0), t(1.0), t(-2.0), t(0.5)), -2.0, 0.5),
    ],
    ids=["RelaxedBernoulli", "TruncatedNormal"],
)
def test_continuous_samples_fit_integrated_density(make, low, high):
    d = make()
    grid = torch.linspace(low, high, 20001, dtype=torch.float64)[1:-1]
    density = d.log_prob(grid).exp()
    integral = torch.trapezoid(density, grid).item()
    assert abs(integral - 1) < 2e-3
    assert ks_pvalue(d.sample((N,)), numerical_cdf(d.log_prob, low + 1e-12, high - 1e-12)) > ALPHA


def test_relaxed_one_hot_categorical():
    probs = t(0.2, 0.3, 0.5)
    d = D.RelaxedOneHotCategorical(t(0.7), probs=probs)
    x = d.sample((N,))
    assert D.constraints.simplex.check(x).all()
    # argmax of a Gumbel-softmax draw is exactly Categorical(probs)
    assert chi2_pvalue(x.argmax(-1), lambda v: probs.log()[v.long()], [0, 1, 2]) > ALPHA
    # with two categories the first coordinate has density log_prob([y, 1 - y]) on (0, 1)
    d2 = D.RelaxedOneHotCategorical(t(1.5), probs=t(0.3, 0.7))

    def log_prob(y):
        return d2.log_prob(torch.stack([y, 1 - y], -1))

    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)[1:-1]
    assert abs(torch.trapezoid(log_prob(grid).exp(), grid).item() - 1) < 2e-3
    y = d2.sample((N,))[:, 0]
    assert ks_pvalue(y, numerical_cdf(log_prob, 1e-12, 1 - 1e-12)) > ALPHA


DISCRETE = {
    "Bernoulli": (lambda: D.Bernoulli(probs=t(0.3)), range(2)),
    "Bernoulli-logits": (lambda: D.Bernoulli(logits=t(-0.4)), range(2)),
    "Binomial": (lambda: D.Binomial(t(10.0), probs=t(0.35)), range(11)),
    "Categorical": (lambda: D.Categorical(probs=t(0.1, 0.2, 0.3, 0.4)), range(4)),
    "Poisson": (lambda: D.Poisson(t(3.5)), range(30)),
    "Geometric": (lambda: D.Geometric(probs=t(0.3)), range(40)),
    "NegativeBinomial": (lambda: D.NegativeBinomial(t(2.5), probs=t(0.6)), range(60)),
    "BetaBinomial": (lambda: D.BetaBinomial(t(2.0), t(3.0), t(12.0)), range(13)),
    "ZeroInflatedPoisson": (lambda: D.ZeroInflatedPoisson(t(0.25), t(3.0)), range(30)),
    "ZeroInflatedNegativeBinomial": (
        lambda: D.ZeroInflatedNegativeBinomial(t(0.3), t(2.5), probs=t(0.5)),
        range(40),
    ),
    "NegativeBinomial2": (lambda: D.NegativeBinomial2(t(4.0), t(1.5)), range(60)),
    "OrderedLogistic": (lambda: D.OrderedLogistic(t(0.3), t(-1.0, 0.5, 2.0)), range(4)),
}


@pytest.mark.parametrize("name", sorted(DISCRETE))
def test_discrete_samples_fit_log_prob(name):
    make, values = DISCRETE[name]
    d = make()
    x = d.sample((N,))
    assert d.support.check(x).all()
    assert chi2_pvalue(x, d.log_prob, list(values)) > ALPHA


def test_one_hot_categorical_and_multinomial():
    probs = t(0.1, 0.2, 0.3, 0.4)
    x = D.OneHotCategorical(probs=probs).sample((N,))
    assert (x.sum(-1) == 1).all()
    assert chi2_pvalue(x.argmax(-1), lambda v: probs.log()[v.long()], range(4)) > ALPHA
    counts = D.Multinomial(7, probs=probs).sample((N,))
    assert (counts.sum(-1) == 7).all()
    for k in range(4):  # each count is Binomial(7, p_k)
        marginal = D.Binomial(t(7.0), probs=probs[k])
        assert chi2_pvalue(counts[:, k], marginal.log_prob, range(8)) > ALPHA


def test_dirichlet_marginals_are_beta():
    alpha = t(0.5, 2.0, 3.5)
    x = D.Dirichlet(alpha).sample((N,))
    for k in range(3):
        marginal = stats.beta(alpha[k].item(), (alpha.sum() - alpha[k]).item())
        assert ks_pvalue(x[:, k], marginal.cdf) > ALPHA


def _spd(n, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return a @ a.T + torch.eye(n, dtype=torch.float64)


MATRIX_PARAMETERIZATIONS = ["covariance_matrix", "precision_matrix", "scale_tril"]


def _projections(n, seed, k=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("parameterization", MATRIX_PARAMETERIZATIONS)
def test_multivariate_normal_projections(parameterization):
    loc, cov = t(1.0, -1.0, 0.5), _spd(3, 0)
    matrix = {
        "covariance_matrix": cov,
        "precision_matrix": torch.linalg.inv(cov),
        "scale_tril": torch.linalg.cholesky(cov),
    }[parameterization]
    x = D.MultivariateNormal(loc, **{parameterization: matrix}).sample((N,))
    for a in _projections(3, 1):
        ref = stats.norm((a @ loc).item(), math.sqrt(a @ cov @ a))
        assert ks_pvalue(x @ a, ref.cdf) > ALPHA


def test_low_rank_multivariate_normal_projections():
    loc, factor, diag = t(0.0, 1.0, 2.0, 3.0), _spd(4, 2)[:, :2], t(0.5, 1.0, 1.5, 2.0)
    cov = factor @ factor.T + torch.diag(diag)
    x = D.LowRankMultivariateNormal(loc, factor, diag).sample((N,))
    for a in _projections(4, 3):
        ref = stats.norm((a @ loc).item(), math.sqrt(a @ cov @ a))
        assert ks_pvalue(x @ a, ref.cdf) > ALPHA


def test_wishart_projections_are_chi2():
    df, cov = 5.5, _spd(3, 4)
    w = D.Wishart(t(df), covariance_matrix=cov).sample((N,))
    for a in _projections(3, 5):
        ratio = (a @ w @ a) / (a @ cov @ a)  # a'Wa / a'Σa ~ chi2(df)
        assert ks_pvalue(ratio, stats.chi2(df).cdf) > ALPHA


@pytest.mark.parametrize("dim, eta", [(2, 0.7), (3, 2.0), (4, 1.0)])
def test_lkj_cholesky_marginal_correlations(dim, eta):
    chol = D.LKJCholesky(dim, t(eta)).sample((N // 2,))
    assert D.constraints.corr_cholesky.check(chol).all()
    corr = chol @ chol.mT
    marginal = stats.beta(eta - 1 + dim / 2, eta - 1 + dim / 2)  # of (r + 1) / 2
    for i, j in [(1, 0), (dim - 1, 0), (dim - 1, dim - 2)]:
        assert ks_pvalue((corr[:, i, j] + 1) / 2, marginal.cdf) > ALPHA


def test_lkj_cholesky_uniform_joint_law_by_rejection():
    # eta = 1 is uniform on 3x3 correlation matrices: compare det(C) with rejection draws
    chol = D.LKJCholesky(3, t(1.0)).sample((N // 2,))
    det_lkj = chol.diagonal(dim1=-2, dim2=-1).prod(-1).pow(2)
    r = torch.rand(2 * N, 3, dtype=torch.float64) * 2 - 1
    det = 1 + 2 * r[:, 0] * r[:, 1] * r[:, 2] - (r * r).sum(-1)
    det_ref = det[det > 0][: N // 2]
    assert stats.ks_2samp(det_lkj.numpy(), det_ref.numpy()).pvalue > ALPHA


def test_gaussian_random_walk_increments_and_endpoint():
    scale, steps = 0.7, 6
    x = D.GaussianRandomWalk(t(scale), steps).sample((N,))
    increments = torch.diff(x, dim=-1, prepend=torch.zeros(N, 1, dtype=x.dtype))
    assert ks_pvalue(increments[:, :3].flatten(), stats.norm(0, scale).cdf) > ALPHA
    assert ks_pvalue(x[:, -1], stats.norm(0, scale * math.sqrt(steps)).cdf) > ALPHA
    # the increments are independent: sample correlation near zero
    c = np.corrcoef(increments[:, 0].numpy(), increments[:, 4].numpy())[0, 1]
    assert abs(c) < 5 / math.sqrt(N)


def test_delta_samples_are_its_value():
    v = t([[1.0, 2.0], [3.0, 4.0]])
    d = D.Delta(v, event_dim=1)
    assert torch.equal(d.sample((5,)), v.expand(5, 2, 2))


@pytest.mark.parametrize(
    "make, first, reference",
    [
        (lambda: D.Normal(t(0.0, 1.0), t(1.0, 2.0)).expand((3, 2)), (0, 0), stats.norm(0, 1)),
        (lambda: D.Gamma(t(2.0), t(1.0)).expand((2,)).mask(torch.tensor([True, False])), (1,),
         stats.gamma(2.0)),
        (lambda: D.Poisson(t(2.0, 5.0)).to_event(1), (1,), stats.poisson(5.0)),
    ],
    ids=["expanded", "masked", "independent"],
)
def test_wrapped_samples_keep_the_base_law(make, first, reference):
    x = make().sample((N,))[(slice(None), *first)]
    if hasattr(reference, "pmf"):
        def log_pmf(v):
            return torch.from_numpy(reference.logpmf(v.numpy()))

        assert chi2_pvalue(x, log_pmf, range(20)) > ALPHA
    else:
        assert ks_pvalue(x, reference.cdf) > ALPHA
