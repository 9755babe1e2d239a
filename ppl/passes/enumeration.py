"""``enumerate_discrete(sites="auto")``: sum discrete latents out of the model, exactly.

Each enumerated site ``z`` (a latent with finite enumerable support: Bernoulli, Categorical,
Binomial / BetaBinomial with a small ``total_count``, ...) gets an *enumeration dim*
``-(B + 1 + c)``, to the left of all ``B`` batch dims of the sites involved, where the slot
``c`` is shared by sites that never meet in one tensor (neither in a node's value nor in the
contraction plan: a greedy colouring), so a chain ``z_0 -> z_1 -> ...`` of any length uses two
slots; its node becomes
a constant ``input`` (same SSA name, ``{role="enumerated"}``) holding all its values along
that dim, so every node downstream computes, by broadcasting, its value for every
assignment at once (``Tensor.expand`` is rewritten to ``ppl.expand_right``, which keeps the
new leading dims). Every random node whose density depends on an enumerated site turns into
a log-factor tensor (``ppl.log_prob``):

* the enumerated site's own prior ``log p(z | parents)``;
* an ``observe`` or ``factor`` reading them (absorbed: its node is removed);
* a continuous latent ``x`` whose distribution reads them: ``x`` stays a latent, as an
  ``ImproperUniform`` over its support (``{role="enumeration_child"}``), and its density
  moves into a log-factor (so ``enumerate_discrete`` runs before ``unconstrain``, which then
  unconstrains ``x`` as usual: ``must_precede``, checked by ``passes.run``).

One ``ppl.contract_enumerated`` call sums the product of the factors over all assignments
by variable elimination with plates in min-fill order (see ``ppl.passes.contraction``), and
one ``factor`` node, address ``enumerated__log_marginal``, adds the log marginal. Sites in
plates are independent per plate element; chains (an HMM's ``z_t`` reading ``z_{t-1}``) are
eliminated front to back like the forward algorithm, ``O(T K^2)`` time and memory
(``enumeration_plans(graph)`` gives the plans, ``Plan.largest`` their widest factor).
A chain written as ``ppl.scan`` (the carry is the step's discrete site) is summed out
first, as one ``ppl.chain_logsumexp`` node over the step's log factors vectorized over
the steps, never ``T`` copies of the step (see ``ppl.passes.chain_enumeration``); other
loops are refused.
With ``sites="auto"``, discrete latents that cannot be enumerated (no finite support, more
than ``max_size`` values, a vector event) are left alone, named with the reason in one
:class:`EnumerationWarning` and in ``graph.attrs["enumeration_skipped"]``.

Model code downstream of an enumerated site must broadcast on the left (index from the
right, no ``reshape``), as in Pyro's enumeration; deterministic sites and the output
computed from an enumerated site hold values for every assignment.

``graph.attrs["enumerated"]`` records, per application, the contraction node and for each
site its dim, values, batch shape and plates; ``posterior_of_enumerated(graph, values)``
returns ``P(z = values[k] | continuous latents, data)`` for each site (shape
``batch_shape + (K,)``), exactly, by differentiating the contraction.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Bernoulli, Normal
    >>> from ppl.ir import LogDensity
    >>> @model
    ... def m():
    ...     z = sample("z", Bernoulli(0.3))
    ...     sample("y", Normal(2.0 * z, 1.0), obs=torch.tensor(1.5))
    >>> g = enumerate_discrete()(m.graph())
    >>> [n.address for n in g.latent_nodes], round(float(LogDensity(g, {}).run().exp()), 4)
    ([], 0.1963)
    >>> posterior_of_enumerated(g, {})["z"]
    tensor([0.4619, 0.5381])
    >>> [plan.largest([2]) for plan in enumeration_plans(g)]
    [2]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch.distributions import constraints

from ppl.ir import DistSpec, Graph, LogDensity, Meta, Node, Ref
from ppl.ir.errors import IRError
from ppl.ir.loop import refuse_loops
from ppl.ir.node import iter_refs

from .chain_enumeration import LOG_MARGINAL, eliminate_chains
from .chains import state_marginals
from .contraction import Plan, plan_contraction, posterior_marginals
from .rewriting import Rewriter, is_static, probe

_EXPANDS = frozenset({"Tensor.expand", "torch.broadcast_to", "Tensor.broadcast_to"})


class EnumerationWarning(UserWarning):
    """``enumerate_discrete("auto")`` left discrete latents in the graph (each named with
    why); they need a Gibbs update or explicit handling."""


def _plate_dims(node: Node) -> tuple[int, ...]:
    return tuple(sorted(f.dim for f in node.meta.plates if f.dim is not None))


class enumerate_discrete:
    """Pass: sum out ``sites`` (addresses, or ``"auto"``: every finite discrete latent with at
    most ``max_size`` values) exactly, leaving a factor with their log marginal."""

    name = "enumerate_discrete"
    must_precede = {
        "unconstrain": "unconstrain turns a latent that reads an enumerated site into an "
                       "observe node, which enumeration would absorb with the site's value",
    }

    def __init__(self, sites: str | Sequence[str] = "auto", max_size: int = 64):
        self.sites: str | list[str] = (
            sites if sites == "auto" else ([sites] if isinstance(sites, str) else list(sites))
        )
        self.max_size = max_size

    def __repr__(self) -> str:
        return f"enumerate_discrete({self.sites!r})"

    def _values(self, node: Node, dist) -> torch.Tensor | str:
        """The site's support values, or why it cannot be enumerated."""
        if not dist.support.is_discrete or not dist.has_enumerate_support:
            return f"its distribution {node.target} has no finite enumerable support"
        if dist.event_shape:
            shape = tuple(dist.event_shape)
            return f"its values have event shape {shape} (only scalar events enumerate)"
        try:
            values = dist.enumerate_support(expand=False).reshape(-1)
        except Exception as e:
            return f"its support cannot be enumerated ({e})"
        if values.numel() > self.max_size:
            return f"its support has {values.numel()} values, more than max_size={self.max_size}"
        return values

    def __call__(self, graph: Graph) -> Graph:
        graph = eliminate_chains(graph, self._values, self.sites)
        refuse_loops(graph, "pass 'enumerate_discrete' (outside a scan whose carry is its step's "
                     "discrete site, see ppl.passes.chain_enumeration)")
        p = probe(graph)
        chosen: dict[str, torch.Tensor] = {}
        skipped: dict[str, str] = {}
        for node in graph.latent_nodes:
            if self.sites != "auto" and node.address not in self.sites:
                continue
            dist = p.dists[node.name]
            values = self._values(node, dist)
            if isinstance(values, str):
                if self.sites != "auto":
                    raise IRError(
                        f"enumerate_discrete: site {node.address!r} cannot be enumerated: {values}"
                    )
                if dist.support.is_discrete:
                    skipped[node.address] = values
                continue
            chosen[node.name] = values
        if skipped:
            listed = "; ".join(f"{a!r}: {why}" for a, why in skipped.items())
            warnings.warn(f"enumerate_discrete('auto') left discrete sites in the graph ({listed})",
                          EnumerationWarning, stacklevel=2)
            graph = graph.replace(attrs={**graph.attrs, "enumeration_skipped": skipped})
        if self.sites != "auto":
            chains = {c["site"] for c in graph.attrs.get("enumerated_chains", ())}
            missing = set(self.sites) - {graph.node(n).address for n in chosen} - chains
            if missing:
                raise IRError(
                    f"enumerate_discrete: {sorted(missing)} are not latent sites of graph "
                    f"{graph.name!r}; latents are {[n.address for n in graph.latent_nodes]}"
                )
        if not chosen:
            return graph
        return _Enumerator(graph, p, chosen).run()


