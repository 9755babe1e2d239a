"""``Graph``: an immutable, linted sequence of IR nodes, and the builder that makes one.

Nodes are in definition order (every reference points backwards), so a graph is also a
straight-line program. Captured data lives in ``graph.data`` (input name -> tensor); a graph
parsed from text may leave inputs unbound, to be supplied when it is run. ``graph.attrs``
holds graph-level annotations that passes leave for later ones (e.g. which discrete sites
were enumerated out). ``graph.subgraphs`` holds the bodies of its loop nodes by name
(``ppl.ir.loop``).

    >>> b = GraphBuilder("tiny")
    >>> mu = b.add("sample", "Normal", kwargs=(("loc", 0.0), ("scale", 1.0)), address="mu")
    >>> _ = b.add("output", "output", args=(mu,))
    >>> g = b.build()
    >>> [n.name for n in g], g.site("mu").target
    (['mu', 'output'], 'Normal')
"""

from __future__ import annotations

import contextlib
import functools
import gc
import keyword
import re
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from .errors import IRError
from .loop import lint_loop, lint_loop_addresses, lint_loop_uses, loop_arity
from .node import NODE_KINDS, RANDOM_KINDS, DistSpec, Meta, Node, Ref, iter_refs
from .ops import check_pure, resolve_op
from .printer import DTYPE_NAMES

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


_DTYPE_NAMES = frozenset(DTYPE_NAMES.values()) | {
    str(v).removeprefix("torch.") for v in vars(torch).values() if isinstance(v, torch.dtype)
}
"""Names a ``Meta.dtype`` may have: the text form's short ones (f32) and torch's (float32)."""


def sanitize(hint: str) -> str:
    """A valid SSA name close to ``hint`` (addresses may contain any characters)."""
    if hint.isascii() and hint.isidentifier() and not keyword.iskeyword(hint):
        return hint  # most hints already are one
    name = re.sub(r"[^A-Za-z0-9_]", "_", hint) or "v"
    if name[0].isdigit():
        name = "v" + name
    if keyword.iskeyword(name):
        name += "_"
    return name


