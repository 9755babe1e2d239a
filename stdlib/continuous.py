"""Continuous univariate families, each a thin subclass of its torch.distributions class.

The subclasses add only the :class:`~ppl.stdlib.base.DistributionMixin` (wrappers,
``ppl_args``, ``validate_args=False`` by default); sampling, ``log_prob`` and moments are
torch's.

    >>> from ppl.stdlib import Gamma
    >>> Gamma(2.0, 3.0).ppl_args
    {'concentration': tensor(2.), 'rate': tensor(3.)}
"""

from __future__ import annotations

import torch.distributions as td
from torch.distributions import constraints

from .base import DistributionMixin


class Normal(DistributionMixin, td.Normal):
    """Normal(loc, scale)."""

    _ppl_params = ("loc", "scale")


class LogNormal(DistributionMixin, td.LogNormal):
    """exp of Normal(loc, scale)."""

    _ppl_params = ("loc", "scale")


class HalfNormal(DistributionMixin, td.HalfNormal):
    """|Normal(0, scale)|."""

    _ppl_params = ("scale",)


class HalfCauchy(DistributionMixin, td.HalfCauchy):
    """|Cauchy(0, scale)|."""

    _ppl_params = ("scale",)


class Cauchy(DistributionMixin, td.Cauchy):
    """Cauchy(loc, scale)."""

    _ppl_params = ("loc", "scale")


class StudentT(DistributionMixin, td.StudentT):
    """Student's t with ``df`` degrees of freedom, location and scale."""

    _ppl_params = ("df", "loc", "scale")

    def __init__(self, df, loc=0.0, scale=1.0, validate_args: bool | None = False):
        # torch builds an inner Chi2 with the global default validation, whose argument
        # checks are data-dependent Python branches that cannot be traced: switch them off.
        default = td.Distribution._validate_args
        td.Distribution.set_default_validate_args(False)
        try:
            super().__init__(df, loc, scale, validate_args=validate_args)
        finally:
            td.Distribution.set_default_validate_args(default)


class Laplace(DistributionMixin, td.Laplace):
    """Laplace (double exponential) with location and scale."""

    _ppl_params = ("loc", "scale")


class Gumbel(DistributionMixin, td.Gumbel):
    """Gumbel (type-I extreme value, maxima) with location and scale."""

    _ppl_params = ("loc", "scale")


class Exponential(DistributionMixin, td.Exponential):
    """Exponential with ``rate`` (mean 1/rate)."""

    _ppl_params = ("rate",)


class Gamma(DistributionMixin, td.Gamma):
    """Gamma(concentration, rate) (mean concentration/rate)."""

    _ppl_params = ("concentration", "rate")


class InverseGamma(DistributionMixin, td.InverseGamma):
    """1/X for X ~ Gamma(concentration, rate); ``rate`` is the scale of the inverse."""

    _ppl_params = ("concentration", "rate")


class Chi2(DistributionMixin, td.Chi2):
    """Chi-squared with ``df`` degrees of freedom."""

    _ppl_params = ("df",)


class Beta(DistributionMixin, td.Beta):
    """Beta(concentration1, concentration0) (alpha, beta)."""

    _ppl_params = ("concentration1", "concentration0")


class Uniform(DistributionMixin, td.Uniform):
    """Uniform on [low, high); the support ``interval(low, high)`` follows the parameters."""

    _ppl_params = ("low", "high")


class Weibull(DistributionMixin, td.Weibull):
    """Weibull(scale, concentration)."""

    _ppl_params = ("scale", "concentration")


class Pareto(DistributionMixin, td.Pareto):
    """Pareto type I with minimum ``scale`` and tail index ``alpha``."""

    _ppl_params = ("scale", "alpha")


class VonMises(DistributionMixin, td.VonMises):
    """Von Mises on the circle [-pi, pi) with mean direction ``loc``; no rsample in torch."""

    _ppl_params = ("loc", "concentration")


class RelaxedBernoulli(DistributionMixin, td.RelaxedBernoulli):
    """Binary Concrete on (0, 1), a reparameterizable relaxation of Bernoulli.

    torch omits ``temperature`` from ``arg_constraints``; it is added here so the runtime
    validates it.
    """

    arg_constraints = {
        "temperature": constraints.positive,
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    _ppl_params = ("temperature", "probs", "logits")
    _ppl_exclusive = ("probs", "logits")
