"""Turn a graph into straight-line Python/torch source, compiled once.

A code generator is an ``Interpreter`` (``ppl.ir.interpreter``) whose values are source
expressions: running it over the graph emits one line per node (less the reads of data that
no line uses). The generated function does exactly what the matching interpreter does,
without walking nodes, resolving names or building constant distributions on each call:
distributions whose parameters are all literals are built once at compile time, ops are
bound as globals. ``fn.source`` holds the text for inspection. A loop node (``ppl.scan``)
becomes one Python ``for`` over its steps with the body's lines inside it, not one copy
per step (``EmitsLoops``).

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> from ppl.ir.tracer import trace_graph
    >>> @model
    ... def m():
    ...     sample("x", Normal(0.0, 1.0))
    >>> lp = compile_log_density(trace_graph(m))
    >>> round(float(lp({"x": torch.tensor(0.0)})), 4)
    -0.9189
    >>> "def log_density" in lp.source
    True
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from typing import Any

import torch

from ppl.params import get_param
from ppl.registry import get_family
from ppl.subsample import SUBSAMPLE_ATTR, draw_subsample
from ppl.trace import site_log_prob

from .errors import IRError
from .graph import Graph
from .interpreter import Interpreter, build_distribution
from .loop import step_address, unrolled_addresses
from .node import DistSpec, Node, Ref, iter_refs
from .ops import resolve_op


class CodeGen(Interpreter):
    """An interpreter whose values are source expressions: each node method emits the line
    that computes the node and returns the name holding it; subclasses decide what random
    nodes mean."""

    signature = "values, data=None, params=None"
    prefix = ""  # of the variables of a loop body's nodes
    indent = 1
    step_var: str | None = None  # inside a loop body: the loop variable (the step index)

    def __init__(self, graph: Graph, fn_name: str):
        super().__init__(graph)
        self.fn_name = fn_name
        self.body: list[str] = []
        self.namespace: dict[str, Any] = {"torch": torch, "_graph_data": dict(graph.data),
                                          "_get_param": get_param, "_IRError": IRError,
                                          "_site_log_prob": site_log_prob}
        self._consts: dict[int, str] = {}

    # -- expressions ----------------------------------------------------------------------
    def var(self, name: str) -> str:
        return f"v_{self.prefix}{name}"

    def const(self, value: Any, hint: str = "k") -> str:
        key = id(value)
        if key not in self._consts:
            name = f"_{hint}{len(self._consts)}"
            self._consts[key] = name
            self.namespace[name] = value
        return self._consts[key]

    def resolve(self, arg: Any) -> str:
        """The source expression of an argument."""
        if isinstance(arg, Ref):
            return self._lookup(arg)
        if isinstance(arg, DistSpec):
            return self.distribution(arg, {k: self.resolve(v) for k, v in arg.params})
        if arg is None or isinstance(arg, (bool, int, str)):
            return repr(arg)
        if isinstance(arg, float):
            return repr(arg) if math.isfinite(arg) else f"float({str(arg)!r})"
        if isinstance(arg, tuple) and not hasattr(arg, "_fields"):
            return "(" + "".join(f"{self.resolve(a)}, " for a in arg) + ")"
        if isinstance(arg, list):
            return "[" + ", ".join(self.resolve(a) for a in arg) + "]"
        if isinstance(arg, slice):
            parts = (self.resolve(arg.start), self.resolve(arg.stop), self.resolve(arg.step))
            return f"slice({', '.join(parts)})"
        if arg is Ellipsis:
            return "..."
        return self.const(arg)

    def distribution(self, spec: DistSpec, params: dict[str, str]) -> str:
        """A distribution whose parameters are all literals is built once, at compile time."""
        if not any(True for _ in iter_refs(spec)):
            return self.const(build_distribution(spec, lambda r: None), "d")
        family = self.const(get_family(spec.family).cls, "F")
        return f"{family}({', '.join(f'{k}={v}' for k, v in params.items())})"

    # -- statements -------------------------------------------------------------------------
    def emit(self, line: str) -> None:
        self.body.append("    " * self.indent + line)

    def assign(self, node: Node, expr: str) -> str:
        """Emit ``v_<node> = expr``; the node's value is then that name."""
        self.emit(f"{self.var(node.name)} = {expr}")
        return self.var(node.name)

    def input(self, node: Node, args: tuple, kwargs: dict) -> str:
        if node.meta.attr(SUBSAMPLE_ATTR) is None:  # dropped by source() if never read
            self._data_reads.append(len(self.body))
            return self.assign(node, f"_data[{node.name!r}]")
        # a subsampled plate's indices: drawn on each call unless given, as LogDensity does
        draw = self.const(draw_subsample, "draw")
        return self.assign(node, f"_data[{node.name!r}] if {node.name!r} in _data else "
                                 f"{draw}({node.meta.attr('size')}, {node.meta.shape[0]})")

    def param(self, node: Node, args: tuple, kwargs: dict) -> str:
        constraint = self.const(node.kwarg_dict.get("constraint"))
        return self.assign(
            node,
            f"params[{node.address!r}] if params is not None and {node.address!r} in params "
            f"else _get_param({node.address!r}, None, {constraint})",
        )

    def call(self, node: Node, args: tuple, kwargs: dict) -> str:
        fn = self.const(resolve_op(node.target), "op")
        parts = [*args, *(f"{k}={v}" for k, v in kwargs.items())]
        return self.assign(node, f"{fn}({', '.join(parts)})")

    def observe(self, node: Node, args: tuple, kwargs: dict) -> str:
        return self.assign(node, args[0])

    def factor(self, node: Node, args: tuple, kwargs: dict) -> str:
        return self.assign(node, args[0])

    def output(self, node: Node, args: tuple, kwargs: dict) -> None:
        self.emit(f"return {args[0]}")

    def prologue(self) -> None:
        self.emit("_data = _graph_data if data is None else {**_graph_data, **data}")

    def source(self) -> str:
        self.body, self.env, self._data_reads = [], {}, []
        self.prologue()
        self.walk()
        self.body = _without_unread(self.body, self._data_reads)
        return f"def {self.fn_name}({self.signature}):\n" + "\n".join(self.body) + "\n"

    def compile(self) -> Callable:
        src = self.source()
        code = compile(src, f"<ppl {self.fn_name} of graph {self.graph.name}>", "exec")
        exec(code, self.namespace)
        fn = self.namespace[self.fn_name]
        fn.source = src
        return fn


