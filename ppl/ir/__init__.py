"""The graph IR: models traced into immutable graphs of typed nodes.

    >>> from ppl.ir import Graph, GraphBuilder, Node, Ref
"""

from .errors import DynamicModelError, IRError, PassError
from .graph import Graph, GraphBuilder, lint
from .node import NODE_KINDS, DistSpec, Meta, Node, Ref
from .ops import op_name, resolve_op

__all__ = [
    "Graph", "GraphBuilder", "lint", "Node", "Ref", "DistSpec", "Meta", "NODE_KINDS",
    "IRError", "DynamicModelError", "PassError", "op_name", "resolve_op",
]

from .codegen import CodeGen, LogDensityCodeGen, compile_log_density  # noqa: E402
from .interpreter import Generate, Interpreter, LogDensity, Simulate  # noqa: E402
from .tracer import trace_graph  # noqa: E402


def log_density(graph: Graph):
    """A callable ``lp(values, data=None, params=None)`` computing the graph's joint log density."""
    return compile_log_density(graph)


__all__ += ["trace_graph", "Interpreter", "Simulate", "LogDensity", "Generate", "CodeGen",
            "LogDensityCodeGen", "compile_log_density", "log_density"]

from .parser import load, parse  # noqa: E402
from .printer import print_graph  # noqa: E402

__all__ += ["parse", "load", "print_graph"]
