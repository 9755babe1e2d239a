"""A tape of batched primitive operations, with constant folding and reverse-mode recording.

A value on the tape is either a **constant** (a tensor or float, the same for every chain,
computed once at build time) or a :class:`Var` (a symbol whose run-time tensor has a leading
chain dimension ``(C, *shape)``; ``shape`` is the per-chain shape). :meth:`Tape.apply`
evaluates an operation at once when none of its inputs is a ``Var`` (constant folding), and
otherwise records an instruction. Gradients are recorded the same way, by applying each
instruction's vector-Jacobian product to the tape in reverse order, so the backward pass is
folded and emitted exactly like the forward one: the result is one straight-line function
of ``z`` with no autograd at run time.

    >>> import torch
    >>> from ppl.inference.lowering.tape import prims
    >>> tape = Tape()
    >>> x = tape.input("x", (3,))
    >>> y = tape.apply(prims.SUM, tape.apply(prims.MUL, x, x))       # sum(x * x)
    >>> (gx,) = tape.gradients(y, [x])
    >>> fn = tape.compile([y, gx], ["x"])
    >>> fn(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64))
    (tensor([14.], dtype=torch.float64), tensor([[2., 4., 6.]], dtype=torch.float64))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

Value = Any  # a Var, a tensor, a Python number, or a (nested) tuple/list of these


class Unsupported(Exception):
    """The generated path cannot express this graph; the caller falls back to autograd."""


OPERATORS: dict[str, Any] = {}
"""The primitives behind ``Var``'s arithmetic operators, by name (``ADD``, ``MUL``, ...);
:mod:`.prims` fills it where it defines them, so this module does not import it."""


@dataclass(eq=False, slots=True)
class Var:
    """A chain-batched run-time tensor of per-chain shape ``shape`` (always float64 unless
    ``dtype`` says otherwise); arithmetic records on the owning tape. Equal by identity;
    slotted and not frozen, since a tape makes one per instruction it records (frozen
    fields cost a call each to set)."""

    tape: Tape = field(repr=False)
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float64

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _op(self, prim_name: str, *args: Value) -> Value:
        return self.tape.apply(OPERATORS[prim_name], *args)

    def __add__(self, other):
        return self._op("ADD", self, other)

    def __radd__(self, other):
        return self._op("ADD", other, self)

    def __sub__(self, other):
        return self._op("SUB", self, other)

    def __rsub__(self, other):
        return self._op("SUB", other, self)

    def __mul__(self, other):
        return self._op("MUL", self, other)

    def __rmul__(self, other):
        return self._op("MUL", other, self)

    def __truediv__(self, other):
        return self._op("DIV", self, other)

    def __rtruediv__(self, other):
        return self._op("DIV", other, self)

    def __neg__(self):
        return self._op("NEG", self)

    def __pow__(self, other):
        return self._op("POW", self, other)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """A constant tensor's operator with a ``Var`` on its right (``y - loc``) records the
        operation, as the reflected operator would: torch hands it here instead of failing to
        parse the ``Var`` first (a raised and caught TypeError, ten times the recording's
        cost); any other torch function of a ``Var`` is refused as before."""
        name = _TENSOR_OPERATORS.get(func)
        owner = next((a for a in args if isinstance(a, Var)), None)
        if name is None or kwargs or len(args) != 2 or owner is None:
            return NotImplemented
        return owner.tape.apply(OPERATORS[name], *args)


_TENSOR_OPERATORS = {torch.Tensor.add: "ADD", torch.Tensor.sub: "SUB", torch.Tensor.mul: "MUL",
                     torch.Tensor.div: "DIV"}
"""The tensor methods behind ``tensor + var`` and the like, by the primitive each records."""


def is_var(value: Value) -> bool:
    return isinstance(value, Var)


_LEAVES = frozenset({type(None), bool, int, float, str, torch.Tensor, torch.dtype})
"""Argument types that hold no ``Var``: told apart by exact type, since the walks below run
on every operation recorded (several per site of a model)."""


def contains_var(value: Value) -> bool:
    kind = type(value)
    if kind is Var:
        return True
    if kind in _LEAVES:
        return False
    if kind is tuple or kind is list:
        for item in value:
            if type(item) is Var or (type(item) not in _LEAVES and contains_var(item)):
                return True
        return False
    if isinstance(value, (tuple, list)):
        return any(contains_var(v) for v in value)
    if isinstance(value, slice):
        return contains_var((value.start, value.stop, value.step))
    return isinstance(value, Var)


def shape_of(value: Value) -> tuple[int, ...]:
    if isinstance(value, Var):
        return value.shape
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    return ()


_CONTENT_KEYED = 256
"""Constant tensors up to this size are keyed by their contents (gather positions, an
enumerated site's values), larger ones by identity."""


def _key(value: Value):
    """A hashable identity for an argument (large tensors by object identity: the tape keeps
    them)."""
    kind = type(value)
    if kind is Var:
        return value  # hashed by identity: one Var per name
    if kind is float or kind is int or kind is bool:
        return (kind, value)  # 1, 1.0 and True hash alike
    if kind is tuple:
        return (tuple, *(_key(v) for v in value))
    if isinstance(value, Var):
        return value
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, *(_key(v) for v in value))
    if isinstance(value, slice):
        return ("slice", _key((value.start, value.stop, value.step)))
    if isinstance(value, torch.Tensor):
        if value.numel() <= _CONTENT_KEYED:  # equal small constants are one subexpression
            contents = tuple(value.reshape(-1).tolist())
            return ("tensor", str(value.dtype), tuple(value.shape), contents)
        return ("tensor", id(value))
    return (type(value).__name__, value)


