"""Targets with closed-form moments and MCSE-based moment checks for the MCMC kernel tests."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from ppl.inference.results.diagnostics import ess, mcse_mean


class Gaussian:
    """``N(mean, cov)`` as a batched log density with its analytic gradient.

    The precision product is a broadcast multiply-and-sum (not a matmul), so each chain's row
    is computed the same way whatever the number of rows: chain-count invariance tests need
    a row-wise deterministic density.
    """

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        self.mean = mean.to(torch.float64)
        self.cov = cov.to(torch.float64)
        self.prec = torch.linalg.inv(self.cov)
        self.sd = self.cov.diagonal().sqrt()
        self.dim = self.mean.shape[0]

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        d = z - self.mean
        pd = (self.prec * d.unsqueeze(-2)).sum(-1)
        return -0.5 * (d * pd).sum(-1), -pd


def correlated_gaussian_5d() -> Gaussian:
    """Mean (1, -2, 0.5, 3, 0), sds (1, 2, 0.5, 1.5, 1), correlations 0.6^|i-j|."""
    mean = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0], dtype=torch.float64)
    sd = torch.tensor([1.0, 2.0, 0.5, 1.5, 1.0], dtype=torch.float64)
    idx = torch.arange(5)
    corr = 0.6 ** (idx[:, None] - idx[None, :]).abs().to(torch.float64)
    return Gaussian(mean, corr * sd[:, None] * sd[None, :])


def check_moments(draws: Tensor, target: Gaussian, z_max: float = 4.0) -> None:
    """Per coordinate: ``|mean - mu| / mcse < z_max`` and ``|sd / sigma - 1|`` within
    ``z_max`` standard errors, with the standard error of the sd ratio ``1 / sqrt(2 ESS)``
    (Gaussian: ``Var((x - mu)^2) = 2 sigma^4``) and ESS that of ``(x - mu)^2``."""
    assert torch.isfinite(draws).all()
    mean = draws.mean(dim=(0, 1))
    z = (mean - target.mean) / mcse_mean(draws)
    assert (z.abs() < z_max).all(), f"mean z-scores {z.tolist()}"
    sq = (draws - target.mean) ** 2
    ess_sq = ess(sq)
    ratio = draws.reshape(-1, target.dim).std(dim=0) / target.sd
    tol = z_max / torch.sqrt(2.0 * ess_sq)
    assert ((ratio - 1.0).abs() < tol).all(), (
        f"sd ratios {ratio.tolist()} tolerances {tol.tolist()} (ESS of squares {ess_sq.tolist()})"
    )


@pytest.fixture
def gaussian5() -> Gaussian:
    return correlated_gaussian_5d()


@pytest.fixture
def moments():
    return check_moments


@pytest.fixture
def make_gaussian():
    return Gaussian


@pytest.fixture
def funnel():
    """Neal's funnel in 2-d: v ~ N(0, 3^2), x | v ~ N(0, exp(v))."""

    def fn(z: Tensor) -> tuple[Tensor, Tensor]:
        v, x = z[:, 0], z[:, 1]
        lp = -v * v / 18.0 - 0.5 * x * x * torch.exp(-v) - 0.5 * v
        gv = -v / 9.0 + 0.5 * x * x * torch.exp(-v) - 0.5
        gx = -x * torch.exp(-v)
        return lp, torch.stack((gv, gx), dim=-1)

    return fn


__all__ = ["Gaussian", "check_moments", "correlated_gaussian_5d", "math"]
