"""Registers every ``ppl.stdlib`` family with :mod:`ppl.registry` (run on import of
``ppl.stdlib``).

The flags are those of the family as a class. For the wrappers (``Independent``,
``Masked``) and ``MixtureSameFamily`` they are conservative (False): whether an instance
reparameterizes, is discrete or enumerable depends on its base, so read the instance
(``d.has_rsample``, ``d.support.is_discrete``, ``d.has_enumerate_support``).

    >>> import ppl.stdlib
    >>> from ppl.registry import get_family
    >>> get_family("BetaBinomial").enumerable
    True
"""

from __future__ import annotations

import torch.distributions as td
from torch.distributions import Distribution

from ppl.registry import Family, register_family

from . import continuous as c
from . import counts, ordinal, special, timeseries, truncated, wrappers
from . import discrete as d
from . import multivariate as mv

# (class, has_rsample, is_discrete, enumerable, torch class)
_TABLE: list[tuple[type[Distribution], bool, bool, bool, type[Distribution] | None]] = [
    # continuous, univariate
    (c.Normal, True, False, False, td.Normal),
    (c.LogNormal, True, False, False, td.LogNormal),
    (c.HalfNormal, True, False, False, td.HalfNormal),
    (c.HalfCauchy, True, False, False, td.HalfCauchy),
    (c.Cauchy, True, False, False, td.Cauchy),
    (c.StudentT, True, False, False, td.StudentT),
    (c.Laplace, True, False, False, td.Laplace),
    (c.Gumbel, True, False, False, td.Gumbel),
    (c.Exponential, True, False, False, td.Exponential),
    (c.Gamma, True, False, False, td.Gamma),
    (c.InverseGamma, True, False, False, td.InverseGamma),
    (c.Chi2, True, False, False, td.Chi2),
    (c.Beta, True, False, False, td.Beta),
    (c.Uniform, True, False, False, td.Uniform),
    (c.Weibull, True, False, False, td.Weibull),
    (c.Pareto, True, False, False, td.Pareto),
    (c.VonMises, False, False, False, td.VonMises),
    (c.RelaxedBernoulli, True, False, False, td.RelaxedBernoulli),
    (truncated.TruncatedNormal, True, False, False, None),
    # multivariate
    (mv.Dirichlet, True, False, False, td.Dirichlet),
    (mv.MultivariateNormal, True, False, False, td.MultivariateNormal),
    (mv.LowRankMultivariateNormal, True, False, False, td.LowRankMultivariateNormal),
    (mv.LKJCholesky, False, False, False, td.LKJCholesky),
    (mv.Wishart, True, False, False, td.Wishart),
    (mv.RelaxedOneHotCategorical, True, False, False, td.RelaxedOneHotCategorical),
    (timeseries.GaussianRandomWalk, True, False, False, None),
    # discrete
    (d.Bernoulli, False, True, True, td.Bernoulli),
    (d.Binomial, False, True, True, td.Binomial),
    (d.Categorical, False, True, True, td.Categorical),
    (d.OneHotCategorical, False, True, True, td.OneHotCategorical),
    (d.Multinomial, False, True, False, td.Multinomial),
    (d.Poisson, False, True, False, td.Poisson),
    (d.Geometric, False, True, False, td.Geometric),
    (d.NegativeBinomial, False, True, False, td.NegativeBinomial),
    (counts.BetaBinomial, False, True, True, None),
    (counts.ZeroInflatedPoisson, False, True, False, None),
    (counts.ZeroInflatedNegativeBinomial, False, True, False, None),
    (counts.NegativeBinomial2, False, True, False, None),
    (ordinal.OrderedLogistic, False, True, True, None),
    # degenerate and improper
    (special.Delta, True, False, False, None),
    (special.ImproperUniform, False, False, False, None),
    # wrappers and mixtures: flags depend on the instance (see the module docstring)
    (mv.MixtureSameFamily, False, False, False, td.MixtureSameFamily),
    (wrappers.Independent, False, False, False, td.Independent),
    (wrappers.Masked, False, False, False, None),
]


def register_all() -> None:
    """Register (or re-register) every built-in family under its class name."""
    for cls, has_rsample, is_discrete, enumerable, torch_class in _TABLE:
        register_family(
            Family(
                name=cls.__name__,
                cls=cls,
                params=cls._ppl_params,  # type: ignore[attr-defined]
                has_rsample=has_rsample,
                is_discrete=is_discrete,
                enumerable=enumerable,
                torch_class=torch_class,
            )
        )


FAMILY_CLASSES: tuple[type[Distribution], ...] = tuple(row[0] for row in _TABLE)
