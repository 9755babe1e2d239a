"""``TruncatedNormal``: Normal(loc, scale) restricted to [low, high], which torch lacks.

Sampling is by inverse CDF, so ``rsample`` is differentiable in all four parameters. The
normalizer and the inverse CDF are computed in log space on the side of the interval
where the normal CDF is small (the interval is mirrored when it lies right of the mean),
and refined by Newton steps on ``log_ndtr`` in the far tail, so truncation many standard
deviations out stays accurate.

    >>> import torch
    >>> from ppl.stdlib import TruncatedNormal
    >>> d = TruncatedNormal(0.0, 1.0, low=0.0)        # the half-normal
    >>> round(d.mean.item(), 4)                       # sqrt(2 / pi)
    0.7979
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.distributions import Distribution
from torch.distributions.utils import broadcast_all
from torch.special import log_ndtr, ndtri

from . import constraints
from ._math import log1mexp
from .base import DistributionMixin, expand_params

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_TAIL = -5.0  # below this standardized value, refine ndtri by Newton steps in log space
_FAR = 40.0  # where an infinite bound is put, in standard deviations

TensorLike = torch.Tensor | float


def _log_phi(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * z * z - _HALF_LOG_2PI


def _log_mass(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(b) - Phi(a)) for a <= b, mirrored into the lower tail when a > 0."""
    flip = a > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi = log_ndtr(hi)
    return log_hi + log1mexp(log_ndtr(lo) - log_hi)


def _inverse_log_ndtr(log_p: torch.Tensor) -> torch.Tensor:
    """z with log Phi(z) = log_p: ndtri, then Newton steps where z is in the far lower tail."""
    one_minus = 1 - torch.finfo(log_p.dtype).eps / 2  # keep ndtri (and its gradient) finite
    z = ndtri(torch.exp(log_p).clamp(max=one_minus))
    tail = ~(z > _TAIL)  # also catches -inf from underflow
    # Newton on log Phi(z) - log_p runs on safe stand-ins outside the tail, so that no inf
    # or nan enters the graph (torch.where would turn its zero gradient into nan).
    log_p_tail = torch.where(tail, log_p, log_ndtr(torch.tensor(2 * _TAIL, dtype=z.dtype)))
    w = torch.where(tail, torch.sqrt(-2 * log_p_tail), torch.ones_like(z))
    z_tail = -w  # asymptotic start, -sqrt(-2 log p)
    for _ in range(4):
        log_cdf = log_ndtr(z_tail)
        z_tail = z_tail - (log_cdf - log_p_tail) * torch.exp(log_cdf - _log_phi(z_tail))
    return torch.where(tail, z_tail, z)


class TruncatedNormal(DistributionMixin, Distribution):
    """Normal(loc, scale) conditioned on low <= x <= high (bounds may be infinite).

    The support is ``interval(low, high)``, or ``greater_than(low)`` / ``less_than(high)``
    / ``real`` when the bounds are all infinite on a side (so ``biject_to`` gives a finite
    bijector). Internally an infinite bound sits 40 standard deviations out (the mass
    beyond is below double precision), which keeps every gradient finite.
    """

    has_rsample = True
    _ppl_params = ("loc", "scale", "low", "high")

    def __init__(
        self,
        loc: TensorLike,
        scale: TensorLike,
        low: TensorLike = -math.inf,
        high: TensorLike = math.inf,
        validate_args: bool | None = False,
    ) -> None:
        self.loc, self.scale, self.low, self.high = broadcast_all(loc, scale, low, high)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> TruncatedNormal:
        return expand_params(self, TruncatedNormal, batch_shape, _instance, self._ppl_params)

    @property
    def arg_constraints(self) -> dict[str, constraints.Constraint]:  # type: ignore[override]
        return {
            "loc": constraints.real,
            "scale": constraints.positive,
            "low": constraints.less_than(self.high),
            "high": constraints.greater_than(self.low),
        }

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self) -> constraints.Constraint:
        low_free = bool(torch.isneginf(self.low).all())
        high_free = bool(torch.isposinf(self.high).all())
        if low_free and high_free:
            return constraints.real
        if high_free:
            return constraints.greater_than(self.low)
        if low_free:
            return constraints.less_than(self.high)
        return constraints.interval(self.low, self.high)

    # standardized bounds and log normalizer
    def _standardize(self, bound: torch.Tensor, infinite: float) -> torch.Tensor:
        # An infinite bound stands at +-_FAR standard deviations: Phi there is 0 or 1 to
        # double precision, and no inf enters the arithmetic (inf * 0 = nan gradients).
        finite = torch.isfinite(bound)
        safe = torch.where(finite, bound, self.loc.detach())
        return torch.where(finite, (safe - self.loc) / self.scale, infinite)

    @property
    def _alpha(self) -> torch.Tensor:
        return self._standardize(self.low, -_FAR)

    @property
    def _beta(self) -> torch.Tensor:
        return self._standardize(self.high, _FAR)

    @property
    def _log_normalizer(self) -> torch.Tensor:
        return _log_mass(self._alpha, self._beta)

    @property
    def mean(self) -> torch.Tensor:
        log_z = self._log_normalizer
        a, b = self._alpha, self._beta
        return self.loc + self.scale * (
            torch.exp(_log_phi(a) - log_z) - torch.exp(_log_phi(b) - log_z)
        )

    @property
    def variance(self) -> torch.Tensor:
        log_z = self._log_normalizer
        a, b = self._alpha, self._beta
        pa, pb = torch.exp(_log_phi(a) - log_z), torch.exp(_log_phi(b) - log_z)
        return self.scale.pow(2) * (1 + a * pa - b * pb - (pa - pb).pow(2))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        z = (value - self.loc) / self.scale
        log_density = _log_phi(z) - torch.log(self.scale) - self._log_normalizer
        inside = (value >= self.low) & (value <= self.high)
        return torch.where(inside, log_density, -torch.inf)

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        a, b = self._alpha, self._beta
        z = torch.minimum(torch.maximum((value - self.loc) / self.scale, a), b)
        return torch.exp(_log_mass(a, z) - self._log_normalizer)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        a, b = self._alpha, self._beta
        flip = a > 0  # work on the mirrored interval, which lies in the lower tail
        lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
        u = torch.where(flip, 1 - value, value)
        log_p = torch.logaddexp(log_ndtr(lo), torch.log(u) + _log_mass(lo, hi)).clamp(max=0)
        z = torch.minimum(torch.maximum(_inverse_log_ndtr(log_p), lo), hi)
        return self.loc + self.scale * torch.where(flip, -z, z)

    def rsample(self, sample_shape: Sequence[int] = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        tiny = torch.finfo(self.loc.dtype).tiny
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(min=tiny)
        return self.icdf(u)
