"""Parse the text form of a graph (``ppl/ir/grammar.lark``, LALR) back into a ``Graph``.

Nothing in the text is evaluated: call targets resolve through the allow-list
(``ppl.ir.ops.resolve_op``), constraints through ``ppl.registry``, dtypes through a fixed
table; distribution families are kept as names (resolved by the registry when the graph
runs). What a constructor call may allocate is capped (``ppl.ir.ops.check_allocation``) and
literals nest at most ``MAX_NESTING`` deep, so a parsed graph prints and runs boundedly.
Errors are ``IRError`` with the line and column and, for syntax errors, what was expected.
Inputs are left unbound unless ``data`` binds them.

    >>> g = parse('''
    ... graph tiny {
    ...   %mu = sample "mu" Normal(loc=0.0, scale=1.0) : f32[]
    ...   return %mu
    ... }''')
    >>> g.site("mu").kwargs
    (('loc', 0.0), ('scale', 1.0))
    >>> parse(str(g)).nodes == g.nodes
    True
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import torch
from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from torch.distributions.constraints import Constraint

from ppl import registry
from ppl.registry import describe_constraint
from ppl.runtime import PlateFrame

from .errors import IRError
from .graph import Graph
from .node import NODE_KINDS, DistSpec, Meta, Node, Ref
from .ops import check_allocation, resolve_op
from .printer import DTYPE_NAMES, MAX_TENSOR_LITERAL

MAX_NUMBER_CHARS = 1000
"""Longest number literal accepted."""
MAX_ITEMS = MAX_TENSOR_LITERAL
"""Most items in one list, tuple or dict literal."""
MAX_TENSOR_DIMS = 32
MAX_NESTING = 32
"""Deepest nesting of list, tuple, dict, slice and distribution literals (the printer, like
any reader of a graph, recurses into them)."""

_DTYPES_BY_SHORT = {short: dt for dt, short in DTYPE_NAMES.items()}
_DTYPES_BY_NAME = {str(v): v for v in vars(torch).values() if isinstance(v, torch.dtype)}
_NAMED_VALUES: dict[str, Any] = {
    "None": None,
    "True": True,
    "False": False,
    "inf": math.inf,
    "nan": math.nan,
}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.S)
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


# -- raw parse results ------------------------------------------------------------------------
class _At(NamedTuple):
    line: int
    column: int

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}"


def _at(tok: Token) -> _At:
    return _At(tok.line, tok.column)


class _Err(IRError):
    """An error at a known position (turned into the final message by ``parse``)."""

    def __init__(self, at: _At, msg: str):
        super().__init__(msg)
        self.at = at


@dataclass(frozen=True)
class _Name:
    text: str
    at: _At


@dataclass(frozen=True)
class _Pos:
    value: Any


@dataclass(frozen=True)
class _Kw:
    key: str
    value: Any
    at: _At


@dataclass(frozen=True)
class _Target:
    text: str
    quoted: bool
    at: _At


@dataclass(frozen=True)
class _CallArgs:
    args: tuple
    kwargs: tuple


@dataclass(frozen=True)
class _Observed:
    value: Any


@dataclass(frozen=True)
class _Type:
    dtype: str | None
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class _Plates:
    frames: tuple[PlateFrame, ...]


@dataclass(frozen=True)
class _Attrs:
    items: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class _Sub:
    value: int


@dataclass(frozen=True)
class _Dim:
    value: int


@dataclass(frozen=True)
class _Stmt:
    name: str
    kind: str
    address: str | None
    target: _Target
    call: _CallArgs | None
    observed: _Observed | None
    meta: Meta
    at: _At
    kind_at: _At


@dataclass(frozen=True)
class _RawGraph:
    name: str
    attrs: tuple[tuple[str, Any], ...]
    stmts: tuple[_Stmt, ...]
    bodies: tuple[_RawGraph, ...] = ()


def _decode_string(tok: Token) -> str:
    def sub(m: re.Match) -> str:
        esc = m.group(1)
        if esc in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[esc]
        if esc[0] in "xuU" and len(esc) > 1:
            return chr(int(esc[1:], 16)) if int(esc[1:], 16) <= 0x10FFFF else _bad(esc)
        return _bad(esc)

    def _bad(esc: str) -> str:
        raise _Err(_at(tok), f"invalid escape sequence \\{esc} in string {tok!s}")

    return _ESCAPE.sub(sub, str(tok)[1:-1])


def _resolve(value: Any) -> Any:
    """A bare name in value position: None/True/False/inf/nan, a dtype or a constraint."""
    if not isinstance(value, _Name):
        return value
    text = value.text
    if text in _NAMED_VALUES:
        return _NAMED_VALUES[text]
    if text.startswith("torch."):
        if text in _DTYPES_BY_NAME:
            return _DTYPES_BY_NAME[text]
        raise _Err(
            value.at,
            f"unknown name {text!r}: the only torch names allowed as values are "
            "dtypes (e.g. torch.float32) and torch.Size([...])",
        )
    if "." not in text:
        try:
            return registry.make_constraint(text)
        except KeyError:
            pass
        except TypeError as e:
            raise _Err(value.at, str(e)) from None
    raise _Err(
        value.at,
        f"unknown name {text!r}; a bare name is None, True, False, inf, nan, a "
        f"dtype (torch.float32) or a constraint ({', '.join(registry.constraint_names())})",
    )


def _check_len(items: list, at: _At, what: str) -> None:
    if len(items) > MAX_ITEMS:
        raise _Err(
            at,
            f"{what} literal with {len(items)} items is too large "
            f"(at most {MAX_ITEMS}); bind large data to an input node",
        )


def _nesting(value: Any) -> int:
    """How deeply containers nest in ``value`` (children were checked when they were built,
    so this recursion is at most MAX_NESTING deep)."""
    if isinstance(value, DistSpec):
        children = [v for _, v in value.params]
    elif isinstance(value, slice):
        children = [value.start, value.stop, value.step]
    elif type(value) is dict:
        children = [*value.keys(), *value.values()]
    elif type(value) in (list, tuple):
        children = value
    else:
        return 0
    return 1 + max((_nesting(c) for c in children), default=0)


def _check_nesting(value: Any, at: _At) -> Any:
    if _nesting(value) > MAX_NESTING:
        raise _Err(at, f"literal nested too deeply (more than {MAX_NESTING} levels)")
    return value


def _check_family(name: str, at: _At) -> str:
    if any(part.startswith("_") for part in name.split(".")):
        raise _Err(
            at,
            f"distribution family {name!r} is not allowed: names starting with '_' "
            "(dunders, private names) are refused",
        )
    return name


def _flatten(data: Any, at: _At, depth: int = 0) -> list:
    if depth > MAX_TENSOR_DIMS:
        raise _Err(at, f"tensor literal nested deeper than {MAX_TENSOR_DIMS} dimensions")
    if isinstance(data, list):
        out: list = []
        for item in data:
            out.extend(_flatten(item, at, depth + 1))
            if len(out) > MAX_TENSOR_LITERAL:
                raise _Err(
                    at,
                    f"tensor literal has more than {MAX_TENSOR_LITERAL} elements; "
                    "bind large data to an input node",
                )
        return out
    if isinstance(data, bool | int | float):
        return [data]
    raise _Err(at, f"tensor literals hold numbers and booleans only, not {type(data).__name__}")


def _tensor(args: list, at: _At) -> torch.Tensor:
    if any(isinstance(a, _Kw) for a in args) or len(args) not in (2, 3):
        raise _Err(at, "tensor literal is tensor(DATA, DTYPE) or tensor(DATA, DTYPE, SHAPE)")
    data, dtype_name = args[0].value, args[1].value
    if not isinstance(dtype_name, _Name) or dtype_name.text not in _DTYPES_BY_SHORT:
        raise _Err(at, f"tensor dtype must be one of {', '.join(_DTYPES_BY_SHORT)}")
    dtype = _DTYPES_BY_SHORT[dtype_name.text]
    data = _resolve(data)
    _flatten(data, at)
    try:
        t = torch.tensor(data, dtype=dtype)
        if len(args) == 3:
            shape = _resolve(args[2].value)
            if (
                t.numel() != 0
                or not isinstance(shape, list)
                or not all(type(d) is int for d in shape)
            ):
                raise _Err(at, "a tensor literal's SHAPE is a list of ints, for empty tensors only")
            t = t.reshape(shape)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise _Err(at, f"bad tensor literal: {e}") from None
    return t


def _apply(name: _Name, args: list) -> Any:
    at, text = name.at, name.text
    if text == "tensor":
        return _tensor(args, at)
    pos = [_resolve(a.value) for a in args if isinstance(a, _Pos)]
    kws = [a for a in args if isinstance(a, _Kw)]
    if text == "slice":
        if kws or not 1 <= len(pos) <= 3:
            raise _Err(at, "slice takes 1 to 3 positional arguments")
        if not all(p is None or type(p) is int or isinstance(p, Ref) for p in pos):
            raise _Err(at, "slice parts are None, ints or %refs")
        return slice(*pos)
    if text == "torch.Size":
        if (
            kws
            or len(pos) != 1
            or not isinstance(pos[0], list)
            or not all(type(d) is int for d in pos[0])
        ):
            raise _Err(at, "torch.Size takes one list of ints")
        return torch.Size(pos[0])
    if pos and kws:
        raise _Err(
            at,
            f"{text}(...) mixes positional and keyword arguments: a distribution takes "
            "keyword parameters only, a constraint positional arguments only",
        )
    if pos:
        if "." in text:
            raise _Err(at, f"unknown constraint {text!r}")
        try:
            return registry.make_constraint(text, *pos)
        except KeyError as e:
            raise _Err(at, str(e.args[0])) from None
        except Exception as e:  # the constructor rejected its arguments
            raise _Err(at, f"constraint {text}{tuple(pos)}: {e}") from None
    return DistSpec(_check_family(text, at), _kwargs(kws))


def _kwargs(kws: list[_Kw]) -> tuple[tuple[str, Any], ...]:
    seen: set[str] = set()
    for kw in kws:
        if kw.key in seen:
            raise _Err(kw.at, f"keyword {kw.key!r} given twice")
        seen.add(kw.key)
    return tuple((kw.key, kw.value) for kw in kws)


def _attr_tuple(items: list, what: str) -> tuple[tuple[str, Any], ...]:
    seen: set[str] = set()
    for key, _, at in items:
        if key in seen:
            raise _Err(at, f"{what} {key!r} given twice")
        seen.add(key)
    return tuple((k, v) for k, v, _ in items)


def _int(tok: Token, what: str) -> int:
    value = _number(tok)
    if type(value) is not int:
        raise _Err(_at(tok), f"{what} must be an integer, got {tok!s}")
    return value


def _number(tok: Token) -> int | float:
    text = str(tok)
    if len(text) > MAX_NUMBER_CHARS:
        raise _Err(
            _at(tok),
            f"number literal of {len(text)} characters is too long (at most {MAX_NUMBER_CHARS})",
        )
    if any(c in text for c in ".eE"):
        value = float(text)
        if math.isinf(value):
            raise _Err(_at(tok), f"number literal {text[:40]} is out of float range (write inf)")
        return value
    return int(text)


class _Builder(Transformer):
    """Called by the LALR parser on each rule as it is reduced (no recursion)."""

    # values
    def ref(self, c):
        return Ref(str(c[0])[1:])

    def number(self, c):
        return _number(c[0])

    def neg_name(self, c):
        if str(c[0]) != "inf":
            raise _Err(_at(c[0]), f"'-' before a name is only allowed in -inf, not -{c[0]}")
        return -math.inf

    def string(self, c):
        return _decode_string(c[0])

    def ellipsis(self, c):
        return Ellipsis

    def dotted(self, c):
        return _Name(".".join(str(t) for t in c), _at(c[0]))

    def name(self, c):
        return c[0]

    def apply(self, c):
        return _check_nesting(_apply(c[0], c[1:]), c[0].at)

    def list(self, c):
        _check_len(c[1:], _at(c[0]), "list")
        return _check_nesting([_resolve(v) for v in c[1:]], _at(c[0]))

    def tuple(self, c):
        _check_len(c[1:], _at(c[0]), "tuple")
        return _check_nesting(tuple(_resolve(v) for v in c[1:]), _at(c[0]))

    def dict_item(self, c):
        return (_resolve(c[0]), _resolve(c[1]))

    def dict(self, c):
        at, items = _at(c[0]), c[1:]
        _check_len(items, at, "dict")
        out = {}
        for k, v in items:
            try:
                out[k] = v
            except TypeError:
                raise _Err(at, f"dict key {k!r} is not hashable") from None
        return _check_nesting(out, at)

    def arg(self, c):
        return _Pos(c[0])

    def kwarg(self, c):
        key, at = c[0]
        return _Kw(key, _resolve(c[1]), at)

    def key(self, c):
        tok = c[0]
        return (_decode_string(tok) if tok.type == "STRING" else str(tok)), _at(tok)

    def label(self, c):
        return self.key(c)

    # statements
    def target(self, c):
        if isinstance(c[0], _Name):
            return _Target(c[0].text, False, c[0].at)
        return _Target(_decode_string(c[0]), True, _at(c[0]))

    def call_args(self, c):
        args, kws = [], []
        for a in c:
            if isinstance(a, _Kw):
                kws.append(a)
            elif kws:
                raise _Err(kws[-1].at, "positional argument after a keyword argument")
            else:
                args.append(_resolve(a.value))
        return _CallArgs(tuple(args), _kwargs(kws))

    def observed(self, c):
        return _Observed(_resolve(c[0]))

    def tdtype(self, c):
        return self.key(c)[0]

    def shape(self, c):
        dims = tuple(_int(t, "a shape dimension") for t in c)
        for t, d in zip(c, dims, strict=True):
            if d < 0:
                raise _Err(_at(t), f"negative shape dimension {d}")
        return dims

    def type_spec(self, c):
        dtype = next((x for x in c if isinstance(x, str)), None)
        shape = next((x for x in c if isinstance(x, tuple)), None)
        return _Type(dtype, shape)

    def subsample(self, c):
        return _Sub(_int(c[0], "a plate's subsample size"))

    def at_dim(self, c):
        return _Dim(_int(c[0], "a plate's dim"))

    def plate(self, c):
        (name, _), size_tok, rest = c[0], c[1], c[2:]
        size = _int(size_tok, "a plate size")
        sub = next((x.value for x in rest if isinstance(x, _Sub)), size)
        dim = next((x.value for x in rest if isinstance(x, _Dim)), None)
        return PlateFrame(name, size, dim, sub)

    def plates_spec(self, c):
        return _Plates(tuple(c))

    def attr_item(self, c):
        (key, at), value = c
        return key, _resolve(value), at

    def meta_attrs(self, c):
        return _Attrs(_attr_tuple(c, "attribute"))

    def graph_attrs(self, c):
        return _Attrs(_attr_tuple(c, "graph attribute"))

    def trailer(self, c):
        t = next((x for x in c if isinstance(x, _Type)), _Type(None, None))
        plates = next((x.frames for x in c if isinstance(x, _Plates)), ())
        attrs = next((x.items for x in c if isinstance(x, _Attrs)), ())
        return Meta(shape=t.shape, dtype=t.dtype, plates=plates, attrs=attrs)

    def _stmt(self, c, address: str | None) -> _Stmt:
        ref, kind, target, rest = c[0], c[1], c[2], c[3:]
        call = next((x for x in rest if isinstance(x, _CallArgs)), None)
        observed = next((x for x in rest if isinstance(x, _Observed)), None)
        meta = next(x for x in rest if isinstance(x, Meta))
        return _Stmt(
            str(ref)[1:], str(kind), address, target, call, observed, meta, _at(ref), _at(kind)
        )

    def node_addr(self, c):
        return self._stmt([c[0], c[1], *c[3:]], _decode_string(c[2]))

    def node_plain(self, c):
        return self._stmt(c, None)

    def return_stmt(self, c):
        at = _at(c[0])
        return _Stmt(
            "output",
            "output",
            None,
            _Target("output", True, at),
            _CallArgs((_resolve(c[1]),), ()),
            None,
            c[2],
            at,
            at,
        )

    def graph(self, c):
        (name, _), rest = c[0], c[1:]
        attrs = rest[0].items if rest and isinstance(rest[0], _Attrs) else ()
        stmts = tuple(x for x in rest if isinstance(x, _Stmt))
        return _RawGraph(name, attrs, stmts, tuple(x for x in rest if isinstance(x, _RawGraph)))

    def body(self, c):
        return c[0]

    def start(self, c):
        return c[0]


@functools.cache
def _lark() -> Lark:
    grammar = resources.files("ppl.ir").joinpath("grammar.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", transformer=_Builder(), maybe_placeholders=False)


# -- building the graph -----------------------------------------------------------------------
def _node(stmt: _Stmt) -> Node:
    kind = stmt.kind
    if kind not in NODE_KINDS:
        raise _Err(stmt.kind_at, f"unknown node kind {kind!r}; kinds are {', '.join(NODE_KINDS)}")
    target = stmt.target.text
    if kind == "call":
        try:
            resolve_op(target)
            check_allocation(target, stmt.call.args if stmt.call else (),
                             stmt.call.kwargs if stmt.call else ())
        except IRError as e:
            raise _Err(stmt.target.at, str(e)) from None
    elif kind in ("sample", "observe"):
        _check_family(target, stmt.target.at)
    address = stmt.address
    if address is None and kind in ("param", "factor"):
        address = target
    call = stmt.call or _CallArgs((), ())
    args = call.args if stmt.observed is None else (stmt.observed.value, *call.args)
    meta = stmt.meta
    meta = Meta(meta.shape, meta.dtype, meta.plates, address, "", meta.attrs)
    return Node(stmt.name, kind, target, args, call.kwargs, meta)


def _syntax_message(e: UnexpectedInput) -> str:
    lark = _lark()

    def show(name: str) -> str:
        try:
            pattern = lark.get_terminal(name).pattern
        except KeyError:
            return name
        if pattern.type == "str":
            return repr(pattern.value)
        return {
            "_NL": "end of line",
            "REF": "%name",
            "NAME": "a name",
            "NUMBER": "a number",
            "STRING": "a string",
        }.get(name, name)

    if isinstance(e, UnexpectedToken):
        names = e.expected
        if e.interactive_parser is not None:  # exact set (LALR states merge lookaheads)
            try:
                names = e.interactive_parser.accepts() or names
            except Exception:  # pragma: no cover - fall back to the state's lookaheads
                pass
        expected = sorted({show(x) for x in names if x != "$END"})
        got = (
            "end of line"
            if e.token.type == "_NL"
            else ("end of input" if e.token.type == "$END" else repr(str(e.token)))
        )
        return f"unexpected {got}; expected one of: {', '.join(expected)}"
    if isinstance(e, UnexpectedCharacters):
        expected = sorted({show(x) for x in e.allowed or ()})
        return f"unexpected character {e.char!r}; expected one of: {', '.join(expected)}"
    if isinstance(e, UnexpectedEOF):
        return (
            f"unexpected end of input; expected one of: {', '.join(sorted(map(show, e.expected)))}"
        )
    return str(e)


def _located(text: str, filename: str, line: int, column: int, msg: str) -> IRError:
    """``msg`` at a position, with (a window of) the source line and a caret under the column."""
    lines = text.split("\n")
    src = lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""
    col = max(column - 1, 0)
    if len(src) > 100:  # a window around the column
        start = max(col - 50, 0)
        src, col = (
            ("..." if start else "") + src[start : start + 100] + "...",
            col - start + (3 if start else 0),
        )
    caret = "\n    " + src + "\n    " + " " * col + "^" if src.strip() else ""
    return IRError(f"{filename}:{line}:{column}: line {line}, column {column}: {msg}{caret}")


def parse(
    text: str, data: dict[str, torch.Tensor] | None = None, *, filename: str = "<text>"
) -> Graph:
    """The graph a text form describes (inputs bound to ``data`` where given)."""
    try:
        raw = _lark().parse(text)
    except _Err as e:
        raise _located(text, filename, e.at.line, e.at.column, str(e)) from None
    except UnexpectedInput as e:
        line, column = getattr(e, "line", -1), getattr(e, "column", -1)
        raise _located(text, filename, line, column, _syntax_message(e)) from None
    except RecursionError:
        raise IRError(f"{filename}: literals nested too deeply") from None
    return _graph(raw, text, filename, data)


def _graph(raw: _RawGraph, text: str, filename: str, data: dict | None) -> Graph:
    """The graph of one parsed ``graph`` block, its loop bodies first."""
    bodies = {body.name: _graph(body, text, filename, None) for body in raw.bodies}
    lines: dict[str, int] = {}
    nodes = []
    for stmt in raw.stmts:
        try:
            nodes.append(_node(stmt))
        except _Err as e:
            raise _located(text, filename, e.at.line, e.at.column, str(e)) from None
        lines[stmt.name] = stmt.at.line  # the last definition: lint names a redefinition
    if data:
        names = {n.name for n in nodes if n.kind == "input"} | {
            n.target for n in nodes if n.kind == "input"
        }
        unknown = sorted(set(data) - names)
        if unknown:
            raise IRError(
                f"{filename}: data for {unknown}, which are not inputs of graph "
                f"{raw.name!r}; inputs: {sorted(names)}"
            )
    try:
        return Graph(nodes, raw.name, data, dict(raw.attrs), bodies)
    except IRError as e:
        m = re.search(r"node '([A-Za-z0-9_]+)'", str(e))
        line = lines.get(m.group(1)) if m else None
        prefix = f"{filename}:{line}: line {line}: " if line else f"{filename}: "
        raise IRError(prefix + str(e)) from None
    except RecursionError:
        raise IRError(f"{filename}: literals nested too deeply") from None


def load(path: str | Path, data: dict[str, torch.Tensor] | None = None) -> Graph:
    """``parse`` the text file at ``path``."""
    path = Path(path)
    return parse(path.read_text(encoding="utf-8"), data, filename=str(path))


# -- structural equality ------------------------------------------------------------------------
def _float_same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def same_value(a: Any, b: Any) -> bool:
    """Structural equality of arguments: types must match (tuple vs list, int vs float), NaN
    equals NaN, tensors by dtype, shape and elements, constraints by name and arguments."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype.is_floating_point:
            a64, b64 = a.detach().double(), b.detach().double()
            both_nan = a64.isnan() & b64.isnan()
            same = (a64 == b64) & (a64.signbit() == b64.signbit())
            return bool((both_nan | same).all())
        return bool(torch.equal(a, b))
    if isinstance(a, Constraint) or isinstance(b, Constraint):
        if not (isinstance(a, Constraint) and isinstance(b, Constraint)):
            return False
        if a is b:
            return True
        try:
            (na, xa), (nb, xb) = describe_constraint(a), describe_constraint(b)
        except KeyError:  # an unnamed constraint equals only itself
            return False
        return na == nb and same_value(list(xa), list(xb))
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return _float_same(a, b)
    if isinstance(a, DistSpec):
        return a.family == b.family and same_value(a.params, b.params)
    if isinstance(a, slice):
        return same_value((a.start, a.stop, a.step), (b.start, b.stop, b.step))
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)
    return a == b


