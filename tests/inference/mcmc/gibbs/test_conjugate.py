"""Conjugate updates: detection from the graph, each pair's draws against its closed-form
posterior (first and second moments, 20000 independent chains, |z| < 4), and a Gibbs sampler
made of conjugate updates only against quadrature."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Gamma as TorchGamma
from torch.distributions import Normal as TorchNormal

from ppl import infer, model, plate, sample
from ppl.inference.mcmc.gibbs import Conjugate, conjugate_match
from ppl.inference.mcmc.gibbs.method import Gibbs
from ppl.ir import IRError
from ppl.passes import temper
from ppl.stdlib import (
    Bernoulli,
    Beta,
    Binomial,
    Categorical,
    Dirichlet,
    Gamma,
    HalfNormal,
    Normal,
    Poisson,
)

CHAINS = 20000
Y = torch.tensor([0.3, 1.8, 1.1, 0.6, 2.2, 1.4, 0.9, 1.5])


def draw(graph, site, values):
    """One conjugate update of ``site`` for CHAINS chains that all start at ``values``."""
    update = Conjugate().bind(graph, (site,))
    tiled = {k: torch.as_tensor(v).expand(CHAINS, *torch.as_tensor(v).shape).clone()
             for k, v in values.items()}
    out, _, _ = update.step(torch.Generator().manual_seed(0), tiled, None)
    return out[site].double()


def check_moments(draws, mean, var):
    """E[x] and E[x^2] of iid draws within 4 standard errors of the exact values."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    var = torch.as_tensor(var, dtype=torch.float64)
    for f, exact in ((draws, mean), (draws**2, var + mean**2)):
        z = (f.mean(0) - exact) / (f.std(0) / CHAINS**0.5)
        assert (z.abs() < 4).all(), (f.mean(0), exact, z)


@model
def normal_mean(y):
    mu = sample("mu", Normal(1.0, 2.0))
    with plate("data", len(y)):
        sample("y", Normal(mu, 0.5), obs=y)


def test_normal_normal():
    precision = 1 / 4 + len(Y) / 0.25
    mean = (1.0 / 4 + Y.sum() / 0.25) / precision
    draws = draw(normal_mean.graph(Y), "mu", {"mu": torch.tensor(0.0)})
    check_moments(draws, mean, 1 / precision)


@model
def grouped(y):
    locs = sample("locs", Normal(torch.tensor([-1.0, 0.0, 1.0]), 1.5).to_event(1))
    with plate("rows", y.shape[0], dim=-2):
        sample("y", Normal(locs, torch.tensor([0.5, 1.0, 2.0])), obs=y)


def test_normal_normal_vector_through_plate_and_independent():
    y = torch.tensor([[0.1, 0.5, 2.0], [-0.7, 1.5, 0.4], [0.3, -0.2, 1.1], [0.0, 0.9, 3.0]])
    scale = torch.tensor([0.5, 1.0, 2.0])
    precision = 1 / 1.5**2 + 4 / scale**2
    mean = (torch.tensor([-1.0, 0.0, 1.0]) / 1.5**2 + y.sum(0) / scale**2) / precision
    draws = draw(grouped.graph(y), "locs", {"locs": torch.zeros(3)})
    check_moments(draws, mean, 1 / precision)


@model
def coin(flips, successes):
    p = sample("p", Beta(2.0, 3.0))
    with plate("flips", len(flips)):
        sample("flip", Bernoulli(p), obs=flips)
    with plate("batches", len(successes)):
        sample("batch", Binomial(5, p), obs=successes)


def test_beta_bernoulli_and_binomial():
    flips, successes = torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([3.0, 4.0, 1.0])
    a = 2.0 + flips.sum() + successes.sum()
    b = 3.0 + (1 - flips).sum() + (5 - successes).sum()
    draws = draw(coin.graph(flips, successes), "p", {"p": torch.tensor(0.5)})
    check_moments(draws, a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1)))


@model
def counts(c):
    rate = sample("rate", Gamma(3.0, 0.5))
    with plate("data", len(c)):
        sample("c", Poisson(rate), obs=c)


def test_gamma_poisson():
    c = torch.tensor([4.0, 7.0, 2.0, 5.0, 6.0])
    a, b = 3.0 + c.sum(), 0.5 + len(c)
    check_moments(draw(counts.graph(c), "rate", {"rate": torch.tensor(1.0)}), a / b, a / b**2)


