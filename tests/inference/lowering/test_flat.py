"""The flat lowering is the ``unconstrain`` pass followed by an interpreter of its graph: the
layout follows the pass's real-valued latents, and on the tape's backends the draws' constrained
values come from the tape, without compiling the autograd code."""

import pytest
import torch

from ppl.inference.lowering.flat import FlatModel
from ppl.passes import latent_transforms

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