class _Enumerator:
    def __init__(self, graph: Graph, p, chosen: dict[str, torch.Tensor]):
        self.graph, self.p, self.chosen = graph, p, chosen
        # node -> the enumerated sites its value holds dims for
        self.carried: dict[str, frozenset[str]] = {n: frozenset({n}) for n in chosen}
        self.absorbed: set[str] = set()  # random nodes whose density reads them
        self.factor_sites: list[frozenset[str]] = []  # per log-factor, in the order run adds them
        for node in graph.nodes:
            reads = frozenset().union(*(self.carried.get(r, frozenset()) for r in node.refs()))
            if node.name in chosen:
                self.factor_sites.append(reads | {node.name})
                continue
            if node.kind == "call" and reads:
                self.carried[node.name] = reads
            elif node.kind in ("sample", "observe", "factor") and reads:
                self.absorbed.add(node.name)
                self.factor_sites.append(reads)
                value_reads = frozenset().union(
                    *(self.carried.get(r, frozenset()) for r in iter_refs(node.args))
                )
                if node.kind == "observe" and value_reads:
                    self.carried[node.name] = value_reads
            if node.kind == "sample" and reads and p.dists[node.name].support.is_discrete:
                raise IRError(
                    f"enumerate_discrete: discrete site {node.address!r} depends on enumerated "
                    f"sites {[graph.node(n).address for n in chosen]} but is not enumerated "
                    "itself; enumerate it too (or list neither)"
                )

    def _colors(self, factor_vars: list[tuple[int, ...]], factor_plates: list[tuple[int, ...]],
                var_plates: list[tuple[int, ...]]) -> list[int]:
        """One dim slot per enumerated site, shared by sites that never meet in one tensor:
        a greedy colouring of the graph whose cliques are the sites each node's value holds
        and each tensor of the contraction plan (so a chain needs two slots, not ``T``)."""
        index = {name: i for i, name in enumerate(self.chosen)}
        cliques = [frozenset(index[n] for n in sites) for sites in self.carried.values()]
        cliques += plan_contraction(factor_vars, factor_plates, var_plates).cliques()
        conflicts: list[set[int]] = [set() for _ in self.chosen]
        for clique in cliques:
            for v in clique:
                conflicts[v].update(clique - {v})
        colors: list[int] = []
        for v in range(len(self.chosen)):
            taken = {colors[u] for u in conflicts[v] if u < v}
            colors.append(next(c for c in range(len(taken) + 1) if c not in taken))
        return colors

    def _batch_rank(self, node: Node) -> int:
        if node.kind == "factor":
            return torch.as_tensor(self.p.env[node.name]).dim()
        return len(self.p.dists[node.name].batch_shape)

    def run(self) -> Graph:
        graph, p = self.graph, self.p
        involved = [n for n in graph.nodes if n.name in self.chosen or n.name in self.absorbed]
        n_batch = max(
            [self._batch_rank(n) for n in involved]
            + [-d for n in involved for d in _plate_dims(n)]
            + [0]
        )
        index = {name: i for i, name in enumerate(self.chosen)}
        factor_vars = [tuple(sorted(index[n] for n in sites)) for sites in self.factor_sites]
        factor_plates = [_plate_dims(n) for n in involved]
        var_plates = [_plate_dims(graph.node(name)) for name in self.chosen]
        colors = self._colors(factor_vars, factor_plates, var_plates)
        sites, var_dims = [], []
        for i, name in enumerate(self.chosen):
            node, dist = graph.node(name), p.dists[name]
            plates = var_plates[i]
            for j, size in enumerate(reversed(tuple(dist.batch_shape))):
                if size > 1 and -(j + 1) not in plates:
                    raise IRError(
                        f"enumerate_discrete: site {node.address!r} has batch shape "
                        f"{tuple(dist.batch_shape)} but its dim {-(j + 1)} is not a plate; declare "
                        "every batch dim of an enumerated site with a plate"
                    )
            var_dims.append(-(n_batch + 1 + colors[i]))
            sites.append(
                {
                    "address": node.address,
                    "node": name,
                    "dim": var_dims[i],
                    "values": self.chosen[name].tolist(),
                    "batch_shape": list(dist.batch_shape),
                    "plates": [f.name for f in node.meta.plates],
                }
            )

        rw = Rewriter(graph)
        log_factors: list[Ref] = []
        absorbed: list[str] = []

        def add_factor(node: Node, dist_node: Node | None, value: Any) -> int:
            scale = node.meta.attr("scale")
            if dist_node is None:
                lp = (
                    value
                    if scale is None
                    else rw.add("call", "torch.mul", (value, scale), hint=f"{node.name}_scaled")
                )
            else:
                spec = DistSpec(
                    dist_node.target, tuple((k, rw.arg(v)) for k, v in dist_node.kwargs)
                )
                lp = rw.add(
                    "call", "ppl.log_prob", (spec, value, scale), hint=f"{node.address}_log_prob"
                )
            log_factors.append(lp)
            return len(log_factors) - 1

        for node in graph.nodes:
            if node.name in self.chosen:
                i = list(self.chosen).index(node.name)
                values = self.chosen[node.name]
                layout = values.reshape((values.numel(),) + (1,) * (-var_dims[i] - 1))
                meta = Meta(
                    shape=tuple(layout.shape),
                    dtype=node.meta.dtype,
                    attrs=(("role", "enumerated"), ("site", node.address)),
                )
                rw.add_input(layout, name=node.name, meta=meta)
                sites[i]["prior_index"] = add_factor(node, node, Ref(node.name))
            elif node.kind == "output":
                contraction = rw.add(
                    "call",
                    "ppl.contract_enumerated",
                    (tuple(log_factors), tuple(factor_plates), tuple(factor_vars),
                     tuple(var_dims), tuple(var_plates)),
                    meta=Meta(shape=()),
                    hint="log_marginal",
                )
                address = rw.fresh_address(LOG_MARGINAL)
                rw.add(
                    "factor",
                    address,
                    (contraction,),
                    hint=address,
                    meta=Meta(address=address, attrs=(("role", "enumerated_log_marginal"),)),
                )
                rw.copy(node)
            elif node.name in self.absorbed:
                absorbed.append(node.address)
                if node.kind == "sample":
                    self._keep_latent(rw, node)
                    add_factor(node, node, Ref(node.name))
                elif node.kind == "observe":
                    value = rw.arg(node.args[0])
                    rw.subst[node.name] = value
                    add_factor(node, node, value)
                else:
                    rw.subst[node.name] = rw.arg(node.args[0])
                    add_factor(node, None, rw.arg(node.args[0]))
            elif node.name in self.carried and node.kind == "call":
                meta = Meta(
                    None,
                    node.meta.dtype,
                    node.meta.plates,
                    node.address,
                    node.meta.source,
                    node.meta.attrs,
                )
                if node.target in _EXPANDS:
                    shape = (
                        node.args[1]
                        if len(node.args) == 2 and not isinstance(node.args[1], int)
                        else node.args[1:]
                    )
                    rw.copy(
                        node,
                        target="ppl.expand_right",
                        args=(node.args[0], tuple(shape)),
                        meta=meta,
                    )
                else:
                    rw.copy(node, meta=meta)
            else:
                rw.copy(node)
        record = {
            "contraction": contraction.name,
            "factor": address,
            "sites": sites,
            "absorbed": absorbed,
        }
        out = rw.build({"enumerated": list(graph.attrs.get("enumerated", ())) + [record]})
        self._check(out)
        return out

    def _keep_latent(self, rw: Rewriter, node: Node) -> None:
        dist = self.p.dists[node.name]
        support = dist.support if is_static(dist.support) else constraints.real
        while isinstance(support, constraints.independent) and support.event_dim > len(
            dist.event_shape
        ):
            support = support.base_constraint
        kwargs = (
            ("support", support),
            ("batch_shape", tuple(dist.batch_shape)),
            ("event_shape", tuple(dist.event_shape)),
        )
        rw.add(
            "sample",
            "ImproperUniform",
            (),
            kwargs,
            name=node.name,
            meta=node.meta.with_attr("role", "enumeration_child"),
        )

    def _check(self, graph: Graph) -> None:
        values = {n.address: self.p.env[n.name] for n in graph.latent_nodes if n.name in self.p.env}
        try:
            with torch.no_grad():
                LogDensity(graph, values).run()
        except Exception as e:
            sites = [self.graph.node(n).address for n in self.chosen]
            raise IRError(
                f"enumerate_discrete: with sites {sites} enumerated, the graph no longer evaluates "
                f"({type(e).__name__}: {e}). Code downstream of an enumerated site must "
                "broadcast over extra dims on the left: index from the right (dim=-1), avoid "
                "reshape/view/stack(dim=0)"
            ) from e