def _precision_models():
    def build(scale_of):
        @model
        def m(y):
            mu = sample("mu", Normal(0.0, 3.0))
            tau = sample("tau", Gamma(2.0, 1.0))
            with plate("data", len(y)):
                sample("y", Normal(mu, scale_of(tau)), obs=y)

        return m

    return {
        "one_over_sqrt": build(lambda t: 1.0 / torch.sqrt(t)),
        "pow": build(lambda t: t**-0.5),
        "rsqrt": build(torch.rsqrt),
    }


@pytest.mark.parametrize("spelling", ["one_over_sqrt", "pow", "rsqrt"])
def test_gamma_normal_precision(spelling):
    m = _precision_models()[spelling]
    mu = torch.tensor(1.2)
    a, b = 2.0 + len(Y) / 2, 1.0 + 0.5 * ((Y - mu) ** 2).sum()
    draws = draw(m.graph(Y), "tau", {"mu": mu, "tau": torch.tensor(1.0)})
    check_moments(draws, a / b, a / b**2)


@model
def dice(rolls):
    w = sample("w", Dirichlet(torch.tensor([1.0, 2.0, 3.0])))
    with plate("rolls", len(rolls)):
        sample("roll", Categorical(w), obs=rolls)


def test_dirichlet_categorical():
    rolls = torch.tensor([0, 2, 2, 1, 2, 0, 2])
    alpha = torch.tensor([1.0, 2.0, 3.0]) + torch.bincount(rolls, minlength=3)
    total = alpha.sum()
    mean = alpha / total
    var = alpha * (total - alpha) / (total**2 * (total + 1))
    check_moments(draw(dice.graph(rolls), "w", {"w": torch.ones(3) / 3}), mean, var)


@model
def not_conjugate(y):
    mu = sample("mu", Normal(0.0, 1.0))
    s = sample("s", HalfNormal(1.0))
    nu = sample("nu", Normal(0.0, 1.0))
    with plate("data", len(y)):
        sample("y", Normal(2.0 * mu, s), obs=y)
        sample("y2", Normal(nu, nu.abs() + 1.0), obs=y)


def test_detection_explains_why_not(models):
    g = not_conjugate.graph(Y)
    assert "not directly" in conjugate_match(g, "mu")
    assert "HalfNormal is not one of the conjugate priors" in conjugate_match(g, "s")
    assert "in parameters ['loc', 'scale']" in conjugate_match(g, "nu")
    assert "not directly" in conjugate_match(models.hmm.graph(models.hmm_data), "locs")
    assert "scaled" in conjugate_match(temper(0.5)(normal_mean.graph(Y)), "mu")
    prior, children = conjugate_match(models.mixture.graph(models.mixture_data), "weights")
    assert prior.name == "Dirichlet" and [c.address for c, _ in children] == ["z"]
    with pytest.raises(IRError, match="Conjugate: site 'mu' has no conjugate update"):
        Conjugate().bind(g, ("mu",))


def test_gibbs_of_conjugate_updates_matches_quadrature(check):
    """Normal mean and precision with independent priors: two conjugate updates per sweep."""
    m = _precision_models()["pow"]
    post = infer(m, Y, method=Gibbs(100, 600, chains=4, conjugate=True), seed=1)
    assert [type(u).__name__ for _, u in post.extra["blocks"]] == ["Conjugate"]
    mu = torch.linspace(-2.0, 4.0, 400, dtype=torch.float64).reshape(-1, 1)
    tau = torch.linspace(0.005, 15.0, 1000, dtype=torch.float64).reshape(1, -1)
    likelihood = TorchNormal(mu.unsqueeze(-1), tau.rsqrt().unsqueeze(-1)).log_prob(Y.double())
    log_joint = (TorchNormal(0.0, 3.0).log_prob(mu) + TorchGamma(2.0, 1.0).log_prob(tau)
                 + likelihood.sum(-1))
    weights = torch.softmax(log_joint.flatten(), 0).reshape(log_joint.shape)
    check(post.samples["mu"], (weights * mu).sum(), "mu")
    check(post.samples["tau"], (weights * tau).sum(), "tau")
