"""The canonical text form of a graph: one statement per line, parsed back by ``ppl.ir.parse``.

Layout (``ppl/ir/grammar.lark`` is the grammar)::

    graph NAME {
      attrs {key=value, ...}                       # graph attributes, when there are any
      graph BODY { ... }                           # each loop body, indented, before the nodes
      %name = KIND ["address"] TARGET(args, key=value) [= observed] [: type] [plates[...]] [{attrs}]
      return VALUE
    }

* ``loop`` names its body: ``%ar = loop ar((init,), (xs,), (captured,), length=T)``.
* ``input``, ``param``, ``factor`` name their target as a string (``input "y"``); a param's
  or factor's address is its target unless printed separately (``param "addr" "target"``).
* ``sample`` / ``observe`` / ``call`` name a family or an allow-listed op; the string before
  it is the site address (``sample "mu" Normal(...)``, ``call "z" ppl.identity(%x)``). An
  observe's value follows ``=``.
* type ``: f32[8, 3]`` (``f32`` alone: shape unknown; ``: [8]``: dtype unknown); plates
  ``plates[name:size/subsample@dim]`` (``/subsample`` when it differs from the size, ``@dim``
  unless sequential), outermost first; ``{key=value}`` is ``Meta.attrs``. ``Meta.source`` and
  the data bound to inputs are not printed.
* values: ``%ref``, ``None``, ``True``, ints, floats as ``repr`` (``inf``, ``-inf``,
  ``nan``), ``"strings"`` (escaped), ``tensor([1.0, 2.5], f32)`` (``tensor([], f32, [0, 3])``
  when empty), ``torch.float32``, ``slice(None, 3, None)``, ``...``, ``(tuple,)``,
  ``[list]``, ``{key: value}``, ``torch.Size([2, 3])``, distributions with keyword
  parameters ``Normal(loc=%a, scale=1.0)``, constraints by registered name with positional
  arguments ``positive``, ``interval(0.0, 1.0)``.

    >>> from ppl.ir import GraphBuilder, Meta
    >>> b = GraphBuilder("tiny")
    >>> mu = b.add("sample", "Normal", kwargs=(("loc", 0.0), ("scale", 1.0)), address="mu",
    ...            meta=Meta(shape=(), dtype="f32"))
    >>> _ = b.add("output", "output", args=(mu,))
    >>> print(print_graph(b.build()))
    graph tiny {
      %mu = sample "mu" Normal(loc=0.0, scale=1.0) : f32[]
      return %mu
    }
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch
from torch.distributions.constraints import Constraint

from ppl.registry import describe_constraint
from ppl.runtime import PlateFrame

from .errors import IRError
from .node import DistSpec, Meta, Node, Ref

MAX_TENSOR_LITERAL = 10_000
"""Largest tensor (elements) printed inline; larger data belongs in an ``input``."""

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float32: "f32",
    torch.float64: "f64",
    torch.int8: "i8",
    torch.int16: "i16",
    torch.int32: "i32",
    torch.int64: "i64",
    torch.uint8: "u8",
    torch.bool: "bool",
}
"""Short dtype names of the text form (use them for ``Meta.dtype``)."""

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_INDENT = "  "


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a dtype (``f32``); ``IRError`` for one the text form lacks."""
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise IRError(f"dtype {dtype} has no name in the IR text form") from None


def quote(s: str) -> str:
    """A double-quoted string literal; non-printable characters become escapes."""
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(
                f"\\x{code:02x}"
                if code < 0x100
                else f"\\u{code:04x}"
                if code < 0x10000
                else f"\\U{code:08x}"
            )
    return '"' + "".join(out) + '"'


def _label(s: str) -> str:
    """A name printed bare when it is an identifier, quoted otherwise."""
    return s if _IDENT.match(s) else quote(s)


def _float(x: float) -> str:
    if math.isnan(x):
        return "nan"
    return repr(float(x))


def _tensor_elements(t: torch.Tensor) -> str:
    """Nested lists of element texts; floats in the shortest form that reads back exactly."""
    t = t.detach().cpu()
    if t.dtype == torch.float64:
        values: Any = t.numpy()
        fmt = lambda v: _float(float(v))
    elif t.dtype.is_floating_point:  # f16 at its own precision; f32 and bf16 at f32's
        np_type = np.float16 if t.dtype == torch.float16 else np.float32
        values = t.to(torch.float32).numpy().astype(np_type)
        fmt = lambda v: "nan" if np.isnan(v) else str(np_type(v))
    elif t.dtype == torch.bool:
        values, fmt = t.numpy(), lambda v: "True" if v else "False"
    else:
        values, fmt = t.numpy(), lambda v: str(int(v))
    return _nest(values, fmt, t.dim())


def _nest(values: Any, fmt, ndim: int) -> str:
    if ndim == 0:
        return fmt(values)
    return "[" + ", ".join(_nest(v, fmt, ndim - 1) for v in values) + "]"