def enumeration_plans(graph: Graph) -> list[Plan]:
    """The contraction plan of each ``enumerate_discrete`` application to ``graph``: which
    factors each step joins and over which sites (``Plan.largest(sizes)``: its widest
    factor)."""
    plans = []
    for record in graph.attrs.get("enumerated", ()):
        _, factor_plates, factor_vars, _, var_plates = graph.node(record["contraction"]).args
        plans.append(plan_contraction(factor_vars, factor_plates, var_plates))
    return plans


class _Capture(LogDensity):
    """Log density that also keeps the arguments of the enumeration contractions."""

    def __init__(self, graph: Graph, values: dict[str, torch.Tensor], names: set[str]):
        super().__init__(graph, values)
        self.names = names
        self.captured: dict[str, list] = {}

    def call(self, node: Node, args: tuple, kwargs: dict) -> Any:
        if node.name in self.names:
            self.captured[node.name] = list(args)
        return super().call(node, args, kwargs)


def posterior_of_enumerated(
    graph: Graph, values: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``P(z | the graph's latents = values, data)`` for every enumerated site ``z``.

    Returns address -> probabilities of shape ``batch_shape + (K,)``; entry ``k`` is the
    probability of the ``k``-th value in ``graph.attrs["enumerated"][..]["sites"][..]["values"]``.
    A scan's chain site (``graph.attrs["enumerated_chains"]``) gets ``P(z_t = k)`` stacked
    over its steps, shape ``(T, K)``, by forward-backward.
    """
    refuse_loops(graph, "posterior_of_enumerated")
    records = graph.attrs.get("enumerated", ())
    chains = graph.attrs.get("enumerated_chains", ())
    if not records and not chains:
        raise IRError(
            f"graph {graph.name!r} has no enumerated sites (run enumerate_discrete first)"
        )
    interp = _Capture(graph, values, {r["contraction"] for r in records}
                      | {c["chain"] for c in chains})
    with torch.no_grad():
        interp.run()
    out = {c["site"]: state_marginals(*interp.captured[c["chain"]]) for c in chains}
    for record in records:
        factors, factor_plates, factor_vars, var_dims, var_plates = interp.captured[
            record["contraction"]
        ]
        sites = record["sites"]
        probs = posterior_marginals(
            factors,
            factor_plates,
            factor_vars,
            var_dims,
            var_plates,
            [s["prior_index"] for s in sites],
            [s["batch_shape"] for s in sites],
            [len(s["values"]) for s in sites],
        )
        out.update({s["address"]: pr for s, pr in zip(sites, probs, strict=True)})
    return out
