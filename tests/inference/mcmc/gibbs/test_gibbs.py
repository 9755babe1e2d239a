"""``DiscreteGibbs``: one update draws each site from its exact full conditional (checked with
thousands of independent chains against brute-force enumeration), plate elements at once and
other elements one by one; per-chain randomness; clear errors."""

from __future__ import annotations

import itertools

import pytest
import torch

from ppl import model, sample
from ppl.inference.mcmc import chain_generators
from ppl.inference.mcmc.gibbs import DiscreteGibbs, SiteProgram
from ppl.ir import IRError, LogDensity
from ppl.passes import enumerate_discrete, posterior_of_enumerated
from ppl.stdlib import Bernoulli, Normal, OneHotCategorical

CHAINS = 4000


def _frequency_z(freq: torch.Tensor, p: torch.Tensor, n: int) -> torch.Tensor:
    """z-scores of observed frequencies of independent draws (binomial standard error)."""
    se = (p * (1 - p) / n).sqrt().clamp(min=1e-12)
    return (freq - p) / se


def _tile(values: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {k: v.expand(n, *v.shape).clone() for k, v in values.items()}


def test_plate_elements_are_drawn_at_once_from_their_conditional(models):
    graph = models.mixture.graph(models.mixture_data)
    update = DiscreteGibbs().bind(graph, ("z",))
    assert len(update.plans[0].masks) == 1  # the plate dim: all elements in one draw
    continuous = {"weights": torch.tensor([0.2, 0.5, 0.3]), "scale": torch.tensor(1.1)}
    values = _tile({**continuous, "z": torch.zeros(7, dtype=torch.long)}, CHAINS)
    out, _, _ = update.step(torch.Generator().manual_seed(1), values, None)
    expected = posterior_of_enumerated(enumerate_discrete()(graph), continuous)["z"]  # (7, 3)
    freq = torch.nn.functional.one_hot(out["z"], 3).double().mean(0)
    z = _frequency_z(freq, expected.double(), CHAINS)
    assert (z.abs() < 4).all(), z
    assert torch.equal(out["scale"], values["scale"])  # other sites untouched


def test_chain_site_is_drawn_given_its_neighbours(models):
    graph = models.hmm.graph(models.hmm_data)
    update = DiscreteGibbs().bind(graph, ("z_1",))
    program = update.plans[0].program
    assert set(program.latents) == {"locs", "z_0", "z_1", "z_2"}  # its blanket: not z_3
    rest = {"locs": torch.tensor([-1.2, 0.9]), "z_0": torch.tensor(1), "z_2": torch.tensor(0),
            "z_3": torch.tensor(0)}
    log_joint = torch.stack([LogDensity(graph, {**rest, "z_1": torch.tensor(k)}).run()
                             for k in (0, 1)])
    expected = torch.softmax(log_joint, 0)[1]
    values = _tile({**rest, "z_1": torch.tensor(0)}, CHAINS)
    out, _, _ = update.step(torch.Generator().manual_seed(2), values, None)
    z = _frequency_z(out["z_1"].double().mean(), expected.double(), CHAINS)
    assert z.abs() < 4, (out["z_1"].double().mean(), expected)


@model
def coupled(y):
    z = sample("z", Bernoulli(torch.tensor([0.3, 0.5, 0.6])))  # a batch dim that is no plate
    sample("y", Normal(1.5 * z.sum(-1), 0.8), obs=y)


def test_dependent_elements_are_drawn_one_by_one_and_reach_the_posterior():
    graph = coupled.graph(torch.tensor(2.0))
    update = DiscreteGibbs().bind(graph, ("z",))
    assert len(update.plans[0].masks) == 3
    states = torch.tensor(list(itertools.product((0.0, 1.0), repeat=3)))
    log_joint = torch.stack([LogDensity(graph, {"z": s}).run() for s in states])
    exact = torch.softmax(log_joint, 0)
    values = {"z": torch.zeros(CHAINS, 3)}
    rng = torch.Generator().manual_seed(3)
    for _ in range(15):
        values, _, _ = update.step(rng, values, None)
    index = (values["z"] * torch.tensor([4.0, 2.0, 1.0])).sum(-1).long()
    freq = torch.bincount(index, minlength=8).double() / CHAINS
    z = _frequency_z(freq, exact.double(), CHAINS)
    assert (z.abs() < 4).all(), (freq, exact)


def test_chain_draws_do_not_depend_on_other_chains(models):
    graph = models.mixture.graph(models.mixture_data)
    update = DiscreteGibbs().bind(graph, ("z",))
    draws = []
    for chains in (2, 3):
        weights = torch.tensor([[0.3, 0.3, 0.4], [0.2, 0.7, 0.1], [0.6, 0.2, 0.2]])
        values = {"weights": weights[:chains],
                  "scale": torch.tensor([0.5, 1.0, 2.0])[:chains],
                  "z": torch.zeros(chains, 7, dtype=torch.long)}
        out, _, _ = update.step(chain_generators(7, chains), values, None)
        draws.append(out["z"])
    assert torch.equal(draws[0], draws[1][:2])


def test_site_program_reads_only_the_blanket(models):
    graph = models.hmm.graph(models.hmm_data)
    program = SiteProgram(graph, {"y_3": lambda d, v: d.log_prob(v)})
    assert set(program.latents) == {"locs", "z_3"}
    values = {"locs": torch.tensor([[-1.0, 1.0]]), "z_3": torch.tensor([1])}
    expected = Normal(1.0, 0.8).log_prob(models.hmm_data[3])
    torch.testing.assert_close(program(values)["y_3"][0], expected)


@model
def one_hot():
    sample("c", OneHotCategorical(torch.tensor([0.2, 0.8])))


def test_errors_name_the_site_and_the_fix(models):
    graph = models.mixture.graph(models.mixture_data)
    with pytest.raises(IRError, match="'scale'.*no finite enumerable support.*continuous"):
        DiscreteGibbs().bind(graph, ("scale",))
    with pytest.raises(IRError, match="'c' has event shape"):
        DiscreteGibbs().bind(one_hot.graph(), ("c",))
    with pytest.raises(ValueError, match="not bound"):
        DiscreteGibbs().step(torch.Generator(), {}, None)
