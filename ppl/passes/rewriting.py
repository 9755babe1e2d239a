"""Helpers the passes share: a ``Rewriter`` that rebuilds a graph node by node, a ``probe``
that evaluates a graph once to learn its distributions and shapes, and dependency sets.

A pass copies the nodes it keeps (with references renamed through ``subst``), replaces the
ones it changes, and ``build()``s a new linted graph; the input graph is never modified.

    >>> from ppl.ir import GraphBuilder
    >>> b = GraphBuilder("g")
    >>> x = b.add("sample", "Normal", kwargs=(("loc", 0.0), ("scale", 1.0)), address="x")
    >>> _ = b.add("output", "output", args=(x,))
    >>> rw = Rewriter(b.build())
    >>> for node in rw.graph:
    ...     _ = rw.copy(node)
    >>> [n.name for n in rw.build()]
    ['x', 'output']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.distributions import Distribution, biject_to, transform_to
from torch.distributions.constraints import Constraint

from ppl.ir import Graph, Interpreter, Meta, Node, Ref
from ppl.ir.errors import IRError
from ppl.ir.graph import sanitize
from ppl.ir.node import map_refs
from ppl.ir.tracer import tensor_meta
from ppl.randomness import drawing, forked


class Rewriter:
    """Builds a new graph from ``graph``: new inputs go first, other nodes in order."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.head: list[Node] = []
        self.nodes: list[Node] = []
        self.data = dict(graph.data)
        self.subst: dict[str, Any] = {}
        self._names = {n.name for n in graph}
        self._addresses = {n.address for n in graph if n.address is not None}

    def fresh(self, hint: str) -> str:
        base = sanitize(hint)
        name, k = base, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def fresh_address(self, address: str) -> str:
        """``address`` itself if no site uses it yet, else with a numeric suffix."""
        out, k = address, 1
        while out in self._addresses:
            out, k = f"{address}_{k}", k + 1
        self._addresses.add(out)
        return out

    def new_address(self, address: str, why: str) -> str:
        """Claim ``address``; an error naming it if a site of the graph already uses it."""
        if address in self._addresses:
            raise IRError(
                f"{why}: the address {address!r} is already used in graph {self.graph.name!r}; "
                "rename that site"
            )
        self._addresses.add(address)
        return address

    def arg(self, value: Any) -> Any:
        """An argument with references renamed through ``subst``."""
        return map_refs(value, lambda r: self.subst.get(r.name, r))

    def renamed(self, node: Node) -> Node:
        """``node`` with its arguments renamed through ``subst``: the node itself when it
        reads no renamed node, as most nodes of a pass do."""
        subst = self.subst
        if not any(r in subst for r in node.refs()):
            return node
        return node.replace(
            args=self.arg(node.args), kwargs=tuple((k, self.arg(v)) for k, v in node.kwargs)
        )

    def copy(self, node: Node, **changes: Any) -> Ref:
        """Append ``node`` with ``changes``, then its arguments renamed through ``subst``."""
        node = self.renamed(node.replace(**changes) if changes else node)
        self.nodes.append(node)
        return Ref(node.name)

    def add(
        self,
        kind: str,
        target: str,
        args: tuple = (),
        kwargs: tuple = (),
        *,
        meta: Meta | None = None,
        name: str | None = None,
        hint: str = "v",
    ) -> Ref:
        """Append a new node (arguments given in the new graph's names)."""
        node = Node(
            name or self.fresh(hint), kind, target, tuple(args), tuple(kwargs), meta or Meta()
        )
        self.nodes.append(node)
        return Ref(node.name)

    def add_input(
        self,
        value: torch.Tensor,
        *,
        hint: str = "const",
        name: str | None = None,
        target: str = "const",
        meta: Meta | None = None,
    ) -> Ref:
        """A new input node bound to ``value`` (placed before every other node)."""
        name = name or self.fresh(hint)
        self.head.append(Node(name, "input", target, meta=meta or tensor_meta(value)))
        self.data[name] = value
        return Ref(name)

    def build(self, attrs: dict | None = None, subgraphs: dict | None = None) -> Graph:
        """The new graph (``subgraphs``: the loop bodies it keeps, when it drops loops)."""
        nodes = self.head + self.nodes
        used = {r for n in nodes for r in n.refs()} | {n.name for n in nodes if n.kind == "input"}
        data = {k: v for k, v in self.data.items() if k in used}
        return self.graph.replace(nodes, data=data, attrs={**self.graph.attrs, **(attrs or {})},
                                  subgraphs=subgraphs)


