"""Stan's windowed warmup: schedule, Welford estimates and regularization, dual averaging,
the step-size search, and end-to-end adaptation of step size and metric per chain."""

from __future__ import annotations

import math

import pytest
import torch

from ppl.inference.mcmc import HMC, NUTS, RWMH, WindowAdaptation, sample
from ppl.inference.mcmc.adaptation import (
    dual_averaging_init,
    dual_averaging_update,
    find_reasonable_step_size,
    regularized_covariance,
    warmup_windows,
    welford_init,
    welford_update,
)
from ppl.inference.rng import chain_generators


def test_windows_follow_stan():
    assert warmup_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert warmup_windows(150) == [(75, 100)]
    assert warmup_windows(200) == [(75, 100), (100, 150)]
    # 75 + 25 + 50 > 100: 15% / 75% / 10%.
    assert warmup_windows(100) == [(15, 90)]
    assert warmup_windows(19) == []
    for n in (20, 57, 300, 1234, 5000):
        windows = warmup_windows(n)
        assert all(a < b for a, b in windows)
        assert all(windows[i][1] == windows[i + 1][0] for i in range(len(windows) - 1))


@pytest.mark.parametrize("dense", [False, True])
def test_welford_and_regularization(dense):
    x = torch.randn(3, 40, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = welford_init(3, 4, dense, x)
    for t in range(40):
        w = welford_update(w, x[:, t])
    n = 40
    assert torch.allclose(w.mean, x.mean(1))
    shrink = n / (n + 5.0)
    if dense:
        cov = torch.stack([torch.cov(x[c].T) for c in range(3)])
        expected = shrink * cov + 1e-3 * (5.0 / (n + 5.0)) * torch.eye(4, dtype=torch.float64)
    else:
        expected = shrink * x.var(1) + 1e-3 * (5.0 / (n + 5.0))
    assert torch.allclose(regularized_covariance(w), expected)


def test_dual_averaging_finds_target_step():
    """With accept(eps) = exp(-eps) the target 0.8 is reached at eps = -log(0.8)."""
    da = dual_averaging_init(torch.tensor([1.0, 0.01, 5.0], dtype=torch.float64))
    for _ in range(3000):
        da = dual_averaging_update(da, torch.exp(-da.log_step.exp()), 0.8)
    assert torch.allclose(da.log_step_avg.exp(), torch.full((3,), -math.log(0.8),
                                                            dtype=torch.float64), rtol=0.02)


def test_step_size_search_crosses_threshold_per_chain():
    def fn(z):
        return -0.5 * (z * z).sum(-1), -z

    kernel = NUTS(fn, step_size=torch.tensor([1e-4, 1e3, 1.0], dtype=torch.float64))
    state = kernel.init(torch.zeros(3, 10, dtype=torch.float64))
    new, evals = find_reasonable_step_size(fn, chain_generators(0, 3), state)
    eps = new.step_size
    assert (eps > 0.05).all() and (eps < 10.0).all(), eps
    assert evals[0] > 5 and evals[1] > 5  # many doublings / halvings


def _scaled_gaussian(dim=8):
    sd = torch.logspace(-2, 2, dim, dtype=torch.float64)

    def fn(z):
        return -0.5 * ((z / sd) ** 2).sum(-1), -z / sd**2

    return fn, sd


def test_nuts_adapts_metric_to_very_different_scales():
    fn, sd = _scaled_gaussian()
    # Until the first window ends the unit metric needs the deepest trees: cap them.
    run = sample(NUTS(max_tree_depth=8), fn, torch.zeros(4, 8, dtype=torch.float64), 400, 200,
                 seed=0)
    ratio = run.inverse_mass_matrix / sd**2
    # The last window (260 draws) estimates variances spanning 8 orders of magnitude.
    assert (ratio > 0.5).all() and (ratio < 2.0).all(), ratio
    assert abs(float(run.info.accept_prob.mean()) - 0.8) < 0.1
    assert run.step_size.shape == (4,) and len(set(run.step_size.tolist())) == 4


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_nuts_acceptance_reaches_target(make_gaussian, target):
    # 20-d standard normal: NUTS's mean acceptance statistic after Stan's warmup sits a little
    # above the target (the final step size is the dual-averaging average).
    gauss = make_gaussian(torch.zeros(20, dtype=torch.float64), torch.eye(20, dtype=torch.float64))
    run = sample(NUTS(), gauss, torch.zeros(4, 20, dtype=torch.float64), 300, 200, seed=0,
                 adapt=WindowAdaptation(target_accept=target))
    tolerance = 0.1 if target < 0.9 else 0.05
    assert abs(float(run.info.accept_prob.mean()) - target) < tolerance


def test_dense_adaptation_with_static_hmc(gaussian5):
    run = sample(HMC(num_steps=8, metric="dense"), gaussian5,
                 torch.zeros(4, 5, dtype=torch.float64), 500, 100, seed=1)
    assert run.inverse_mass_matrix.shape == (4, 5, 5)
    estimate = run.inverse_mass_matrix
    # Relative error of the covariance in the metric (sd-normalized) is small.
    scale = gaussian5.sd[:, None] * gaussian5.sd[None, :]
    assert ((estimate - gaussian5.cov) / scale).abs().max() < 0.35
    # Dual averaging reaches the target on average during warmup.
    assert abs(float(run.warmup_info.accept_prob[:, 100:450].mean()) - 0.8) < 0.07


def test_rwmh_acceptance_adapts_towards_0234(gaussian5):
    run = sample(RWMH(), gaussian5, torch.zeros(4, 5, dtype=torch.float64), 1000, 1000, seed=0)
    # Dual averaging reaches the target on average during warmup; the averaged final scale
    # gives somewhat lower acceptance (a Jensen gap of the noisy statistic).
    late_warmup = run.warmup_info.accept_prob[:, 500:].mean()
    assert abs(float(late_warmup) - 0.234) < 0.05
    assert 0.08 < float(run.info.accept_prob.mean()) < 0.35


def test_no_adaptation_keeps_parameters(gaussian5):
    run = sample(NUTS(step_size=0.3), gaussian5, torch.zeros(2, 5, dtype=torch.float64), 20, 20,
                 seed=0, adapt=False)
    assert torch.equal(run.step_size, torch.full((2,), 0.3, dtype=torch.float64))
    assert torch.equal(run.inverse_mass_matrix, torch.ones(2, 5, dtype=torch.float64))
