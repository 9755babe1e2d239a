"""A few valid instances of every built-in family, for tests across ppl.

Tests that must hold for every family (the ``ppl_args`` rebuild contract, IR print/parse,
unconstraining, shapes, the tape rule against ``log_prob``) iterate over
``example_distributions()``. Each family gets a scalar instance, a batched one, and one made
by ``expand`` (which bypasses ``__init__`` in torch), each built afresh with fixed values.
``example_value`` is a point of an instance's support; ``shifted`` moves an instance's
continuous parameters by a (random) amount, so a test can make them depend on a latent.

    >>> import torch
    >>> from ppl.stdlib.examples import example_distributions, shifted
    >>> examples = example_distributions()
    >>> len(examples["Normal"]) >= 3
    True
    >>> float(shifted(examples["HalfNormal"][0], torch.tensor(0.0)).scale)
    1.5
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, biject_to

from ppl.registry import family_of

from . import constraints
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
from .truncated import TruncatedNormal
from .wrappers import Independent


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values)


def _spd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g)
    return a @ a.T + n * torch.eye(n)


def _scalar_and_batched() -> dict[str, list[Distribution]]:
    p2, p3 = _t(0.3, 0.6), _t(0.2, 0.3, 0.5)
    l3 = _t(0.1, -0.4, 1.2)
    cov = _spd(3, 0)
    return {
        "Normal": [Normal(0.0, 1.0), Normal(_t(0.0, 1.0), _t(1.0, 2.0))],
        "LogNormal": [LogNormal(0.0, 0.5), LogNormal(_t(0.0, 1.0), 0.5)],
        "HalfNormal": [HalfNormal(1.5), HalfNormal(_t(1.0, 2.0))],
        "HalfCauchy": [HalfCauchy(1.0), HalfCauchy(_t(1.0, 3.0))],
        "Cauchy": [Cauchy(0.0, 1.0), Cauchy(_t(0.0, 1.0), 2.0)],
        "StudentT": [StudentT(4.0, 0.0, 1.0), StudentT(_t(3.0, 5.0), _t(0.0, 1.0), 2.0)],
        "Laplace": [Laplace(0.0, 1.0), Laplace(_t(0.0, 1.0), 0.5)],
        "Gumbel": [Gumbel(0.0, 1.0), Gumbel(_t(0.0, 1.0), 2.0)],
        "Exponential": [Exponential(2.0), Exponential(_t(1.0, 3.0))],
        "Gamma": [Gamma(2.0, 3.0), Gamma(_t(0.5, 2.0), 1.0)],
        "InverseGamma": [InverseGamma(3.0, 2.0), InverseGamma(_t(2.0, 4.0), 1.0)],
        "Chi2": [Chi2(3.0), Chi2(_t(1.0, 5.0))],
        "Beta": [Beta(2.0, 3.0), Beta(_t(0.5, 2.0), _t(1.0, 4.0))],
        "Uniform": [Uniform(0.0, 1.0), Uniform(_t(-1.0, 0.0), _t(1.0, 3.0))],
        "Weibull": [Weibull(1.0, 1.5), Weibull(_t(1.0, 2.0), 0.8)],
        "Pareto": [Pareto(1.0, 3.0), Pareto(_t(1.0, 2.0), 2.5)],
        "VonMises": [VonMises(0.0, 2.0), VonMises(_t(0.0, 1.0), _t(0.5, 4.0))],
        "RelaxedBernoulli": [
            RelaxedBernoulli(torch.tensor(0.7), probs=0.3),
            RelaxedBernoulli(torch.tensor(0.5), logits=_t(0.0, 1.0)),
        ],
        "TruncatedNormal": [
            TruncatedNormal(0.0, 1.0, -1.0, 2.0),
            TruncatedNormal(_t(0.0, 1.0), 1.0, low=0.0),
        ],
        "Dirichlet": [Dirichlet(p3 * 4), Dirichlet(torch.stack([p3, p3 * 10]))],
        "MultivariateNormal": [
            MultivariateNormal(torch.zeros(3), covariance_matrix=cov),
            MultivariateNormal(torch.zeros(2, 3), scale_tril=torch.linalg.cholesky(cov)),
            MultivariateNormal(l3, precision_matrix=torch.linalg.inv(cov)),
        ],
        "LowRankMultivariateNormal": [
            LowRankMultivariateNormal(torch.zeros(3), torch.ones(3, 1), torch.ones(3)),
            LowRankMultivariateNormal(torch.zeros(2, 3), _spd(3, 1)[:, :2], l3.exp()),
        ],
        "LKJCholesky": [LKJCholesky(3, 2.0), LKJCholesky(2, _t(0.5, 3.0))],
        "Wishart": [
            Wishart(torch.tensor(5.0), covariance_matrix=cov),
            Wishart(_t(4.0, 6.0), scale_tril=torch.linalg.cholesky(cov)),
        ],
        "RelaxedOneHotCategorical": [
            RelaxedOneHotCategorical(torch.tensor(0.8), probs=p3),
            RelaxedOneHotCategorical(torch.tensor(0.5), logits=torch.stack([l3, -l3])),
        ],
        "GaussianRandomWalk": [GaussianRandomWalk(1.0, 4), GaussianRandomWalk(_t(0.5, 2.0), 3)],
        "Bernoulli": [Bernoulli(probs=0.3), Bernoulli(logits=_t(0.0, 1.0))],
        "Binomial": [Binomial(5, probs=0.3), Binomial(_t(3.0, 7.0), logits=_t(0.5, -0.5))],
        "Categorical": [Categorical(probs=p3), Categorical(logits=torch.stack([l3, -l3]))],
        "OneHotCategorical": [
            OneHotCategorical(probs=p3),
            OneHotCategorical(logits=torch.stack([l3, -l3])),
        ],
        "Multinomial": [Multinomial(6, probs=p3), Multinomial(4, logits=torch.stack([l3, -l3]))],
        "Poisson": [Poisson(3.0), Poisson(_t(0.5, 4.0))],
        "Geometric": [Geometric(probs=0.3), Geometric(logits=_t(0.0, 1.0))],
        "NegativeBinomial": [
            NegativeBinomial(3.0, probs=0.4),
            NegativeBinomial(_t(2.0, 5.0), logits=_t(0.0, -1.0)),
        ],
        "BetaBinomial": [BetaBinomial(2.0, 3.0, 6), BetaBinomial(_t(1.0, 4.0), 2.0, _t(5.0, 5.0))],
        "ZeroInflatedPoisson": [
            ZeroInflatedPoisson(0.2, 3.0),
            ZeroInflatedPoisson(p2, _t(1.0, 5.0)),
        ],
        "ZeroInflatedNegativeBinomial": [
            ZeroInflatedNegativeBinomial(0.2, 3.0, probs=0.4),
            ZeroInflatedNegativeBinomial(p2, _t(2.0, 4.0), logits=_t(0.0, 1.0)),
        ],
        "NegativeBinomial2": [NegativeBinomial2(3.0, 2.0), NegativeBinomial2(_t(1.0, 10.0), 5.0)],
        "OrderedLogistic": [
            OrderedLogistic(0.3, _t(-1.0, 0.5, 2.0)),
            OrderedLogistic(_t(0.0, 1.0), _t(-1.0, 1.0)),
        ],
        "Delta": [Delta(torch.tensor(1.5)), Delta(torch.ones(2, 3), _t(0.5, -0.5), event_dim=1)],
        "ImproperUniform": [
            ImproperUniform(constraints.positive, (), ()),
            ImproperUniform(constraints.real, (2,), (3,)),
            ImproperUniform(constraints.interval(_t(0.0, 1.0), 5.0), (2,), ()),
        ],
        "MixtureSameFamily": [
            MixtureSameFamily(Categorical(probs=p2), Normal(_t(-1.0, 1.0), 1.0)),
            MixtureSameFamily(
                Categorical(logits=torch.zeros(2, 3)),
                Independent(Normal(torch.zeros(2, 3, 4), 1.0), 1),
            ),
        ],
        "Independent": [
            Independent(Normal(torch.zeros(3), 1.0), 1),
            Normal(torch.zeros(2, 3), 1.0).to_event(1),
            Dirichlet(torch.ones(2, 3)).to_event(1),
        ],
        "Masked": [
            Normal(torch.zeros(3), 1.0).mask(torch.tensor([True, False, True])),
            Poisson(_t(1.0, 2.0)).mask(torch.tensor([[True], [False]])),
        ],
    }


def example_distributions() -> dict[str, list[Distribution]]:
    """Family name -> instances: scalar, batched, and the batched one expanded to (4, ...)."""
    out = _scalar_and_batched()
    for instances in out.values():
        last = instances[-1]
        instances.append(last.expand(torch.Size([4]) + last.batch_shape))
    return out


def example_value(dist: Distribution) -> torch.Tensor:
    """A point of ``dist``'s support: a draw, or 2.0 for the sampler-less ImproperUniform."""
    if isinstance(dist, ImproperUniform):
        return torch.full(dist.batch_shape + dist.event_shape, 2.0)
    return dist.sample()


