"""``simplify()``: shrink a graph without changing what it computes.

One forward sweep, then dead-code elimination, repeated until nothing changes:

* **trivial ops** collapse into their argument: ``ppl.identity`` without an address; shape
  ops (``expand``, ``broadcast_to``, ``reshape``, ``view``, ``contiguous``, ...) whose result
  has the recorded shape of their input; ``ppl.getitem(broadcast_tensors(a, b, ...), i)``
  when the i-th argument already has the broadcast shape;
* **constant folding**: a call whose arguments are all literals or captured constants
  (``input`` nodes with target ``const``, never model arguments, which may be rebound) is
  evaluated now; a small result becomes a literal, a large one a bound ``const`` input;
* **common subexpressions**: identical calls on identical arguments are computed once;
* **dead code**: calls and inputs that no random node, param, deterministic site or the
  output reads are dropped (with their data).

Random nodes, params and sites are never removed or merged, and every value that reaches a
log density is computed by the same op on the same inputs, so the log density is unchanged
exactly.

    >>> import torch
    >>> from ppl import model, plate, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m(y):
    ...     mu = sample("mu", Normal(0.0, 1.0))
    ...     with plate("data", len(y)):
    ...         sample("y", Normal(mu.reshape(()) * 1.0, 1.0), obs=y)
    >>> g = m.graph(torch.zeros(3))
    >>> len(g), len(simplify()(g))
    (10, 6)
"""

from __future__ import annotations

from typing import Any

import torch

from ppl.ir import DistSpec, Graph, Node, Ref
from ppl.ir.graph import no_cycle_collection
from ppl.ir.interpreter import build_distribution
from ppl.ir.loop import refuse_loops
from ppl.ir.node import map_refs
from ppl.ir.ops import resolve_op
from ppl.ir.tracer import SMALL_LITERAL

from .rewriting import Rewriter

# kept for posterior_of_enumerated
_OPAQUE = frozenset({"ppl.contract_enumerated", "ppl.chain_logsumexp"})
_SHAPE_OPS = frozenset(
    {
        "Tensor.expand",
        "Tensor.expand_as",
        "torch.broadcast_to",
        "Tensor.broadcast_to",
        "Tensor.reshape",
        "torch.reshape",
        "Tensor.view",
        "Tensor.view_as",
        "Tensor.reshape_as",
        "Tensor.contiguous",
    }
)


def _key(arg: Any) -> Any:
    """A hashable stand-in for an argument: equal keys mean interchangeable arguments."""
    if isinstance(arg, Ref):
        return ("ref", arg.name)
    if isinstance(arg, torch.Tensor):
        if arg.numel() <= SMALL_LITERAL and not arg.requires_grad:
            return ("tensor", str(arg.dtype), tuple(arg.shape), tuple(arg.flatten().tolist()))
        return ("id", id(arg))
    if isinstance(arg, DistSpec):
        return ("dist", arg.family, tuple((k, _key(v)) for k, v in arg.params))
    if isinstance(arg, (tuple, list)) and not hasattr(arg, "_fields"):
        return (type(arg).__name__, tuple(_key(a) for a in arg))
    if isinstance(arg, slice):
        return ("slice", _key(arg.start), _key(arg.stop), _key(arg.step))
    if arg is None or arg is Ellipsis or isinstance(arg, (bool, int, float, str, torch.dtype)):
        return (type(arg).__name__, arg)
    return ("id", id(arg))


class simplify:
    """Pass: dead code, common subexpressions, constant folding and trivial ops."""

    name = "simplify"

    def __init__(self, max_rounds: int = 4):
        self.max_rounds = max_rounds

    def __repr__(self) -> str:
        return "simplify()"

    def __call__(self, graph: Graph) -> Graph:
        refuse_loops(graph, "pass 'simplify'")
        with no_cycle_collection():
            for _ in range(self.max_rounds):
                new = _eliminate_dead(_sweep(graph))
                if len(new) == len(graph):
                    return new
                graph = new
            return graph