class Graph:
    """A model as a straight-line program of nodes (see ``ppl.ir.node`` for the kinds)."""

    def __init__(
        self,
        nodes: Iterable[Node],
        name: str = "model",
        data: dict[str, torch.Tensor] | None = None,
        attrs: dict[str, Any] | None = None,
        subgraphs: dict[str, Graph] | None = None,
    ):
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self.name = name
        self.data: dict[str, torch.Tensor] = dict(data or {})
        self.attrs: dict[str, Any] = dict(attrs or {})
        self.subgraphs: dict[str, Graph] = dict(subgraphs or {})
        self._by_name = {n.name: n for n in self.nodes}
        self._by_address = {n.address: n for n in self.nodes if n.address is not None}
        lint(self)

    # -- access -----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise IRError(f"graph {self.name!r} has no node {name!r}") from None

    def site(self, address: str) -> Node:
        """The node of a site (random, param or deterministic) by its address."""
        try:
            return self._by_address[address]
        except KeyError:
            raise IRError(
                f"graph {self.name!r} has no site {address!r}; sites: {sorted(self._by_address)}"
            ) from None

    def has_site(self, address: str) -> bool:
        return address in self._by_address

    def nodes_of(self, *kinds: str) -> list[Node]:
        return [n for n in self.nodes if n.kind in kinds]

    @property
    def inputs(self) -> list[Node]:
        return self.nodes_of("input")

    @property
    def latent_nodes(self) -> list[Node]:
        return self.nodes_of("sample")

    @property
    def random_nodes(self) -> list[Node]:
        return self.nodes_of(*RANDOM_KINDS)

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    def users(self) -> dict[str, list[str]]:
        """For each node name, the names of the nodes that read it."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for node in self.nodes:
            for ref in dict.fromkeys(node.refs()):
                out[ref].append(node.name)
        return out

    def replace(self, nodes: Iterable[Node] | None = None, *, data: dict | None = None,
                attrs: dict | None = None, name: str | None = None,
                subgraphs: dict | None = None) -> Graph:
        """A new graph with some parts replaced (linted)."""
        return Graph(
            self.nodes if nodes is None else nodes,
            name=self.name if name is None else name,
            data=self.data if data is None else data,
            attrs=self.attrs if attrs is None else attrs,
            subgraphs=self.subgraphs if subgraphs is None else subgraphs,
        )

    # -- text form and analysis (implemented in their own modules) ---------------------
    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.nodes)} nodes, sites {sorted(self._by_address)}>"

    def to_networkx(self):
        from .analysis import to_networkx

        return to_networkx(self)

    def topological_sites(self) -> list[str]:
        from .analysis import topological_sites

        return topological_sites(self)

    def ancestors(self, address: str) -> set[str]:
        from .analysis import ancestors

        return ancestors(self, address)

    def descendants(self, address: str) -> set[str]:
        from .analysis import descendants

        return descendants(self, address)

    def markov_blanket(self, address: str) -> set[str]:
        from .analysis import markov_blanket

        return markov_blanket(self, address)

    def d_separated(self, xs: Iterable[str], ys: Iterable[str], given: Iterable[str] = ()) -> bool:
        from .analysis import d_separated

        return d_separated(self, xs, ys, given)

    def plates(self) -> dict:
        from .analysis import plate_structure

        return plate_structure(self)

    def to_dot(self) -> str:
        from .dot import to_dot

        return to_dot(self)


def lint(graph: Graph) -> None:
    """Check the invariants every graph keeps; raise ``IRError`` naming the node."""
    seen: set[str] = set()
    addresses: dict[str, str] = {}
    arity: dict[str, int] = {}  # loop node -> how many values its tuple holds
    for i, node in enumerate(graph.nodes):
        if node.kind not in NODE_KINDS:
            raise IRError(f"{_where(graph, node)}: unknown kind {node.kind!r}; kinds are "
                          f"{NODE_KINDS}")
        if not _IDENT.match(node.name) or keyword.iskeyword(node.name):
            raise IRError(f"{_where(graph, node)}: {node.name!r} is not a valid SSA name")
        if node.name in seen:
            raise IRError(f"{_where(graph, node)}: name defined twice")
        for ref in node.refs():
            if ref not in seen:
                raise IRError(f"{_where(graph, node)}: uses %{ref} before it is defined")
        if node.address is not None:
            if node.address in addresses:
                raise IRError(
                    f"{_where(graph, node)}: address {node.address!r} already used by node "
                    f"{addresses[node.address]!r}"
                )
            addresses[node.address] = node.name
        if node.kind in ("sample", "observe", "param", "factor") and node.address is None:
            raise IRError(f"{_where(graph, node)}: a {node.kind} node needs an address")
        if node.kind == "call":
            resolve_op(node.target)
            try:
                check_pure(node.target, node.args, node.kwargs)
            except IRError as e:
                raise IRError(f"{_where(graph, node)}: {e}") from None
        if arity:
            lint_loop_uses(graph, node, _where(graph, node), arity)
        if node.kind == "loop":
            lint_loop(graph, node, _where(graph, node))
            arity[node.name] = loop_arity(graph, node)
        if node.kind == "observe" and len(node.args) != 1:
            raise IRError(f"{_where(graph, node)}: an observe node takes exactly one argument, "
                          "its value")
        _lint_meta(graph, node)
        is_last = i == len(graph.nodes) - 1
        if (node.kind == "output") != is_last:
            raise IRError(f"{_where(graph, node)}: a graph has exactly one output node, and it "
                          "comes last")
        seen.add(node.name)
    if not graph.nodes:
        raise IRError(f"graph {graph.name!r} is empty; it needs at least an output node")
    owners: dict[str, str] = {}
    for node in graph.nodes:
        if node.kind == "loop":
            lint_loop_addresses(graph, node, f"graph {graph.name!r}, node {node.name!r}",
                                addresses, owners)
    unused = sorted(set(graph.subgraphs) - {n.target for n in graph.nodes if n.kind == "loop"})
    if unused:
        raise IRError(f"graph {graph.name!r}: subgraphs {unused} are the body of no loop node")


def _where(graph: Graph, node: Node) -> str:
    """How a lint error names the node (built only for an error: lint runs on every node)."""
    return f"graph {graph.name!r}, node {node.name!r} ({node.kind} {node.target})"


def _lint_meta(graph: Graph, node: Node) -> None:
    """The declared dtype, shape and plates of a node are well formed, and the shape agrees
    with what is known of the value (a literal observed value, bound data). (A plate's dim
    counts batch dims, left of event dims that depend on the family: not checked here.)"""
    meta = node.meta
    if meta.dtype is not None and meta.dtype not in _DTYPE_NAMES:
        raise IRError(f"{_where(graph, node)}: unknown dtype {meta.dtype!r}; dtypes are "
                      f"{', '.join(DTYPE_NAMES.values())} or torch's names (float32, ...)")
    for frame in meta.plates:
        plate = f"plate {frame.name!r}"
        if type(frame.size) is not int or frame.size < 0:
            raise IRError(f"{_where(graph, node)}: {plate} has size {frame.size!r}; a size is "
                          "an int >= 0")
        if type(frame.subsample_size) is not int or not 0 <= frame.subsample_size <= frame.size:
            raise IRError(f"{_where(graph, node)}: {plate} subsamples "
                          f"{frame.subsample_size!r} of {frame.size}; a subsample size is an int "
                          "from 0 to the plate's size")
        if frame.dim is not None and (type(frame.dim) is not int or frame.dim >= 0):
            raise IRError(f"{_where(graph, node)}: {plate} has dim {frame.dim!r}; a plate dim "
                          "is negative")
    shape = meta.shape
    if shape is None:
        return
    value = None
    if node.kind == "observe" and isinstance(node.args[0], torch.Tensor):
        value = node.args[0]
    elif node.kind == "input":
        value = graph.data.get(node.name, graph.data.get(node.target))
    if isinstance(value, torch.Tensor) and tuple(value.shape) != tuple(shape):
        raise IRError(f"{_where(graph, node)}: declared shape {list(shape)} disagrees with its "
                      f"value's shape {list(value.shape)}")


@contextlib.contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Building a graph (tracing, a pass) allocates a few objects per node and frees few
    until it ends, so the cyclic collector's passes would make it quadratic in the number of
    nodes (half of ``simplify``'s time at 40k nodes); they wait until the block is done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@functools.cache
def _call_hint(target: str) -> str:
    """The name a call node is given after its operation (``Tensor.__mul__`` -> ``mul``)."""
    return target.rsplit(".", 1)[-1].strip("_")


class GraphBuilder:
    """Collects nodes with fresh SSA names; ``build()`` lints and returns the ``Graph``."""

    def __init__(self, name: str = "model"):
        self.name = name
        self.nodes: list[Node] = []
        self.data: dict[str, torch.Tensor] = {}
        self.attrs: dict[str, Any] = {}
        self.subgraphs: dict[str, Graph] = {}
        self._names: set[str] = set()
        self._next_suffix: dict[str, int] = {}  # per base: no smaller free suffix is left

    def fresh(self, hint: str) -> str:
        """``hint`` (sanitized), else ``hint_k`` with the smallest free ``k``. Names are only
        ever added, so a suffix found taken stays taken: each base resumes where it stopped,
        and naming costs O(1) per node instead of O(nodes with that base)."""
        base = sanitize(hint)
        name, k = base, self._next_suffix.get(base, 1)
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._next_suffix[base] = k
        self._names.add(name)
        return name

    def add(
        self,
        kind: str,
        target: str,
        args: tuple = (),
        kwargs: tuple[tuple[str, Any], ...] = (),
        *,
        name: str | None = None,
        address: str | None = None,
        meta: Meta | None = None,
    ) -> Ref:
        meta = meta or Meta()
        if address is not None:
            meta = Meta(meta.shape, meta.dtype, meta.plates, address, meta.source, meta.attrs)
        hint = name or meta.address or (_call_hint(target) if kind == "call" else target)
        node_name = self.fresh(hint if kind != "output" else "output")
        self.nodes.append(Node(node_name, kind, target, tuple(args), tuple(kwargs), meta))
        return Ref(node_name)

    def append(self, node: Node) -> Ref:
        """Add an existing node under its own name (which must be fresh)."""
        if node.name in self._names:
            raise IRError(f"node name {node.name!r} is already used in graph {self.name!r}")
        self._names.add(node.name)
        self.nodes.append(node)
        return Ref(node.name)

    def bind(self, input_name: str, value: torch.Tensor) -> None:
        self.data[input_name] = value

    def build(self) -> Graph:
        return Graph(self.nodes, self.name, self.data, self.attrs, self.subgraphs)


__all__ = ["Graph", "GraphBuilder", "lint", "no_cycle_collection", "sanitize", "DistSpec",
           "iter_refs"]
