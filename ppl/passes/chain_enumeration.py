"""Summing a discrete chain out of a scan: the HMM's forward algorithm as one graph node.

``enumerate_discrete`` rewrites a loop (``ppl.scan``) whose carry is its step's discrete
site, as an HMM's ``z_t ~ Categorical(trans[z_{t-1}])``. The step body is emitted once,
vectorized over the ``T`` steps (step index, ``xs`` slices: a trailing dim of size ``T``),
with the incoming carry enumerated on one dim (``K`` values) and the step's site on
another: its log factors (the site's prior, and every observe and factor of the step)
add up to ``F[t, j, k] = log p(z_t = k | z_{t-1} = j) + log p(obs_t | z_t = k)``, and one
``ppl.chain_logsumexp(F, start)`` (``ppl.passes.chains``: ``O(T K^2)``, the loop of the
forward recursion, never ``T`` copies of the step) is the factor
``enumerated__log_marginal`` that replaces the loop. ``start`` is the index of ``init``
among the site's values, so ``F[0]`` is read on that row only.

A loop qualifies when

* its step has exactly one latent, the discrete site ``z`` (finite enumerable support, at
  most ``max_size`` values, a scalar: batch and event shape ``()``), and the new carry is
  ``z`` itself (one carry leaf);
* ``init`` is a constant, one of ``z``'s values, and the step reads no value that depends
  on a discrete site outside the loop;
* every site of the step, and every value that changes with the step index or ``xs``, is
  a per-step scalar (no plates in the step; values of the states alone, as ``trans[z]``,
  may have any shape), the step has no deterministic sites, and nothing outside reads
  the loop's values (a chain summed out has no values to report).

A loop that holds a discrete latent but does not qualify is refused with an ``IRError``
naming the pass, the loop and the reason; other loops are kept (and refused by the rest
of ``enumerate_discrete``, which sums out sites outside loops). Code in the step
must broadcast over extra dims on the left, as everywhere under enumeration.
``graph.attrs["enumerated_chains"]`` records each chain: its loop, site, values (and their
dtype), length and ``chain_logsumexp`` node.

    >>> import torch
    >>> from ppl import model, sample, scan
    >>> from ppl.ir import LogDensity
    >>> from ppl.stdlib import Categorical, Normal
    >>> @model
    ... def hmm(y):
    ...     trans = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    ...     def step(z, y_t):
    ...         z = sample("z", Categorical(trans[z]))
    ...         sample("y", Normal(2.0 * z, 1.0), obs=y_t)
    ...         return z, None
    ...     scan(step, torch.tensor(0), y)
    >>> from ppl.passes import enumerate_discrete
    >>> g = enumerate_discrete()(hmm.graph(torch.zeros(1000)))
    >>> [n.target for n in g if n.kind == "call"][-3:], g.subgraphs
    (['ppl.expand_right', 'Tensor.transpose', 'ppl.chain_logsumexp'], {})
    >>> LogDensity(g, {}).run().shape
    torch.Size([])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ppl.ir import DistSpec, Graph, Meta, Node, Ref
from ppl.ir.errors import IRError
from ppl.ir.loop import body_inputs, loop_parts, step_address, unroll_graph
from ppl.ir.node import map_refs

from .rewriting import Rewriter, probe

LOG_MARGINAL = "enumerated__log_marginal"

Values = Callable[[Node, Any], "torch.Tensor | str"]
"""The enumerating pass's ``_values``: a site's support values, or why it has none."""


class _Refused(Exception):
    """Why a loop with a discrete site is no chain this pass sums out."""


def eliminate_chains(graph: Graph, values_of: Values, sites: str | list[str] = "auto") -> Graph:
    """``graph`` with every qualifying loop (see the module docstring) replaced by its
    chain's log marginal; a loop with a discrete latent that does not qualify raises."""
    if not graph.subgraphs:
        return graph
    first = probe(_first_step(graph))
    discrete = {n.name: n.address for n in graph.latent_nodes
                if first.dists[n.name].support.is_discrete}
    reads_discrete = dict(discrete)
    for node in graph.nodes:  # outer node -> an outer discrete site its value depends on
        found = next((reads_discrete[r] for r in node.refs() if r in reads_discrete), None)
        if found is not None:
            reads_discrete.setdefault(node.name, found)
    chains: dict[str, _Chain] = {}
    for node in graph.nodes:
        if node.kind != "loop":
            continue
        chain = _Chain(graph, node, first, values_of)
        if not chain.discrete or (sites != "auto" and chain.discrete[0].address not in sites):
            continue
        try:
            for ref in chain.captured:
                if ref.name in reads_discrete:
                    raise _Refused(f"its step reads %{ref.name}, which depends on the discrete "
                                   f"site {reads_discrete[ref.name]!r} outside the loop")
            chain.check()
        except _Refused as why:
            raise IRError(f"enumerate_discrete: scan {node.name!r} cannot be summed out as a "
                          f"chain: {why}") from None
        chains[node.name] = chain
    if not chains:
        return graph
    rw = Rewriter(graph)
    records = []
    for node in graph.nodes:
        if node.name in chains:
            records.append(chains[node.name].emit(rw))
        else:
            rw.copy(node)
    kept = {k: v for k, v in graph.subgraphs.items() if k not in chains}
    return rw.build({"enumerated_chains": list(graph.attrs.get("enumerated_chains", ()))
                     + records}, subgraphs=kept)


