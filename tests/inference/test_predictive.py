"""``ppl.predictive``: posterior predictive over MCMC and weighted posteriors, prior
predictive, shapes, seeding, the per-draw loop, and refusing marginalized latents.

Posteriors are built from known draws (no sampler needed): the predictive distribution given
the draws is then known exactly and checked with z-scores."""

import math

import pytest
import torch

from ppl import deterministic, infer, model, plate, predictive, sample
from ppl.inference import Importance, Posterior, WeightedPosterior
from ppl.inference.testing import conjugate_cases
from ppl.passes import enumerate_discrete
from ppl.stdlib import Dirichlet, MultivariateNormal, Normal, StudentT
from ppl.vectorize import VectorizationWarning

SIGMA = 1.5
YS = torch.tensor([2.1, 0.4, 1.9])


@model
def regression(ys):
    mu = sample("mu", Normal(1.0, 3.0))
    deterministic("mu_squared", mu**2)
    with plate("data", len(ys)):
        sample("y", Normal(mu, SIGMA), obs=ys)


@model
def nested(ys):
    """A vector latent with an event dim, a plate-batched latent, and a second observation."""
    w = sample("w", Dirichlet(torch.ones(3)))
    with plate("groups", 2):
        loc = sample("loc", Normal(0.0, 1.0))
        sample("y", MultivariateNormal(loc.unsqueeze(-1) * w, torch.eye(3)), obs=ys)


@model
def optional_data(n, y=None):
    mu = sample("mu", Normal(1.0, 3.0))
    with plate("data", n):
        sample("y", Normal(mu, SIGMA), obs=y)


def posterior(chains=2, draws=400, seed=0) -> Posterior:
    g = torch.Generator().manual_seed(seed)
    mu = 2.0 + 0.5 * torch.randn(chains, draws, generator=g)
    return Posterior({"mu": mu, "mu_squared": mu**2})


def test_posterior_predictive_shapes_and_values():
    post = posterior()
    out = predictive(regression, post, YS, seed=0)
    assert list(out) == ["mu", "mu_squared", "y"]
    assert out["y"].shape == (2, 400, 3) and out["mu"].shape == (2, 400)
    assert torch.equal(out["mu"], post.samples["mu"])
    torch.testing.assert_close(out["mu_squared"], post.samples["mu"] ** 2)
    # y | mu ~ N(mu, SIGMA): the residuals are standard normal, independent of the data YS.
    resid = ((out["y"] - out["mu"].unsqueeze(-1)) / SIGMA).reshape(-1)
    assert abs(float(resid.mean())) * math.sqrt(resid.numel()) < 4
    assert abs(float(resid.var()) - 1) * math.sqrt(resid.numel() / 2) < 4
    assert not torch.equal(out["y"][0, 0], YS)


def test_seeded_and_reproducible():
    post = posterior()
    a = predictive(regression, post, YS, seed=1)
    b = predictive(regression, post, YS, seed=1)
    c = predictive(regression, post, YS, seed=2)
    assert torch.equal(a["y"], b["y"]) and not torch.equal(a["y"], c["y"])


def test_loop_gives_the_same_distribution_as_the_vectorized_run():
    post = posterior(chains=1, draws=300)
    out = predictive(regression, post, YS, seed=0, vectorized=False)
    assert out["y"].shape == (1, 300, 3)
    assert torch.equal(out["mu"], post.samples["mu"])
    resid = ((out["y"] - out["mu"].unsqueeze(-1)) / SIGMA).reshape(-1)
    assert abs(float(resid.mean())) * math.sqrt(resid.numel()) < 4
    assert abs(float(resid.var()) - 1) * math.sqrt(resid.numel() / 2) < 4


def test_event_dims_and_plates_line_up_with_the_draws():
    g = torch.Generator().manual_seed(0)
    w = torch.softmax(torch.randn(3, 20, 3, generator=g), -1)
    loc = 5 * torch.randn(3, 20, 2, generator=g)
    ys = torch.zeros(2, 3)
    for vectorized, draws in ((True, 20), (False, 4)):  # the loop is slow: fewer draws
        sub = Posterior({"w": w[:, :draws], "loc": loc[:, :draws]})
        out = predictive(nested, sub, ys, seed=0, vectorized=vectorized)
        assert out["y"].shape == (3, draws, 2, 3)
        assert torch.equal(out["w"], sub.samples["w"])
        assert torch.equal(out["loc"], sub.samples["loc"])
        resid = out["y"] - sub.samples["loc"].unsqueeze(-1) * sub.samples["w"].unsqueeze(-2)
        assert float(resid.abs().max()) < 6  # N(0, I) per draw and group
        assert abs(float(resid.mean())) < 4 / math.sqrt(resid.numel())


