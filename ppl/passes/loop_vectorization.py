"""``vectorize_loops``: rewrite a scan whose carry is a function of its step's own values
into nodes over a leading step dim of length T, so a log density costs one vectorized
expression per body node instead of T copies.

A loop qualifies when its new carry does not read the incoming carry (AR(1), local level,
stochastic volatility: the carry is the step's latent, or a function of the step's sites
and inputs) and its body uses only elementwise calls and univariate families. Then the
carry into step t is ``init`` for t = 0 and the new carry of step t-1 otherwise: one
``torch.cat`` of ``init`` and the shifted stacked new carry. Each body site ``a`` becomes
one site ``a`` of shape ``(T, *shape)`` (stacked like the loop's outputs, and like
NumPyro's scan). A body latent whose distribution reads the carry would make the graph
cyclic (its parameters read its own shifted value), so it becomes an ``ImproperUniform``
latent on its support and its step density an ``observe`` of its value, address
``a__step_density``: the log density is the loop's, term for term, but the rewritten graph
is not a sampler of the prior (simulate the original graph). A loop that does not qualify
is kept, with the reason in ``graph.attrs["unvectorized_loops"]`` (loop name -> reason).

    >>> import torch
    >>> from ppl import model, sample, scan
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def ar1(y):
    ...     def step(x, y_t):
    ...         x = sample("x", Normal(0.9 * x, 1.0))
    ...         sample("y", Normal(x, 1.0), obs=y_t)
    ...         return x, None
    ...     scan(step, torch.tensor(0.0), y)
    >>> g = vectorize_loops()(ar1.graph(torch.zeros(1000)))
    >>> [(n.address, n.meta.shape) for n in g.random_nodes]
    [('x', (1000,)), ('y', (1000,)), ('x__step_density', (1000,))]
"""

from __future__ import annotations

from typing import Any

import torch

from ppl.ir import Graph
from ppl.ir.graph import GraphBuilder
from ppl.ir.loop import body_inputs, loop_parts
from ppl.ir.node import DistSpec, Meta, Node, Ref, iter_refs, map_refs
from ppl.registry import get_family

from .rewriting import is_static
from .rewriting import probe as _probe

ELEMENTWISE = frozenset(
    "add sub mul truediv div pow neg negative exp log log1p expm1 sqrt square abs sigmoid "
    "expit logsigmoid softplus tanh sin cos reciprocal lgamma gammaln digamma erf log_ndtr "
    "logaddexp identity where clamp clip to double float radd rsub rmul rtruediv rdiv rpow "
    "broadcast_tensors".split()
)
"""Call targets (their last name, as the tape's rules key them) that act element by
element with broadcasting, so a leading step dim passes through them unchanged."""

DENSITY_SUFFIX = "__step_density"


class Refused(Exception):
    """Why one loop cannot be vectorized (kept as a loop, then unrolled by its users)."""


def _dtype(name: str | None) -> torch.dtype | None:
    value = getattr(torch, name, None) if name else None
    return value if isinstance(value, torch.dtype) else None


def _short(target: str) -> str:
    return target.rsplit(".", 1)[-1].strip("_")


