"""The declaration of every ``ppl.stdlib`` family, registered with :mod:`ppl.registry` on
import of ``ppl.stdlib``: one ``Family(...)`` each, holding every rule the engines use.

Adding a family end to end is one class and one declaration here (with its tape rule in
:mod:`ppl.stdlib.log_densities`, its batched sampling rule in :mod:`ppl.stdlib.samplers`,
its examples in :mod:`ppl.stdlib.examples`); the tests
enumerate the registry. The flags are those of the family as a class. For the wrappers
(``Independent``, ``Masked``) and ``MixtureSameFamily`` they are conservative (False):
whether an instance reparameterizes, is discrete or enumerable depends on its base, so read
the instance (``d.has_rsample``, ``d.support.is_discrete``, ``d.has_enumerate_support``).

    >>> import ppl.stdlib
    >>> from ppl.registry import get_family
    >>> get_family("BetaBinomial").enumerable, get_family("Normal").log_density.__name__
    (True, 'normal')
"""

from __future__ import annotations

from typing import Any

import torch.distributions as td
from torch.distributions import Distribution

from ppl.registry import Family, register_family

from . import conjugate_priors as conj
from . import continuous as c
from . import counts, ordinal, special, timeseries, truncated, wrappers
from . import discrete as d
from . import log_densities as ld
from . import multivariate as mv
from . import samplers as sp

_PROBS = ("probs", "logits")


def _declare(cls: type[Distribution], **rules: Any) -> Family:
    return Family(name=cls.__name__, cls=cls, params=cls._ppl_params,
    **rules)  # type: ignore[attr-defined]


def _continuous(cls: type[Distribution], **rules: Any) -> Family:
    return _declare(cls, reparameterized=True, **rules)


def _discrete(cls: type[Distribution], enumerable: bool = False, **rules: Any) -> Family:
    return _declare(cls, discrete=True, enumerable=enumerable, **rules)


def _delta_event_dims(event_dim: int, **_: Any) -> int:
    return event_dim


LOC_SCALE = ("loc", "scale")
BOUNDS = ("low", "high")