def chain_candidates(graph: Graph) -> list[str]:
    """The addresses of the discrete sites in the steps of ``graph``'s loops: the chains
    ``enumerate_discrete(sites=...)`` sums out (or refuses, naming why)."""
    if not graph.subgraphs:
        return []
    first = probe(_first_step(graph))
    return [n.address for loop in graph.nodes if loop.kind == "loop"
            for n, dist in _step_dists(graph.subgraphs[loop.target], first)
            if dist.support.is_discrete]


def _step_dists(body: Graph, first) -> list[tuple[Node, Any]]:
    """Each latent site of a loop's step with its distribution at step 0 (from ``first``, a
    probe of ``_first_step``)."""
    return [(n, first.dists[first.graph.site(step_address(n.address, 0)).name])
            for n in body.nodes if n.kind == "sample"]


def _first_step(graph: Graph) -> Graph:
    """The graph with every loop cut to its first step, unrolled: a probe of it learns the
    distributions of the step's sites (``site[0]``) and of the outer sites."""
    nodes: list[Node] = []
    names = {n.name for n in graph.nodes}
    for node in graph.nodes:
        if node.kind == "loop":
            init, xs, captured, _ = loop_parts(node)
            firsts = []
            for i, x in enumerate(xs):
                name = f"{node.name}__first_x{i}"
                while name in names:
                    name += "_"
                names.add(name)
                shape = graph.node(x.name).meta.shape if isinstance(x, Ref) else None
                meta = Meta(None if shape is None else (1, *shape[1:]))
                nodes.append(Node(name, "call", "ppl.getitem", (x, slice(0, 1)), (), meta))
                firsts.append(Ref(name))
            node = node.replace(args=(init, tuple(firsts), captured), kwargs=(("length", 1),))
        nodes.append(node)
    return unroll_graph(graph.replace(nodes))


