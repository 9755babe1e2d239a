"""Initial particles for static-model SMC: prior draws, mapped to the flat unconstrained space
of a ``FlatModel``.

The draws come from one vectorized run of the model (``ppl.vectorize``: every site gets a
particle axis), and each latent is unconstrained by ``biject_to(support).inv`` with its
site's batched distribution, so supports with random bounds are mapped exactly. When graph
passes gave the lowered model latents the model itself has not (``noncenter``'s
``theta__raw``), or the model does not run vectorized (``x @ w`` with a batched ``w``), the
draws come from ``Simulate`` of the passed prior graph instead, one particle at a time, with
a :class:`~ppl.inference.lowering.flat.FastPathWarning` saying why.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import HalfNormal
    >>> from ppl.inference.lowering import FlatModel
    >>> @model
    ... def m():
    ...     sample("s", HalfNormal(1.0))
    >>> flat = FlatModel.from_graph(m.graph())
    >>> z = prior_particles(m, (), {}, flat, m.graph(), 100, seed=0)
    >>> z.shape, bool((flat.constrained_values(z)["s"] > 0).all())
    (torch.Size([100, 1]), True)
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.distributions import biject_to

from ppl.inference.lowering.flat import FastPathWarning, FlatModel
from ppl.ir import Graph, Simulate
from ppl.model import Model
from ppl.randomness import seeded
from ppl.vectorize import VectorizedRun, vectorized_trace

__all__ = ["prior_particles"]


def _unconstrained_block(run: VectorizedRun, address: str, size: int) -> Tensor:
    """One latent's unconstrained values ``(N, size)`` from the vectorized trace: the
    particle plate is the leftmost batch dim, so the rest flattens in the block's order."""
    site = run.trace.sites[address]
    u = biject_to(site.fn.support).inv(site.value)
    if u.numel() != run.num_particles * size:
        raise ValueError(f"site {address!r}: the vectorized prior run gave unconstrained "
                         f"values of shape {tuple(u.shape)}, not {run.num_particles} x {size}")
    return u.reshape(run.num_particles, size)


def _vectorized(model: Model, args: tuple, kwargs: dict, flat: FlatModel,
                num_particles: int) -> Tensor | str:
    """The particles from one vectorized run, or why there cannot be one."""
    try:
        run = vectorized_trace(model, args, kwargs, num_particles)
    except (RuntimeError, ValueError) as error:  # the model does not vectorize
        return f"the model does not run vectorized over particles ({error})"
    missing = [b.address for b in flat.blocks
               if b.address not in run.trace.sites or not run.trace.sites[b.address].is_latent]
    if missing:
        return f"the graph passes made the latents {missing}, which the model does not draw"
    parts = [_unconstrained_block(run, b.address, b.size) for b in flat.blocks]
    return torch.cat(parts, 1).to(flat.dtype)


def prior_particles(model: Model, args: tuple, kwargs: dict, flat: FlatModel,
                    prior_graph: Graph, num_particles: int, seed: int) -> Tensor:
    """``(num_particles, flat.dim)`` unconstrained prior draws (see the module docstring);
    ``prior_graph`` is the passed graph without observations, for the per-particle path."""
    with seeded(seed):
        particles = _vectorized(model, args, kwargs, flat, num_particles)
        if isinstance(particles, Tensor):
            return particles
        warnings.warn(f"{particles}: the {num_particles} initial particles are drawn one by "
                      "one from the prior graph, much slower", FastPathWarning, stacklevel=4)
        draws = [Simulate(prior_graph).run() for _ in range(num_particles)]
    return torch.stack([flat.unconstrain({b.address: d[b.address] for b in flat.blocks})
                        for d in draws]).to(flat.dtype)