def _without_unread(body: list[str], reads: list[int]) -> list[str]:
    """``body`` less the data reads at line numbers ``reads`` whose variable no other line
    names (data a subclass used at compile time only, e.g. for a constant distribution):
    each is a dead dict lookup. A name found anywhere, however it got there, keeps its line."""
    text = "\n".join(body)
    dead = set()
    for i in reads:
        var = body[i].split(" = ", 1)[0].strip()
        if len(re.findall(rf"\b{re.escape(var)}\b", text)) == 1:
            dead.add(i)
    return [line for i, line in enumerate(body) if i not in dead]


class EmitsLoops(CodeGen):
    """Emits a loop node as ``for t in range(T):`` around its body's lines; the body's
    inputs read the carry variables, ``xs[t]`` and the captured values, and its output
    updates the carry and appends the step's outputs, stacked after the loop."""

    def loop(self, node: Node, args: tuple, kwargs: dict) -> str:
        body = self.graph.subgraphs[node.target]
        init, xs, captured = ([self.resolve(a) for a in group] for group in node.args)
        tag = f"{self.prefix}{node.name}"
        step, carry = f"_t_{tag}", [f"_c_{tag}_{i}" for i in range(len(init))]
        ys = [f"_ys_{tag}_{j}" for j in range(len(body.output.args[0]) - len(init))]
        for var, expr in zip(carry, init, strict=True):
            self.emit(f"{var} = {expr}")
        for var in ys:
            self.emit(f"{var} = []")
        self.emit(f"for {step} in range({kwargs['length']}):")
        child = copy.copy(self)
        child.graph, child.env, child.prefix = body, {}, f"{tag}__"
        child.indent, child.step_var, child.loop_node = self.indent + 1, step, node
        sources = [f"torch.tensor({step})", *carry, *(f"{x}[{step}]" for x in xs), *captured]
        child.loop_inputs = {n.name: e for n, e in zip(body.inputs, sources, strict=True)}
        child.loop_outputs = (carry, ys)
        child.walk()
        items = [*carry, *(f"torch.stack({var})" for var in ys)]
        return self.assign(node, "(" + "".join(f"{item}, " for item in items) + ")")

    def run_node(self, node: Node) -> Any:
        if self.step_var is not None and node.kind == "input":
            return self.assign(node, self.loop_inputs[node.name])
        if self.step_var is not None and node.kind == "output":
            return self.body_output(node)
        return super().run_node(node)

    def body_output(self, node: Node) -> None:
        carry, ys = self.loop_outputs
        items = [self.resolve(a) for a in node.args[0]]
        if carry:
            self.emit(f"{', '.join(carry)}, = {''.join(f'{e}, ' for e in items[:len(carry)])}")
        for var, item in zip(ys, items[len(carry):], strict=True):
            self.emit(f"{var}.append({item})")
        return None

    def address(self, node: Node) -> str:
        """The source of a site's address: a literal, or in a body ``x[t]`` from a table."""
        if self.step_var is None:
            return repr(node.address)
        length = self.loop_node.kwarg_dict["length"]
        table = self.const([step_address(node.address, t) for t in range(length)], "addr")
        return f"{table}[{self.step_var}]"