class _Chain:
    """One loop: its qualification and the nodes of its summed-out chain."""

    def __init__(self, graph: Graph, loop: Node, first, values_of: Values):
        self.graph, self.loop = graph, loop
        self.body = graph.subgraphs[loop.target]
        self.init, self.xs, self.captured, self.T = loop_parts(loop)
        self.roles = body_inputs(self.body)
        dists = _step_dists(self.body, first)
        latents = [n for n, _ in dists]
        self.dists = {n.name: d for n, d in dists}
        self.discrete = [n for n in latents if self.dists[n.name].support.is_discrete]
        self.latents, self.values_of = latents, values_of

    def check(self) -> None:
        """Raise ``_Refused`` naming the first obstacle; set ``site``, ``values``, ``start``."""
        z = self.discrete[0]
        for node in self.latents:
            if node is not z:
                raise _Refused(f"its step has the latent site {node.address!r} besides the "
                               f"discrete site {z.address!r}; only the chain's own site sums out")
        outs = self.body.output.args[0]
        if len(self.init) != 1 or outs[0] != Ref(z.name):
            raise _Refused(f"its carry is not exactly the value of its discrete site "
                           f"{z.address!r} (one carry leaf, returned as the new carry)")
        dist = self.dists[z.name]
        values = self.values_of(z, dist)
        if isinstance(values, str):
            raise _Refused(f"site {z.address!r} cannot be enumerated: {values}")
        if dist.batch_shape or dist.event_shape:
            raise _Refused(f"site {z.address!r} has batch shape {tuple(dist.batch_shape)}; a "
                           "chain's state is one scalar per step")
        init = self.init[0]
        if isinstance(init, Ref) or torch.as_tensor(init).numel() != 1:
            raise _Refused(f"init {init!r} is not a constant scalar")
        start = (values == torch.as_tensor(init).to(values.dtype)).nonzero()
        if len(start) != 1:
            raise _Refused(f"init {init!r} is not one of site {z.address!r}'s values "
                           f"{values.tolist()}")
        stepwise = {n.name for n in self.roles["step"] + self.roles["x"]}  # varies with t
        varying = stepwise | {n.name for n in self.roles["carry"]}  # with t, or the states
        for node in self.body.nodes:
            if node.kind in ("input", "output"):
                continue
            if node.is_deterministic_site:
                raise _Refused(f"its step has the deterministic site {node.address!r}, which "
                               "has no value once the chain is summed out")
            if node.meta.plates:
                raise _Refused(f"site {node.address!r} is in plates "
                               f"{[f.name for f in node.meta.plates]}")
            if node.is_random or any(r in varying for r in node.refs()):
                varying.add(node.name)
            if any(r in stepwise for r in node.refs()):
                stepwise.add(node.name)
            if (node.name in stepwise or node.is_random) and node.meta.shape != ():
                raise _Refused(f"%{node.name} changes over steps with shape {node.meta.shape}; "
                               "values that change over steps are scalars in a chain's step")
        readers = [n.name for n in self.graph.nodes if self.loop.name in n.refs()]
        if readers:
            raise _Refused(f"node %{readers[0]} reads its values; a chain summed out has none")
        self.site, self.values, self.start = z, values, int(start[0, 0])
        self.varying = varying

    def emit(self, rw: Rewriter) -> dict:
        """Append the chain's nodes to ``rw``; return its ``enumerated_chains`` record."""
        K, T, z = len(self.values), self.T, self.site
        device = next((v.device for v in self.graph.data.values()
                       if isinstance(v, torch.Tensor)), torch.device("cpu"))
        values = self.values.to(device)
        env: dict[str, Any] = {}
        (step,), (carry,) = self.roles["step"], self.roles["carry"]
        if any(step.name in n.refs() for n in self.body.nodes):
            env[step.name] = rw.add_input(torch.arange(T, device=device),
                                          hint=f"{self.loop.name}_t")
        env[carry.name] = rw.add_input(values.reshape(K, 1), hint=f"{z.address}_previous")
        for node, arg in zip(self.roles["x"], self.xs, strict=True):
            env[node.name] = rw.arg(arg)
        for node, arg in zip(self.roles["captured"], self.captured, strict=True):
            env[node.name] = rw.arg(arg)

        def lookup(ref: Ref) -> Any:
            return env[ref.name]

        factors: list[Any] = []
        for node in self.body.nodes:
            if node.kind in ("input", "output"):
                continue
            args = map_refs(node.args, lookup)
            kwargs = tuple((k, map_refs(v, lookup)) for k, v in node.kwargs)
            if node.kind == "call":
                meta = node.meta if node.name not in self.varying else Meta(None, node.meta.dtype)
                env[node.name] = rw.add("call", node.target, args, kwargs, meta=meta,
                                        hint=node.name)
                continue
            scale = node.meta.attr("scale")
            if node.kind == "factor":
                value = env[node.name] = args[0]
                lp = value if scale is None else rw.add("call", "torch.mul", (value, scale),
                                                        hint=f"{node.name}_scaled")
            else:
                if node is z:
                    env[node.name] = rw.add_input(values.reshape(K, 1, 1), hint=z.address)
                else:
                    env[node.name] = args[0]
                lp = rw.add("call", "ppl.log_prob", (DistSpec(node.target, kwargs),
                                                     env[node.name], scale),
                            hint=f"{node.address}_log_prob")
            factors.append(lp)
        total = factors[0]
        for lp in factors[1:]:
            total = rw.add("call", "torch.add", (total, lp), hint=f"{z.address}_log_factors")
        full = rw.add("call", "ppl.expand_right", (total, (K, K, T)), hint=f"{z.address}_steps")
        F = rw.add("call", "Tensor.transpose", (full, -1, -3), hint=f"{z.address}_transitions")
        chain = rw.add("call", "ppl.chain_logsumexp", (F, self.start), meta=Meta(shape=()),
                       hint=f"{self.loop.name}_log_marginal")
        address = rw.fresh_address(LOG_MARGINAL)
        rw.add("factor", address, (chain,), hint=address,
               meta=Meta(address=address, attrs=(("role", "enumerated_log_marginal"),)))
        return {"loop": self.loop.name, "site": z.address, "values": self.values.tolist(),
                "dtype": str(self.values.dtype).removeprefix("torch."), "length": T,
                "chain": chain.name, "factor": address}
