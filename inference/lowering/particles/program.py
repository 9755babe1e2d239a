"""The protocol between the particle engine (which cuts a graph into steps) and the particle
methods that run the steps (``ppl.inference.smc``): a :class:`ParticleProgram` and the
:class:`StepOutput` of one step.

    >>> import torch
    >>> out = StepOutput(values={"x_0": torch.zeros(3)},
    ...                  log_weight=torch.zeros(3, dtype=torch.float64), site_log_weights={})
    >>> out.values["x_0"].shape
    torch.Size([3])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["ParticleProgram", "StepOutput"]


@dataclass(frozen=True)
class StepOutput:
    values: dict[str, torch.Tensor]            # the step's new latents by address, each (N, *site_shape)  # noqa: E501
    log_weight: torch.Tensor                   # (N,) float64: the step's incremental log weight
    site_log_weights: dict[str, torch.Tensor]  # per-site (N,) float64 terms that sum to log_weight


class ParticleProgram(Protocol):
    """A model cut into steps that a particle method runs in order."""
    @property
    def num_steps(self) -> int: ...
    def step_sites(self, k: int) -> tuple[str, ...]: ...   # addresses (latent and observed) of step k  # noqa: E501
    def needed_after(self, k: int) -> frozenset[str]: ...  # latent addresses read by steps > k
    def run_step(self, k: int, live: Mapping[str, torch.Tensor], num_particles: int,
                 generator: torch.Generator | None = None) -> StepOutput: ...
