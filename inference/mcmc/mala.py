"""Metropolis-adjusted Langevin algorithm (MALA), preconditioned by the metric.

The proposal ``z' = z + (eps^2 / 2) M^{-1} grad(z) + eps L xi`` (``L L^T = M^{-1}``) with its
Metropolis-Hastings correction is exactly one leapfrog step of HMC with ``p ~ N(0, M)``
accepted with ``min(1, exp(-delta H))``: the Gaussian proposal densities of the Langevin
move reduce to the kinetic energies of the initial and final momenta. So MALA runs the
static HMC transition with one step; its optimal acceptance rate is about 0.574
(Roberts & Rosenthal 1998), the default adaptation target.

>>> import torch
>>> fn = lambda z: (-0.5 * (z * z).sum(-1), -z)
>>> state = MALA(fn, step_size=0.5).init(torch.zeros(3, 2, dtype=torch.float64))
>>> state, info = MALA(fn).step(torch.Generator().manual_seed(0), state)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ppl.inference.rng import RNG

from .base import Info, KernelBase, State
from .hmc import static_hmc_transition

__all__ = ["MALA"]


@dataclass(frozen=True)
class MALA(KernelBase):
    """Preconditioned MALA (one-step HMC); ``divergence_threshold`` as in HMC."""

    divergence_threshold: float = 1000.0

    target_accept: ClassVar[float | None] = 0.574

    def step(self, rng: RNG, state: State) -> tuple[State, Info]:
        """One Langevin proposal and Metropolis-Hastings correction per chain."""
        with torch.no_grad():
            return static_hmc_transition(
                self.fn, rng, state, 1, divergence_threshold=self.divergence_threshold
            )
