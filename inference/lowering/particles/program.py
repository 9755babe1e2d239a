"""The contract between a model cut into steps and the particle methods that run it.

A :class:`ParticleProgram` (the engine of :mod:`.engine` is one) runs step ``k`` for N
particles at once: given the live values of the latents earlier steps drew, it draws the
step's new latents and returns a :class:`StepOutput` with their values and the per-particle
log weights, per site and summed. A driver (SMC, VI) resamples by indexing every tensor of
``live`` with the same ancestor indices and may drop the addresses not in
``needed_after(k)``.

    >>> import torch
    >>> out = StepOutput({"x": torch.zeros(3)}, torch.zeros(3, dtype=torch.float64),
    ...                  {"y": torch.zeros(3, dtype=torch.float64)})
    >>> out.log_weight.dtype, sorted(out.site_log_weights)
    (torch.float64, ['y'])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class StepOutput:
    values: dict[str, torch.Tensor]            # the step's new latents by address, each (N, *site_shape)
    log_weight: torch.Tensor                   # (N,) float64: the step's incremental log weight
    site_log_weights: dict[str, torch.Tensor]  # per-site (N,) float64 terms that sum to log_weight


class ParticleProgram(Protocol):
    """A model cut into steps that a particle method runs in order."""
    @property
    def num_steps(self) -> int: ...
    def step_sites(self, k: int) -> tuple[str, ...]: ...   # addresses (latent and observed) of step k
    def needed_after(self, k: int) -> frozenset[str]: ...  # latent addresses read by steps > k
    def run_step(self, k: int, live: Mapping[str, torch.Tensor], num_particles: int,
                 generator: torch.Generator | None = None) -> StepOutput: ...
