"""Reference models, with their data, shared by ppl's tests.

DESIGN asks that the log density from the Trace equal the graph's on every reference model,
and the pass tests check that each pass preserves these models' distributions; both suites
import the models from here, so they test the same programs.

* ``eight_schools(sigma, y=None)``: the centred hierarchical model of Rubin (1981), with a
  deterministic site ``theta_scaled``; data ``EIGHT_SCHOOLS_SIGMA`` and ``EIGHT_SCHOOLS_Y``.
* ``logistic(x, y)``: Bayesian logistic regression with a vector of weights and a bias;
  ``LOGISTIC_DATA`` is a small fixed ``(x, y)``.
* ``mixture(data)``: a two-component Gaussian mixture with a discrete assignment ``z`` per
  point; ``MIXTURE_DATA`` is a small fixed data set.

The data are fixed tensors, built the same way on every import.

    >>> import torch
    >>> from ppl.ir import LogDensity
    >>> from ppl.stdlib.reference_models import (
    ...     EIGHT_SCHOOLS_SIGMA as SIGMA, EIGHT_SCHOOLS_Y as Y, eight_schools)
    >>> [site.name for site in eight_schools.trace(SIGMA, y=Y).latent_sites()]
    ['mu', 'tau', 'theta']
    >>> values = {"mu": torch.tensor(1.0), "tau": torch.tensor(2.0), "theta": torch.zeros(8)}
    >>> from_trace = eight_schools.log_density(values, SIGMA, y=Y)
    >>> from_graph = LogDensity(eight_schools.graph(SIGMA, y=Y), values).run()
    >>> bool(torch.allclose(from_trace, from_graph))
    True
"""

from __future__ import annotations

import torch

from ppl import deterministic, model, plate, sample

from .continuous import HalfCauchy, Normal
from .discrete import Bernoulli, Categorical
from .multivariate import Dirichlet

__all__ = [
    "EIGHT_SCHOOLS_SIGMA",
    "EIGHT_SCHOOLS_Y",
    "LOGISTIC_DATA",
    "MIXTURE_DATA",
    "eight_schools",
    "logistic",
    "mixture",
]

EIGHT_SCHOOLS_Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SCHOOLS_SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

LOGISTIC_DATA = (
    torch.randn(6, 2, generator=torch.Generator().manual_seed(1)),
    torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0]),
)

MIXTURE_DATA = torch.tensor([-1.2, -0.8, 0.9, 1.4, 0.1])


@model
def eight_schools(sigma, y=None):
    mu = sample("mu", Normal(0.0, 5.0))
    tau = sample("tau", HalfCauchy(5.0))
    with plate("schools", len(sigma)):
        theta = sample("theta", Normal(mu, tau))
        sample("y", Normal(theta, sigma), obs=y)
    return deterministic("theta_scaled", theta / sigma)


@model
def logistic(x, y):
    w = sample("w", Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
    b = sample("b", Normal(0.0, 1.0))
    with plate("data", x.shape[0]):
        sample("y", Bernoulli(logits=x @ w + b), obs=y)


@model
def mixture(data):
    weights = sample("weights", Dirichlet(torch.ones(2)))
    locs = sample("locs", Normal(torch.tensor([-1.0, 1.0]), 1.0).to_event(1))
    with plate("data", len(data)):
        z = sample("z", Categorical(weights))
        sample("x", Normal(locs[z], 0.5), obs=data)
