"""``noncenter(sites="auto")``: loc-scale reparameterization of latent sites.

A latent ``x ~ F(loc=m, scale=s)`` of a loc-scale family (one whose declaration names its
``loc_scale`` parameters: Normal, StudentT with its ``df`` kept, Cauchy, Laplace; also under
``Independent``) becomes::

    %x__raw = sample "x__raw" F(loc=zeros, scale=ones)   {role="noncentered_raw", of="x"}
    %x      = call "x" ppl.identity(m + s * %x__raw)      {role="noncentered", raw="x__raw"}

and ``x ~ LogNormal(m, s)`` becomes ``x__raw ~ Normal(0, 1)``, ``x = exp(m + s * x__raw)``.
Naming: the standardized latent is ``<address>__raw``; ``x`` keeps its address and SSA name
as a deterministic site, so downstream nodes and posterior summaries are unchanged. The
prior of everything else is unchanged; as densities, ``log p_new(x_raw, rest) =
log p(m + s x_raw, rest) + sum(log s)`` (plus ``sum(log x)`` for LogNormal): a change of
variables. ``"auto"`` picks every such site whose loc or scale depends on another latent
(the hierarchical funnels that centred parameterizations sample badly).

    >>> from ppl import model, sample
    >>> from ppl.stdlib import HalfNormal, Normal
    >>> @model
    ... def m():
    ...     s = sample("s", HalfNormal(1.0))
    ...     sample("x", Normal(0.0, s))
    >>> g = noncenter()(m.graph())
    >>> [n.address for n in g.latent_nodes], g.site("x").target
    (['s', 'x__raw'], 'ppl.identity')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ppl.ir import DistSpec, Graph, Meta, Node, Ref
from ppl.ir.errors import IRError
from ppl.ir.loop import refuse_loops
from ppl.registry import families

from .rewriting import Rewriter, depends_on_latent, probe

RAW = "__raw"


def _loc_scale_names(family: str) -> tuple[str, str] | None:
    """The ``(loc, scale)`` parameters a family declares, None for other families."""
    declared = families().get(family)
    return None if declared is None else declared.loc_scale


def _loc_scale_families() -> list[str]:
    return sorted(name for name, f in families().items() if f.loc_scale is not None)


def _loc_scale(node: Node) -> tuple[DistSpec, int] | None:
    """The loc-scale distribution of a sample node and its ``Independent`` depth, if any."""
    spec, depth = DistSpec(node.target, node.kwargs), 0
    while spec.family == "Independent":
        params = dict(spec.params)
        base = params.get("base_distribution")
        if not isinstance(base, DistSpec):
            return None
        spec, depth = base, depth + 1
    return (spec, depth) if _loc_scale_names(spec.family) is not None else None


def _wrap(spec: DistSpec, outer: DistSpec, depth: int) -> DistSpec:
    """Put ``spec`` back inside the ``Independent`` wrappers of ``outer``."""
    if depth == 0:
        return spec
    params = dict(outer.params)
    inner = _wrap(spec, params["base_distribution"], depth - 1)
    return DistSpec(
        outer.family, tuple((k, inner if k == "base_distribution" else v) for k, v in outer.params)
    )


class noncenter:
    """Pass: reparameterize ``sites`` (a list of addresses, or ``"auto"``) as loc + scale * raw."""

    name = "noncenter"

    def __init__(self, sites: str | Sequence[str] = "auto"):
        self.sites: str | list[str] = (
            sites if sites == "auto" else ([sites] if isinstance(sites, str) else list(sites))
        )

    def __repr__(self) -> str:
        return f"noncenter({self.sites!r})"

    def _chosen(self, graph: Graph) -> set[str]:
        if self.sites != "auto":
            for address in self.sites:
                node = graph.site(address) if graph.has_site(address) else None
                if node is None or node.kind != "sample" or _loc_scale(node) is None:
                    raise IRError(
                        f"noncenter: {address!r} is not a latent site of a loc-scale family "
                        f"({', '.join(_loc_scale_families())}, optionally under Independent) "
                        f"in graph {graph.name!r}"
                    )
            return set(self.sites)
        random = depends_on_latent(graph)

        def latent_dependent(arg: Any) -> bool:
            return isinstance(arg, Ref) and (
                random[arg.name] or graph.node(arg.name).kind == "sample"
            )

        out = set()
        for node in graph.latent_nodes:
            found = _loc_scale(node)
            if found is not None:
                params = dict(found[0].params)
                if any(latent_dependent(params.get(k)) for k in _loc_scale_names(found[0].family)):
                    out.add(node.address)
        return out

    def __call__(self, graph: Graph) -> Graph:
        refuse_loops(graph, "pass 'noncenter'")
        chosen = self._chosen(graph)
        if not chosen:
            return graph
        dists = probe(graph).dists
        rw = Rewriter(graph)
        done = {}
        for node in graph.nodes:
            if node.kind == "sample" and node.address in chosen:
                done[node.address] = self._rewrite(rw, node, dists[node.name])
            else:
                rw.copy(node)
        return rw.build({"noncentered": {**graph.attrs.get("noncentered", {}), **done}})

    @staticmethod
    def _rewrite(rw: Rewriter, node: Node, dist) -> str:
        spec, depth = _loc_scale(node)
        loc, scale = _loc_scale_names(spec.family)
        params = {k: rw.arg(v) for k, v in spec.params}
        base = dist
        for _ in range(depth):
            base = base.base_dist
        batch = tuple(base.batch_shape)
        dtype = base.mean.dtype
        address = node.address
        raw_address = rw.new_address(address + RAW, f"noncenter (site {address!r})")
        const_meta = Meta(shape=batch, dtype=node.meta.dtype)
        zeros = rw.add(
            "call", "torch.zeros", (batch,), (("dtype", dtype),), meta=const_meta, hint="zeros"
        )
        ones = rw.add(
            "call", "torch.ones", (batch,), (("dtype", dtype),), meta=const_meta, hint="ones"
        )
        if spec.family == "LogNormal":
            raw_spec = DistSpec("Normal", (("loc", zeros), ("scale", ones)))
        else:
            raw_spec = DistSpec(
                spec.family,
                tuple(
                    (k, zeros if k == loc else ones if k == scale else v)
                    for k, v in params.items()
                ),
            )
        raw_spec = _wrap(
            raw_spec, DistSpec(node.target, tuple((k, rw.arg(v)) for k, v in node.kwargs)), depth
        )
        raw_meta = Meta(
            shape=node.meta.shape,
            dtype=node.meta.dtype,
            plates=node.meta.plates,
            address=raw_address,
            source=node.meta.source,
            attrs=node.meta.attrs + (("role", "noncentered_raw"), ("of", address)),
        )
        raw = rw.add(
            "sample", raw_spec.family, (), raw_spec.params, meta=raw_meta, hint=raw_address
        )
        value_meta = Meta(shape=node.meta.shape, dtype=node.meta.dtype, source=node.meta.source)
        scaled = rw.add(
            "call", "torch.mul", (params[scale], raw), meta=value_meta, hint=f"{address}_scaled"
        )
        value = rw.add(
            "call", "torch.add", (params[loc], scaled), meta=value_meta, hint=f"{address}_shifted"
        )
        if spec.family == "LogNormal":
            value = rw.add("call", "torch.exp", (value,), meta=value_meta, hint=f"{address}_exp")
        site_meta = Meta(
            shape=node.meta.shape,
            dtype=node.meta.dtype,
            plates=node.meta.plates,
            address=address,
            source=node.meta.source,
            attrs=(("role", "noncentered"), ("raw", raw_address)),
        )
        rw.add("call", "ppl.identity", (value,), meta=site_meta, name=node.name)
        return raw_address