def _sweep(graph: Graph) -> Graph:
    rw = Rewriter(graph)
    shapes: dict[str, tuple | None] = {n.name: n.meta.shape for n in graph.nodes}
    consts: dict[str, Any] = {
        n.name: graph.data[n.name]
        for n in graph.inputs
        if n.target == "const" and n.name in graph.data
    }
    folded: dict[str, Node] = {}  # tuple-valued constants, emitted only if something needs them
    seen: dict[Any, Ref] = {}

    def shape_of(arg: Any) -> tuple | None:
        if isinstance(arg, Ref):
            return shapes.get(arg.name)
        return tuple(arg.shape) if isinstance(arg, torch.Tensor) else None

    def value_of(arg: Any) -> Any:
        if isinstance(arg, DistSpec):
            return build_distribution(arg, lambda r: consts[r.name])
        return map_refs(arg, lambda r: consts[r.name])

    for node in graph.nodes:
        if node.kind != "call":
            for ref in dict.fromkeys(node.refs()):
                if ref in folded:
                    rw.nodes.append(folded.pop(ref))
            rw.copy(node)
            continue
        node = rw.renamed(node)
        trivial = _trivial(node, graph, rw, shape_of)
        if trivial is not None:
            rw.subst[node.name] = trivial
            continue
        refs = list(node.refs())
        if node.address is None and node.target not in _OPAQUE and all(r in consts for r in refs):
            try:
                with torch.no_grad():
                    value = resolve_op(node.target)(
                        *[value_of(a) for a in node.args],
                        **{k: value_of(v) for k, v in node.kwargs},
                    )
            except Exception:
                value = None
            literal = _as_literal(value, rw, node)
            if literal is not None:
                consts[node.name] = value
                if isinstance(literal, Ref):
                    consts[literal.name] = value
                    shapes[literal.name] = tuple(value.shape)
                    rw.subst[node.name] = literal
                elif isinstance(value, (tuple, list)):
                    folded[node.name] = node
                else:
                    rw.subst[node.name] = literal
                continue
        for ref in dict.fromkeys(refs):
            if ref in folded:
                rw.nodes.append(folded.pop(ref))
        key = (node.target, _key(node.args), _key(node.kwargs))
        if node.address is None and key in seen:
            rw.subst[node.name] = seen[key]
            continue
        ref = rw.copy(node)
        if node.address is None:
            seen[key] = ref
    return rw.build()


def _trivial(node: Node, graph: Graph, rw: Rewriter, shape_of) -> Any:
    """The argument a call reduces to, or None."""
    if node.address is not None or not node.args:
        return None
    x = node.args[0]
    if node.target == "ppl.identity":
        return x
    if node.target in _SHAPE_OPS:
        shape = shape_of(x)
        return x if shape is not None and shape == node.meta.shape else None
    if node.target == "ppl.getitem" and isinstance(x, Ref) and x.name in graph:
        source = graph.node(x.name)
        index = node.args[1]
        if (
            source.target == "torch.broadcast_tensors"
            and isinstance(index, int)
            and not source.kwargs
        ):
            arg = rw.arg(source.args[index])
            shape = shape_of(arg)
            return arg if shape is not None and shape == node.meta.shape else None
    return None


def _as_literal(value: Any, rw: Rewriter, node: Node) -> Any:
    """How a folded value appears in the new graph: a literal, a new const input, or None."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= SMALL_LITERAL:
            return value.detach().clone()
        return rw.add_input(value.detach().clone(), hint=node.name)
    if (
        isinstance(value, (tuple, list))
        and value
        and all(isinstance(v, torch.Tensor) for v in value)
    ):
        return value  # kept as a constant for the ppl.getitem nodes that read it
    if isinstance(value, (bool, int, float)):
        return value
    return None


def _eliminate_dead(graph: Graph) -> Graph:
    live: set[str] = set()
    for node in reversed(graph.nodes):
        if node.name in live or node.kind not in ("call", "input") or node.address is not None:
            live.add(node.name)
            live.update(node.refs())
    nodes = [n for n in graph.nodes if n.name in live]
    data = {k: v for k, v in graph.data.items() if k in live}
    if len(nodes) == len(graph.nodes) and len(data) == len(graph.data):
        return graph  # nothing is dead: no new graph to lint
    return graph.replace(nodes, data=data)