def _add_var_names(values: tuple | list, names: set[str]) -> None:
    """Add the name of every ``Var`` in ``values`` (tuples and lists nested) to ``names``."""
    for value in values:
        kind = type(value)
        if kind is Var:
            names.add(value.name)
        elif kind not in _LEAVES:
            if isinstance(value, Var):
                names.add(value.name)
            elif isinstance(value, (tuple, list)):
                _add_var_names(value, names)


def _accumulate(
    adjoints: dict[str, Value], args: Sequence[Value], contributions: Sequence[Value]
) -> None:
    """Add each contribution to its argument's adjoint (list arguments get a list)."""
    for arg, contribution in zip(args, contributions, strict=True):
        if contribution is None:
            continue
        if isinstance(arg, (tuple, list)):
            _accumulate(adjoints, arg, contribution)
        elif is_var(arg):
            previous = adjoints.get(arg.name)
            adjoints[arg.name] = contribution if previous is None else previous + contribution


@dataclass(slots=True)
class Instr:
    out: Var
    prim: Any
    args: tuple
    attrs: dict


class Tape:
    """An append-only list of instructions over chain-batched ``Var`` values."""

    def __init__(self) -> None:
        self.instrs: list[Instr] = []
        self.inputs: list[Var] = []
        self.namespace: dict[str, Any] = {"torch": torch}
        self._const_names: dict[Any, str] = {}
        self._count = 0
        self._memo: dict[tuple, Var] = {}
        self._defining: dict[str, Instr] = {}

    # -- building ------------------------------------------------------------------------
    def _fresh(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> Var:
        self._count += 1
        return Var(self, f"v{self._count}", tuple(shape), dtype)

    def input(self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> Var:
        """A run-time input of per-chain shape ``shape`` (an argument of the compiled code)."""
        var = Var(self, name, tuple(shape), dtype)
        self.inputs.append(var)
        return var

    def apply(self, prim, *args: Value, **attrs: Any) -> Value:
        """``prim(*args, **attrs)``: evaluated now if no argument is a ``Var``, else recorded."""
        if not contains_var(args):
            return prim.evaluate(*args, **attrs)
        simpler = prim.simplify(self, *args, **attrs)
        if simpler is not None:
            return simpler
        key = (prim, _key(args), _key(tuple(sorted(attrs.items()))) if attrs else ())
        out = self._memo.get(key)
        if out is None:  # common subexpressions are recorded once
            out = self.record(prim, *args, **attrs)
            self._memo[key] = out
        return out

    def record(self, prim, *args: Value, **attrs: Any) -> Var:
        """``prim(*args, **attrs)`` recorded as it is: never evaluated at build time nor shared
        with an equal instruction (a random draw is neither a constant nor a common
        subexpression)."""
        shape, dtype = prim.infer(*args, **attrs)
        out = self._fresh(shape, dtype)
        self.instrs.append(Instr(out, prim, args, attrs))
        self._defining[out.name] = self.instrs[-1]
        return out

    def defining(self, var: Var) -> Instr | None:
        """The instruction that computes ``var`` (None for inputs)."""
        return self._defining.get(var.name)

    def gradients(self, output: Value, wrt: Sequence[Var]) -> list[Value]:
        """Record the gradient of the scalar-per-chain ``output`` with respect to ``wrt``;
        an input that ``output`` does not depend on gets the constant ``0.0``."""
        adjoints: dict[str, Value] = {}
        if is_var(output):
            adjoints[output.name] = 1.0
        for instr in reversed(list(self.instrs)):
            g = adjoints.pop(instr.out.name, None)
            if g is None:
                continue
            contributions = instr.prim.vjp(self, g, instr.out, *instr.args, **instr.attrs)
            _accumulate(adjoints, instr.args, contributions)
        return [adjoints.get(v.name, 0.0) for v in wrt]

    def live(self, outputs: Sequence[Value]) -> list[Instr]:
        """The instructions the outputs depend on, in order (dead ones are never emitted)."""
        needed = {o.name for o in outputs if is_var(o)}
        kept = []
        for instr in reversed(self.instrs):
            if instr.out.name in needed:
                kept.append(instr)
                _add_var_names(instr.args, needed)
        return kept[::-1]

    # -- emission ------------------------------------------------------------------------
    def const(self, value: Any) -> str:
        """Source text for a constant: a literal for numbers, a bound global otherwise."""
        if isinstance(value, bool) or value is None or isinstance(value, int):
            return repr(value)
        if isinstance(value, float) or (
            isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point()
        ):
            # a bound 0-d tensor: cheaper per op than a Python float, which torch wraps per call
            return self._scalar(float(value))
        key = id(value)
        if key not in self._const_names:
            name = f"_c{len(self._const_names)}"
            self._const_names[key] = name
            self.namespace[name] = value
        return self._const_names[key]

    def _scalar(self, number: float) -> str:
        key = ("scalar", number if math.isfinite(number) else repr(number))
        if key not in self._const_names:
            name = f"_s{len(self._const_names)}"
            self._const_names[key] = name
            self.namespace[name] = torch.tensor(number, dtype=torch.float64)
        return self._const_names[key]

    def source(
        self,
        outputs: Sequence[Value],
        input_names: Sequence[str],
        fn_name: str = "potential",
        prologue: Sequence[str] = (),
    ) -> str:
        lines = [f"def {fn_name}({', '.join(input_names)}):", *("    " + line for line in prologue)]
        for instr in self.live(outputs):
            expr = instr.prim.emit(self, instr.out, *instr.args, **instr.attrs)
            lines.append(f"    {instr.out.name} = {expr}")
        lines.append(
            "    return "
            + ", ".join(self.ref(o) for o in outputs)
            + ("," if len(outputs) == 1 else "")
        )
        return "\n".join(lines) + "\n"

    def ref(self, value: Value) -> str:
        """An output: a ``Var`` by name, a constant broadcast over the chains (``C``)."""
        if is_var(value):
            return value.name
        value = torch.as_tensor(value, dtype=torch.float64)
        as_tensor = f"torch.as_tensor({self.const(value)}, dtype=torch.float64)"
        return f"{as_tensor}.expand(C, *{tuple(value.shape)!r})"

    def compile(
        self,
        outputs: Sequence[Value],
        input_names: Sequence[str],
        fn_name: str = "potential",
        prologue: Sequence[str] = (),
    ) -> Callable:
        src = self.source(outputs, input_names, fn_name, prologue)
        exec(compile(src, f"<ppl generated {fn_name}>", "exec"), self.namespace)
        fn = self.namespace[fn_name]
        fn.source = src
        return fn
