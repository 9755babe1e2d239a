"""Loop nodes (``ppl.scan`` traced once): the body's layout, its checks, and unrolling.

A loop node ``%ar = loop ar((init...), (xs...), (captured...), length=T)`` runs the body
graph ``graph.subgraphs["ar"]`` T times. The body's inputs, in this order, are named by
their target: one ``step`` (the step index t, an int64 scalar), one ``carry`` per leaf of
the carry, one ``x`` per leaf of ``xs`` (``xs_leaf[t]``) and one ``captured`` per outer
value the body reads (``args[2]``, by ``Ref``). The body returns the tuple of the new carry
leaves then the step's outputs. The loop's value is the tuple of the final carry leaves then
each output stacked over steps (a new leading dim of size T); other nodes read it through
``ppl.getitem(%ar, i)`` only.

A body site with address ``a`` is the site ``a[t]`` at step t (``step_address``): the
unrolled twin (``unroll_graph``, the reference semantics) has exactly those addresses, and
so do values dicts, ``Simulate``'s draws and the trace path's sites. A body holds no loop
(scans do not nest) and no param (declare params outside the step).

    >>> import torch
    >>> from ppl import model, sample, scan
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def walk():
    ...     def step(x, _):
    ...         x = sample("x", Normal(x, 1.0))
    ...         return x, x
    ...     return scan(step, torch.tensor(0.0), length=3)[1]
    >>> g = walk.graph()
    >>> [n.kind for n in g if n.kind in ("loop", "sample")], sorted(g.subgraphs)
    (['loop'], ['step'])
    >>> [n.address for n in unroll_graph(g).latent_nodes]
    ['x[0]', 'x[1]', 'x[2]']
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .errors import IRError
from .node import Meta, Node, Ref, map_refs

BODY_ROLES = ("step", "carry", "x", "captured")
"""The targets of a body's input nodes, in the order they come."""

_STEP_ADDRESS = re.compile(r"(.*)\[(\d+)\]\Z")


def step_address(address: str, t: int) -> str:
    """The address of body site ``address`` at step ``t``: ``x`` -> ``x[t]``."""
    return f"{address}[{t}]"


def split_step_address(address: str) -> tuple[str, int] | None:
    """``x[3]`` -> ``("x", 3)``; None for an address without a step index."""
    m = _STEP_ADDRESS.match(address)
    return (m.group(1), int(m.group(2))) if m else None


def loops(graph) -> list[Node]:
    return [n for n in graph.nodes if n.kind == "loop"]


def loop_parts(node: Node) -> tuple[tuple, tuple, tuple, int]:
    """``(init, xs, captured, length)`` of a loop node."""
    init, xs, captured = node.args
    return init, xs, captured, int(node.kwarg_dict["length"])


def body_inputs(body) -> dict[str, list[Node]]:
    """The body's input nodes by role (``BODY_ROLES``)."""
    out: dict[str, list[Node]] = {role: [] for role in BODY_ROLES}
    for node in body.inputs:
        out[node.target].append(node)
    return out


def refuse_loops(graph, who: str) -> None:
    """Raise ``IRError`` naming ``who`` when ``graph`` has a loop node it cannot handle."""
    found = loops(graph)
    if found:
        raise IRError(
            f"{who} does not handle loop nodes (scan {found[0].name!r} of graph {graph.name!r}); "
            "unroll them first with ppl.passes.unroll()"
        )


# -- checks (called by ``ppl.ir.graph.lint``) -------------------------------------------------
def lint_loop(graph, node: Node, where: str) -> None:
    """A loop node's arguments, its body's layout and its carry agree."""
    if len(node.args) != 3 or not all(type(a) is tuple for a in node.args):
        raise IRError(f"{where}: a loop takes three tuples of arguments (init, xs, captured)")
    length = node.kwarg_dict.get("length")
    if type(length) is not int or length < 1 or [k for k, _ in node.kwargs] != ["length"]:
        raise IRError(f"{where}: a loop needs exactly the kwarg length=T with an int T >= 1, "
                      f"got kwargs {node.kwargs!r}")
    body = graph.subgraphs.get(node.target)
    if body is None:
        raise IRError(f"{where}: no body {node.target!r} in graph.subgraphs "
                      f"(bodies: {sorted(graph.subgraphs)})")
    init, xs, captured, _ = loop_parts(node)
    if not all(isinstance(c, Ref) for c in captured):
        raise IRError(f"{where}: captured values are passed by reference (%name), got "
                      f"{captured!r}")
    here = f"{where}, body {body.name!r}"
    _lint_body_layout(body, here, len(init), len(xs), len(captured))
    roles = body_inputs(body)
    outs = body.output.args[0]
    for i, (arg, inp, new) in enumerate(zip(init, roles["carry"], outs, strict=False)):
        declared = [_known(graph, arg), (inp.meta.shape, inp.meta.dtype), _known(body, new)]
        known = {d for d in declared if d[0] is not None and d[1] is not None}
        if len(known) > 1:
            raise IRError(f"{here}: carry leaf {i} changes type over a step: init, body input "
                          f"and body output are {declared} (shape, dtype); a carry keeps its "
                          "shape and dtype")
    for i, (arg, inp) in enumerate(zip(xs, roles["x"], strict=True)):
        shape = _known(graph, arg)[0]
        if shape is not None and (not shape or shape[0] != length):
            raise IRError(f"{here}: xs leaf {i} has shape {list(shape)}; its leading dim must be "
                          f"the loop's length {length}")
        if shape is not None and inp.meta.shape is not None and tuple(shape[1:]) != inp.meta.shape:
            raise IRError(f"{here}: x input {inp.name!r} has shape {list(inp.meta.shape)}, but a "
                          f"slice of xs leaf {i} has {list(shape[1:])}")


