"""Graph analysis with networkx: the DAG of sites and queries over the random ones.

``to_networkx(g)`` has a node per site (address), random (sample / observe / factor), param
and deterministic, with an edge ``u -> v`` when ``v``'s operands (distribution arguments,
observed value, log weight, a deterministic value) read ``u``'s value through any chain of
``call`` nodes that are not sites themselves (``getitem(broadcast_tensors(a, b), 0)`` reads
``a`` only). Queries about random variables (ancestors,
descendants, Markov blankets, topological order) look at random sites only, seeing through
param and deterministic sites; d-separation runs on the full site DAG (a deterministic site
is a chain node there, and may be conditioned on). A graph with loop nodes (``ppl.scan``)
is analysed as its unrolled twin (``ppl.ir.loop.unroll_graph``), whose sites are the
``x[t]`` of every step.

    >>> from ppl.ir import GraphBuilder
    >>> b = GraphBuilder("v")
    >>> a = b.add("sample", "Normal", kwargs=(("loc", 0.0), ("scale", 1.0)), address="a")
    >>> c = b.add("sample", "Normal", kwargs=(("loc", 0.0), ("scale", 1.0)), address="b")
    >>> s = b.add("call", "torch.add", args=(a, c))
    >>> y = b.add("observe", "Normal", args=(1.0,), kwargs=(("loc", s), ("scale", 1.0)),
    ...           address="y")
    >>> _ = b.add("output", "output", args=(None,))
    >>> g = b.build()
    >>> sorted(g.to_networkx().predecessors("y")), sorted(g.markov_blanket("a"))
    (['a', 'b'], ['b', 'y'])
    >>> d_separated(g, "a", "b"), d_separated(g, "a", "b", given="y")
    (True, False)
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterable
from typing import Any

import networkx as nx

from .errors import IRError
from .loop import unroll_graph
from .node import RANDOM_KINDS, Node, Ref, iter_refs

SITE_KINDS = (*RANDOM_KINDS, "param", "call")
_UNROLLED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def on_unrolled(fn):
    """Run the analysis ``fn(graph, ...)`` on the graph's unrolled twin (kept while the
    graph lives), so loop nodes are analysed step by step."""

    @functools.wraps(fn)
    def wrapped(graph, *args, **kwargs):
        if graph.subgraphs:
            if graph not in _UNROLLED:
                _UNROLLED[graph] = unroll_graph(graph)
            graph = _UNROLLED[graph]
        return fn(graph, *args, **kwargs)

    return wrapped


def _is_site(node: Node) -> bool:
    return node.address is not None and node.kind in SITE_KINDS


def _projection(graph, node: Node) -> Any:
    """The operand that ``getitem(%t, k)`` really reads when ``%t`` is a non-site
    ``torch.broadcast_tensors`` call (the tracer's pattern), else None."""
    if node.kind != "call" or node.target != "ppl.getitem" or len(node.args) != 2:
        return None
    src, k = node.args
    if not isinstance(src, Ref) or type(k) is not int:
        return None
    tup = graph.node(src.name)
    if tup.kind != "call" or tup.target != "torch.broadcast_tensors" or _is_site(tup):
        return None
    return tup.args[k] if -len(tup.args) <= k < len(tup.args) and not tup.kwargs else None


def _site_parents(graph, through) -> dict[str, list[str]]:
    """For each site node name, the site node names it reads, looking through the nodes for
    which ``through(node)`` holds (non-site calls always; more for the contracted view)."""
    reach: dict[str, dict[str, None]] = {}  # node name -> site names its value depends on
    parents: dict[str, list[str]] = {}
    for node in graph.nodes:
        projected = _projection(graph, node)
        refs = node.refs() if projected is None else iter_refs(projected)
        deps: dict[str, None] = {}
        for ref in refs:
            src = graph.node(ref)
            if _is_site(src) and not through(src):
                deps[src.name] = None
            else:
                deps.update(reach.get(ref, {}))
        reach[node.name] = deps
        if _is_site(node):
            parents[node.name] = list(deps)
    return parents


def _attrs(node: Node) -> dict[str, Any]:
    kind = "deterministic" if node.kind == "call" else node.kind
    return {
        "kind": kind,
        "family": node.target,
        "name": node.name,
        "observed": node.kind == "observe",
        "plates": tuple(f.name for f in node.meta.plates),
        "plate_frames": node.meta.plates,
        "shape": node.meta.shape,
        "dtype": node.meta.dtype,
    }


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _dags(graph) -> tuple[nx.DiGraph, nx.DiGraph]:
    """(site DAG, random-site DAG), built once per (immutable) graph."""
    cached = _CACHE.get(graph)
    if cached is None:
        cached = (
            _build(graph, lambda n: False, _is_site),
            _build(graph, lambda n: not n.is_random, lambda n: n.is_random),
        )
        _CACHE[graph] = cached
    return cached


def _build(graph, through, keep) -> nx.DiGraph:
    g = nx.DiGraph(name=graph.name)
    parents = _site_parents(graph, through)
    for node in graph.nodes:
        if keep(node):
            g.add_node(node.address, **_attrs(node))
            for p in parents[node.name]:
                g.add_edge(graph.node(p).address, node.address)
    return g


@on_unrolled
def to_networkx(graph) -> nx.DiGraph:
    """The DAG over sites (by address) described in the module docstring; nodes carry
    ``kind`` (sample, observe, factor, param or deterministic), ``family`` (the target),
    ``observed``, ``plates`` (names, outermost first), ``plate_frames``, ``shape``, ``dtype``.
    A fresh copy: change it freely."""
    return _dags(graph)[0].copy()


@on_unrolled
def random_dag(graph) -> nx.DiGraph:
    """The DAG over random sites only, param and deterministic sites contracted away (an
    edge ``u -> v`` when ``v`` reads ``u`` through calls, params or deterministic sites)."""
    return _dags(graph)[1].copy()


def _check_site(graph, address: str) -> Node:
    return graph.site(address)  # an IRError listing the sites when unknown


@on_unrolled
def topological_sites(graph) -> list[str]:
    """Addresses of the random sites in a topological order (the graph's own order)."""
    return [n.address for n in graph.random_nodes]


def _random_only(graph, addresses: Iterable[str]) -> set[str]:
    return {a for a in addresses if graph.site(a).is_random}


@on_unrolled
def ancestors(graph, address: str) -> set[str]:
    """Random sites whose value ``address`` (any site) depends on."""
    _check_site(graph, address)
    return _random_only(graph, nx.ancestors(_dags(graph)[0], address))


@on_unrolled
def descendants(graph, address: str) -> set[str]:
    """Random sites that depend on the value of ``address`` (any site)."""
    _check_site(graph, address)
    return _random_only(graph, nx.descendants(_dags(graph)[0], address))


@on_unrolled
def markov_blanket(graph, address: str) -> set[str]:
    """Parents, children and the children's other parents of a random site (its neighbours
    in the moral graph over random sites)."""
    if not _check_site(graph, address).is_random:
        raise IRError(
            f"{address!r} is a {graph.site(address).kind} site; a Markov blanket is "
            "asked of a random site"
        )
    g = _dags(graph)[1]
    blanket = set(g.predecessors(address)) | set(g.successors(address))
    for child in g.successors(address):
        blanket |= set(g.predecessors(child))
    blanket.discard(address)
    return blanket


def _as_set(xs: str | Iterable[str]) -> set[str]:
    return {xs} if isinstance(xs, str) else set(xs)


@on_unrolled
def d_separated(
    graph, xs: str | Iterable[str], ys: str | Iterable[str], given: str | Iterable[str] = ()
) -> bool:
    """Whether the sites ``xs`` and ``ys`` are d-separated given ``given`` in the site DAG."""
    xs, ys, given = _as_set(xs), _as_set(ys), _as_set(given)
    for a in xs | ys | given:
        _check_site(graph, a)
    if (xs & ys) or (xs & given) or (ys & given):
        raise IRError(
            f"d_separated: xs {sorted(xs)}, ys {sorted(ys)} and given {sorted(given)} "
            "must be disjoint"
        )
    return nx.is_d_separator(_dags(graph)[0], xs, ys, given)


@on_unrolled
def plate_structure(graph) -> dict[str, dict[str, Any]]:
    """Plate name -> ``{"size", "dim", "subsample_size", "sites": [addresses], "parent"}``,
    plates in order of first appearance; ``parent`` is the enclosing plate (or None) when the
    plates nest, judged by which sites sit in them."""
    plates: dict[str, dict[str, Any]] = {}
    for node in graph.nodes:
        for frame in node.meta.plates:
            entry = plates.setdefault(
                frame.name,
                {
                    "size": frame.size,
                    "dim": frame.dim,
                    "subsample_size": frame.subsample_size,
                    "sites": [],
                    "parent": None,
                    "_frame": frame,
                    "_node": node.name,
                },
            )
            if entry["_frame"] != frame:
                raise IRError(
                    f"plate {frame.name!r} is {entry['_frame']} at node {entry['_node']!r} "
                    f"but {frame} at node {node.name!r}"
                )
            if node.address is not None and _is_site(node):
                entry["sites"].append(node.address)
    order = list(plates)
    members = {
        p: {n.name for n in graph.nodes if any(f.name == p for f in n.meta.plates)} for p in order
    }
    for p in order:
        best = None
        for q in order:
            if q == p or not members[p] <= members[q]:
                continue
            if members[p] == members[q] and order.index(q) > order.index(p):
                continue  # same members: the first appearing one is the outer plate
            if (
                best is None
                or len(members[q]) < len(members[best])
                or (len(members[q]) == len(members[best]) and order.index(q) > order.index(best))
            ):
                best = q
        plates[p]["parent"] = best
    for entry in plates.values():
        del entry["_frame"], entry["_node"]
    return plates


__all__ = [
    "to_networkx",
    "random_dag",
    "topological_sites",
    "ancestors",
    "descendants",
    "markov_blanket",
    "d_separated",
    "plate_structure",
]
