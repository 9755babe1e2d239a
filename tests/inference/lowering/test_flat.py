"""The flat lowering is the ``unconstrain`` pass followed by an interpreter of its graph: the
layout follows the pass's real-valued latents, and on the tape's backends the draws' constrained
values come from the tape, without compiling the autograd code."""

import pytest
import torch

from ppl import model, plate, sample
from ppl.inference.lowering.flat import FlatModel
from ppl.inference.mcmc.gibbs.kernel_update import ConditionalFlat
from ppl.passes import latent_transforms
from ppl.stdlib import HalfNormal, Normal

from .test_tape import CASES


@pytest.mark.parametrize("name", sorted(CASES))
def test_latents_are_the_unconstrain_pass_sites(name):
    m, args = CASES[name]
    flat = FlatModel.from_graph(m.graph(*args), backend="autograd")
    transforms = latent_transforms(flat.unconstrained)
    assert [b.address for b in flat.blocks] == [n.address for n in flat.graph.latent_nodes]
    for block in flat.blocks:
        site = transforms.get(block.address)
        assert block.latent == (site.unconstrained if site else block.address)
        latent = flat.unconstrained.site(block.latent)
        assert latent.kind == "sample" and tuple(latent.meta.shape) == block.unconstrained_shape


@pytest.mark.parametrize("name", sorted(CASES))
def test_constrained_values_come_from_the_tape_and_match_autograd(name):
    m, args = CASES[name]
    flat = FlatModel.from_graph(m.graph(*args), backend="generated")
    z = torch.randn(5, flat.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    values = flat.constrained_values(z)
    assert "values_fn" not in vars(flat) and "log_density_fn" not in vars(flat)  # not compiled
    reference = torch.func.vmap(flat.values_fn)(z)
    assert list(values) == list(reference) == list(flat.sites)
    for address, value in values.items():
        assert value.shape == reference[address].shape, address
        torch.testing.assert_close(value, reference[address], rtol=1e-6, atol=1e-6)


@model
def two_blocks(y):
    loc = sample("loc", Normal(0.0, 5.0))
    with plate("groups", 3):
        scale = sample("scale", HalfNormal(2.0))
    with plate("data", 3):
        sample("y", Normal(loc, scale), obs=y)


def test_gibbs_block_values_come_from_the_tape():
    graph = two_blocks.graph(torch.tensor([0.3, -1.0, 2.0]))
    flat = ConditionalFlat(graph, ("scale",))
    assert flat.backend == "generated", flat.fallback_reason
    data = flat.data({"loc": torch.tensor([0.5, -0.5])})
    z = torch.randn(2, flat.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    values = flat.values(z, data)
    assert "values_fn" not in vars(flat.flat)
    torch.testing.assert_close(values["scale"], torch.exp(z))