def lint_loop_addresses(graph, node: Node, where: str, addresses: dict[str, str],
                        owners: dict[str, str]) -> None:
    """No unrolled address ``a[t]`` of the body's sites is an address of the outer graph or
    of another loop's body (``owners``: body address -> loop, filled as loops are checked)."""
    for address in graph.subgraphs[node.target]._by_address:
        other = owners.setdefault(address, node.name)
        if other != node.name:
            raise IRError(f"{where}: body site {address!r} is also a site of loop {other!r}, so "
                          f"both would have the addresses {address}[0], ...; name them apart")
    length = int(node.kwarg_dict["length"])
    for address in addresses:
        split = split_step_address(address)
        if split and split[1] < length and graph.subgraphs[node.target].has_site(split[0]):
            raise IRError(f"{where}: body site {split[0]!r} at step {split[1]} has the address "
                          f"{address!r} of node {addresses[address]!r}")


def _lint_body_layout(body, where: str, n_init: int, n_xs: int, n_captured: int) -> None:
    if body.subgraphs:
        raise IRError(f"{where}: a loop body holds no loops of its own (scans do not nest)")
    if body.data:
        raise IRError(f"{where}: a loop body binds no data; pass data in as captured values")
    params = body.nodes_of("param")
    if params:
        raise IRError(f"{where}: param {params[0].address!r} inside a loop body; declare "
                      "params outside the step and let the body capture them")
    targets = [n.target for n in body.inputs]
    expected = ["step"] + ["carry"] * n_init + ["x"] * n_xs + ["captured"] * n_captured
    if targets != expected:
        raise IRError(f"{where}: body inputs {targets} do not match the loop's arguments; "
                      f"expected {expected} (step, one carry per init, one x per xs leaf, one "
                      "captured per captured value)")
    out = body.output.args[0]
    if type(out) is not tuple or len(out) < n_init:
        raise IRError(f"{where}: the body returns {out!r}; it returns a tuple of the "
                      f"{n_init} new carry leaves then the step's outputs")


def _known(graph, arg: Any) -> tuple[tuple[int, ...] | None, str | None]:
    """The (shape, dtype) known for an argument of ``graph``: its node's meta, or a literal's."""
    if isinstance(arg, Ref):
        meta = graph.node(arg.name).meta
        return meta.shape, meta.dtype
    if isinstance(arg, torch.Tensor):
        return tuple(arg.shape), str(arg.dtype).removeprefix("torch.")
    return None, None


def lint_loop_uses(graph, node: Node, where: str, loop_arity: dict[str, int]) -> None:
    """Every read of a loop's value is ``ppl.getitem(%loop, i)`` with i in range."""
    for ref in node.refs():
        if ref not in loop_arity:
            continue
        ok = (node.kind == "call" and node.target == "ppl.getitem" and node.args[0] == Ref(ref)
              and len(node.args) == 2 and type(node.args[1]) is int
              and 0 <= node.args[1] < loop_arity[ref]
              and sum(1 for r in node.refs() if r == ref) == 1)
        if not ok:
            raise IRError(f"{where}: reads loop %{ref} other than as ppl.getitem(%{ref}, i) with "
                          f"0 <= i < {loop_arity[ref]}")


def loop_arity(graph, node: Node) -> int:
    """How many values a loop node's tuple holds (carry leaves, then stacked outputs)."""
    return len(graph.subgraphs[node.target].output.args[0])


