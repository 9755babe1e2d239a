"""Models the pass tests share (as the ``zoo`` fixture), and a fixed seed per test."""

from types import SimpleNamespace

import pytest
import torch

from ppl import clear_params, deterministic, model, plate, sample
from ppl.stdlib import (
    Bernoulli,
    Beta,
    Categorical,
    Dirichlet,
    Gamma,
    HalfNormal,
    Laplace,
    LKJCholesky,
    LogNormal,
    Normal,
    Uniform,
)
from ppl.stdlib.reference_models import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    LOGISTIC_DATA,
    MIXTURE_DATA,
    eight_schools,
    logistic,
    mixture,
)


@model
def constrained(x):
    rate = sample("rate", Gamma(2.0, 3.0))
    p = sample("p", Beta(2.0, 2.0))
    lo = sample("lo", Normal(0.0, 1.0))
    width = sample("width", HalfNormal(2.0))
    u = sample("u", Uniform(lo, lo + width))
    w = sample("w", Dirichlet(torch.tensor([1.5, 2.0, 2.5])))
    corr = sample("corr", LKJCholesky(3, 2.0))
    loc = u * p + w[0] + corr[1, 0]
    sample("x", Normal(loc, 1.0 / rate), obs=x)


@model
def hmm(y):
    trans = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    locs = sample("locs", Normal(torch.tensor([-1.0, 1.0]), 1.0).to_event(1))
    z = sample("z_0", Categorical(torch.tensor([0.5, 0.5])))
    sample("y_0", Normal(locs[z], 1.0), obs=y[0])
    for t in range(1, len(y)):
        z = sample(f"z_{t}", Categorical(trans[z]))
        sample(f"y_{t}", Normal(locs[z], 1.0), obs=y[t])


@model
def two_bernoullis(y):
    a = sample("a", Bernoulli(0.3))
    b = sample("b", Bernoulli(0.6))
    scale = sample("scale", HalfNormal(1.0))
    sample("y", Normal(a + 2.0 * b, scale + 0.5), obs=y)


@model
def funnel():
    mu = sample("mu", Normal(0.0, 1.0))
    s = sample("s", HalfNormal(1.0))
    with plate("groups", 3):
        a = sample("a", Normal(mu, s))
        b = sample("b", Laplace(mu, s))
        c = sample("c", LogNormal(mu, s))
    return deterministic("total", a + b + c)


ZOO = SimpleNamespace(
    Y=EIGHT_SCHOOLS_Y,
    SIGMA=EIGHT_SCHOOLS_SIGMA,
    eight_schools=eight_schools,
    constrained=constrained,
    logistic=logistic,
    mixture=mixture,
    hmm=hmm,
    two_bernoullis=two_bernoullis,
    funnel=funnel,
    logistic_data=LOGISTIC_DATA,
    mixture_data=MIXTURE_DATA,
    hmm_data=torch.tensor([-0.9, 0.2, 1.3]),
)


@pytest.fixture(scope="session")
def zoo() -> SimpleNamespace:
    return ZOO


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    clear_params()
    yield
    clear_params()
