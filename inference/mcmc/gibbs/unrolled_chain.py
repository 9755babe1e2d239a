"""Chains among discrete sites written out one by one (an HMM as a Python loop), found in
the graph and drawn jointly by forward filtering, backward sampling instead of site by site.

Sites ``z_0 .. z_{T-1}`` (``T >= 2``) form a chain when each is a scalar with the same
finite support, ``z_t``'s only discrete parent among the sites given is ``z_{t-1}`` (and
``z_0`` has none), ``z_{t-1}``'s only discrete child among them is ``z_t``, and every other
site that reads the chain reads ``z_t`` alone or ``z_{t-1}`` and ``z_t`` (an emission, a
factor). Then ``P(z | the rest)`` is a chain whose log factors ``F[t, j, k]`` are
``log p(z_t = k | z_{t-1} = j)`` plus the terms that read ``z_t`` last, and
:func:`~ppl.passes.chains.chain_sample` draws all of ``z`` from it exactly. ``F`` comes from
one vmapped :class:`SiteProgram` call over ``2 K^2`` rows per chain: in row ``(p, j, k)``
the sites of parity ``p`` hold ``k`` and the others ``j``, so each step's terms are read
at every ``(j, k)`` in the rows of its parity. ``find_chains`` says which sites qualify;
``Gibbs`` gives each chain it finds one :class:`UnrolledChainGibbs` block (``O(T K^2)`` per
sweep instead of ``T`` site updates), and with ``discrete="enumerate"`` draws such a chain
jointly per kept draw (``UnrolledChainGibbs.draw``).

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Categorical, Normal
    >>> from ppl.inference.mcmc import chain_generators
    >>> @model
    ... def hmm(y):
    ...     trans = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    ...     z = 0
    ...     for t in range(len(y)):
    ...         z = sample(f"z_{t}", Categorical(trans[z]))
    ...         sample(f"y_{t}", Normal(4.0 * z, 0.5), obs=y[t])
    >>> graph = hmm.graph(torch.tensor([0.0, 0.1, 4.0, 3.9, 0.2]))
    >>> find_chains(graph, [f"z_{t}" for t in range(5)])
    [('z_0', 'z_1', 'z_2', 'z_3', 'z_4')]
    >>> update = UnrolledChainGibbs().bind(graph, find_chains(graph, ["z_0", "z_1", "z_2"])[0])
    >>> values = {f"z_{t}": torch.zeros(2, dtype=torch.int64) for t in range(5)}
    >>> values, _, _ = update.step(chain_generators(0, 2), values, None)
    >>> torch.stack([values[f"z_{t}"] for t in range(5)], 1)  # z_3, z_4 stay: not in the chain
    tensor([[0, 0, 1, 0, 0],
            [0, 0, 1, 0, 0]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ppl.inference.rng import RNG, num_rows, rand
from ppl.ir import Graph
from ppl.ir.analysis import random_dag
from ppl.passes.chains import chain_sample
from ppl.passes.rewriting import probe

from .discrete import Values, _Term
from .site_program import SiteProgram

__all__ = ["UnrolledChainGibbs", "find_chains", "summable"]


def _support(dist) -> Tensor | None:
    """A scalar site's finite support, or None."""
    if dist.batch_shape or dist.event_shape or not dist.has_enumerate_support:
        return None
    return dist.enumerate_support(expand=False).reshape(-1)


def find_chains(graph: Graph, sites: Sequence[str]) -> list[tuple[str, ...]]:
    """The chains (module docstring) among ``sites``, each in order, ``z_0`` first."""
    p, dag = probe(graph), random_dag(graph)
    support = {a: _support(p.dists[graph.site(a).name]) for a in sites}
    candidates = {a for a, s in support.items() if s is not None}
    parents = {a: [u for u in dag.predecessors(a) if u in candidates] for a in candidates}
    children = {a: [v for v in dag.successors(a) if v in candidates] for a in candidates}

    def next_of(a: str) -> str | None:
        nxt = children[a]
        if len(nxt) == 1 and parents[nxt[0]] == [a] and torch.equal(support[nxt[0]], support[a]):
            return nxt[0]
        return None

    chains = []
    for a in sites:
        if a not in candidates or parents[a]:
            continue
        chain = [a]
        while (b := next_of(chain[-1])) is not None:
            chain.append(b)
        if len(chain) >= 2 and _steps_of_terms(dag, chain) is not None:
            chains.append(tuple(chain))
    return chains


