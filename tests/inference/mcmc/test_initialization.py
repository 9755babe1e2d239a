"""MCMC init strategies (``init="uniform" | "prior" | "median" | {site: value}``): where the
chains start, checked on the constrained values, and refusals that name the problem."""

import math

import pytest
import torch

from ppl import infer, model, plate, sample
from ppl.errors import ModelError
from ppl.inference import NUTS
from ppl.inference.lowering.flat import FlatModel
from ppl.inference.mcmc.initialization import initial_positions
from ppl.stdlib import HalfNormal, Normal


@model
def located(y):
    mu = sample("mu", Normal(3.0, 0.5))
    scale = sample("scale", HalfNormal(torch.ones(2)).to_event(1))
    with plate("data", len(y)):
        sample("y", Normal(mu, scale[0] + scale[1]), obs=y)


FLAT = FlatModel.from_graph(located.graph(torch.zeros(4)))


def start(init, chains=4, seed=0):
    z = initial_positions(FLAT, chains, torch.Generator().manual_seed(seed), init)
    return FLAT.constrained_values(z)


def test_prior_init_draws_from_the_prior():
    mu = start("prior", chains=2000)["mu"].double()
    assert abs(float(mu.mean()) - 3.0) < 4 * 0.5 / math.sqrt(2000)
    assert abs(float(mu.std()) - 0.5) < 4 * 0.5 / math.sqrt(2 * 2000)


def test_median_init_is_one_point_near_the_prior_median():
    values = start("median")
    assert (values["mu"] == values["mu"][0]).all()
    assert abs(float(values["mu"][0]) - 3.0) < 0.5  # median of 15 draws: sd about 0.16
    assert (values["scale"] > 0).all()


def test_uniform_init_is_within_two_of_zero_unconstrained():
    z = initial_positions(FLAT, 8, torch.Generator().manual_seed(0))
    assert z.abs().max() < 2.0 and z.std() > 0.3


def test_values_init_starts_at_them_and_the_rest_is_uniform():
    values = start({"mu": torch.tensor(2.5)})
    torch.testing.assert_close(values["mu"].double(), torch.full((4,), 2.5, dtype=torch.float64))
    assert values["scale"].std() > 0
    per_chain = torch.tensor([[0.5, 1.0], [1.5, 2.0]])
    torch.testing.assert_close(start({"scale": per_chain}, chains=2)["scale"].double(),
                               per_chain.double())


@pytest.mark.filterwarnings("ignore::ppl.inference.ConvergenceWarning")
def test_init_reaches_the_sampler():
    post = infer(located, torch.tensor([3.1, 2.9, 3.3, 2.8]),
                 method=NUTS(0, 1, 2, init={"mu": torch.tensor(10.0)}), seed=0)
    assert (post.samples["mu"] > 5.0).all()  # one transition from 10 stays far from the mode


def test_bad_init_is_refused_by_name():
    with pytest.raises(ValueError, match="init must be one of"):
        NUTS(init="zeros")
    with pytest.raises(ModelError, match=r"not latent sites.*\['mu', 'scale'\]"):
        start({"sigma": torch.tensor(1.0)})
    with pytest.raises(ModelError, match=r"'scale' has shape \(3,\); the site has shape \(2,\)"):
        start({"scale": torch.ones(3)})
    with pytest.raises(ModelError, match="not finite at the given init values"):
        start({"scale": torch.tensor([-1.0, 1.0])})