def shifted(
    dist: Distribution, shift: torch.Tensor, fixed: tuple[str, ...] = ()
) -> Distribution:
    """``dist``'s family with each continuous tensor parameter (not in ``fixed``) moved by
    ``shift`` and still valid (see :func:`shift_within`); wrapped distributions are shifted
    alike."""
    family = family_of(dist)
    args = {}
    for name, value in dist.ppl_args.items():  # type: ignore[attr-defined]
        constraint = dist.arg_constraints.get(name)
        if isinstance(value, Distribution):
            value = shifted(value, shift, fixed)
        elif (
            name not in fixed
            and isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and constraint is not None
            and not constraint.is_discrete
        ):
            value = shift_within(constraint, value, shift)
        args[name] = value
    return family.build(**args)


def shift_within(
    constraint: constraints.Constraint, value: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """``value`` moved by ``shift`` inside ``constraint``, with elementary operations only:
    added (reals, ordered vectors, and constraints that depend on other parameters, such as
    Uniform's bounds), scaled by ``exp(shift)`` above a lower bound, moved in logit space in
    an interval, and tilted by ``exp(shift * i / n)`` on the simplex; other constraints
    through ``biject_to``."""
    base = constraint
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    if constraints.is_dependent(base) or isinstance(
        base, (type(constraints.real), type(constraints.ordered))
    ):
        return value + shift
    if isinstance(base, (constraints.greater_than, constraints.greater_than_eq)):
        return base.lower_bound + (value - base.lower_bound) * torch.exp(shift)
    if isinstance(base, (constraints.interval, constraints.half_open_interval)):
        low, width = base.lower_bound, base.upper_bound - base.lower_bound
        return low + width * torch.sigmoid(torch.logit((value - low) / width) + shift)
    if isinstance(base, type(constraints.simplex)):
        n = value.shape[-1]
        tilted = value * torch.exp(shift * torch.arange(n, dtype=value.dtype) / n)
        return tilted / tilted.sum(-1, keepdim=True)
    bijection = biject_to(constraint)
    return bijection(bijection.inv(value) + shift)