def node_diff(a: Node, b: Node) -> str | None:
    """What differs between two nodes, ignoring ``meta.source``; None when they are the same."""
    for field in ("name", "kind", "target"):
        if getattr(a, field) != getattr(b, field):
            return f"{field}: {getattr(a, field)!r} != {getattr(b, field)!r}"
    if not same_value(a.args, b.args):
        return f"args: {a.args!r} != {b.args!r}"
    if not same_value(a.kwargs, b.kwargs):
        return f"kwargs: {a.kwargs!r} != {b.kwargs!r}"
    for field in ("shape", "dtype", "plates", "address"):
        x, y = getattr(a.meta, field), getattr(b.meta, field)
        if x != y:
            return f"meta.{field}: {x!r} != {y!r}"
    if not same_value(a.meta.attrs, b.meta.attrs):
        return f"meta.attrs: {a.meta.attrs!r} != {b.meta.attrs!r}"
    return None


def graph_diff(a: Graph, b: Graph) -> str | None:
    """The first structural difference between two graphs (data and sources aside), or None."""
    if a.name != b.name:
        return f"name: {a.name!r} != {b.name!r}"
    if not same_value(a.attrs, b.attrs):
        return f"attrs: {a.attrs!r} != {b.attrs!r}"
    if list(a.subgraphs) != list(b.subgraphs):
        return f"subgraphs: {list(a.subgraphs)} != {list(b.subgraphs)}"
    for key, body in a.subgraphs.items():
        diff = graph_diff(body, b.subgraphs[key])
        if diff is not None:
            return f"body {key!r}: {diff}"
    if len(a.nodes) != len(b.nodes):
        return f"{len(a.nodes)} nodes != {len(b.nodes)} nodes"
    for x, y in zip(a.nodes, b.nodes, strict=True):
        diff = node_diff(x, y)
        if diff is not None:
            return f"node {x.name!r}: {diff}"
    return None


__all__ = [
    "parse",
    "load",
    "same_value",
    "node_diff",
    "graph_diff",
    "MAX_NUMBER_CHARS",
    "MAX_ITEMS",
]