def dtype_of(meta: Meta) -> torch.dtype:
    """The torch dtype a node's ``meta.dtype`` names (default dtype when unknown)."""
    if meta.dtype is None:
        return torch.get_default_dtype()
    short = {
        "f16": "float16",
        "bf16": "bfloat16",
        "f32": "float32",
        "f64": "float64",
        "i8": "int8",
        "i16": "int16",
        "i32": "int32",
        "i64": "int64",
        "u8": "uint8",
    }
    value = getattr(torch, short.get(meta.dtype, meta.dtype), None)
    return value if isinstance(value, torch.dtype) else torch.get_default_dtype()


def _placeholder(dist: Distribution) -> torch.Tensor:
    """A point in the support of a distribution that cannot be sampled (e.g. ImproperUniform)."""
    t = biject_to(dist.support)
    shape = tuple(dist.batch_shape + dist.event_shape)
    return t(torch.zeros(t.inverse_shape(shape)))


class Probe(Interpreter):
    """Evaluates a graph once at a prior draw, recording every random node's distribution.

    Unbound inputs become zeros of their recorded shape, missing params their constraint's
    image of zeros, improper latents a point of their support: a probe learns supports,
    batch and event shapes, never values that matter.
    """

    def __init__(self, graph: Graph, values: dict[str, torch.Tensor] | None = None):
        super().__init__(graph)
        self.values = dict(values or {})
        self.dists: dict[str, Distribution] = {}

    def input(self, node: Node, args: tuple, kwargs: dict) -> Any:
        if node.name in self.inputs:
            return self.inputs[node.name]
        return torch.zeros(node.meta.shape or (), dtype=dtype_of(node.meta))

    def param(self, node: Node, args: tuple, kwargs: dict) -> torch.Tensor:
        try:
            return super().param(node, args, kwargs)
        except Exception:
            constraint = kwargs.get("constraint")
            zeros = torch.zeros(node.meta.shape or (), dtype=dtype_of(node.meta))
            return transform_to(constraint)(zeros) if constraint is not None else zeros

    def sample(self, node: Node, args: tuple, kwargs: dict) -> torch.Tensor:
        dist = self.site_distribution(node, kwargs)
        self.dists[node.name] = dist
        if node.address in self.values:
            return self.values[node.address]
        try:
            with drawing():
                return dist.sample()
        except NotImplementedError:
            return _placeholder(dist)

    def observe(self, node: Node, args: tuple, kwargs: dict) -> torch.Tensor:
        self.dists[node.name] = self.site_distribution(node, kwargs)
        return super().observe(node, args, kwargs)


def probe(graph: Graph, values: dict[str, torch.Tensor] | None = None) -> Probe:
    """Run a ``Probe`` over ``graph`` (its draws continue a copy of the current random stream,
    which stays untouched)."""
    with torch.no_grad(), forked():
        p = Probe(graph, values)
        p.run()
    return p


def downstream(graph: Graph, sources: Iterable[str]) -> set[str]:
    """Names of the nodes that read any of ``sources`` (node names), directly or not."""
    out = set(sources)
    for node in graph.nodes:
        if any(r in out for r in node.refs()):
            out.add(node.name)
    return out - set(sources)


def depends_on_latent(graph: Graph) -> dict[str, bool]:
    """For each node name: whether its value depends on some latent (sample) node."""
    out: dict[str, bool] = {}
    for node in graph.nodes:
        out[node.name] = any(out[r] or graph.node(r).kind == "sample" for r in node.refs())
    return out


def is_static(constraint: Constraint) -> bool:
    """True when a constraint holds no tensors (so it does not depend on model values)."""
    for value in vars(constraint).values():
        if isinstance(value, torch.Tensor):
            return False
        if isinstance(value, Constraint) and not is_static(value):
            return False
    return True


def latent_site(graph: Graph, address: str, pass_name: str) -> Node:
    """The latent (sample) node at ``address``, or an error naming the site."""
    if not graph.has_site(address):
        latents = [n.address for n in graph.latent_nodes]
        raise IRError(
            f"{pass_name}: graph {graph.name!r} has no site {address!r}; its latent sites are "
            f"{latents}"
        )
    node = graph.site(address)
    if node.kind != "sample":
        raise IRError(
            f"{pass_name}: site {address!r} is a {node.kind} node, not a latent sample site"
        )
    return node
