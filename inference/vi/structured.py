"""``AutoStructured``: a Gaussian guide with the model's dependency structure.

Each latent site's unconstrained value is Gaussian given its guide parents, with a mean
affine in their values: ``u_i = loc_i + Σ_j W_ij u_j + scale_i ⊙ ε_i`` (``ε ~ N(0, I)``,
one learned block ``W_ij`` of shape ``(numel_i, numel_j)`` per edge). Over the flat vector
``u = (I - W)⁻¹ (loc + scale ⊙ ε)``, a Gaussian whose Cholesky factor ``(I - W)⁻¹ diag(scale)``
is lower triangular in the sites' (topological) order.

The guide parents of a site are read from the model's graph IR (``model.graph(*args)``,
:func:`ppl.ir.analysis.random_dag`): its latent parents and the earlier latents that share
a child with it (its earlier neighbours in the moral graph), since observing a common child
makes its parents dependent a posteriori. On a chain or tree of latents with observations
at the nodes (a linear-Gaussian state-space model, say) the family contains the exact
posterior of a linear-Gaussian model; elsewhere it is the structured approximation between
:class:`AutoNormal` (no edges) and :class:`AutoMultivariateNormal` (all edges). A model whose
structure depends on random values has no graph and needs another guide.

    >>> import torch
    >>> from ppl import ParamStore, model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def chain():
    ...     x1 = sample("x1", Normal(0.0, 1.0))
    ...     x2 = sample("x2", Normal(x1, 1.0))
    ...     sample("y", Normal(x2, 1.0), obs=torch.tensor(0.5))
    >>> with ParamStore() as store:
    ...     guide = AutoStructured(chain)
    ...     guide()
    ...     guide.parents, sorted(store)
    ({'x1': (), 'x2': ('x1',)}, ['auto.loc', 'auto.scale', 'auto.x2.x1.weight'])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from ppl import param
from ppl.errors import ModelError
from ppl.handlers import block
from ppl.ir import DynamicModelError
from ppl.ir.analysis import random_dag
from ppl.randomness import forked
from ppl.stdlib import MultivariateNormal

from .guides import JointGuide, LatentSite

__all__ = ["AutoStructured", "guide_parents"]


def guide_parents(graph, latents: list[str]) -> dict[str, tuple[str, ...]]:
    """For each latent (in topological order), its latent parents in the graph and the
    earlier latents that share a child with it, in that order."""
    dag = random_dag(graph)
    missing = [name for name in latents if name not in dag]
    if missing:
        raise ModelError(f"AutoStructured: latent sites {missing} are not in the graph of "
                         f"{graph.name!r} (its random sites: {sorted(dag)})")
    position = {name: i for i, name in enumerate(latents)}
    parents: dict[str, tuple[str, ...]] = {}
    for name in latents:
        linked = set(dag.predecessors(name))
        for child in dag.successors(name):
            linked |= set(dag.predecessors(child))
        parents[name] = tuple(j for j in latents
                              if j in linked and position[j] < position[name])
    return parents


class AutoStructured(JointGuide):
    """Gaussian in the unconstrained space, each site's mean affine in its guide parents'
    values (module docstring); ``parents`` maps each site to them after the first call."""

    def __init__(self, model: Callable, *, prefix: str = "auto", init_scale: float = 0.1):
        super().__init__(model, prefix=prefix, init_scale=init_scale)
        self.parents: dict[str, tuple[str, ...]] | None = None

    def setup(self, *args, **kwargs) -> list[LatentSite]:
        sites = super().setup(*args, **kwargs)
        if self.parents is None:
            try:
                with forked(), block():  # hidden from the handlers around this call
                    graph = self.model.graph(*args, **kwargs)
            except DynamicModelError as error:
                raise ModelError(f"AutoStructured reads the dependencies of {self.model!r} "
                                 f"from its graph, which it has none of: {error}") from error
            self.parents = guide_parents(graph, [s.name for s in sites])
        return sites

    def joint(self, init: Tensor) -> Distribution:
        dim = init.numel()
        loc = param(self._name("loc"), init)
        scale = param(self._name("scale"), torch.full((dim,), self.init_scale),
                      constraints.positive)
        starts, start = {}, 0
        for site in self.sites:
            starts[site.name] = slice(start, start + site.numel)
            start += site.numel
        weights = torch.zeros(dim, dim, dtype=loc.dtype)
        for site in self.sites:
            rows = starts[site.name]
            for parent in self.parents[site.name]:
                cols = starts[parent]
                weights[rows, cols] = param(self._name(site.name, parent, "weight"),
                                            torch.zeros(rows.stop - rows.start,
                                                        cols.stop - cols.start))
        unit_lower = torch.eye(dim, dtype=loc.dtype) - weights
        mean = torch.linalg.solve_triangular(unit_lower, loc.unsqueeze(-1), upper=False,
                                             unitriangular=True).squeeze(-1)
        scale_tril = torch.linalg.solve_triangular(unit_lower, torch.diag(scale), upper=False,
                                                   unitriangular=True)
        return MultivariateNormal(mean, scale_tril=scale_tril)
