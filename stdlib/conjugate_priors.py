"""The conjugate-prior rules of the families, as data (each is a family's ``conjugate``).

=================  ==========================================  ===============================
prior              likelihood (parameter)                      posterior
=================  ==========================================  ===============================
Normal(m, s)       Normal(loc=theta, scale=sd)                 Normal, precisions add
Beta(a, b)         Bernoulli(probs=theta), Binomial(n, theta)  Beta(a + sum y, b + sum(n - y))
Gamma(a, b)        Poisson(rate=theta)                         Gamma(a + sum y, b + count)
Gamma(a, b)        Normal(loc, scale=theta ** -0.5)            Gamma(a + count/2, b + SS/2)
Dirichlet(alpha)   Categorical(probs=theta)                    Dirichlet(alpha + counts)
=================  ==========================================  ===============================

Each prior keeps its parameters in an additive form (:attr:`ConjugatePrior.natural`), each
likelihood adds its sufficient statistics (:attr:`Likelihood.stats`, elementwise), and the
prior's ``draw`` samples the posterior from the sums, with one ``torch.Generator``. The Gibbs
``Conjugate`` update (``ppl.inference.mcmc.gibbs.conjugate``) finds the pairs in a graph. Add
a pair by adding a ``Likelihood`` to a prior's tuple, or a new ``ConjugatePrior`` as the
``conjugate`` of a family's declaration (:mod:`ppl.stdlib.families`).

    >>> import torch
    >>> from ppl.stdlib import Beta
    >>> params = BETA.natural(Beta(2.0, 3.0))
    >>> [lik.family.__name__ for lik in BETA.likelihoods]
    ['Bernoulli', 'Binomial']
    >>> float(BETA.draw(params, torch.Generator().manual_seed(0))) < 1.0
    True
"""


from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution
from torch.nn.functional import one_hot

from .continuous import Normal
from .discrete import Bernoulli, Binomial, Categorical, Poisson

__all__ = ["BETA", "DIRICHLET", "GAMMA", "NORMAL", "ConjugatePrior", "Likelihood", "Stats"]

Stats = tuple[Tensor, ...]


@dataclass(frozen=True)
class Likelihood:
    """A child family (its class) whose parameter ``param`` is ``theta ** power``;
    ``stats(dist, value)`` are its additive contributions to the prior's natural parameters
    (elementwise, before summing to ``theta``'s shape). ``normalized``: the parameter may
    also be ``theta`` divided by its sum over the last dim (the same value for a
    simplex-valued ``theta``)."""

    family: type[Distribution]
    param: str
    stats: Callable[[Distribution, Tensor], Stats]
    power: float = 1.0
    normalized: bool = False


@dataclass(frozen=True)
class ConjugatePrior:
    """The rule of a prior family: ``natural(dist)`` its parameters in additive form, ``draw(params,
    generator)`` one draw from the posterior with the summed ``params``."""

    natural: Callable[[Distribution], Stats]
    draw: Callable[[Stats, torch.Generator], Tensor]
    likelihoods: tuple[Likelihood, ...]


def _gamma(concentration: Tensor, generator: torch.Generator) -> Tensor:
    draw = torch._standard_gamma(concentration, generator=generator)
    return draw.clamp(min=torch.finfo(draw.dtype).tiny)


def _dirichlet(concentration: Tensor, generator: torch.Generator) -> Tensor:
    gammas = _gamma(concentration, generator)
    return gammas / gammas.sum(-1, keepdim=True)


def _normal_draw(params: Stats, generator: torch.Generator) -> Tensor:
    weighted_mean, precision = params
    noise = torch.randn(precision.shape, generator=generator, dtype=precision.dtype)
    return weighted_mean / precision + noise * precision.rsqrt()


NORMAL = ConjugatePrior(
    lambda d: (d.loc / d.scale**2, d.scale**-2),
    _normal_draw,
    (Likelihood(Normal, "loc", lambda d, y: (y / d.scale**2, torch.ones_like(y) / d.scale**2)),),
)
BETA = ConjugatePrior(
    lambda d: (d.concentration1, d.concentration0),
    lambda params, g: _dirichlet(torch.stack(params, -1), g)[..., 0],
    (
        Likelihood(Bernoulli, "probs", lambda d, y: (y, 1.0 - y)),
        Likelihood(Binomial, "probs", lambda d, y: (y, d.total_count - y)),
    ),
)
GAMMA = ConjugatePrior(
    lambda d: (d.concentration, d.rate),
    lambda params, g: _gamma(params[0], g) / params[1],
    (
        Likelihood(Poisson, "rate", lambda d, y: (y, torch.ones_like(y))),
        Likelihood(
            Normal, "scale", lambda d, y: (0.5 * torch.ones_like(y), 0.5 * (y - d.loc) ** 2),
            power=-0.5,
        ),
    ),
)
DIRICHLET = ConjugatePrior(
    lambda d: (d.concentration,),
    lambda params, g: _dirichlet(params[0], g),
    (
        Likelihood(
            Categorical, "probs",
            lambda d, y: (one_hot(y.long(), d.probs.shape[-1]).to(d.probs.dtype),),
            normalized=True,
        ),
    ),
)
