"""``ChainGibbs``: the states ``z_0 .. z_{T-1}`` of a scan chain (an HMM) drawn jointly, as
one Gibbs block, by forward filtering, backward sampling.

``enumerate_discrete`` sums a scan chain out of the graph as one
``ppl.chain_logsumexp(F, start)`` node (``ppl.passes.chain_enumeration``), whose log factors
``F[t, j, k]`` depend on the continuous sites only. Gibbs moves the continuous sites on that
graph (the kernel's potential has the chain summed out, so it runs on the native path where
the graph has one) and draws the whole chain from ``P(z | continuous sites, data)`` with
:func:`~ppl.passes.chains.chain_sample`, ``F`` evaluated at the current values for every
chain in one vmapped :class:`SiteProgram` call: ``O(T K^2)`` per sweep, never ``T`` site
updates. The continuous move leaves ``p(theta | y)`` invariant and the chain is then drawn
exactly given ``theta``, so the pair leaves the joint posterior invariant: the chain block
runs after every block of the summed-out graph. :class:`ChainDraws` is the shared step: the
chain's values and state probabilities at rows of values (``discrete="enumerate"`` uses it
once for all kept draws).

    >>> import torch
    >>> from ppl import model, sample, scan
    >>> from ppl.passes import enumerate_discrete
    >>> from ppl.stdlib import Categorical, Normal
    >>> from ppl.inference.mcmc import chain_generators
    >>> @model
    ... def hmm(y):
    ...     mu = sample("mu", Normal(0.0, 5.0))
    ...     trans = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    ...     def step(z, y_t):
    ...         z = sample("z", Categorical(trans[z]))
    ...         sample("y", Normal(mu * z, 0.5), obs=y_t)
    ...         return z, None
    ...     scan(step, 0, y)
    >>> graph = enumerate_discrete()(hmm.graph(torch.tensor([0.0, 0.1, 4.0, 3.9, 0.2])))
    >>> update = ChainGibbs().bind(graph, ("z",))
    >>> values, _, _ = update.step(chain_generators(0, 2), {"mu": torch.tensor([4.0, 4.0])}, None)
    >>> values["z"]
    tensor([[0, 0, 1, 1, 0],
            [0, 0, 1, 1, 0]])
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ppl.inference.rng import RNG, num_rows, rand
from ppl.ir import Graph
from ppl.ir.errors import IRError
from ppl.passes.chains import chain_sample, state_marginals

from .discrete import Values
from .site_program import SiteProgram

__all__ = ["ChainDraws", "ChainGibbs", "chain_sites"]


def chain_sites(graph: Graph) -> list[str]:
    """The sites of the chains summed out of ``graph`` (``graph.attrs["enumerated_chains"]``)."""
    return [c["site"] for c in graph.attrs.get("enumerated_chains", ())]


class ChainDraws:
    """Joint draws of some enumerated chains of ``graph``, given rows of its latents' values.

    ``factors(values, rows)``: site -> ``(F (rows, T, K, K), start)``; ``draws(u, values)``:
    site -> values ``(rows, T)`` by FFBS at the uniforms ``u[site]`` ``(rows, T)``;
    ``probs(values, rows)``: site -> ``P(z_t = k)`` ``(rows, T, K)``."""

    def __init__(self, graph: Graph, sites: tuple[str, ...]):
        records = {c["site"]: c for c in graph.attrs.get("enumerated_chains", ())}
        missing = [a for a in sites if a not in records]
        if missing:
            raise IRError(f"ChainGibbs: {missing} are not chains summed out of graph "
                          f"{graph.name!r} (enumerate_discrete on a scan); its chains are "
                          f"{list(records)}")
        self.chains = {a: graph.node(records[a]["chain"]).args for a in sites}  # (F ref, start)
        self.support = {a: torch.tensor(records[a]["values"],
                                        dtype=getattr(torch, records[a]["dtype"]))
                        for a in sites}
        self.length = {a: records[a]["length"] for a in sites}
        self.program = SiteProgram(graph, {}, nodes=[F.name for F, _ in self.chains.values()])

    def factors(self, values: Values, rows: int) -> dict[str, tuple[Tensor, int]]:
        with torch.no_grad():
            if self.program.latents:
                out = self.program(values)
            else:  # the chain reads no latent: the same factors for every row
                out = {k: v.expand(rows, *v.shape) for k, v in self.program.fn({}).items()}
        return {a: (out[F.name], start) for a, (F, start) in self.chains.items()}

    def draws(self, u: dict[str, Tensor], values: Values) -> Values:
        rows = next(iter(u.values())).shape[0]
        return {a: self.support[a][chain_sample(F, start, u[a])]
                for a, (F, start) in self.factors(values, rows).items()}

    def probs(self, values: Values, rows: int) -> dict[str, Tensor]:
        return {a: state_marginals(F, start)
                for a, (F, start) in self.factors(values, rows).items()}


@dataclass(frozen=True)
class ChainGibbs:
    """Draw each bound scan chain jointly from its full conditional, by FFBS (module
    docstring). Bound to a graph with the chains summed out (``enumerate_discrete``)."""

    draws: ChainDraws | None = field(default=None, repr=False)

    def bind(self, graph: Graph, sites: tuple[str, ...]) -> ChainGibbs:
        return replace(self, draws=ChainDraws(graph, tuple(sites)))

    def init(self, rng: RNG, values: Values, num_warmup: int) -> tuple[Values, None]:
        values, _, _ = self.step(rng, values, None)
        return values, None

    def step(self, rng: RNG, values: Values, state: None) -> tuple[Values, None, dict]:
        if self.draws is None:
            raise ValueError("ChainGibbs is not bound to any site: call .bind(graph, sites)")
        num_chains = num_rows(rng, values)
        u = {a: rand(rng, num_chains, (T,)) for a, T in self.draws.length.items()}
        return {**values, **self.draws.draws(u, values)}, None, {}