# -- unrolling -------------------------------------------------------------------------------
def unroll_graph(graph):
    """The twin of ``graph`` with every loop written out step by step: body site ``a`` at step
    t becomes site ``a[t]`` (its ``steps`` attr gains ``(loop, t)``), the step index a
    literal, ``x`` inputs ``ppl.getitem(xs, t)``; the loop's outputs become the last carry and
    ``torch.stack`` of the step outputs. Other nodes keep their names."""
    if not graph.subgraphs:
        return graph
    from .graph import Graph, GraphBuilder

    builder = GraphBuilder(graph.name)
    builder._names.update(n.name for n in graph.nodes)
    subst: dict[str, Any] = {}  # outer node name -> the argument that now stands for it
    results: dict[str, tuple] = {}  # loop name -> (final carry args, per-output step args)
    nodes: list[Node] = []
    rename = lambda ref: subst.get(ref.name, ref)  # noqa: E731
    for node in graph.nodes:
        node = node.replace(args=map_refs(node.args, rename), kwargs=map_refs(node.kwargs, rename))
        if node.kind == "loop":
            results[node.name] = _unroll_one(graph, node, builder, nodes)
            continue
        source = node.args[0] if node.kind == "call" and node.target == "ppl.getitem" else None
        if isinstance(source, Ref) and source.name in results:
            carry, ys = results[source.name]
            i = node.args[1]
            if i < len(carry):
                subst[node.name] = carry[i]
                continue
            node = node.replace(target="torch.stack", args=(list(ys[i - len(carry)]), 0))
        nodes.append(node)
    return Graph(nodes, graph.name, graph.data, graph.attrs)


def _unroll_one(graph, loop: Node, builder, nodes: list[Node]) -> tuple[tuple, list[list]]:
    body = graph.subgraphs[loop.target]
    init, xs, captured, length = loop_parts(loop)
    roles = body_inputs(body)
    carry = tuple(init)
    n_carry = len(init)
    ys: list[list] = [[] for _ in body.output.args[0][n_carry:]]
    for t in range(length):
        env: dict[str, Any] = {roles["step"][0].name: torch.tensor(t)}
        env.update({n.name: c for n, c in zip(roles["carry"], carry, strict=True)})
        env.update({n.name: c for n, c in zip(roles["captured"], captured, strict=True)})
        for n, x in zip(roles["x"], xs, strict=True):
            ref = Ref(builder.fresh(f"{n.name}_{t}"))
            nodes.append(Node(ref.name, "call", "ppl.getitem", (x, t), (), n.meta))
            env[n.name] = ref
        lookup = env_lookup(env)
        for node in body.nodes:
            if node.kind in ("input", "output"):
                continue
            meta = node.meta
            if meta.address is not None:
                steps = ((loop.name, t), *(meta.attr("steps") or ()))
                meta = Meta(meta.shape, meta.dtype, meta.plates, step_address(meta.address, t),
                            meta.source, meta.attrs).with_attr("steps", steps)
            name = builder.fresh(f"{node.name}_{t}")
            nodes.append(Node(name, node.kind, node.target, map_refs(node.args, lookup),
                              map_refs(node.kwargs, lookup), meta))
            env[node.name] = Ref(name)
        out = map_refs(body.output.args[0], lookup)
        carry = out[:n_carry]
        for acc, y in zip(ys, out[n_carry:], strict=True):
            acc.append(y)
    return carry, ys


def unrolled_addresses(graph, kinds: tuple[str, ...]) -> list[str]:
    """The addresses of the nodes of ``kinds`` as the unrolled twin has them, in order."""
    out = []
    for node in graph.nodes:
        if node.kind == "loop":
            body = graph.subgraphs[node.target]
            length = int(node.kwarg_dict["length"])
            sites = [n.address for n in body.nodes if n.kind in kinds]
            out.extend(step_address(a, t) for t in range(length) for a in sites)
        elif node.kind in kinds:
            out.append(node.address)
    return out


def env_lookup(env: dict[str, Any]):
    """``ref -> env[ref.name]``, for ``map_refs``."""
    return lambda ref: env[ref.name]


def step_index_sites(graph) -> dict[str, tuple[tuple[str, int], ...]]:
    """Address -> its ``steps`` attr (``((loop or plate, t), ...)``, outermost first) for every
    site made inside a sequential plate iteration or an unrolled scan step."""
    return {n.address: n.meta.attr("steps") for n in graph.nodes
            if n.address is not None and n.meta.attr("steps")}


__all__ = ["step_address", "split_step_address", "unroll_graph", "refuse_loops", "loops",
           "loop_parts", "body_inputs", "BODY_ROLES", "lint_loop", "lint_loop_addresses",
           "unrolled_addresses", "step_index_sites"]
