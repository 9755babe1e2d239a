"""Importance sampling against closed-form evidence and posterior means (z-scores, fixed seeds).

Evidence z-scores use the estimator's own ``log_evidence_se``; posterior-mean z-scores use
``posterior sd / sqrt(ESS)``, the usual standard error of a self-normalized weighted mean.
"""

import math

import pytest
import torch
import torch.distributions as td

from ppl import deterministic, infer, model, plate, sample
from ppl.inference import Importance, WeightedPosterior
from ppl.stdlib import Bernoulli, Beta, Gamma, Normal, Poisson

Z_MAX = 4.0


def lbeta(a, b):
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def evidence_z(result: WeightedPosterior, exact: float) -> float:
    return (float(result.log_evidence) - exact) / float(result.log_evidence_se)


def mean_z(result: WeightedPosterior, name: str, mean, sd) -> torch.Tensor:
    se = torch.as_tensor(sd) / result.ess.sqrt()
    return (result.mean(name) - torch.as_tensor(mean)) / se


# ----------------------------------------------------------------------------- beta-bernoulli

A, B = 2.0, 2.0
FLIPS = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0])


@model
def coin(flips):
    p = sample("p", Beta(A, B))
    with plate("data", len(flips)):
        sample("x", Bernoulli(p), obs=flips)


def test_beta_bernoulli_evidence_and_posterior_mean():
    k, n = float(FLIPS.sum()), len(FLIPS)
    exact = lbeta(A + k, B + n - k) - lbeta(A, B)
    a, b = A + k, B + n - k
    post_mean, post_sd = a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))

    result = infer(coin, FLIPS, method=Importance(num_samples=20_000), seed=0)
    assert abs(evidence_z(result, exact)) < Z_MAX
    assert abs(float(mean_z(result, "p", post_mean, post_sd))) < Z_MAX
    assert float(result.log_evidence_se) < 0.02  # the test has power


def test_the_issue_example_runs_and_gives_a_scalar_log_evidence():
    flips = FLIPS
    result = infer(coin, flips, method=Importance(num_samples=10_000), seed=0)
    assert isinstance(result.log_evidence, torch.Tensor) and result.log_evidence.shape == ()
    assert result.samples["p"].shape == (10_000,)
    assert "p" in str(result.summary())


# ----------------------------------------------------------------------------- normal-normal

M0, S0, SIGMA = 1.0, 3.0, 1.5
YS = torch.tensor([2.1, 0.4, 1.9, 3.2, 2.6, 1.1, 2.4, 1.7])


@model
def normal_normal(ys):
    mu = sample("mu", Normal(M0, S0))
    deterministic("mu_squared", mu**2)
    with plate("data", len(ys)):
        sample("y", Normal(mu, SIGMA), obs=ys)


def normal_normal_exact(ys):
    n = len(ys)
    cov = SIGMA**2 * torch.eye(n) + S0**2 * torch.ones(n, n)
    log_z = td.MultivariateNormal(torch.full((n,), M0), covariance_matrix=cov).log_prob(ys)
    precision = 1 / S0**2 + n / SIGMA**2
    post_mean = (M0 / S0**2 + float(ys.sum()) / SIGMA**2) / precision
    return float(log_z), post_mean, math.sqrt(1 / precision)


def test_normal_normal_evidence_and_posterior_mean():
    exact, post_mean, post_sd = normal_normal_exact(YS)
    result = infer(normal_normal, YS, method=Importance(num_samples=30_000), seed=1)
    assert abs(evidence_z(result, exact)) < Z_MAX
    assert abs(float(mean_z(result, "mu", post_mean, post_sd))) < Z_MAX


@model
def guide_near_posterior(ys):
    _, post_mean, post_sd = normal_normal_exact(ys)
    sample("mu", Normal(post_mean + 0.1, 1.2 * post_sd))


def test_a_guide_proposal_gives_the_right_evidence_with_a_much_higher_ess():
    exact, post_mean, post_sd = normal_normal_exact(YS)
    prior = infer(normal_normal, YS, method=Importance(num_samples=20_000), seed=2)
    guided = infer(normal_normal, YS, method=Importance(num_samples=20_000,
                                                        guide=guide_near_posterior), seed=2)
    assert abs(evidence_z(guided, exact)) < Z_MAX
    assert abs(float(mean_z(guided, "mu", post_mean, post_sd))) < Z_MAX
    assert float(guided.ess) > 0.8 * 20_000
    assert float(guided.ess) > 3 * float(prior.ess)
    assert float(guided.log_evidence_se) < float(prior.log_evidence_se) / 2
    # the deterministic site follows the guide's draws of mu
    assert torch.allclose(guided.samples["mu_squared"], guided.samples["mu"] ** 2)


def test_a_guide_missing_a_latent_site_is_refused():
    @model
    def empty_guide(ys):
        pass

    with pytest.raises(ValueError, match="mu"):
        infer(normal_normal, YS, method=Importance(num_samples=10, guide=empty_guide), seed=0)


# ----------------------------------------------------------------------------- gamma-poisson

ALPHA, BETA = 3.0, 1.0
COUNTS = torch.tensor([2.0, 4.0, 3.0, 5.0, 1.0, 3.0])