def summable(graph: Graph, chain: Sequence[str]) -> bool:
    """Whether ``enumerate_discrete`` can sum the chain out: no discrete latent outside it
    reads it."""
    p, dag = probe(graph), random_dag(graph)
    readers = {s for a in chain for s in dag.successors(a)} - set(chain)
    return not any(graph.site(s).kind == "sample"
                   and p.dists[graph.site(s).name].support.is_discrete for s in readers)


def _steps_of_terms(dag, chain: list[str]) -> dict[str, int] | None:
    """Every site reading the chain -> the step whose factor holds it (the last chain site it
    reads); None when one reads sites that are not ``z_t`` or ``z_{t-1}, z_t``."""
    index = {a: t for t, a in enumerate(chain)}
    steps = {a: t for a, t in index.items()}
    for a in chain:
        for child in dag.successors(a):
            if child in index:
                continue
            read = sorted(index[u] for u in dag.predecessors(child) if u in index)
            if read[-1] - read[0] > 1:
                return None
            steps[child] = read[-1]
    return steps


@dataclass(frozen=True)
class UnrolledChainGibbs:
    """Draw the bound chain of sites ``(z_0, ..., z_{T-1})`` jointly by FFBS (module
    docstring); ``bind`` takes them in chain order (as :func:`find_chains` gives them).

    ``source``: the graph that holds the chain's sites, when the blocks sample a graph with
    them summed out (``Gibbs`` does, so that its kernel runs on the forward algorithm's
    density); the bound graph by default."""

    source: Graph | None = field(default=None, repr=False)
    chain: tuple[str, ...] = ()
    support: Tensor | None = field(default=None, repr=False)
    steps: dict[str, int] = field(default_factory=dict, repr=False)
    program: SiteProgram | None = field(default=None, repr=False)

    def bind(self, graph: Graph, sites: tuple[str, ...]) -> UnrolledChainGibbs:
        graph = self.source or graph
        steps = _steps_of_terms(random_dag(graph), list(sites))
        if steps is None or tuple(sites) not in find_chains(graph, sites):
            raise ValueError(f"UnrolledChainGibbs: sites {list(sites)} are no chain of "
                             "discrete sites (see ppl.inference.mcmc.gibbs.unrolled_chain)")
        support = _support(probe(graph).dists[graph.site(sites[0]).name])
        program = SiteProgram(graph, {a: _Term(graph.site(a).meta.attr("scale"), 0, frozenset())
                                      for a in steps})
        return replace(self, chain=tuple(sites), support=support, steps=steps, program=program)

    def init(self, rng: RNG, values: Values, num_warmup: int) -> tuple[Values, None]:
        """Draw the chain if its sites have no values yet (summed out of the sampled graph)."""
        if not all(a in values for a in self.chain):
            values, _, _ = self.step(rng, values, None)
        return values, None

    def step(self, rng: RNG, values: Values, state: None) -> tuple[Values, None, dict]:
        if self.program is None:
            raise ValueError("UnrolledChainGibbs is not bound to any site: call .bind(graph, "
                             "sites)")
        u = rand(rng, num_rows(rng, values), (len(self.chain),))
        return {**values, **self.draw(u, values)}, None, {}

    def draw(self, u: Tensor, values: Values) -> Values:
        """The chain's sites drawn jointly at the uniforms ``u`` ``(rows, T)``, given rows of
        the values of every other site its terms read."""
        with torch.no_grad():
            F = self._factors(values, u.shape[0])
        drawn = self.support[chain_sample(F, 0, u)]
        return {a: drawn[:, t] for t, a in enumerate(self.chain)}

    def _factors(self, values: Values, num_chains: int) -> Tensor:
        """``F (chains, T, K, K)`` at the current values of every other site."""
        K, T = len(self.support), len(self.chain)
        rows = 2 * K * K
        parity, j, k = torch.meshgrid(torch.arange(2), torch.arange(K), torch.arange(K),
                                      indexing="ij")
        batch = {a: v.repeat_interleave(rows, 0) for a, v in values.items()
                 if a in self.program.latents}
        for t, a in enumerate(self.chain):
            index = torch.where(parity.flatten() == t % 2, k.flatten(), j.flatten())
            batch[a] = self.support[index].repeat(num_chains)
        terms = self.program(batch)
        F = torch.zeros(num_chains, 2, K, K, T, dtype=torch.float64)
        for a, t in self.steps.items():
            F[..., t] += terms[a].reshape(num_chains, 2, K, K).double()
        F = torch.where((torch.arange(T) % 2 == 0), F[:, 0], F[:, 1])  # each step's parity
        return F.movedim(-1, 1)
