"""The conjugate suite's exact answers, checked independently of any sampler.

One-dimensional cases: quadrature of the model's own compiled log density gives the evidence
and the posterior moments. The Gaussian case: the identity
log p(y) = log p(x, y) - log p(x | y) at several points x, with the joint density from the
trace path. And the checker itself: exact draws
pass, shifted or over-dispersed draws fail.
"""

import math

import pytest
import torch

from ppl.inference.testing import ExactPosterior, check_draws, conjugate_cases, moment_z_scores
from ppl.ir import compile_log_density
from ppl.passes import enumerate_discrete, posterior_of_enumerated

CASES = conjugate_cases()


#: a grid over the support of each one-dimensional case's continuous site
GRIDS = {"normal_normal": (-15.0, 15.0), "beta_binomial": (0.0, 1.0), "gamma_poisson": (0.0, 30.0),
         "discrete_mixture": (-15.0, 15.0)}


def lowered(case):
    graph = case.model.graph(*case.args, **case.kwargs)
    return enumerate_discrete()(graph) if case.discrete else graph


def quadrature(name, num=20_001):
    """(log evidence, grid, normalized weights) by the midpoint rule on the model's own
    compiled log density (the graph's, after enumerate_discrete where the case needs it)."""
    case = CASES[name]
    graph = lowered(case)
    (site,) = [n.address for n in graph.latent_nodes]
    low, high = GRIDS[name]
    width = (high - low) / num
    x = low + width * (torch.arange(num, dtype=torch.float64) + 0.5)
    log_density = compile_log_density(graph)
    log_p = torch.func.vmap(lambda v: log_density({site: v}))(x.float()).to(torch.float64)
    return float(torch.logsumexp(log_p, 0) + math.log(width)), x, torch.softmax(log_p, 0)


@pytest.mark.parametrize("name", list(GRIDS))
def test_one_dimensional_answers_match_quadrature(name):
    case = CASES[name]
    log_evidence, x, w = quadrature(name)
    assert log_evidence == pytest.approx(case.log_evidence, abs=1e-3)
    (site,) = [s for s in case.posterior if s not in case.discrete]
    mean = (w * x).sum()
    sd = (w * (x - mean) ** 2).sum().sqrt()
    exact = case.posterior[site]
    assert float(mean) == pytest.approx(float(exact.mean), rel=1e-4, abs=1e-5)
    assert float(sd) == pytest.approx(float(exact.sd), rel=1e-3)


def test_discrete_site_probabilities_match_quadrature():
    case = CASES["discrete_mixture"]
    graph = lowered(case)
    _, x, w = quadrature("discrete_mixture", num=601)
    keep = w > 1e-12
    probs = torch.stack([posterior_of_enumerated(graph, {"mu": mu})["z"][..., 1]
                         for mu in x[keep].float()]).to(torch.float64)
    p_z = (w[keep].unsqueeze(-1) * probs).sum(0)
    torch.testing.assert_close(p_z, case.posterior["z"].mean, rtol=1e-3, atol=1e-4)


def test_gaussian_answer_satisfies_bayes_rule_at_any_point():
    case = CASES["mvn_correlated"]
    exact = case.posterior["x"]
    posterior = torch.distributions.MultivariateNormal(exact.mean, exact.cov)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = exact.mean + 3 * torch.randn(4, generator=g, dtype=torch.float64)
        log_joint = case.model.log_density({"x": x.float()}, *case.args)
        implied = float(log_joint) - float(posterior.log_prob(x))
        assert implied == pytest.approx(case.log_evidence, abs=2e-3)
    corr = exact.cov / (exact.sd[:, None] * exact.sd[None, :])
    assert float(corr[0, 1]) > 0.9  # strongly correlated, as advertised


def test_checker_accepts_exact_draws_and_rejects_wrong_ones():
    case = CASES["mvn_correlated"]
    exact = case.posterior["x"]
    g = torch.Generator().manual_seed(1)
    chol = torch.linalg.cholesky(exact.cov)
    noise = torch.randn(2, 2000, 4, 1, generator=g, dtype=torch.float64)
    draws = exact.mean + (chol @ noise).squeeze(-1)
    check_draws({"x": draws}, case)
    with pytest.raises(AssertionError, match="x mean"):
        check_draws({"x": draws + 0.2 * exact.sd}, case)
    with pytest.raises(AssertionError, match="x second"):
        check_draws({"x": exact.mean + 1.2 * (draws - exact.mean)}, case)
    with pytest.raises(AssertionError, match="no draws of site 'x'"):
        check_draws({}, case)


def test_checker_uses_autocorrelation_aware_errors():
    """AR(1) chains with correlation 0.9 have a ~4x larger MCSE than independent draws; the
    mean z-scores must stay calibrated (200 chains, one element each: all |z| < 4 and the
    z-scores' spread near 1)."""
    num, n, rho = 200, 1000, 0.9
    exact = ExactPosterior(torch.zeros(num, dtype=torch.float64),
                           torch.ones(num, dtype=torch.float64))
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(n, num, generator=g, dtype=torch.float64) * math.sqrt(1 - rho**2)
    x = torch.empty_like(noise)
    x[0] = torch.randn(num, generator=g, dtype=torch.float64)
    for t in range(1, n):
        x[t] = rho * x[t - 1] + noise[t]
    z = moment_z_scores(x.unsqueeze(0), exact)["mean"]  # one chain of n draws, num elements
    assert float(z.abs().max()) < 4.0
    assert 0.7 < float(z.std()) < 1.4
    assert set(CASES) == {"normal_normal", "beta_binomial", "gamma_poisson", "mvn_correlated",
                          "discrete_mixture"}