class _LoopVectorizer:
    """Emits one qualifying loop's body into ``builder`` over the step dim."""

    def __init__(self, graph: Graph, loop: Node, builder: GraphBuilder, device: torch.device):
        self.graph, self.loop, self.b, self.device = graph, loop, builder, device
        self.body = graph.subgraphs[loop.target]
        self.init, self.xs, self.captured, self.T = loop_parts(loop)
        self.roles = body_inputs(self.body)
        self.n_carry = len(self.init)
        self.nodes: list[Node] = []
        self.env: dict[str, Any] = {}  # body node name -> its vectorized argument
        self.body_nodes, self.outs = _reading_values(self.body)
        self._vec_shape: dict[str, tuple | None] = {}  # emitted name -> (T, *shape)
        self._vec_dtype: dict[str, str | None] = {}
        self.varying, self.reads_carry = self._analyse()

    # -- analysis ------------------------------------------------------------------------
    def _analyse(self) -> tuple[set[str], set[str]]:
        """(body nodes whose value differs across steps, body nodes that read the incoming
        carry: a call's value, a site's density). A latent's value reads nothing: it is the
        position, so what the carry reads through it stays carry-free."""
        varying = {n.name for n in self.roles["step"] + self.roles["x"] + self.roles["carry"]}
        values = {n.name for n in self.roles["carry"]}  # values that read the carry
        reads = set(values)
        for node in self.body_nodes:
            if node.is_random or any(r in varying for r in node.refs()):
                varying.add(node.name)
            if any(r in values for r in node.refs()):
                reads.add(node.name)
                if node.kind == "call":
                    values.add(node.name)
        return varying, reads

    def check(self) -> None:
        """Raise ``Refused`` naming the first obstacle."""
        for node in self.body_nodes:
            if node.kind == "call":
                if (_short(node.target) not in ELEMENTWISE and not self._tuple_item(node)
                        and _step_index(node) is None):
                    raise Refused(f"call {node.target} of node {node.name!r} is not elementwise")
            if node.is_random or node.is_deterministic_site:
                self._check_site(node)
            if node.is_deterministic_site and node.name not in self.varying:
                raise Refused(f"deterministic site {node.address!r} is the same at every step")
        for i, new in enumerate(self.outs[: self.n_carry]):
            if not isinstance(new, Ref) or new.name not in self.varying:
                raise Refused(f"new carry leaf {i} is the same at every step")
            if new.name in self.reads_carry and self.body.node(new.name).kind == "call":
                raise Refused(f"new carry leaf {i} reads the incoming carry (a recurrence)")
            if self.body.node(new.name).meta.shape is None:
                raise Refused(f"new carry leaf {i} has no known shape")
        split = [n for n in self.body_nodes if n.kind == "sample" and n.name in self.reads_carry]
        dists = _probe(self.body).dists if split else {}
        self.supports = {n.name: dists[n.name].support for n in split}
        for node in split:
            if not is_static(self.supports[node.name]):
                raise Refused(f"site {node.address!r}: its support depends on its parameters")

    def _tuple_item(self, node: Node) -> bool:
        """``ppl.getitem(broadcast_tensors(...), i)``: an item of an elementwise tuple."""
        source = node.args[0] if node.target == "ppl.getitem" else None
        return (isinstance(source, Ref) and type(node.args[1]) is int
                and _short(self.body.node(source.name).target) == "broadcast_tensors")

    def _check_site(self, node: Node) -> None:
        where = f"site {node.address!r} of scan {self.loop.name!r}"
        if self.graph.has_site(node.address) or self.graph.has_site(node.address + DENSITY_SUFFIX):
            raise Refused(f"{where} has the address of a site outside the loop")
        if node.kind in ("factor", "call"):
            return
        family = get_family(node.target)
        if family.vector_params or family.wraps or family.event_dims != 0:
            raise Refused(f"{where}: family {node.target} has event dims or vector parameters")
        if any(isinstance(v, DistSpec) for _, v in node.kwargs) or node.meta.shape is None:
            raise Refused(f"{where}: no known shape, or a nested distribution")
        if node.kind == "sample" and family.support_bounds and any(
                isinstance(v, Ref) for k, v in node.kwargs if k in family.support_bounds):
            raise Refused(f"{where}: its support's bounds {family.support_bounds} are values")


    # -- emission ------------------------------------------------------------------------
    def add(self, kind: str, target: str, args: tuple = (), kwargs: tuple = (), *,
            hint: str, meta: Meta) -> Ref:
        name = self.b.fresh(hint)
        self.nodes.append(Node(name, kind, target, args, kwargs, meta))
        return Ref(name)

    def stacked(self, meta: Meta, **changes: Any) -> Meta:
        shape = None if meta.shape is None else (self.T, *meta.shape)
        meta = Meta(shape, meta.dtype, meta.plates, changes.get("address", meta.address),
                    meta.source, meta.attrs)
        return meta.with_attr("stacked_steps", self.loop.name) if meta.address else meta

    def aligned(self, arg: Any, rank: int) -> Any:
        """A varying argument of body rank r < ``rank`` as ``(T, 1, .., 1, *shape)``, so it
        broadcasts against values of body rank ``rank`` behind the step dim."""
        if not isinstance(arg, Ref) or arg.name not in self._vec_shape:
            return arg
        shape = self._vec_shape[arg.name]
        if shape is None or len(shape) - 1 >= rank:
            return arg
        new = (shape[0], *([1] * (rank - len(shape) + 1)), *shape[1:])
        ref = self.add("call", "Tensor.reshape", (arg, new), hint=f"{arg.name}_aligned",
                       meta=Meta(new, self._vec_dtype[arg.name]))
        self._note(ref, new, self._vec_dtype[arg.name])
        return ref

    def _note(self, ref: Ref, shape, dtype) -> None:
        self._vec_shape[ref.name] = shape
        self._vec_dtype[ref.name] = dtype

    def full(self, arg: Any, shape: tuple[int, ...], dtype: str | None) -> Any:
        """A site parameter as a ``(T, *shape)`` value (constants expanded along steps)."""
        arg = self.aligned(arg, len(shape))
        if not isinstance(arg, Ref) or arg.name not in self._vec_shape:
            if not isinstance(arg, Ref):  # a literal, on the data's device (CUDA included)
                arg = torch.as_tensor(arg, dtype=_dtype(dtype), device=self.device)
            return self.add("call", "Tensor.expand", (arg, (self.T, *shape)), hint="steps",
                            meta=Meta((self.T, *shape), dtype))
        return arg

    def emit(self) -> tuple[list, list]:
        """Emit the body; returns (final carry args, stacked output args)."""
        roles = self.roles
        for node, arg in zip(roles["captured"], self.captured, strict=True):
            self.env[node.name] = arg
        for node, arg in zip(roles["x"], self.xs, strict=True):
            self.env[node.name] = arg
            if isinstance(arg, Ref):
                self._note(arg, (self.T, *node.meta.shape), node.meta.dtype)
        (step,) = roles["step"]
        if any(step.name in n.refs() for n in self.body_nodes):  # the step index, 0..T-1
            steps = self.b.fresh(f"{self.loop.name}_steps")
            self.nodes.append(Node(steps, "input", steps, (), (), Meta((self.T,), "int64")))
            self.b.bind(steps, torch.arange(self.T, device=self.device))
            self.env[step.name] = Ref(steps)
            self._note(Ref(steps), (self.T,), "int64")
        later = [n for n in self.body_nodes if n.name in self.reads_carry]
        for node in later:  # latents whose density reads the carry: their values first
            if node.kind == "sample":
                self._placeholder(node)
        for node in self.body_nodes:  # what the new carry needs: carry-free
            if node.name not in self.reads_carry:
                self._emit_node(node)
        for inp, init, new in zip(roles["carry"], self.init, self.outs[: self.n_carry],
                                  strict=True):
            self._carry(inp, init, self.env[new.name])
        for node in later:
            self._emit_node(node, density_only=node.kind == "sample")
        final = [self.add("call", "ppl.getitem", (self.env[new.name], -1),
                          hint=f"{new.name}_final", meta=Meta(*self._body_type(new)))
                 for new in self.outs[: self.n_carry]]
        ys = [self._output(y) for y in self.outs[self.n_carry:]]
        return final, ys

    def _body_type(self, ref: Ref) -> tuple[tuple[int, ...] | None, str | None]:
        meta = self.body.node(ref.name).meta
        return meta.shape, meta.dtype

    def _lookup(self, ref: Ref) -> Any:
        return self.env[ref.name]

    def _emit_node(self, node: Node, density_only: bool = False) -> None:
        args = map_refs(node.args, self._lookup)
        kwargs = map_refs(node.kwargs, self._lookup)
        if node.name not in self.varying:  # reads the captured values alone: once, unstacked
            self.env[node.name] = self.add(node.kind, node.target, args, kwargs,
                                           hint=node.name, meta=node.meta)
            return
        meta = self.stacked(node.meta)
        if node.kind == "call":
            index = _step_index(node)
            if index is not None:
                args = (args[0], index)
            elif not self._tuple_item(node):
                rank = self._rank(node, args)
                args = tuple(self.aligned(a, rank) for a in args)
            ref = self.add("call", node.target, args, kwargs, hint=node.name, meta=meta)
            self._note(ref, meta.shape, meta.dtype)
            self.env[node.name] = ref
            return
        shape, dtype = node.meta.shape or (), node.meta.dtype
        if node.kind in ("observe", "factor"):
            args = (self.full(args[0], shape, dtype), *args[1:])
        kwargs = tuple((k, self.full(v, shape, dtype)) for k, v in kwargs)
        if density_only:
            meta = self.stacked(node.meta, address=node.address + DENSITY_SUFFIX)
            self.add("observe", node.target, (self.env[node.name],), kwargs,
                     hint=node.name + DENSITY_SUFFIX, meta=meta.with_attr("role", "step_density"))
            return
        ref = self.add(node.kind, node.target, args, kwargs, hint=node.name, meta=meta)
        self._note(ref, meta.shape, meta.dtype)
        self.env[node.name] = ref

    def _rank(self, node: Node, args: tuple) -> int:
        if node.meta.shape is not None:
            return len(node.meta.shape)
        ranks = [len(s) - 1 for a in iter_refs(args) if (s := self._vec_shape.get(a)) is not None]
        ranks += [a.dim() for a in args if isinstance(a, torch.Tensor)]
        for a in iter_refs(args):
            if a not in self._vec_shape and a in self.graph:
                shape = self.graph.node(a).meta.shape
                ranks.append(len(shape) if shape is not None else 0)
        return max(ranks, default=0)

    def _placeholder(self, node: Node) -> None:
        """The latent's value as an ``ImproperUniform`` on its support."""
        support = self.supports[node.name]
        meta = self.stacked(node.meta)
        kwargs = (("support", support), ("batch_shape", meta.shape), ("event_shape", ()))
        ref = self.add("sample", "ImproperUniform", (), kwargs, hint=node.name,
                       meta=meta.with_attr("role", "stacked_latent"))
        self._note(ref, meta.shape, meta.dtype)
        self.env[node.name] = ref

    def _carry(self, inp: Node, init: Any, new: Any) -> None:
        """The carry into every step: ``init``, then the new carry of the step before."""
        shape, dtype = inp.meta.shape, inp.meta.dtype
        if isinstance(init, torch.Tensor):
            init = init.to(self.device)
        first = self.add("call", "Tensor.expand", (init, (1, *shape)), hint=f"{inp.name}_init",
                         meta=Meta((1, *shape), dtype))
        if self.T == 1:
            carry = first
        else:
            before = self.add("call", "ppl.getitem", (new, slice(None, -1)),
                              hint=f"{inp.name}_shifted", meta=Meta((self.T - 1, *shape), dtype))
            carry = self.add("call", "torch.cat", ((first, before), 0), hint=inp.name,
                             meta=Meta((self.T, *shape), dtype))
        self._note(carry, (self.T, *shape), dtype)
        self.env[inp.name] = carry

    def _output(self, y: Any) -> Any:
        """A step output stacked over steps (expanded when it is the same at every step)."""
        if isinstance(y, Ref):
            value = self.env[y.name]
            if y.name in self.varying:
                return value
            shape = self.body.node(y.name).meta.shape
        else:
            value = torch.as_tensor(y, device=self.device)
            shape = tuple(value.shape)
        if shape is None:
            raise Refused("a step output of unknown shape")
        return self.add("call", "Tensor.expand", (value, (self.T, *shape)), hint="steps",
                        meta=Meta((self.T, *shape), None))


