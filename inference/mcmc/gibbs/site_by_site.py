"""``SiteBySite``: the shared shape of the exact Gibbs updates, one bound site after another.

``DiscreteGibbs`` and ``Conjugate`` differ only in how a site's update is planned (read off
the graph once, at ``bind``) and what the plan draws; holding plans, the stateless ``init``
and the loop over plans in ``step`` live here once. A subclass gives ``plan_site(graph,
probed, address)``, returning an object whose ``step(rng, values)`` draws the site's new value.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Bernoulli, Beta
    >>> from ppl.inference.mcmc.gibbs import Conjugate
    >>> @model
    ... def coin():
    ...     p = sample("p", Beta(1.0, 1.0))
    ...     sample("y", Bernoulli(p), obs=torch.tensor(1.0))
    >>> isinstance(Conjugate().bind(coin.graph(), ("p",)), SiteBySite)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from ppl.inference.rng import RNG
from ppl.ir import Graph
from ppl.passes.rewriting import probe

__all__ = ["SiteBySite"]


@dataclass(frozen=True)
class SiteBySite:
    """Exact updates of the bound sites in order, each given the current values of all others."""

    plans: tuple[Any, ...] = field(default=(), repr=False)

    @staticmethod
    def plan_site(graph: Graph, probed: Any, address: str) -> Any:
        raise NotImplementedError

    def bind(self, graph: Graph, sites: tuple[str, ...]) -> SiteBySite:
        probed = probe(graph)
        return replace(self, plans=tuple(self.plan_site(graph, probed, a) for a in sites))

    def init(self, rng: RNG, values: dict[str, Tensor], num_warmup: int
             ) -> tuple[dict[str, Tensor], None]:
        return values, None

    def step(self, rng: RNG, values: dict[str, Tensor], state: None
             ) -> tuple[dict[str, Tensor], None, dict[str, Tensor]]:
        """Draw each bound site from its full conditional given all other sites' values."""
        if not self.plans:
            raise ValueError(f"{type(self).__name__} is not bound to any site: call "
                             ".bind(graph, sites)")
        values = dict(values)
        with torch.no_grad():
            for plan in self.plans:
                values[plan.address] = plan.step(rng, values)
        return values, None, {}