def format_tensor(t: torch.Tensor) -> str:
    if t.numel() > MAX_TENSOR_LITERAL:
        raise IRError(
            f"a tensor literal of shape {tuple(t.shape)} ({t.numel()} elements) is too large for "
            f"the text form (at most {MAX_TENSOR_LITERAL}); bind large data to an input node"
        )
    if t.is_complex() or t.dtype not in DTYPE_NAMES:
        raise IRError(f"tensor literals of dtype {t.dtype} have no text form")
    body = f"{_tensor_elements(t)}, {DTYPE_NAMES[t.dtype]}"
    if t.numel() == 0:
        body += f", {format_value(list(t.shape))}"
    return f"tensor({body})"


def format_value(value: Any) -> str:
    """The text of one argument or attribute value (see the module docstring)."""
    if isinstance(value, Ref):
        return f"%{value.name}"
    if value is None or value is True or value is False:
        return str(value)
    if value is Ellipsis:
        return "..."
    if isinstance(value, DistSpec):
        if not _DOTTED.match(value.family) or value.family in ("tensor", "slice", "torch.Size"):
            raise IRError(
                f"distribution family {value.family!r} is not a name the text form can hold"
            )
        params = ", ".join(f"{_label(k)}={format_value(v)}" for k, v in value.params)
        return f"{value.family}({params})"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, torch.Tensor):
        return format_tensor(value)
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, slice):
        parts = (value.start, value.stop, value.step)
        return "slice(" + ", ".join(format_value(p) for p in parts) + ")"
    if isinstance(value, torch.Size):
        return f"torch.Size({format_value(list(value))})"
    if type(value) is tuple:
        items = [format_value(v) for v in value]
        return "(" + items[0] + ",)" if len(items) == 1 else "(" + ", ".join(items) + ")"
    if type(value) is list:
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if type(value) is dict:
        return (
            "{" + ", ".join(f"{format_value(k)}: {format_value(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, Constraint):
        try:
            name, args = describe_constraint(value)
        except KeyError as e:
            raise IRError(str(e.args[0])) from None
        return name if not args else f"{name}({', '.join(format_value(a) for a in args)})"
    raise IRError(f"a value of type {type(value).__name__} ({value!r}) has no text form")


def _attr_items(items: Any) -> str:
    parts = []
    for k, v in items:
        if not isinstance(k, str):
            raise IRError(f"attribute keys must be strings, got {k!r}")
        parts.append(f"{_label(k)}={format_value(v)}")
    return "{" + ", ".join(parts) + "}"


def _plate(frame: PlateFrame) -> str:
    text = f"{_label(frame.name)}:{frame.size}"
    if frame.subsample_size != frame.size:
        text += f"/{frame.subsample_size}"
    if frame.dim is not None:
        text += f"@{frame.dim}"
    return text


def format_meta(meta: Meta) -> str:
    """The trailer of a statement: `` : type plates[...] {attrs}`` (address and source aside)."""
    out = ""
    if meta.dtype is not None or meta.shape is not None:
        out += " : "
        if meta.dtype is not None:
            out += _label(meta.dtype)
        if meta.shape is not None:
            out += "[" + ", ".join(str(int(d)) for d in meta.shape) + "]"
    if meta.plates:
        out += " plates[" + ", ".join(_plate(f) for f in meta.plates) + "]"
    if meta.attrs:
        out += " " + _attr_items(meta.attrs)
    return out


_STRING_TARGET_KINDS = ("input", "param", "factor", "output")


def format_node(node: Node) -> str:
    """One statement (without indentation)."""
    trailer = format_meta(node.meta)
    if (
        node.kind == "output"
        and node.name == "output"
        and node.target == "output"
        and len(node.args) == 1
        and not node.kwargs
        and node.address is None
    ):
        return f"return {format_value(node.args[0])}{trailer}"
    words = [f"%{node.name} =", node.kind]
    address = node.address
    if node.kind in ("param", "factor") and address == node.target:
        address = None  # implied by the target
    if address is not None:
        words.append(quote(address))
    if node.kind in _STRING_TARGET_KINDS or not _DOTTED.match(node.target):
        target = quote(node.target)
    else:
        target = node.target
    args, observed = list(node.args), None
    if node.kind == "observe" and args:
        observed = args.pop(0)
    items = [format_value(a) for a in args] + [
        f"{_label(k)}={format_value(v)}" for k, v in node.kwargs
    ]
    if items or node.kind != "input":
        target += "(" + ", ".join(items) + ")"
    words.append(target)
    if node.kind == "observe" and node.args:
        words.append(f"= {format_value(observed)}")
    return " ".join(words) + trailer


def print_graph(graph) -> str:
    """The canonical text of ``graph`` (what ``str(graph)`` returns)."""
    lines = [f"graph {_label(graph.name)} {{"]
    if graph.attrs:
        lines.append(_INDENT + "attrs " + _attr_items(graph.attrs.items()))
    for body in graph.subgraphs.values():
        lines.extend(_INDENT + line for line in print_graph(body).split("\n"))
    for node in graph.nodes:
        try:
            lines.append(_INDENT + format_node(node))
        except IRError as e:
            raise IRError(f"graph {graph.name!r}, node {node.name!r}: {e}") from None
    lines.append("}")
    return "\n".join(lines)


__all__ = [
    "print_graph",
    "format_node",
    "format_value",
    "format_meta",
    "quote",
    "dtype_name",
    "DTYPE_NAMES",
    "MAX_TENSOR_LITERAL",
]
