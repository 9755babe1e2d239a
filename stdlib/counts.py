"""Count families that torch lacks: BetaBinomial, zero-inflated Poisson and negative
binomial, and Stan's mean/dispersion negative binomial.

    >>> import torch
    >>> from ppl.stdlib import NegativeBinomial2
    >>> d = NegativeBinomial2(mean=3.0, concentration=2.0)
    >>> d.mean.item(), d.variance.item()      # variance = mean + mean**2 / concentration
    (3.0, 7.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributions as td
from torch.distributions import Distribution
from torch.distributions.utils import (
    broadcast_all,
    lazy_property,
    logits_to_probs,
    probs_to_logits,
)

from . import constraints
from .base import DistributionMixin, expand_params

Number = float | int
TensorLike = torch.Tensor | Number


def _log_beta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


class BetaBinomial(DistributionMixin, Distribution):
    """Binomial(total_count, p) with p ~ Beta(concentration1, concentration0), p integrated out.

    ``log_prob(k) = log C(n, k) + log B(k + a, n - k + b) - log B(a, b)``; enumerable.
    """

    arg_constraints = {
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
        "total_count": constraints.nonnegative_integer,
    }
    has_enumerate_support = True
    _ppl_params = ("concentration1", "concentration0", "total_count")

    def __init__(
        self,
        concentration1: TensorLike,
        concentration0: TensorLike,
        total_count: TensorLike = 1,
        validate_args: bool | None = False,
    ) -> None:
        self.concentration1, self.concentration0, self.total_count = broadcast_all(
            concentration1, concentration0, total_count
        )
        super().__init__(self.concentration1.shape, validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> BetaBinomial:
        return expand_params(self, BetaBinomial, batch_shape, _instance, self._ppl_params)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.total_count)

    @property
    def mean(self) -> torch.Tensor:
        a, b = self.concentration1, self.concentration0
        return self.total_count * a / (a + b)

    @property
    def variance(self) -> torch.Tensor:
        a, b, n = self.concentration1, self.concentration0, self.total_count
        s = a + b
        return n * a * b * (s + n) / (s.pow(2) * (s + 1))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            p = td.Beta(self.concentration1, self.concentration0).sample(sample_shape)
            return td.Binomial(self.total_count.expand(p.shape), probs=p).sample()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        a, b, n = self.concentration1, self.concentration0, self.total_count
        log_choose = torch.lgamma(n + 1) - torch.lgamma(value + 1) - torch.lgamma(n - value + 1)
        return log_choose + _log_beta(value + a, n - value + b) - _log_beta(a, b)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        n = int(self.total_count.max())
        if not self.total_count.min() == n:
            raise NotImplementedError("enumerate_support needs a homogeneous total_count")
        values = torch.arange(n + 1, dtype=self.concentration1.dtype)
        values = values.view((-1,) + (1,) * len(self.batch_shape))
        return values.expand((-1, *self.batch_shape)) if expand else values


class _ZeroInflated(DistributionMixin, Distribution):
    """A count distribution that is 0 with probability ``gate`` and ``_base()`` otherwise."""

    support = constraints.nonnegative_integer
    gate: torch.Tensor

    def _base(self) -> Distribution:
        raise NotImplementedError

    @property
    def mean(self) -> torch.Tensor:
        return (1 - self.gate) * self._base().mean

    @property
    def variance(self) -> torch.Tensor:
        base = self._base()
        second_moment = (1 - self.gate) * (base.variance + base.mean.pow(2))
        return second_moment - self.mean.pow(2)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            counts = self._base().sample(sample_shape)
            zero = torch.bernoulli(self.gate.expand(counts.shape))
            return torch.where(zero.bool(), torch.zeros_like(counts), counts)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        base_log_prob = self._base().log_prob(value)
        log_not_gate = torch.log1p(-self.gate)
        log_zero = torch.logaddexp(torch.log(self.gate), log_not_gate + base_log_prob)
        return torch.where(value == 0, log_zero, log_not_gate + base_log_prob)


class ZeroInflatedPoisson(_ZeroInflated):
    """0 with probability ``gate``, else Poisson(rate)."""

    arg_constraints = {"gate": constraints.unit_interval, "rate": constraints.nonnegative}
    _ppl_params = ("gate", "rate")

    def __init__(
        self, gate: TensorLike, rate: TensorLike, validate_args: bool | None = False
    ) -> None:
        self.gate, self.rate = broadcast_all(gate, rate)
        super().__init__(self.gate.shape, validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> ZeroInflatedPoisson:
        return expand_params(self, ZeroInflatedPoisson, batch_shape, _instance, self._ppl_params)

    def _base(self) -> Distribution:
        return td.Poisson(self.rate, validate_args=False)


class ZeroInflatedNegativeBinomial(_ZeroInflated):
    """0 with probability ``gate``, else NegativeBinomial(total_count, probs | logits).

    The negative binomial uses torch's convention (see
    :class:`~ppl.stdlib.discrete.NegativeBinomial`).
    """

    arg_constraints = {
        "gate": constraints.unit_interval,
        "total_count": constraints.nonnegative,
        "probs": constraints.half_open_interval(0.0, 1.0),
        "logits": constraints.real,
    }
    _ppl_params = ("gate", "total_count", "probs", "logits")
    _ppl_exclusive = ("probs", "logits")

    def __init__(
        self,
        gate: TensorLike,
        total_count: TensorLike,
        probs: TensorLike | None = None,
        logits: TensorLike | None = None,
        validate_args: bool | None = False,
    ) -> None:
        if (probs is None) == (logits is None):
            raise ValueError("ZeroInflatedNegativeBinomial takes either probs or logits, not both")
        self._ppl_given = "probs" if probs is not None else "logits"
        param = probs if probs is not None else logits
        self.gate, self.total_count, param = broadcast_all(gate, total_count, param)
        self.__dict__[self._ppl_given] = param
        super().__init__(self.gate.shape, validate_args=validate_args)

    def expand(
        self, batch_shape: Sequence[int], _instance: Any = None
    ) -> ZeroInflatedNegativeBinomial:
        names = ("gate", "total_count", self._ppl_given)
        return expand_params(self, ZeroInflatedNegativeBinomial, batch_shape, _instance, names)

    @lazy_property
    def probs(self) -> torch.Tensor:
        return logits_to_probs(self.logits, is_binary=True)

    @lazy_property
    def logits(self) -> torch.Tensor:
        return probs_to_logits(self.probs, is_binary=True)

    def _base(self) -> Distribution:
        param = {self._ppl_given: self.__dict__[self._ppl_given]}
        return td.NegativeBinomial(self.total_count, validate_args=False, **param)


class NegativeBinomial2(DistributionMixin, Distribution):
    """Negative binomial with ``mean`` and ``concentration`` (Stan's ``neg_binomial_2``).

    Variance ``mean + mean**2 / concentration``; a Gamma(concentration, concentration/mean)
    mixture of Poissons. In torch's terms ``total_count = concentration`` and
    ``probs = mean / (mean + concentration)``.
    """

    arg_constraints = {"mean": constraints.positive, "concentration": constraints.positive}
    support = constraints.nonnegative_integer
    _ppl_params = ("mean", "concentration")

    def __init__(
        self, mean: TensorLike, concentration: TensorLike, validate_args: bool | None = False
    ) -> None:
        mean, self.concentration = broadcast_all(mean, concentration)
        # ``mean`` is a read-only property of Distribution; keep the parameter in __dict__
        # under its own name so generic code that reads parameters from there finds it.
        self.__dict__["mean"] = mean
        super().__init__(self.concentration.shape, validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> NegativeBinomial2:
        return expand_params(self, NegativeBinomial2, batch_shape, _instance, self._ppl_params)

    @property
    def mean(self) -> torch.Tensor:
        return self.__dict__["mean"]

    @property
    def variance(self) -> torch.Tensor:
        return self.mean + self.mean.pow(2) / self.concentration

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            phi = self.concentration
            rate = td.Gamma(phi, phi / self.mean).sample(sample_shape)
            return torch.poisson(rate)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        mu, phi = self.mean, self.concentration
        log_total = torch.log(mu + phi)
        return (
            torch.lgamma(value + phi)
            - torch.lgamma(phi)
            - torch.lgamma(value + 1)
            + phi * (torch.log(phi) - log_total)
            + torch.xlogy(value, mu)
            - value * log_total
        )
