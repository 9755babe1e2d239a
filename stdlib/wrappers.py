"""Wrapper families: ``Independent`` (reinterpret batch dims as event dims) and ``Masked``.

They are what ``d.to_event(n)`` and ``d.mask(m)`` return, and they are families like any
other, so the graph IR prints them with their base distribution nested as an argument.
Flags such as ``has_rsample`` and the support come from the base, per instance.

    >>> import torch
    >>> from ppl.stdlib import Normal
    >>> d = Normal(torch.zeros(3), 1.0).mask(torch.tensor([True, False, True]))
    >>> d.log_prob(torch.zeros(3))[1].item()
    0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributions as td
from torch.distributions import Distribution, constraints
from torch.distributions.kl import kl_divergence, register_kl

from ppl.shapes import broadcast_shapes

from .base import DistributionMixin


class Independent(DistributionMixin, td.Independent):
    """torch's ``Independent``: sums ``log_prob`` over ``reinterpreted_batch_ndims`` dims."""

    _ppl_params = ("base_distribution", "reinterpreted_batch_ndims")

    @property
    def ppl_args(self) -> dict[str, Any]:
        return {
            "base_distribution": self.base_dist,
            "reinterpreted_batch_ndims": self.reinterpreted_batch_ndims,
        }

    def to_event(self, reinterpreted_batch_ndims: int | None = None) -> Distribution:
        n = reinterpreted_batch_ndims
        if n is None:
            n = len(self.batch_shape)
        if n == 0:
            return self
        return Independent(self.base_dist, self.reinterpreted_batch_ndims + n)


class Masked(DistributionMixin, Distribution):
    """``base_dist`` with ``log_prob`` replaced by 0 where ``mask`` is False.

    ``mask`` broadcasts against the base's batch shape (the base is expanded if needed);
    sampling is unchanged. Masking in the distribution, rather than multiplying by the
    mask afterwards, keeps the NaN/-inf of values outside the support out of the sum.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    _ppl_params = ("base_dist", "mask")

    def __init__(
        self, base_dist: Distribution, mask: bool | torch.Tensor, validate_args: bool | None = False
    ) -> None:
        if isinstance(mask, bool):
            mask = torch.tensor(mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
        batch_shape = broadcast_shapes(mask.shape, base_dist.batch_shape)
        if base_dist.batch_shape != batch_shape:
            base_dist = base_dist.expand(batch_shape)
        self.base_dist = base_dist
        self._mask = mask
        super().__init__(batch_shape, base_dist.event_shape, validate_args=validate_args)

    @property
    def ppl_args(self) -> dict[str, Any]:
        return {"base_dist": self.base_dist, "mask": self._mask}

    def mask(self, mask: bool | torch.Tensor) -> Distribution:
        mask = torch.as_tensor(mask, dtype=torch.bool)
        return Masked(self.base_dist, self._mask & mask)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> Masked:
        new = self._get_checked_instance(Masked, _instance)
        batch_shape = torch.Size(batch_shape)
        new.base_dist = self.base_dist.expand(batch_shape)
        new._mask = self._mask.expand(batch_shape)
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.base_dist.has_rsample

    @property
    def has_enumerate_support(self) -> bool:  # type: ignore[override]
        return self.base_dist.has_enumerate_support

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        return self.base_dist.support

    @property
    def mean(self) -> torch.Tensor:
        return self.base_dist.mean

    @property
    def variance(self) -> torch.Tensor:
        return self.base_dist.variance

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.base_dist.sample(sample_shape)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.base_dist.rsample(sample_shape)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        return self.base_dist.enumerate_support(expand)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_prob = self.base_dist.log_prob(value)
        return torch.where(self._mask, log_prob, torch.zeros((), dtype=log_prob.dtype))


@register_kl(Masked, Distribution)
def _kl_masked(p: Masked, q: Distribution) -> torch.Tensor:
    """KL of a masked distribution: the base's KL where the mask is True, 0 elsewhere."""
    kl = kl_divergence(p.base_dist, q)
    return torch.where(p._mask, kl, torch.zeros((), dtype=kl.dtype))
