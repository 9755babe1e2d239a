"""The ppl standard library of distributions, constraints and bijectors.

Every family is a torch.distributions class with the ppl mixin (``to_event``, ``mask``,
``expand``, ``ppl_args``; ``validate_args=False`` by default, the runtime validates at the
sample site), plus families torch lacks. Importing this package registers every family's
declaration (:mod:`ppl.stdlib.families`: its flags and the rules the engines use, with the
tape log densities in :mod:`ppl.stdlib.log_densities` and the conjugate priors in
:mod:`ppl.stdlib.conjugate_priors`) with :mod:`ppl.registry`, and the extra bijectors with
``biject_to`` / ``transform_to``.

    >>> import torch
    >>> from ppl.stdlib import Normal, constraints
    >>> from torch.distributions import biject_to
    >>> d = Normal(torch.zeros(3), 1.0).to_event(1)
    >>> d.log_prob(torch.zeros(3)).shape
    torch.Size([])
    >>> biject_to(constraints.ordered)
    OrderedTransform()
"""

from . import constraints, transforms
from .base import DistributionMixin
from .continuous import (
    Beta,
    Cauchy,
    Chi2,
    Exponential,
    Gamma,
    Gumbel,
    HalfCauchy,
    HalfNormal,
    InverseGamma,
    Laplace,
    LogNormal,
    Normal,
    Pareto,
    RelaxedBernoulli,
    StudentT,
    Uniform,
    VonMises,
    Weibull,
)
from .counts import (
    BetaBinomial,
    NegativeBinomial2,
    ZeroInflatedNegativeBinomial,
    ZeroInflatedPoisson,
)
from .discrete import (
    Bernoulli,
    Binomial,
    Categorical,
    Geometric,
    Multinomial,
    NegativeBinomial,
    OneHotCategorical,
    Poisson,
)
from .families import FAMILY_CLASSES, register_all
from .multivariate import (
    Dirichlet,
    LKJCholesky,
    LowRankMultivariateNormal,
    MixtureSameFamily,
    MultivariateNormal,
    RelaxedOneHotCategorical,
    Wishart,
)
from .ordinal import OrderedLogistic
from .special import Delta, ImproperUniform
from .timeseries import GaussianRandomWalk
from .transforms import OrderedTransform, PositiveOrderedTransform
from .truncated import TruncatedNormal
from .wrappers import Independent, Masked

register_all()

__all__ = [
    "FAMILY_CLASSES",
    "Bernoulli",
    "Beta",
    "BetaBinomial",
    "Binomial",
    "Categorical",
    "Cauchy",
    "Chi2",
    "Delta",
    "Dirichlet",
    "DistributionMixin",
    "Exponential",
    "Gamma",
    "GaussianRandomWalk",
    "Geometric",
    "Gumbel",
    "HalfCauchy",
    "HalfNormal",
    "ImproperUniform",
    "Independent",
    "InverseGamma",
    "LKJCholesky",
    "Laplace",
    "LogNormal",
    "LowRankMultivariateNormal",
    "Masked",
    "MixtureSameFamily",
    "Multinomial",
    "MultivariateNormal",
    "NegativeBinomial",
    "NegativeBinomial2",
    "Normal",
    "OneHotCategorical",
    "OrderedLogistic",
    "OrderedTransform",
    "Pareto",
    "Poisson",
    "PositiveOrderedTransform",
    "RelaxedBernoulli",
    "RelaxedOneHotCategorical",
    "StudentT",
    "TruncatedNormal",
    "Uniform",
    "VonMises",
    "Weibull",
    "Wishart",
    "ZeroInflatedNegativeBinomial",
    "ZeroInflatedPoisson",
    "constraints",
    "register_all",
    "transforms",
]
