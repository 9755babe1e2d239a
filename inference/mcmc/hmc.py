"""Hamiltonian Monte Carlo with a static path length, batched over chains.

One transition draws ``p ~ N(0, M)``, integrates ``L`` leapfrog steps of size ``eps`` and
accepts the end point with probability ``min(1, exp(H(z, p) - H(z', p')))``: an exact
Metropolis correction of a volume-preserving, reversible proposal (with the momentum flip
implicit because the kinetic energy is symmetric). ``L`` is ``num_steps`` or
``ceil(trajectory_length / eps)``; ``jitter`` draws each chain's step size uniformly in
``eps * [1 - jitter, 1 + jitter]`` per transition (as Stan's ``stepsize_jitter``), keeping
``L`` from the nominal step size, which breaks the periodicities a fixed path can hit.

Chains may need different ``L`` (per-chain step sizes): all chains run ``max L`` steps and a
finished chain continues with step size 0, which leaves it where it is.

>>> import torch
>>> fn = lambda z: (-0.5 * (z * z).sum(-1), -z)
>>> kernel = HMC(fn, step_size=0.3, num_steps=5)
>>> state = kernel.init(torch.zeros(2, 3, dtype=torch.float64))
>>> state, info = kernel.step(torch.Generator().manual_seed(0), state)
>>> info.num_grad_evals.tolist()
[5, 5]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ppl.inference.rng import RNG, rand, randn

from .base import Info, KernelBase, State, check_count, make_info
from .integrators import LogDensityFn, kinetic_energy, leapfrog_, sample_momentum, sharp

__all__ = ["HMC", "static_hmc_transition"]


@dataclass(frozen=True)
class HMC(KernelBase):
    """Static-path HMC. Give ``num_steps`` or ``trajectory_length`` (default: 10 steps)."""

    num_steps: int | None = None
    trajectory_length: float | None = None
    jitter: float = 0.0
    max_num_steps: int = 1024
    divergence_threshold: float = 1000.0

    target_accept: ClassVar[float | None] = 0.8

    def __post_init__(self) -> None:
        if self.num_steps is not None:
            check_count("HMC", "num_steps", self.num_steps, 1)
        check_count("HMC", "max_num_steps", self.max_num_steps, 1)
        if self.trajectory_length is not None and not self.trajectory_length > 0:
            raise ValueError(f"HMC: trajectory_length must be positive, "
                             f"got {self.trajectory_length!r}")
        if self.num_steps is not None and self.trajectory_length is not None:
            raise ValueError("give num_steps or trajectory_length, not both")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    def step(self, rng: RNG, state: State) -> tuple[State, Info]:
        """One static HMC transition for every chain."""
        with torch.no_grad():
            if self.trajectory_length is None:
                num_steps: int | float = 10 if self.num_steps is None else self.num_steps
                length = None
            else:
                num_steps, length = self.max_num_steps, self.trajectory_length
            return static_hmc_transition(
                self.fn, rng, state, num_steps, length, self.jitter, self.divergence_threshold
            )


def static_hmc_transition(
    fn: LogDensityFn,
    rng: RNG,
    state: State,
    num_steps: int | float,
    trajectory_length: float | None = None,
    jitter: float = 0.0,
    divergence_threshold: float = 1000.0,
) -> tuple[State, Info]:
    """One HMC transition. With ``trajectory_length``, chain ``c`` takes
    ``min(num_steps, ceil(trajectory_length / step_size[c]))`` steps, else ``num_steps``.
    Random draws per chain, in order: momentum ``(D,)``, then ``(jitter u, accept u)``."""
    z0, lp0, g0, step_size, metric = state
    num_chains, dim = z0.shape
    p = sample_momentum(metric, randn(rng, num_chains, (dim,), dtype=z0.dtype, device=z0.device))
    u = rand(rng, num_chains, (2,), dtype=z0.dtype, device=z0.device)
    eps = step_size * (1.0 + jitter * (2.0 * u[:, 0] - 1.0)) if jitter > 0 else step_size
    if trajectory_length is None:
        steps = torch.full((num_chains,), int(num_steps), dtype=torch.int64, device=z0.device)
    else:
        steps = torch.ceil(trajectory_length / step_size).clamp_(1, num_steps).to(torch.int64)
    steps_list = steps.tolist()
    changes = set(steps_list)

    p_sharp = sharp(metric, p)
    h0 = kinetic_energy(p, p_sharp) - lp0
    z, g = z0.clone(), g0
    eps_col = eps.unsqueeze(-1)
    lp = lp0
    for t in range(max(steps_list)):
        if t in changes and t > 0:  # some chains are done: freeze them with step size 0
            eps_col = (eps * (steps > t)).unsqueeze(-1)
        lp, g = leapfrog_(fn, z, p, g, eps_col, metric, p_sharp)
    sharp(metric, p, out=p_sharp)
    h1 = kinetic_energy(p, p_sharp) - lp
    log_ratio = torch.nan_to_num(h0 - h1, nan=-math.inf, posinf=-math.inf)
    accept = torch.log(u[:, 1]) < log_ratio
    accept_prob = log_ratio.clamp(max=0.0).exp()
    divergent = log_ratio < -divergence_threshold
    new_state = State(
        torch.where(accept.unsqueeze(-1), z, z0),
        torch.where(accept, lp, lp0),
        torch.where(accept.unsqueeze(-1), g, g0),
        step_size,
        metric,
    )
    info = make_info(accept_prob, divergent, torch.where(accept, h1, h0), steps, eps)
    return new_state, info
