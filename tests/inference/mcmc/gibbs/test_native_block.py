"""A Gibbs block moved by NUTS in C (``KernelUpdate.backend == "native"``): each chain's
transitions read its own values of the other sites, and the posterior is the torch block's."""

from __future__ import annotations

import pytest
import torch

from ppl import infer, model, plate, sample
from ppl.inference.lowering.native.compiler import compiler_available
from ppl.inference.mcmc import NUTS, chain_generators
from ppl.inference.mcmc.gibbs import Gibbs, KernelUpdate
from ppl.inference.results.diagnostics import mcse_mean
from ppl.stdlib import Bernoulli, Categorical, Dirichlet, HalfNormal, Normal

MIXTURE_DATA = torch.tensor([-0.4, 0.3, 0.1, 2.2, 3.1, 2.7, -0.2, 2.5])

pytestmark = pytest.mark.skipif(
    not compiler_available(), reason="no C compiler (cc/gcc/clang or $CC): no native backend"
)


@model
def shifted():
    """``x | z, y = 1`` is ``Normal((1 - 3 z) / 2, 1 / sqrt(2))``."""
    x = sample("x", Normal(0.0, 1.0))
    z = sample("z", Bernoulli(0.5))
    sample("y", Normal(x + 3.0 * z, 1.0), obs=torch.tensor(1.0))


@model
def mixture(y):
    """Two components, one at 0 and one at ``loc`` (no label switching), a shared scale."""
    loc = sample("loc", Normal(0.0, 3.0))
    scale = sample("scale", HalfNormal(2.0))
    with plate("data", len(y)):
        z = sample("z", Bernoulli(0.5))
        sample("y", Normal(loc * z, scale), obs=y)


def test_each_chain_reads_its_own_conditioning_values():
    """Chains held at different ``z`` sample their own conditionals (reading row 0 for every
    chain would put all four at ``z = 0``'s mean, 0.5)."""
    update = KernelUpdate(NUTS()).bind(shifted.graph(), ("x",))
    assert update.backend == "native"
    gens = chain_generators(0, 4)
    z = torch.tensor([0.0, 1.0, 1.0, 0.0])
    values, state = update.init(gens, {"z": z, "x": torch.zeros(4)}, 100)
    draws = []
    for i in range(600):
        values, state, _ = update.step(gens, values, state)
        if i >= 100:
            draws.append(values["x"])
    mean = torch.stack(draws).mean(0)
    torch.testing.assert_close(mean, (1 - 3 * z).double() / 2, atol=0.25, rtol=0)


def test_native_block_gives_the_torch_blocks_posterior():
    """A mixture's continuous block by NUTS in C and by torch NUTS: the same means within
    four MCSEs of their difference, with ``extra["backend"]`` saying which ran."""
    runs = {}
    for backend in ("auto", "torch"):
        method = Gibbs(200, 500, kernel=KernelUpdate(NUTS(), backend=backend))
        runs[backend] = infer(mixture, MIXTURE_DATA, method=method, seed=3)
    assert [runs[b].extra["backend"] for b in runs] == ["native", "torch"]
    for site in ("loc", "scale"):
        a, b = (runs[k].samples[site].double() for k in runs)
        gap = (a.mean((0, 1)) - b.mean((0, 1))).abs()
        assert (gap < 4 * (mcse_mean(a) ** 2 + mcse_mean(b) ** 2).sqrt()).all(), site


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="'auto', 'native' or 'torch'"):
        KernelUpdate(NUTS(), backend="C").bind(shifted.graph(), ("x",))


@model
def weighted_mixture(y):
    """Latent weights read at per-chain integer indices (``scatter_last``: no C rule yet)."""
    weights = sample("weights", Dirichlet(torch.full((2,), 2.0)))
    with plate("data", len(y)):
        z = sample("z", Categorical(weights))
        sample("y", Normal(torch.tensor([0.0, 3.0])[z], 1.0), obs=y)


def test_a_block_left_off_c_says_why():
    """A kernel block whose potential has no C rule runs the generated torch code and says
    why, naming the operation, in the update and in the posterior's extra."""
    update = KernelUpdate(NUTS()).bind(weighted_mixture.graph(MIXTURE_DATA), ("weights",))
    assert (update.backend, update.flat.backend) == ("torch", "generated")
    assert "scatter_last" in update.flat.fallback_reason
    post = infer(weighted_mixture, MIXTURE_DATA, method=Gibbs(5, 5, chains=1), seed=0)
    assert "scatter_last" in post.extra["fallback_reasons"][("weights",)]
