"""Models from the standard tutorials, each with data simulated from a known truth.

The gallery is what a statistician writes first (varying slopes with an LKJ prior,
stochastic volatility, ordinal regression, correlated Gaussians, finite mixtures), written
as a user writes it: default float32 tensors, plates, ``to_event``, ``clamp``. Each
:class:`GalleryCase` holds the model, its simulated data and the parameter values that
generated them (``truth``, the sites to recover), so tests check that every model runs on the
fast path and that its posterior covers the truth (``truth_z_scores``), and ``bench/`` times
the same models against other PPLs.

    >>> case = gallery()["mixture_constant_weights"]
    >>> sorted(case.truth), tuple(case.kwargs["y"].shape)
    (['loc'], (200,))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from ppl import deterministic, model, plate, sample
from ppl.model import Model
from ppl.stdlib import (
    Categorical,
    Dirichlet,
    GaussianRandomWalk,
    HalfNormal,
    ImproperUniform,
    LKJCholesky,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    OrderedLogistic,
    constraints,
)

from .results.diagnostics import mcse_mean

__all__ = ["GalleryCase", "gallery", "truth_z_scores"]


@dataclass(frozen=True)
class GalleryCase:
    """A model, its simulated data (``args``, ``kwargs``) and the values that generated them
    (``truth``: site -> value, for the sites a posterior should recover); ``init``: the MCMC
    init strategy to run it with (``"median"`` for mixtures, whose chains started at random
    can settle in a mode with the components' labels swapped)."""

    name: str
    model: Model
    args: tuple
    kwargs: dict
    truth: dict[str, Tensor]
    init: str = "uniform"


def truth_z_scores(samples: Mapping[str, Tensor], truth: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per element of each truth site: ``(posterior mean - truth) / sqrt(sd^2 + mcse^2)``.

    The truth is one draw of the data-generating parameters, so it sits about one posterior
    sd from the posterior mean (more than 4 is a failure), and the mean itself is known to
    its Monte Carlo standard error; ``samples`` are ``(chains, draws, *shape)``."""
    scores = {}
    for name, value in truth.items():
        draws = samples[name].to(torch.float64)
        mean, sd = draws.mean((0, 1)), draws.reshape(-1, *draws.shape[2:]).std(0)
        spread = (sd**2 + mcse_mean(draws) ** 2).sqrt()
        scores[name] = (mean - value.to(torch.float64)) / spread
    return scores


def _corr(cholesky: Tensor) -> Tensor:
    return cholesky @ cholesky.mT


@model
def varying_slopes(group, x, num_groups, y=None):
    """Varying intercepts and slopes, correlated through an LKJ prior on their Cholesky
    factor (non-centered)."""
    mu = sample("mu", Normal(torch.zeros(2), 2.0).to_event(1))
    tau = sample("tau", HalfNormal(torch.ones(2)).to_event(1))
    chol = sample("L", LKJCholesky(2, 2.0))
    deterministic("corr", _corr(chol)[1, 0])
    sigma = sample("sigma", HalfNormal(1.0))
    with plate("groups", num_groups):
        z = sample("z", Normal(torch.zeros(2), 1.0).to_event(1))
    effects = mu + z @ (tau[:, None] * chol).T
    with plate("data", len(x)):
        sample("y", Normal(effects[group, 0] + effects[group, 1] * x, sigma), obs=y)


@model
def stochastic_volatility(y):
    """Log-volatility as a Gaussian random walk around a level ``mu``, non-centered: a
    standard walk scaled by ``sigma`` (the weak per-step data make the centered walk a
    funnel)."""
    sigma = sample("sigma", HalfNormal(1.0))
    mu = sample("mu", Normal(0.0, 2.0))
    h = sigma * sample("h_std", GaussianRandomWalk(1.0, len(y)))
    sample("y", Normal(0.0, torch.exp(0.5 * (mu + h))).to_event(1), obs=y)


@model
def ordered_logistic(x, num_cutpoints, y=None):
    """Ordinal regression with ordered cutpoints (a flat prior on the ordered vectors)."""
    beta = sample("beta", Normal(0.0, 3.0))
    cutpoints = sample("cutpoints", ImproperUniform(constraints.ordered, (), (num_cutpoints,)))
    with plate("data", len(x)):
        sample("y", OrderedLogistic(beta * x, cutpoints), obs=y)


@model
def mvn_lkj(y):
    """A correlated Gaussian with an LKJ prior on its correlations and half-normal sds."""
    dim = y.shape[-1]
    mu = sample("mu", Normal(torch.zeros(dim), 5.0).to_event(1))
    sd = sample("sd", HalfNormal(torch.full((dim,), 2.0)).to_event(1))
    chol = sample("L", LKJCholesky(dim, 2.0))
    deterministic("corr", _corr(chol)[tuple(torch.tril_indices(dim, dim, -1))])
    with plate("data", y.shape[0]):
        sample("y", MultivariateNormal(mu, scale_tril=sd[:, None] * chol), obs=y)


@model
def mvn_constant_scale(y, scale_tril):
    """A Gaussian mean under a known covariance (one constant ``scale_tril`` per row)."""
    mu = sample("mu", Normal(torch.zeros(y.shape[-1]), 5.0).to_event(1))
    with plate("data", y.shape[0]):
        sample("y", MultivariateNormal(mu, scale_tril=scale_tril), obs=y)


@model
def mixture_constant_weights(weights, y):
    """A two-component Gaussian mixture with known weights, marginalized by
    ``MixtureSameFamily``."""
    loc = sample("loc", Normal(torch.tensor([-3.0, 3.0]), 1.0).to_event(1))
    with plate("data", len(y)):
        sample("y", MixtureSameFamily(Categorical(weights), Normal(loc, 1.0)), obs=y)


@model
def mixture_latent_weights(y):
    """A three-component Gaussian mixture with Dirichlet weights and a shared scale kept off
    zero with ``clamp``."""
    weights = sample("weights", Dirichlet(torch.ones(3)))
    loc = sample("loc", Normal(torch.tensor([-4.0, 0.0, 4.0]), 1.0).to_event(1))
    scale = sample("scale", HalfNormal(2.0))
    with plate("data", len(y)):
        mixture = MixtureSameFamily(Categorical(weights), Normal(loc, scale.clamp(min=1e-3)))
        sample("y", mixture, obs=y)


def _lkj_chol(corr: float) -> Tensor:
    return torch.linalg.cholesky(torch.tensor([[1.0, corr], [corr, 1.0]]))


def _varying_slopes(g: torch.Generator) -> GalleryCase:
    num_groups, per_group = 8, 25
    mu, tau, sigma = torch.tensor([1.0, -0.5]), torch.tensor([0.8, 0.5]), torch.tensor(0.5)
    chol = _lkj_chol(0.5)
    effects = mu + torch.randn(num_groups, 2, generator=g) @ (tau[:, None] * chol).T
    group = torch.arange(num_groups).repeat_interleave(per_group)
    x = torch.randn(len(group), generator=g)
    y = effects[group, 0] + effects[group, 1] * x + sigma * torch.randn(len(group), generator=g)
    return GalleryCase("varying_slopes", varying_slopes, (group, x, num_groups), {"y": y},
                       {"mu": mu, "sigma": sigma})


def _stochastic_volatility(g: torch.Generator) -> GalleryCase:
    steps, sigma, mu = 200, torch.tensor(0.3), torch.tensor(-1.0)
    h = torch.cumsum(sigma * torch.randn(steps, generator=g), 0)
    y = torch.exp(0.5 * (mu + h)) * torch.randn(steps, generator=g)
    return GalleryCase("stochastic_volatility", stochastic_volatility, (y,), {},
                       {"mu": mu, "sigma": sigma})


def _ordered_logistic(g: torch.Generator) -> GalleryCase:
    beta, cutpoints = torch.tensor(1.2), torch.tensor([-1.0, 0.3, 1.5])
    x = torch.randn(300, generator=g)
    probs = OrderedLogistic(beta * x, cutpoints).probs
    y = torch.multinomial(probs, 1, generator=g).squeeze(-1)
    return GalleryCase("ordered_logistic", ordered_logistic, (x, 3), {"y": y},
                       {"beta": beta, "cutpoints": cutpoints})


def _mvn_lkj(g: torch.Generator) -> GalleryCase:
    mu, sd = torch.tensor([1.0, -1.0, 0.5]), torch.tensor([1.0, 2.0, 0.5])
    corr = torch.tensor([[1.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 1.0]])
    chol = torch.linalg.cholesky(corr)
    y = mu + torch.randn(100, 3, generator=g) @ (sd[:, None] * chol).T
    below = tuple(torch.tril_indices(3, 3, -1))
    return GalleryCase("mvn_lkj", mvn_lkj, (y,), {}, {"mu": mu, "sd": sd, "corr": corr[below]})


def _mvn_constant_scale(g: torch.Generator) -> GalleryCase:
    mu, scale_tril = torch.tensor([0.5, -1.5]), torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    y = mu + torch.randn(25, 2, generator=g) @ scale_tril.T
    return GalleryCase("mvn_constant_scale", mvn_constant_scale, (y, scale_tril), {},
                       {"mu": mu})


def _mixture_constant_weights(g: torch.Generator) -> GalleryCase:
    weights, loc = torch.tensor([0.3, 0.7]), torch.tensor([-3.0, 3.0])
    component = torch.multinomial(weights, 200, replacement=True, generator=g)
    y = loc[component] + torch.randn(200, generator=g)
    return GalleryCase("mixture_constant_weights", mixture_constant_weights, (weights,),
                       {"y": y}, {"loc": loc}, init="median")


def _mixture_latent_weights(g: torch.Generator) -> GalleryCase:
    weights, loc, scale = torch.tensor([0.2, 0.5, 0.3]), torch.tensor([-4.0, 0.0, 4.0]), 0.8
    component = torch.multinomial(weights, 300, replacement=True, generator=g)
    y = loc[component] + scale * torch.randn(300, generator=g)
    return GalleryCase("mixture_latent_weights", mixture_latent_weights, (y,), {},
                       {"weights": weights, "loc": loc, "scale": torch.tensor(scale)},
                       init="median")


_BUILDERS: tuple[Callable[[torch.Generator], GalleryCase], ...] = (
    _varying_slopes,
    _stochastic_volatility,
    _ordered_logistic,
    _mvn_lkj,
    _mvn_constant_scale,
    _mixture_constant_weights,
    _mixture_latent_weights,
)


def gallery(seed: int = 0) -> dict[str, GalleryCase]:
    """Every case, its data simulated with ``seed`` (a fresh dict per call)."""
    cases = {}
    for index, build in enumerate(_BUILDERS):
        case = build(torch.Generator().manual_seed(seed * len(_BUILDERS) + index))
        cases[case.name] = case
    return cases
