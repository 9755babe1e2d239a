"""Degenerate and improper families: ``Delta`` (a point mass) and ``ImproperUniform``.

``Delta`` puts all mass on ``v`` (with an optional extra ``log_density``, e.g. a Jacobian
carried by a deterministic site); ``ImproperUniform`` is a flat "prior" on a support, with
``log_prob`` 0 there and no sampler: its site must be observed or initialized.

    >>> import torch
    >>> from ppl.stdlib import Delta, ImproperUniform, constraints
    >>> Delta(torch.tensor(2.0)).log_prob(torch.tensor(2.0)).item()
    0.0
    >>> ImproperUniform(constraints.positive, (), ()).log_prob(torch.tensor(3.0)).item()
    0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.distributions import Distribution

from ppl.shapes import broadcast_shapes

from . import constraints
from .base import DistributionMixin, expand_params


class Delta(DistributionMixin, Distribution):
    """Point mass at ``v``; the rightmost ``event_dim`` dims of ``v`` form the event.

    ``log_prob(x)`` is ``log_density`` where ``x == v`` (all event entries) and -inf
    elsewhere. ``rsample`` returns ``v``, so gradients flow through it.
    """

    arg_constraints = {"v": constraints.real, "log_density": constraints.real}
    has_rsample = True
    _ppl_params = ("v", "log_density", "event_dim")

    def __init__(
        self,
        v: torch.Tensor | float,
        log_density: torch.Tensor | float = 0.0,
        event_dim: int = 0,
        validate_args: bool | None = False,
    ) -> None:
        if not isinstance(v, torch.Tensor):
            v = torch.as_tensor(v, dtype=torch.get_default_dtype())
        if event_dim > v.dim():
            raise ValueError(f"Delta: event_dim={event_dim} exceeds v.dim()={v.dim()}")
        split = v.dim() - event_dim
        batch_shape, event_shape = v.shape[:split], v.shape[split:]
        log_density = torch.as_tensor(log_density, dtype=v.dtype, device=v.device)
        self.v = v
        self.log_density = log_density.expand(batch_shape)
        self.event_dim = event_dim
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> Delta:
        event_dims = {"v": self.event_dim}
        return expand_params(
            self, Delta, batch_shape, _instance, ("v", "log_density"), event_dims, ("event_dim",)
        )

    @constraints.dependent_property(is_discrete=False)
    def support(self) -> constraints.Constraint:
        if self.event_dim == 0:
            return constraints.real
        return constraints.independent(constraints.real, self.event_dim)

    @property
    def mean(self) -> torch.Tensor:
        return self.v

    @property
    def variance(self) -> torch.Tensor:
        return torch.zeros_like(self.v)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.v.expand(torch.Size(sample_shape) + self.v.shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        equal = value == self.v
        if self.event_dim:
            equal = equal.flatten(-self.event_dim).all(-1)
        zero = torch.zeros((), dtype=self.log_density.dtype, device=self.log_density.device)
        return torch.where(equal, zero, -torch.inf) + self.log_density


class ImproperUniform(DistributionMixin, Distribution):
    """Flat density on ``support``: ``log_prob`` is 0 on it and -inf off it; no sampler.

    Use it for a latent whose value an inference method initializes and then moves in the
    unconstrained space given by ``biject_to(support)``. ``event_shape`` extends the
    support's own event dims (e.g. ``positive`` with ``event_shape=(3,)`` is three
    positive reals forming one event).
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    _ppl_params = ("support", "batch_shape", "event_shape")

    def __init__(
        self,
        support: constraints.Constraint,
        batch_shape: Sequence[int] = (),
        event_shape: Sequence[int] = (),
        validate_args: bool | None = False,
    ) -> None:
        event_shape = torch.Size(event_shape)
        if support.event_dim > len(event_shape):
            raise ValueError(
                f"ImproperUniform: support {support!r} has event_dim {support.event_dim} but "
                f"event_shape {tuple(event_shape)} has only {len(event_shape)} dims"
            )
        self._support = support
        super().__init__(torch.Size(batch_shape), event_shape, validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> ImproperUniform:
        return expand_params(self, ImproperUniform, batch_shape, _instance, (), copy=("_support",))

    @property
    def ppl_args(self) -> dict[str, Any]:
        return {
            "support": self._support,
            "batch_shape": self.batch_shape,
            "event_shape": self.event_shape,
        }

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        extra = len(self.event_shape) - self._support.event_dim
        return constraints.independent(self._support, extra) if extra else self._support

    def _no_sampler(self) -> NotImplementedError:
        return NotImplementedError(
            f"ImproperUniform({self._support!r}) is an improper distribution and has no "
            "sampler: observe this site (obs=...) or give it an initial value (e.g. with "
            "the substitute handler or an init strategy) instead of sampling it"
        )

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        raise self._no_sampler()

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        raise self._no_sampler()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        inside = self.support.check(value)
        shape = broadcast_shapes(inside.shape, self.batch_shape)
        zero = torch.zeros((), dtype=value.dtype if value.is_floating_point() else None)
        return torch.where(inside, zero, -torch.inf).expand(shape)
