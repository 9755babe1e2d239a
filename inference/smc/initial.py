"""Initial particles for static-model SMC: prior draws, mapped to the flat unconstrained space
of a ``FlatModel``.

The draws come from one vectorized run of the model (``ppl.vectorize``: every site gets a
particle axis), and each latent is unconstrained by ``biject_to(support).inv`` with its
site's batched distribution, so supports with random bounds are mapped exactly. A model
whose code depends on its latents' shapes (``x @ w`` with a latent vector ``w``, whose
particle axis ``matmul`` would take for a matrix dimension) runs under ``torch.func.vmap``
instead, each particle seeing its own unbatched values, as ``predictive`` does. When graph
passes gave the lowered model latents the model itself has not (``noncenter``'s
``theta__raw``), or the model neither vectorizes nor vmaps (Python control flow on a
latent), the draws come from ``Simulate`` of the passed prior graph, one particle at a time,
with a :class:`~ppl.inference.lowering.flat.FastPathWarning` saying why.

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

from ppl.handlers import trace
from ppl.inference.lowering.flat import FastPathWarning, FlatModel
from ppl.ir import Graph, Simulate
from ppl.model import Model
from ppl.predictive import plain_draws
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


def _missing_latents(flat: FlatModel, sites: dict) -> list[str]:
    """The flat model's latents that a run of the model did not draw."""
    return [b.address for b in flat.blocks
            if b.address not in sites or not sites[b.address].is_latent]


def _vectorized(model: Model, args: tuple, kwargs: dict, flat: FlatModel,
                num_particles: int) -> Tensor | str:
    """The particles from one vectorized run, or why there cannot be one."""
    try:
        run = vectorized_trace(model, args, kwargs, num_particles)
    except (RuntimeError, ValueError) as error:  # the model does not vectorize
        return f"the model does not run vectorized over particles ({error})"
    missing = _missing_latents(flat, run.trace.sites)
    if missing:
        return f"the graph passes made the latents {missing}, which the model does not draw"
    parts = [_unconstrained_block(run, b.address, b.size) for b in flat.blocks]
    return torch.cat(parts, 1).to(flat.dtype)


def _vmapped(model: Model, args: tuple, kwargs: dict, flat: FlatModel,
             num_particles: int) -> Tensor | str:
    """The particles from ``num_particles`` runs of the model under ``torch.func.vmap``,
    each unconstrained with its own distribution's support, or why there cannot be any."""
    def once(_row: Tensor) -> Tensor:
        sites = trace().get_trace(plain_draws()(model), *args, **kwargs).sites
        missing = _missing_latents(flat, sites)
        if missing:
            raise ValueError(f"the model does not draw the latents {missing}")
        return torch.cat([biject_to(sites[b.address].fn.support).inv(sites[b.address].value)
                          .reshape(b.size).to(flat.dtype) for b in flat.blocks])

    try:
        return torch.func.vmap(once, randomness="different")(torch.zeros(num_particles))
    except Exception as error:  # noqa: BLE001 - control flow on a latent, an unbatched sampler
        return f"nor does it run under torch.func.vmap ({error})"


def prior_particles(model: Model, args: tuple, kwargs: dict, flat: FlatModel,
                    prior_graph: Graph, num_particles: int, seed: int) -> Tensor:
    """``(num_particles, flat.dim)`` unconstrained prior draws (see the module docstring);
    ``prior_graph`` is the passed graph without observations, for the per-particle path."""
    with seeded(seed):
        particles = _vectorized(model, args, kwargs, flat, num_particles)
        if isinstance(particles, Tensor):
            return particles
        vmapped = _vmapped(model, args, kwargs, flat, num_particles)
        if isinstance(vmapped, Tensor):
            return vmapped
        warnings.warn(f"{particles}; {vmapped}: the {num_particles} initial particles are "
                      "drawn one by one from the prior graph, much slower", FastPathWarning,
                      stacklevel=4)
        draws = [Simulate(prior_graph).run() for _ in range(num_particles)]
    return torch.stack([flat.unconstrain({b.address: d[b.address] for b in flat.blocks})
                        for d in draws]).to(flat.dtype)
