"""Random-walk Metropolis-Hastings with a Gaussian proposal shaped by the metric.

Proposal ``z' = z + eps * L xi`` with ``xi ~ N(0, I)`` and ``L L^T = M^{-1}`` (the metric's
inverse mass matrix, which warmup sets to the posterior covariance estimate); accepted with
``min(1, exp(log p(z') - log p(z)))``. During warmup the scale ``eps`` is adapted per chain by
dual averaging to the acceptance rate 0.234, optimal for high-dimensional Gaussian-like
targets (Roberts, Gelman & Gilks 1997), where ``eps`` tends to ``2.38 / sqrt(D)``.
A proposal with a ``nan`` or ``+inf`` density is rejected and flagged divergent; ``-inf``
(outside the support) is simply rejected.

>>> import torch
>>> fn = lambda z: (-0.5 * (z * z).sum(-1), -z)
>>> kernel = RWMH(fn, step_size=1.0)
>>> state = kernel.init(torch.zeros(2, 3, dtype=torch.float64))
>>> state, info = kernel.step(torch.Generator().manual_seed(0), state)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ppl.inference.rng import RNG, rand, randn

from .base import Info, KernelBase, State, make_info
from .integrators import scale_by_sqrt_inverse_mass

__all__ = ["RWMH"]


@dataclass(frozen=True)
class RWMH(KernelBase):
    """Random-walk Metropolis; ``step_size`` is the proposal scale in units of ``sqrt(M^{-1})``."""

    target_accept: ClassVar[float | None] = 0.234
    step_size_search: ClassVar[bool] = False

    def step(self, rng: RNG, state: State) -> tuple[State, Info]:
        """One Gaussian random-walk proposal and Metropolis correction per chain.
        Random draws per chain: the proposal noise ``(D,)``, then one uniform."""
        with torch.no_grad():
            z, lp, g, eps, metric = state
            num_chains, dim = z.shape
            xi = randn(rng, num_chains, (dim,), dtype=z.dtype, device=z.device)
            u = rand(rng, num_chains, (1,), dtype=z.dtype, device=z.device)[:, 0]
            z_new = z + eps.unsqueeze(-1) * scale_by_sqrt_inverse_mass(metric, xi)
            lp_new, g_new = self.fn(z_new)
            bad = torch.isnan(lp_new) | (lp_new == math.inf)
            log_ratio = torch.nan_to_num(lp_new - lp, nan=-math.inf, posinf=-math.inf)
            log_ratio = torch.where(bad, -math.inf, log_ratio)
            accept = torch.log(u) < log_ratio
            acc_col = accept.unsqueeze(-1)
            lp_out = torch.where(accept, lp_new, lp)
            new_state = State(
                torch.where(acc_col, z_new, z), lp_out, torch.where(acc_col, g_new, g), eps, metric
            )
            ones = torch.ones(num_chains, dtype=torch.int64, device=z.device)
            info = make_info(log_ratio.clamp(max=0.0).exp(), bad, -lp_out, ones, eps)
            return new_state, info