X = torch.tensor([[1.0, 0.5, -1.0], [0.2, -0.3, 2.0], [-1.5, 1.0, 0.0], [0.0, 2.0, 1.0]])


@model
def matmul_regression(X, likelihood=Normal):
    """``X @ beta`` with a latent vector ``beta``: code that depends on the latent's shape."""
    alpha = sample("alpha", Normal(0.0, 1.0))
    beta = sample("beta", Normal(torch.zeros(X.shape[1]), 1.0).to_event(1))
    with plate("data", X.shape[0]):
        mean = alpha + X @ beta
        deterministic("mean", mean)
        sample("y", likelihood(mean, SIGMA), obs=torch.zeros(X.shape[0]))


def matmul_posterior(draws: int, seed: int = 0) -> Posterior:
    g = torch.Generator().manual_seed(seed)
    return Posterior({"alpha": torch.randn(2, draws, generator=g),
                      "beta": torch.randn(2, draws, 3, generator=g)})


def StudentT_3(loc, scale):  # noqa: N802 - a distribution constructor
    return StudentT(3.0, loc, scale)


def test_what_neither_vectorizes_nor_vmaps_runs_per_draw_and_says_why():
    post = matmul_posterior(draws=6)  # StudentT's sampler fills a tensor in place: no vmap
    with pytest.warns(VectorizationWarning, match="once per particle"):
        out = predictive(matmul_regression, post, X, StudentT_3, seed=0)
    torch.testing.assert_close(out["mean"], post.samples["alpha"].unsqueeze(-1)
                               + post.samples["beta"] @ X.T)
    assert out["y"].shape == (2, 6, 4)


def test_weighted_posterior_is_resampled():
    post = WeightedPosterior({"mu": torch.tensor([0.0, 10.0, 20.0])},
                             log_weights=torch.tensor([0.0, -math.inf, 0.0]))
    out = predictive(regression, post, YS, num_samples=500, seed=0)
    assert out["y"].shape == (500, 3) and out["mu"].shape == (500,)
    assert set(out["mu"].tolist()) == {0.0, 20.0}  # zero weight is never drawn
    default = predictive(regression, infer(regression, YS, method=Importance(50), seed=0), YS)
    assert default["y"].shape == (50, 3)


def test_prior_predictive():
    out = predictive(regression, None, YS, num_samples=4000, seed=0)
    assert out["y"].shape == (4000, 3) and out["mu"].shape == (4000,)
    # y ~ N(1, 3^2 + SIGMA^2) marginally
    sd = math.sqrt(9 + SIGMA**2)
    assert abs(float(out["y"].mean()) - 1.0) < 4 * sd / math.sqrt(4000)
    assert float(out["y"].std()) == pytest.approx(sd, rel=0.05)
    with pytest.raises(ValueError, match="needs num_samples"):
        predictive(regression, None, YS)


def test_sites_without_draws_are_new_quantities_unless_summed_out():
    post = posterior(chains=1, draws=50)
    out = predictive(regression, Posterior({"mu": post.samples["mu"]}), YS, seed=0)
    torch.testing.assert_close(out["mu_squared"], post.samples["mu"] ** 2)  # recomputed
    no_data = predictive(optional_data, post, 3, seed=0)  # y=None: y is latent, drawn given mu
    assert no_data["y"].shape == (1, 50, 3) and torch.equal(no_data["mu"], post.samples["mu"])
    case = conjugate_cases()["discrete_mixture"]
    graph = enumerate_discrete()(case.model.graph(*case.args))
    summed_out = Posterior({"mu": torch.zeros(1, 5)}, extra={"graph": graph})
    with pytest.raises(ValueError, match=r"no draws of latent sites \['z'\], which the enum"):
        predictive(case.model, summed_out, *case.args)


def test_misplaced_num_samples():
    with pytest.raises(ValueError, match="num_samples"):
        predictive(regression, posterior(), YS, num_samples=10)