def _step_index(node: Node) -> Any:
    """For ``x[index]`` (``Tensor.__getitem__``) with ints, slices and None: the index of
    the stacked value (the step dim kept in front), else None."""
    if node.target != "Tensor.__getitem__" or len(node.args) != 2:
        return None
    index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    if not all(i is None or i is Ellipsis or type(i) is int
               or (isinstance(i, slice) and not any(isinstance(b, Ref) for b in
                                                    (i.start, i.stop, i.step)))
               for i in index):
        return None
    return index if Ellipsis in index else (slice(None), *index)


def _reading_values(body: Graph) -> tuple[list[Node], tuple]:
    """The body's non-input nodes and its outputs, with every read of an observe or factor
    node replaced by a read of its value (so only a latent's value is ever a site's)."""
    alias: dict[str, Any] = {}
    lookup = lambda ref: alias.get(ref.name, ref)  # noqa: E731
    nodes = []
    for node in body.nodes:
        if node.kind in ("input", "output"):
            continue
        node = node.replace(args=map_refs(node.args, lookup), kwargs=map_refs(node.kwargs, lookup))
        if node.kind in ("observe", "factor"):
            alias[node.name] = node.args[0]
        nodes.append(node)
    return nodes, map_refs(body.output.args[0], lookup)


def vectorize_graph(graph: Graph) -> Graph:
    """``graph`` with every qualifying loop vectorized (see the module docstring); the
    others stay loops, their reasons in ``attrs["unvectorized_loops"]``."""
    if not graph.subgraphs:
        return graph
    builder = GraphBuilder(graph.name)
    builder._names.update(n.name for n in graph.nodes)
    builder.data.update(graph.data)
    subst: dict[str, Any] = {}
    results: dict[str, tuple[list, list]] = {}
    refused: dict[str, str] = dict(graph.attrs.get("unvectorized_loops", {}))
    kept: dict[str, Graph] = {}
    device = next((v.device for v in graph.data.values() if isinstance(v, torch.Tensor)),
                  torch.device("cpu"))
    nodes: list[Node] = []
    rename = lambda ref: subst.get(ref.name, ref)  # noqa: E731
    for node in graph.nodes:
        node = node.replace(args=map_refs(node.args, rename), kwargs=map_refs(node.kwargs, rename))
        if node.kind == "loop":
            vectorizer = _LoopVectorizer(graph, node, builder, device)
            try:
                vectorizer.check()
                results[node.name] = vectorizer.emit()
                nodes.extend(vectorizer.nodes)
                continue
            except Refused as why:
                refused[node.name] = str(why)
                kept[node.target] = graph.subgraphs[node.target]
        source = node.args[0] if node.kind == "call" and node.target == "ppl.getitem" else None
        if isinstance(source, Ref) and source.name in results:
            final, ys = results[source.name]
            i = node.args[1]
            subst[node.name] = final[i] if i < len(final) else ys[i - len(final)]
            continue
        nodes.append(node)
    attrs = {**graph.attrs, "unvectorized_loops": refused} if refused else graph.attrs
    return Graph(nodes, graph.name, builder.data, attrs, kept)


class vectorize_loops:
    """The pass: ``vectorize_loops()(graph)``; see the module docstring."""

    name = "vectorize_loops"

    def __call__(self, graph: Graph) -> Graph:
        return vectorize_graph(graph)

    def __repr__(self) -> str:
        return "vectorize_loops()"