DECLARATIONS: tuple[Family, ...] = (
    # continuous, univariate
    _continuous(c.Normal, torch_class=td.Normal, log_density=ld.normal, sample=sp.normal,
                loc_scale=LOC_SCALE, conjugate=conj.NORMAL),
    _continuous(c.LogNormal, torch_class=td.LogNormal, log_density=ld.log_normal,
                sample=sp.log_normal, loc_scale=LOC_SCALE),
    _continuous(c.HalfNormal, torch_class=td.HalfNormal, log_density=ld.half_normal,
                sample=sp.half_normal),
    _continuous(c.HalfCauchy, torch_class=td.HalfCauchy, log_density=ld.half_cauchy,
                sample=sp.half_cauchy),
    _continuous(c.Cauchy, torch_class=td.Cauchy, log_density=ld.cauchy, sample=sp.cauchy,
                loc_scale=LOC_SCALE),
    _continuous(c.StudentT, torch_class=td.StudentT, log_density=ld.student_t, sample=sp.student_t,
                loc_scale=LOC_SCALE),
    _continuous(c.Laplace, torch_class=td.Laplace, log_density=ld.laplace, sample=sp.laplace,
                loc_scale=LOC_SCALE),
    _continuous(c.Gumbel, torch_class=td.Gumbel, log_density=ld.gumbel, sample=sp.gumbel),
    _continuous(c.Exponential, torch_class=td.Exponential, log_density=ld.exponential,
                sample=sp.exponential),
    _continuous(c.Gamma, torch_class=td.Gamma, log_density=ld.gamma, sample=sp.gamma,
                conjugate=conj.GAMMA),
    _continuous(c.InverseGamma, torch_class=td.InverseGamma, log_density=ld.inverse_gamma,
                sample=sp.inverse_gamma),
    _continuous(c.Chi2, torch_class=td.Chi2, log_density=ld.chi2, sample=sp.chi2),
    _continuous(c.Beta, torch_class=td.Beta, log_density=ld.beta, sample=sp.beta,
                conjugate=conj.BETA),
    _continuous(c.Uniform, torch_class=td.Uniform, log_density=ld.uniform, sample=sp.uniform,
                support_bounds=BOUNDS),
    _continuous(c.Weibull, torch_class=td.Weibull, log_density=ld.weibull, sample=sp.weibull),
    _continuous(c.Pareto, torch_class=td.Pareto, log_density=ld.pareto, sample=sp.pareto),
    _declare(c.VonMises, torch_class=td.VonMises, log_density=ld.von_mises),
    _continuous(c.RelaxedBernoulli, torch_class=td.RelaxedBernoulli,
                log_density=ld.relaxed_bernoulli),
    _continuous(truncated.TruncatedNormal, log_density=ld.truncated_normal,
                sample=sp.truncated_normal,
                support_bounds=BOUNDS),
    # multivariate
    _continuous(mv.Dirichlet, torch_class=td.Dirichlet, log_density=ld.dirichlet,
                sample=sp.dirichlet,
                event_dims=1, vector_params=("concentration",), conjugate=conj.DIRICHLET),
    _continuous(mv.MultivariateNormal, torch_class=td.MultivariateNormal,
                log_density=ld.multivariate_normal, sample=sp.multivariate_normal, event_dims=1,
                vector_params=("loc", *mv._MATRIX)),
    _continuous(mv.LowRankMultivariateNormal, torch_class=td.LowRankMultivariateNormal,
                log_density=ld.low_rank_multivariate_normal, event_dims=1,
                vector_params=("loc", "cov_factor", "cov_diag")),
    _declare(mv.LKJCholesky, torch_class=td.LKJCholesky, log_density=ld.lkj_cholesky,
             event_dims=2, vector_params=("concentration",)),
    _continuous(mv.Wishart, torch_class=td.Wishart, log_density=ld.wishart, event_dims=2,
                vector_params=("df", *mv._MATRIX)),
    _continuous(mv.RelaxedOneHotCategorical, torch_class=td.RelaxedOneHotCategorical,
                log_density=ld.relaxed_one_hot_categorical, event_dims=1,
                vector_params=("temperature", *_PROBS)),
    _continuous(timeseries.GaussianRandomWalk, log_density=ld.gaussian_random_walk,
                event_dims=1, vector_params=("scale",)),
    # discrete
    _discrete(d.Bernoulli, enumerable=True, torch_class=td.Bernoulli, log_density=ld.bernoulli,
              sample=sp.bernoulli),
    _discrete(d.Binomial, enumerable=True, torch_class=td.Binomial, log_density=ld.binomial,
              sample=sp.binomial),
    _discrete(d.Categorical, enumerable=True, torch_class=td.Categorical,
              log_density=ld.categorical, sample=sp.categorical, vector_params=_PROBS),
    _discrete(d.OneHotCategorical, enumerable=True, torch_class=td.OneHotCategorical,
              log_density=ld.one_hot_categorical, sample=sp.one_hot_categorical, event_dims=1,
              vector_params=_PROBS),
    _discrete(d.Multinomial, torch_class=td.Multinomial, log_density=ld.multinomial,
              event_dims=1, vector_params=_PROBS),
    _discrete(d.Poisson, torch_class=td.Poisson, log_density=ld.poisson, sample=sp.poisson),
    _discrete(d.Geometric, torch_class=td.Geometric, log_density=ld.geometric, sample=sp.geometric),
    _discrete(d.NegativeBinomial, torch_class=td.NegativeBinomial,
              log_density=ld.negative_binomial, sample=sp.negative_binomial),
    _discrete(counts.BetaBinomial, enumerable=True, log_density=ld.beta_binomial),
    _discrete(counts.ZeroInflatedPoisson, log_density=ld.zero_inflated_poisson),
    _discrete(counts.ZeroInflatedNegativeBinomial,
              log_density=ld.zero_inflated_negative_binomial),
    _discrete(counts.NegativeBinomial2, log_density=ld.negative_binomial2),
    _discrete(ordinal.OrderedLogistic, enumerable=True, log_density=ld.ordered_logistic,
              vector_params=("predictor", "cutpoints")),
    # degenerate and improper
    _continuous(special.Delta, log_density=ld.delta, sample=sp.delta, event_dims=_delta_event_dims,
                vector_params=("log_density",)),
    _declare(special.ImproperUniform, log_density=ld.improper_uniform),
    # wrappers and mixtures: flags depend on the instance (see the module docstring)
    _declare(mv.MixtureSameFamily, torch_class=td.MixtureSameFamily,
             log_density=ld.mixture_same_family, event_dims=ld.mixture_event_dims,
             vector_params=("mixture_distribution", "component_distribution")),
    _declare(wrappers.Independent, torch_class=td.Independent, log_density=ld.independent,
             sample=sp.independent,
             wraps="base_distribution"),
    _declare(wrappers.Masked, log_density=ld.masked, sample=sp.masked, wraps="base_dist"),
)


def register_all() -> None:
    """Register (or re-register) every built-in family under its class and class name."""
    for family in DECLARATIONS:
        register_family(family)


FAMILY_CLASSES: tuple[type[Distribution], ...] = tuple(f.cls for f in DECLARATIONS)
