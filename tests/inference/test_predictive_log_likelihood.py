"""``ppl.predictive`` on a regression ``alpha + X @ beta`` in both modes, in the model's dtype,
and the pointwise log likelihood (``Posterior.log_likelihood()``, ``to_arviz()``'s group)
against the closed form."""

import math
import warnings

import pytest
import torch

from ppl import infer, model, plate, predictive, sample
from ppl.inference import NUTS, Posterior
from ppl.stdlib import HalfNormal, Normal
from ppl.vectorize import VectorizationWarning

g = torch.Generator().manual_seed(0)
X = torch.randn(30, 3, generator=g)
Y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 + 0.5 * torch.randn(30, generator=g)


@model
def regression(x, y=None):
    alpha = sample("alpha", Normal(0.0, 5.0))
    beta = sample("beta", Normal(torch.zeros(3), 5.0).to_event(1))
    sigma = sample("sigma", HalfNormal(1.0))
    with plate("data", x.shape[0]):
        sample("y", Normal(alpha + x @ beta, sigma), obs=y)


def fake_posterior(chains=2, draws=200):
    """Float64 draws, as MCMC stores them, around the truth."""
    h = torch.Generator().manual_seed(1)
    samples = {
        "alpha": 0.3 + 0.1 * torch.randn(chains, draws, generator=h, dtype=torch.float64),
        "beta": torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        + 0.1 * torch.randn(chains, draws, 3, generator=h, dtype=torch.float64),
        "sigma": 0.5 + 0.05 * torch.rand(chains, draws, generator=h, dtype=torch.float64),
    }
    return Posterior(samples=samples, extra={"graph": regression.graph(X, y=Y)})


def standardized_residuals(post, y_rep):
    s = post.samples
    mean = s["alpha"][..., None] + (s["beta"].unsqueeze(-2) * X.double()).sum(-1)
    return (y_rep.double() - mean) / s["sigma"][..., None]


@pytest.mark.parametrize("vectorized", [True, False])
def test_predictive_of_a_matmul_regression_in_both_modes(vectorized):
    post = fake_posterior()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y_rep = predictive(regression, post, X, seed=0, vectorized=vectorized)["y"]
    assert y_rep.shape == (2, 200, 30) and y_rep.dtype == torch.float32
    # vectorized: the particle axis would be a matrix dimension to matmul, so it runs under vmap
    assert not any(issubclass(w.category, VectorizationWarning) for w in caught)
    r = standardized_residuals(post, y_rep)
    n = r.numel()
    assert abs(float(r.mean())) < 4 / math.sqrt(n)
    assert abs(float(r.var()) - 1.0) < 4 * math.sqrt(2 / n)


def test_pointwise_log_likelihood_is_the_closed_form():
    post = fake_posterior()
    ll = post.log_likelihood()
    assert set(ll) == {"y"} and ll["y"].shape == (2, 200, 30)
    s = post.samples
    mean = s["alpha"][..., None] + (s["beta"].unsqueeze(-2) * X.double()).sum(-1)
    exact = torch.distributions.Normal(mean, s["sigma"][..., None]).log_prob(Y.double())
    torch.testing.assert_close(ll["y"].double(), exact, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::ppl.inference.ConvergenceWarning")
def test_loo_on_an_exported_posterior():
    az = pytest.importorskip("arviz")
    post = infer(regression, X, y=Y, method=NUTS(200, 200, 2), seed=0)
    data = post.to_arviz()
    assert data.log_likelihood["y"].shape == (2, 200, 30)
    loo = az.loo(data)
    assert math.isfinite(float(loo.elpd_loo))