class LogDensityCodeGen(EmitsLoops):
    """``log_density(values, data=None, params=None)`` -> joint log density (a 0-d tensor)."""

    def prologue(self) -> None:
        super().prologue()
        latents = tuple(unrolled_addresses(self.graph, ("sample",)))
        self.emit(f"_missing = [a for a in {self.const(latents, 'latents')} if a not in values]")
        self.emit("if _missing:")
        self.emit("    raise _IRError(f'log density needs a value for latent sites {_missing}')")
        self.emit("log_p = 0.0")

    def add_site(self, node: Node, dist: str, value: str) -> None:
        """Emit the site's log density (``ppl.trace.site_log_prob``, summed) into ``log_p``."""
        scale = node.meta.attr("scale")
        scaled = f", {scale!r}" if scale is not None else ""
        self.emit(f"log_p = log_p + _site_log_prob({dist}, {value}{scaled}).sum()")

    def sample(self, node: Node, args: tuple, kwargs: dict) -> str:
        value = self.assign(node, f"values[{self.address(node)}]")
        self.add_site(node, self.site_distribution(node, kwargs), value)
        return value

    def observe(self, node: Node, args: tuple, kwargs: dict) -> str:
        value = super().observe(node, args, kwargs)
        self.add_site(node, self.site_distribution(node, kwargs), value)
        return value

    def factor(self, node: Node, args: tuple, kwargs: dict) -> str:
        value = super().factor(node, args, kwargs)
        scale = node.meta.attr("scale")
        self.emit(f"log_p = log_p + {value}.sum()" + (f" * {scale!r}" if scale is not None else ""))
        return value

    def output(self, node: Node, args: tuple, kwargs: dict) -> None:
        self.emit("return torch.as_tensor(log_p)")


def compile_log_density(graph: Graph) -> Callable:
    """The graph's joint log density as a compiled function of ``values`` (address -> tensor)."""
    return LogDensityCodeGen(graph, "log_density").compile()
