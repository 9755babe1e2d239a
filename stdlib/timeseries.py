"""``GaussianRandomWalk``: x_t = x_{t-1} + scale * eps_t, x_0 = 0 before the first step.

The event is the whole path of ``num_steps`` values, so a random walk is one site rather
than a Markov chain of sites; the increments are Normal(0, scale).

    >>> import torch
    >>> from ppl.stdlib import GaussianRandomWalk
    >>> d = GaussianRandomWalk(torch.ones(2), num_steps=5)
    >>> d.batch_shape, d.event_shape
    (torch.Size([2]), torch.Size([5]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributions as td
from torch.distributions import Distribution

from . import constraints
from .base import DistributionMixin, expand_params


class GaussianRandomWalk(DistributionMixin, Distribution):
    """Path of a random walk from 0 with Normal(0, scale) increments; event shape (num_steps,)."""

    arg_constraints = {"scale": constraints.positive}
    support = constraints.real_vector
    has_rsample = True
    _ppl_params = ("scale", "num_steps")

    def __init__(
        self,
        scale: torch.Tensor | float = 1.0,
        num_steps: int = 1,
        validate_args: bool | None = False,
    ) -> None:
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(
                f"GaussianRandomWalk: num_steps must be a positive int, got {num_steps!r}"
            )
        if not isinstance(scale, torch.Tensor):
            scale = torch.as_tensor(scale, dtype=torch.get_default_dtype())
        self.scale = scale
        self.num_steps = num_steps
        super().__init__(scale.shape, torch.Size([num_steps]), validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> GaussianRandomWalk:
        return expand_params(
            self, GaussianRandomWalk, batch_shape, _instance, ("scale",), copy=("num_steps",)
        )

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(self.batch_shape + self.event_shape, dtype=self.scale.dtype)

    @property
    def variance(self) -> torch.Tensor:
        steps = torch.arange(1, self.num_steps + 1, dtype=self.scale.dtype)
        return self.scale.unsqueeze(-1).pow(2) * steps

    def rsample(self, sample_shape: Sequence[int] = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.scale.dtype, device=self.scale.device)
        return (self.scale.unsqueeze(-1) * eps).cumsum(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        start = torch.zeros_like(value[..., :1])
        steps = torch.diff(value, dim=-1, prepend=start)
        return td.Normal(0.0, self.scale.unsqueeze(-1), validate_args=False).log_prob(steps).sum(-1)
