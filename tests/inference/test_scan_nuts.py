"""NUTS on a scan model (its loop vectorized over the steps by ``FlatModel.from_graph``): a
linear Gaussian AR(1) whose posterior is exact (a Gaussian with the AR precision plus the
noise's), recovered within MCSE z-scores by the scan model (its site ``x`` stacked over the
steps) and by its unrolled twin (sites ``x[t]``) alike."""

import pytest
import torch

from ppl import infer, model, sample, scan
from ppl.inference import NUTS
from ppl.inference.testing import ConjugateCase, ExactPosterior, check_draws
from ppl.scan import unstack_steps
from ppl.stdlib import Normal

RHO, T = 0.9, 5
Y = torch.tensor([0.6, 1.4, 0.2, -0.8, 1.1], dtype=torch.float64)


@model
def ar1_scan(y):
    def step(x, y_t):
        x = sample("x", Normal(RHO * x, 1.0))
        sample("y", Normal(x, 1.0), obs=y_t)
        return x, None

    scan(step, torch.tensor(0.0, dtype=torch.float64), y)


@model
def ar1_unrolled(y):
    x = torch.tensor(0.0, dtype=torch.float64)
    for t in range(len(y)):
        x = sample(f"x[{t}]", Normal(RHO * x, 1.0))
        sample(f"y[{t}]", Normal(x, 1.0), obs=y[t])


def exact_posterior(y: torch.Tensor) -> dict[str, ExactPosterior]:
    """x = L^-1 e with L lower bidiagonal (1, -rho): prior precision L'L; plus I from y."""
    n = len(y)
    eye = torch.eye(n, dtype=torch.float64)
    L = eye - RHO * torch.diag(torch.ones(n - 1, dtype=torch.float64), -1)
    cov = torch.linalg.inv(L.T @ L + eye)
    mean = cov @ y
    return {f"x[{t}]": ExactPosterior(mean[t], cov[t, t].sqrt()) for t in range(n)}


quiet = pytest.mark.filterwarnings("ignore::ppl.inference.results.summary.ConvergenceWarning")


@quiet
def test_nuts_reports_a_scan_site_stacked_over_its_steps():
    posterior = infer(ar1_scan, Y, method=NUTS(100, 100, chains=1), seed=0)
    assert {a: tuple(v.shape) for a, v in posterior.samples.items()} == {"x": (1, 100, T)}
    assert posterior.extra["backend"] in ("native", "generated")


@quiet
@pytest.mark.slow
@pytest.mark.parametrize("m", [ar1_scan, ar1_unrolled], ids=["scan", "unrolled"])
def test_nuts_on_a_scan_ar1_recovers_the_exact_posterior(m):
    posterior = infer(m, Y, method=NUTS(300, 600, chains=2), seed=0)
    samples = unstack_steps(posterior.samples, {f"x[{t}]" for t in range(T)}, dim=2)
    assert sorted(samples) == [f"x[{t}]" for t in range(T)]
    case = ConjugateCase("ar1", m, (Y,), {}, exact_posterior(Y))
    check_draws(samples, case)
    assert posterior.diagnostics().num_divergent == 0


@quiet
@pytest.mark.slow
def test_nuts_on_a_vectorized_scan_ar1_of_50_steps_recovers_the_exact_posterior():
    y = torch.randn(50, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.5
    posterior = infer(ar1_scan, y, method=NUTS(400, 800, chains=2), seed=1)
    assert posterior.extra["backend"] in ("native", "generated")
    assert tuple(posterior.samples["x"].shape) == (2, 800, 50)
    samples = unstack_steps(posterior.samples, {f"x[{t}]" for t in range(50)}, dim=2)
    check_draws(samples, ConjugateCase("ar1_50", ar1_scan, (y,), {}, exact_posterior(y)))
    assert posterior.diagnostics().num_divergent == 0