@model
def gamma_poisson(counts):
    rate = sample("rate", Gamma(ALPHA, BETA))
    with plate("data", len(counts)):
        sample("count", Poisson(rate), obs=counts)


def test_gamma_poisson_evidence_and_posterior_mean():
    s, n = float(COUNTS.sum()), len(COUNTS)
    exact = (
        -sum(math.lgamma(c + 1) for c in COUNTS.tolist())
        + ALPHA * math.log(BETA) - math.lgamma(ALPHA)
        + math.lgamma(ALPHA + s) - (ALPHA + s) * math.log(BETA + n)
    )
    post_mean, post_sd = (ALPHA + s) / (BETA + n), math.sqrt(ALPHA + s) / (BETA + n)
    result = infer(gamma_poisson, COUNTS, method=Importance(num_samples=30_000), seed=3)
    assert abs(evidence_z(result, exact)) < Z_MAX
    assert abs(float(mean_z(result, "rate", post_mean, post_sd))) < Z_MAX


# ----------------------------------------------------------------------------- grouped latents

GROUP_Y = torch.tensor([[0.3, -0.2, 0.8], [0.5, 1.1, -0.4]])  # (obs per group, groups)


@model
def groups(y):
    with plate("groups", y.shape[1]):
        theta = sample("theta", Normal(0.0, 1.0))
        with plate("obs", y.shape[0]):
            sample("y", Normal(theta, 1.0), obs=y)


def test_vector_latents_in_nested_plates_give_the_exact_evidence_and_means():
    m = GROUP_Y.shape[0]
    cov = torch.eye(m) + torch.ones(m, m)
    marginal = td.MultivariateNormal(torch.zeros(m), covariance_matrix=cov)
    exact = float(marginal.log_prob(GROUP_Y.T).sum())
    post_mean, post_sd = GROUP_Y.sum(0) / (1 + m), torch.full((3,), (1 / (1 + m)) ** 0.5)
    result = infer(groups, GROUP_Y, method=Importance(num_samples=30_000), seed=4)
    assert result.samples["theta"].shape == (30_000, 3)
    assert abs(evidence_z(result, exact)) < Z_MAX
    assert mean_z(result, "theta", post_mean, post_sd).abs().max() < Z_MAX


# ----------------------------------------------------------------------------- mechanics


def test_vectorization_is_real_the_model_runs_a_fixed_number_of_times():
    calls = []

    @model
    def counted(flips):
        calls.append(None)
        coin(flips)

    runs = {}
    for num_samples in (7, 5_000):  # not 10, the data's length: that count is probed once
        calls.clear()
        infer(counted, FLIPS, method=Importance(num_samples=num_samples), seed=0)
        runs[num_samples] = len(calls)
    assert runs[7] == runs[5_000] <= 2

    guide_calls = []

    @model
    def counted_guide(flips):
        guide_calls.append(None)
        sample("p", Beta(8.0, 4.0))

    calls.clear()
    infer(counted, FLIPS, method=Importance(num_samples=5_000, guide=counted_guide), seed=0)
    assert len(calls) <= 2 and len(guide_calls) <= 2


def test_weights_ess_and_samples_are_consistent():
    result = infer(gamma_poisson, COUNTS, method=Importance(num_samples=2_000), seed=0)
    assert result.num_samples == 2_000 and result.log_weights.shape == (2_000,)
    assert torch.allclose(result.weights.sum(), torch.tensor(1.0))
    assert 1.0 <= float(result.ess) <= 2_000
    assert torch.allclose(result.ess, 1 / (result.weights**2).sum())
    assert float(result.log_evidence_se) > 0
    assert set(result.samples) == {"rate"} and result.samples["rate"].shape == (2_000,)


def test_summary_names_every_reported_site():
    text = str(infer(normal_normal, YS, method=Importance(num_samples=1_000), seed=0).summary())
    assert "mu" in text and "mu_squared" in text
    text = str(infer(gamma_poisson, COUNTS, method=Importance(num_samples=1_000), seed=0).summary())
    assert "rate" in text


def test_seed_reproduces_the_result_exactly():
    def run(seed):
        return infer(normal_normal, YS, method=Importance(num_samples=500), seed=seed)

    first, second, other = run(5), run(5), run(6)
    assert torch.equal(first.log_weights, second.log_weights)
    assert torch.equal(first.samples["mu"], second.samples["mu"])
    assert not torch.equal(first.samples["mu"], other.samples["mu"])


def test_graph_passes_are_refused_on_the_trace_path():
    with pytest.raises(ValueError, match="passes"):
        infer(coin, FLIPS, method=Importance(num_samples=10), seed=0, passes=[lambda g: g])


def test_a_guide_with_params_gives_plain_draws_and_weights():
    import torch

    from ppl import infer, model, param, sample
    from ppl.inference import Importance
    from ppl.params import ParamStore
    from ppl.stdlib import Normal

    @model
    def m():
        sample("y", Normal(sample("z", Normal(0.0, 1.0)), 1.0), obs=torch.tensor(1.0))

    @model
    def q():
        sample("z", Normal(param("loc", torch.tensor(0.5)), 1.0))

    with ParamStore():
        post = infer(m, method=Importance(200, guide=q), seed=0)
    assert not post.log_weights.requires_grad and not post.samples["z"].requires_grad
