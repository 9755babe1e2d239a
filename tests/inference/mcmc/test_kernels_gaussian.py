"""Every kernel samples a correlated 5-d Gaussian: means within |z| < 4 of the truth using the
MCSE, sds within 4 standard errors (from the ESS of the squares); dense NUTS beats diagonal
NUTS on a strongly correlated target."""

from __future__ import annotations

import pytest
import torch

from ppl.inference.mcmc import HMC, MALA, NUTS, RWMH, Slice, sample
from ppl.inference.results.diagnostics import ess_bulk

CASES = {
    "nuts-diag": (NUTS(), 300, 500),
    "nuts-dense": (NUTS(metric="dense"), 300, 500),
    "hmc-jitter": (HMC(trajectory_length=3.0, jitter=0.2), 300, 500),
    "mala": (MALA(), 500, 2000),
    "rwmh": (RWMH(), 1000, 4000),
    "slice-coordinate": (Slice(), 100, 400),
    "slice-random": (Slice(direction="random", num_directions=5), 100, 400),
}


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_recovers_gaussian_moments(name, gaussian5, moments):
    kernel, warmup, draws = CASES[name]
    init = torch.zeros(4, 5, dtype=torch.float64)
    run = sample(kernel, gaussian5, init, warmup, draws, seed=11)
    assert run.draws.shape == (4, draws, 5)
    moments(run.draws, gaussian5)


def test_dense_metric_beats_diagonal_on_correlated_target(make_gaussian):
    dim, rho = 10, 0.95
    cov = torch.full((dim, dim), rho, dtype=torch.float64)
    cov.fill_diagonal_(1.0)
    target = make_gaussian(torch.zeros(dim, dtype=torch.float64), cov)
    init = torch.zeros(2, dim, dtype=torch.float64)
    efficiency = {}
    for metric in ("diag", "dense"):
        run = sample(NUTS(metric=metric), target, init, 400, 400, seed=3)
        efficiency[metric] = float(ess_bulk(run.draws).min()) / run.num_grad_evals
    # Eigenvalues 1 + 9 rho and 1 - rho: a diagonal metric is left with condition number ~190.
    assert efficiency["dense"] > 3.0 * efficiency["diag"], efficiency
