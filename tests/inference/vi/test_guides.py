"""Autoguides: built from the model's latent sites (shapes, plates, supports), each a guide
that VI trains and Importance proposes from; the full-rank guide reaches the exact
posterior of a correlated conjugate Gaussian, AutoLaplace is exact on it."""

import math

import pytest
import torch

from ppl import infer, model, plate, sample
from ppl.errors import ModelError
from ppl.inference import Importance
from ppl.inference.vi import (
    ELBO,
    VI,
    AutoDelta,
    AutoLaplace,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from ppl.stdlib import Bernoulli, Dirichlet, Gamma, Normal

X = torch.tensor([1.2, 0.4, 2.0, 1.1, 0.7])
A = torch.tensor([1.0, 0.5])
NOISE = 0.5
PRECISION = torch.eye(2) + len(X) / NOISE**2 * torch.outer(A, A)
POST_COV = torch.linalg.inv(PRECISION)
POST_MEAN = POST_COV @ (A * float(X.sum()) / NOISE**2)
LOG_Z = float(torch.distributions.MultivariateNormal(
    torch.zeros(len(X)), torch.eye(len(X)) * NOISE**2
    + (A @ A) * torch.ones(len(X), len(X))).log_prob(X))


@model
def correlated(x):
    z1 = sample("z1", Normal(0.0, 1.0))
    z2 = sample("z2", Normal(0.0, 1.0))
    with plate("data", len(x)):
        sample("x", Normal(A[0] * z1 + A[1] * z2, NOISE), obs=x)


@model
def mixed_supports(y):
    s = sample("s", Gamma(2.0, 2.0))
    p = sample("p", Dirichlet(torch.ones(3)))
    with plate("groups", 4):
        mu = sample("mu", Normal(0.0, 1.0))
    with plate("data", len(y)):
        sample("y", Normal(mu.sum(-1, keepdim=True) * p[..., :1].squeeze(-1), s), obs=y)


GUIDES = [AutoDelta, AutoNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal]


@pytest.mark.parametrize("kind", GUIDES)
def test_autoguides_propose_every_site_in_its_support_and_shape(kind, store):
    y = torch.tensor([0.3, -0.2])
    guide = kind(mixed_supports)
    values = ELBO(3)(mixed_supports, guide, y)  # runs vectorized over 3 particles
    assert values.surrogate.requires_grad
    from ppl.handlers import trace

    tr = trace().get_trace(guide, y)
    assert tr["s"].value.shape == () and float(tr["s"].value.detach()) > 0
    assert tr["p"].value.shape == (3,)
    assert float(tr["p"].value.detach().sum()) == pytest.approx(1.0, abs=1e-5)
    assert tr["mu"].value.shape == (4,)
    assert all(name.startswith("auto.") for name in store)


def test_joint_guides_carry_the_jacobian_so_their_density_is_of_the_constrained_values(store):
    @model
    def positive():
        sample("s", Gamma(3.0, 2.0))

    guide = AutoMultivariateNormal(positive)
    from ppl.handlers import trace

    tr = trace().get_trace(guide)
    u = tr["auto.latent"].value
    s = tr["s"].value
    base = tr["auto.latent"].fn
    # q(s) = N(log s) / s: the Delta site adds -log|d exp(u)/du| = -u
    assert torch.allclose(tr.log_joint(), base.log_prob(u) - torch.log(s))


def test_autoguides_refuse_discrete_sites_by_name():
    @model
    def coin():
        sample("flip", Bernoulli(0.5))

    with pytest.raises(ModelError, match="'flip' \\(Bernoulli\\) is discrete"):
        AutoNormal(coin)()


def test_laplace_is_exact_on_a_gaussian_posterior(store):
    guide = AutoLaplace(correlated).fit(X)
    assert torch.allclose(guide.loc, POST_MEAN, atol=1e-4)
    assert torch.allclose(guide.scale_tril @ guide.scale_tril.T, POST_COV, atol=1e-4)
    post = infer(correlated, X, method=Importance(2000, guide=guide), seed=0)
    ratio = torch.exp(post.log_weights - LOG_Z)  # the guide is the posterior: all weights 1
    assert torch.allclose(ratio, torch.ones(2000), atol=1e-3)


def test_laplace_must_be_fitted_first():
    with pytest.raises(ModelError, match="call fit"):
        AutoLaplace(correlated)(X)


@pytest.mark.slow
def test_full_rank_guide_reaches_the_exact_posterior_mean_and_covariance():
    schedule = lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, 0.985)  # noqa: E731
    res = infer(correlated, X, seed=0, method=VI(
        AutoMultivariateNormal(correlated), objective=ELBO(32), steps=250, lr=0.1,
        lr_schedule=schedule, num_samples=20000))
    # the fitted guide itself (its draws would add Monte Carlo error on top of the fit's)
    loc, tril = (res.params.get(f"auto.{name}").detach() for name in ("loc", "scale_tril"))
    assert torch.allclose(loc, POST_MEAN, atol=0.03)
    assert torch.allclose(tril @ tril.T, POST_COV, atol=0.03 * float(POST_COV.diag().max()))
    z = torch.stack([res.samples["z1"], res.samples["z2"]], -1)  # the draws follow the guide
    sd = float((tril @ tril.T).diag().max().sqrt())
    assert torch.allclose(z.mean(0), loc, atol=4 * sd / 20000**0.5)
    # the ELBO of the exact posterior is log p(x)
    assert abs(float(res.log_evidence_bound) - LOG_Z) < 0.05
    # and Importance with the fitted guide estimates the evidence without bias
    post = infer(correlated, X, method=Importance(20000, guide=res.guide), seed=1)
    assert abs(float(post.log_evidence) - LOG_Z) < 4 * float(post.log_evidence_se)


def test_a_short_full_rank_fit_moves_towards_the_posterior():
    res = infer(correlated, X, seed=0, method=VI(
        AutoMultivariateNormal(correlated), objective=ELBO(8), steps=60, lr=0.05,
        evaluations=2, num_samples=10))
    loc = res.params.unconstrained()["auto.loc"].detach()
    start = torch.zeros(2)
    assert (loc - POST_MEAN).norm() < 0.8 * (start - POST_MEAN).norm()
    assert float(res.losses[-10:].mean()) < float(res.losses[:10].mean())
    assert math.isfinite(float(res.log_evidence_bound))
