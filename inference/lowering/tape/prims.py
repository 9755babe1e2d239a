"""The primitive operations of the generated potential: batched emission and VJP rules.

Each primitive knows four things: how to ``evaluate`` itself on constants (torch, per chain),
how to ``infer`` its per-chain output shape (by evaluating on stand-in zeros), how to ``emit``
batched source text (every ``Var`` carries a leading chain dimension ``C``), and its
vector-Jacobian product ``vjp(tape, g, out, *args)``, written with tape operations so the
backward pass folds constants just like the forward one. ``g`` is the adjoint of ``out``: a
value whose shape broadcasts to ``out.shape`` (a float means a filled tensor). The returned
contributions broadcast to each argument's shape (``None`` for non-differentiable ones).

Elementwise arguments of lower rank are padded after the chain dimension, so per-chain
broadcasting rules carry over unchanged to the batched code.

    >>> from ppl.inference.lowering.tape.tape import Tape
    >>> tape = Tape()
    >>> x = tape.input("x", ())
    >>> tape.apply(EXP, x).shape, ADD.evaluate(1.0, 2.0)
    ((), 3.0)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ppl.passes.chains import chain_logsumexp, chain_marginals

from .tape import OPERATORS, Tape, Unsupported, Value, Var, is_var, shape_of

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
LOG_2 = math.log(2.0)


def _stand_in(value: Value) -> Any:
    """A zero tensor in place of each ``Var``, to run a primitive for its output shape (real
    tensors: meta tensors would route through torch's Python decompositions, whose first
    use imports torch._dynamo, seconds in a fresh process)."""
    if is_var(value):
        return torch.zeros(value.shape, dtype=value.dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(_stand_in(v) for v in value)
    return value


class Prim:
    """Base: subclasses set ``fn`` (torch, per chain) and implement ``emit`` and ``vjp``."""

    name = "prim"

    def fn(self, *args, **attrs):
        raise NotImplementedError

    def evaluate(self, *args: Value, **attrs: Any) -> Value:
        return self.fn(*args, **attrs)

    def infer(self, *args: Value, **attrs: Any) -> tuple[tuple[int, ...], torch.dtype]:
        out = self.fn(*_stand_in(args), **attrs)
        return tuple(out.shape), out.dtype

    def emit(self, tape: Tape, out: Var, *args: Value, **attrs: Any) -> str:
        raise NotImplementedError

    def simplify(self, tape: Tape, *args: Value, **attrs: Any) -> Value | None:
        """An equivalent cheaper value (``x * 1.0`` is ``x``), or None to record as is."""
        return None

    def vjp(self, tape: Tape, g: Value, out: Var, *args: Value, **attrs: Any) -> tuple:
        raise Unsupported(f"no gradient rule for {self.name}")

    def __repr__(self) -> str:
        return self.name


def padded(tape: Tape, value: Value, rank: int) -> str:
    """Source for ``value`` inside a batched elementwise expression of per-chain rank ``rank``."""
    if not is_var(value):
        return tape.const(value)
    missing = rank - value.ndim
    if missing == 0:
        return value.name
    return f"{value.name}.unsqueeze(1)" if missing == 1 else f"{value.name}[:{', None' * missing}]"


# -- helpers recording common shapes of VJPs ------------------------------------------------
def sum_to(tape: Tape, x: Value, logical: tuple[int, ...], target: tuple[int, ...]) -> Value:
    """``x`` broadcast to ``logical`` and summed down to ``target`` (unbroadcasting)."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return x * math.prod(logical) / math.prod(target) if logical != target else x
    if tuple(logical) == tuple(target) or (
        shape_of(x) == tuple(target) and _no_reduction(logical, target)
    ):
        return x
    return tape.apply(SUM_TO, x, logical=tuple(logical), target=tuple(target))


def _no_reduction(logical, target) -> bool:
    pad = (1,) * (len(logical) - len(target)) + tuple(target)
    return len(logical) == len(target) and all(
        t == o or o == 1 for t, o in zip(pad, logical, strict=True)
    )


def materialize(tape: Tape, g: Value, shape: tuple[int, ...]) -> Value:
    """The adjoint ``g`` as a value of exactly ``shape``."""
    if shape_of(g) == tuple(shape):
        return g
    return tape.apply(EXPAND, g, shape=tuple(shape))


# -- elementwise ------------------------------------------------------------------------------
class Elementwise(Prim):
    """An elementwise operation given by a source template over padded arguments (no
    template: a call of ``fn`` itself, bound as a constant of the generated code)."""

    def __init__(self, name: str, fn, template: str | None, vjp_rule=None):
        self.name, self._fn, self.template, self._vjp_rule = name, fn, template, vjp_rule
        self._inferred: dict[tuple, tuple[tuple[int, ...], torch.dtype]] = {}

    def fn(self, *args, **attrs):
        return self._fn(*args)

    def infer(self, *args: Value, **attrs: Any) -> tuple[tuple[int, ...], torch.dtype]:
        """Found on stand-ins once per signature (the arguments' shapes and dtypes, the types
        of numbers), which is all an elementwise result's shape and dtype depend on: an
        unrolled model records the same few signatures at every step."""
        signature = tuple(map(_signature, args))
        found = self._inferred.get(signature)
        if found is None:
            found = super().infer(*args, **attrs)
            if None not in signature:
                self._inferred[signature] = found
        return found

    def emit(self, tape, out, *args, **attrs):
        operands = [padded(tape, a, out.ndim) for a in args]
        if self.template is None:
            return f"{tape.const(self._fn)}({', '.join(operands)})"
        return self.template.format(*operands)

    def simplify(self, tape, *args, **attrs):
        rule = _SIMPLIFICATIONS.get(self.name)
        return None if rule is None else rule(tape, *args)

    def vjp(self, tape, g, out, *args, **attrs):
        if self._vjp_rule is None:
            return (None,) * len(args)
        contributions = self._vjp_rule(g, out, *args)
        return tuple(
            None if c is None or not is_var(a) else sum_to(tape, c, out.shape, shape_of(a))
            for a, c in zip(args, contributions, strict=True)
        )


def _signature(value: Value) -> tuple | type | None:
    """What an elementwise operation's result type depends on in one argument; None for an
    argument of another kind (not cached)."""
    kind = type(value)
    if kind is Var:
        return value.shape, value.dtype
    if kind is torch.Tensor:
        return tuple(value.shape), value.dtype
    if kind is float or kind is int or kind is bool:
        return kind
    return None


def _is_number(value: Value, number: float) -> bool:
    kind = type(value)
    if kind is float or kind is int:
        return value == number
    if kind is Var:
        return False
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        value = value.item()
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == number


def _without_unit(args: tuple, unit: float, positions: tuple[int, ...]) -> Value | None:
    """The other operand when an operand at one of ``positions`` is the operation's unit
    (``x + 0.0``, ``1.0 * x``, ``x / 1.0``)."""
    for i in positions:
        if _is_number(args[i], unit) and is_var(args[1 - i]):
            return args[1 - i]
    return None


def _simplify_add_sub(tape: Tape, name: str, a: Value, b: Value) -> Value | None:
    unit = _without_unit((a, b), 0.0, (0, 1) if name == "add" else (1,))
    if unit is not None or not (is_var(a) and is_var(b)):
        return unit
    negated = _negated(tape, b)  # a + (-1 * b) is a - b, a - (-1 * b) is a + b
    if negated is not None:
        return tape.apply(SUB if name == "add" else ADD, a, negated)
    if name == "add" and _negated(tape, a) is not None:
        return tape.apply(SUB, b, _negated(tape, a))
    return None


def _simplify_mul(tape: Tape, a: Value, b: Value) -> Value | None:
    unit = _without_unit((a, b), 1.0, (0, 1))
    if unit is not None:
        return unit
    if is_var(a) and is_var(b):
        for x, y in ((a, b), (b, a)):  # float a scalar factor outwards, where later ones fold
            scaled = _scaled(tape, x)
            if scaled is not None and isinstance(scaled[1], float):
                return _scale(tape, tape.apply(MUL, scaled[0], y), scaled[1])
        return None
    var, factor = (a, b) if is_var(a) else (b, a)
    if not is_var(var):
        return None
    scaled = _scaled(tape, var)
    if scaled is not None:
        return _scale(tape, scaled[0], scaled[1] * factor)
    inner = tape.defining(var)
    if inner is not None and inner.prim is DIV and not is_var(inner.args[0]):
        return tape.apply(DIV, inner.args[0] * factor, inner.args[1])  # (k / y) * c
    return None


def _simplify_div(tape: Tape, a: Value, b: Value) -> Value | None:
    unit = _without_unit((a, b), 1.0, (1,))
    if unit is not None or not is_var(a):
        return unit
    if is_var(b):
        scaled = _scaled(tape, a)  # (r * k) / y is (r / y) * k
        if scaled is not None and isinstance(scaled[1], float):
            return _scale(tape, tape.apply(DIV, scaled[0], b), scaled[1])
        return None
    return _scale(tape, a, 1.0 / torch.as_tensor(b, dtype=torch.float64))


def _simplify_log(tape: Tape, a: Value) -> Value | None:
    inner = tape.defining(a)  # log(exp(u)) is u: a positive parameter's log density term
    return inner.args[0] if inner is not None and inner.prim is EXP else None


_SIMPLIFICATIONS = {
    "add": lambda tape, a, b: _simplify_add_sub(tape, "add", a, b),
    "sub": lambda tape, a, b: _simplify_add_sub(tape, "sub", a, b),
    "mul": _simplify_mul,
    "div": _simplify_div,
    "pow": lambda tape, a, b: _without_unit((a, b), 1.0, (1,)),
    "neg": lambda tape, a: _scale(tape, a, -1.0),
    "log": _simplify_log,
}
"""Each elementwise operation's rewrites into an equivalent cheaper value, by name (the
operations called most, with a constant or a recorded operand, fold or vanish here)."""


def _scaled(tape: Tape, x: Var) -> tuple[Var, Value] | None:
    """``(y, k)`` when ``x`` was recorded as ``y * k`` for a constant ``k``, else None."""
    inner = tape.defining(x)
    if inner is None or inner.prim is not MUL or is_var(inner.args[0]) == is_var(inner.args[1]):
        return None
    return (
        (inner.args[0], inner.args[1]) if is_var(inner.args[0]) else (inner.args[1], inner.args[0])
    )


def _negated(tape: Tape, x: Var) -> Var | None:
    """``y`` when ``x`` was recorded as ``y * -1.0``, else None."""
    inner = tape.defining(x)
    if inner is None or inner.prim is not MUL:
        return None
    for i in (0, 1):
        if is_var(inner.args[i]) and _is_number(inner.args[1 - i], -1.0):
            return inner.args[i]
    return None


def _scale(tape: Tape, x: Var, factor: Value) -> Value:
    """``x * factor`` for a constant factor, recorded as one multiplication (constant
    factors of chained multiplications, divisions and negations fold into one)."""
    if isinstance(factor, torch.Tensor) and factor.dim() == 0:
        factor = float(factor)
    return tape.apply(MUL, x, factor)


def _t(value):  # a constant as a tensor, for torch functions that refuse Python numbers
    return (
        value
        if isinstance(value, torch.Tensor) or is_var(value)
        else torch.tensor(float(value), dtype=torch.float64)
    )


ADD = Elementwise("add", lambda a, b: a + b, "{} + {}", lambda g, o, a, b: (g, g))
SUB = Elementwise("sub", lambda a, b: a - b, "{} - {}", lambda g, o, a, b: (g, -g))
MUL = Elementwise("mul", lambda a, b: a * b, "{} * {}", lambda g, o, a, b: (g * b, g * a))
DIV = Elementwise("div", lambda a, b: a / b, "{} / {}", lambda g, o, a, b: (g / b, -g * o / b))
NEG = Elementwise("neg", lambda a: -a, "-{}", lambda g, o, a: (-g,))
POW = Elementwise(
    "pow",
    lambda a, b: a**b,
    "{} ** {}",
    lambda g, o, a, b: (g * b * a ** (b - 1), g * o * log(a) if is_var(b) else None),
)
EXP = Elementwise("exp", lambda a: torch.exp(_t(a)), "torch.exp({})", lambda g, o, a: (g * o,))
LOG = Elementwise("log", lambda a: torch.log(_t(a)), "torch.log({})", lambda g, o, a: (g / a,))
LOG1P = Elementwise(
    "log1p", lambda a: torch.log1p(_t(a)), "torch.log1p({})", lambda g, o, a: (g / (1.0 + a),)
)
EXPM1 = Elementwise(
    "expm1", lambda a: torch.expm1(_t(a)), "torch.expm1({})", lambda g, o, a: (g * (o + 1.0),)
)
SQRT = Elementwise(
    "sqrt", lambda a: torch.sqrt(_t(a)), "torch.sqrt({})", lambda g, o, a: (g * 0.5 / o,)
)
SQUARE = Elementwise(
    "square", lambda a: torch.square(_t(a)), "torch.square({})", lambda g, o, a: (g * 2.0 * a,)
)
ABS = Elementwise(
    "abs", lambda a: torch.abs(_t(a)), "torch.abs({})", lambda g, o, a: (g * sign(a),)
)
SIGN = Elementwise("sign", lambda a: torch.sign(_t(a)), "torch.sign({})")
SIGMOID = Elementwise(
    "sigmoid",
    lambda a: torch.sigmoid(_t(a)),
    "torch.sigmoid({})",
    lambda g, o, a: (g * o * (1.0 - o),),
)
LOGSIGMOID = Elementwise(
    "logsigmoid",
    lambda a: torch.nn.functional.logsigmoid(_t(a)),
    "torch.nn.functional.logsigmoid({})",
    lambda g, o, a: (g * sigmoid(-a),),
)
SOFTPLUS = Elementwise(
    "softplus",
    lambda a: torch.nn.functional.softplus(_t(a)),
    "torch.nn.functional.softplus({})",
    lambda g, o, a: (g * sigmoid(a),),
)
TANH = Elementwise(
    "tanh", lambda a: torch.tanh(_t(a)), "torch.tanh({})", lambda g, o, a: (g * (1.0 - o * o),)
)
SIN = Elementwise("sin", lambda a: torch.sin(_t(a)), "torch.sin({})", lambda g, o, a: (g * cos(a),))
COS = Elementwise(
    "cos", lambda a: torch.cos(_t(a)), "torch.cos({})", lambda g, o, a: (-g * sin(a),)
)
RECIPROCAL = Elementwise(
    "reciprocal",
    lambda a: torch.reciprocal(_t(a)),
    "torch.reciprocal({})",
    lambda g, o, a: (-g * o * o,),
)
TRIGAMMA = Elementwise(
    "trigamma", lambda a: torch.special.polygamma(1, _t(a)), "torch.special.polygamma(1, {})"
)
DIGAMMA = Elementwise(
    "digamma",
    lambda a: torch.special.digamma(_t(a)),
    "torch.special.digamma({})",
    lambda g, o, a: (g * trigamma(a),),
)
LGAMMA = Elementwise(
    "lgamma", lambda a: torch.lgamma(_t(a)), "torch.lgamma({})", lambda g, o, a: (g * digamma(a),)
)
ERF = Elementwise(
    "erf",
    lambda a: torch.erf(_t(a)),
    "torch.erf({})",
    lambda g, o, a: (g * (2.0 / math.sqrt(math.pi)) * exp(-a * a),),
)
LOGADDEXP = Elementwise(
    "logaddexp",
    lambda a, b: torch.logaddexp(_t(a), _t(b)),
    "torch.logaddexp({}, {})",
    lambda g, o, a, b: (g * exp(a - o), g * exp(b - o)),
)
LOG_NDTR = Elementwise(
    "log_ndtr",
    lambda a: torch.special.log_ndtr(_t(a)),
    "torch.special.log_ndtr({})",
    lambda g, o, a: (g * exp(-0.5 * square(a) - HALF_LOG_2PI - o),),  # phi(a) / Phi(a)
)


def _log1mexp(a):
    """``log(1 - exp(a))`` for ``a <= 0``, by the branch that keeps its precision."""
    a = _t(a)
    return torch.where(a > -LOG_2, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


LOG1MEXP = Elementwise("log1mexp", _log1mexp, None, lambda g, o, a: (-g / expm1(-a),))

# log I0 as torch's VonMises computes it, the polynomials of Abramowitz and Stegun 9.8.1-2
# (below and above x = 3.75; relative error under 2e-7), so that the tape and the autograd
# path agree to rounding; LOG_I0_SLOPE is their exact derivative (about I1 / I0).
_I0_SMALL = (1.0, 3.5156229, 3.0899424, 1.2067492, 0.2659732, 0.0360768, 0.0045813)
_I0_LARGE = (0.39894228, 0.01328592, 0.00225319, -0.00157565, 0.00916281, -0.02057706,
             0.02635537, -0.01647633, 0.00392377)


def _polynomial(y, coefficients):
    """``sum(c_k y^k)`` and its derivative in ``y``, by Horner's rule."""
    value, slope = coefficients[-1], 0.0
    for c in reversed(coefficients[:-1]):
        slope = slope * y + value
        value = value * y + c
    return value, slope


def _log_i0(x):
    x = _t(x)
    small, _ = _polynomial(torch.square(x / 3.75), _I0_SMALL)
    large, _ = _polynomial(3.75 / x, _I0_LARGE)
    return torch.where(x < 3.75, torch.log(small), x - 0.5 * torch.log(x) + torch.log(large))


def _log_i0_slope(x):
    x = _t(x)
    small, small_slope = _polynomial(torch.square(x / 3.75), _I0_SMALL)
    large, large_slope = _polynomial(3.75 / x, _I0_LARGE)
    return torch.where(x < 3.75, small_slope / small * (2.0 / 3.75**2) * x,
                       1.0 - 0.5 / x - large_slope / large * 3.75 / torch.square(x))


LOG_I0_SLOPE = Elementwise("log_i0_slope", _log_i0_slope, None)
LOG_I0 = Elementwise("log_i0", _log_i0, None, lambda g, o, a: (g * log_i0_slope(a),))
MAXIMUM = Elementwise("maximum", lambda a, b: torch.maximum(_t(a), _t(b)), "torch.maximum({}, {})")
WHERE = Elementwise(
    "where",
    lambda c, a, b: torch.where(c, _t(a), _t(b)),
    "torch.where({}, {}, {})",
    lambda g, o, c, a, b: (None, where(c, g, 0.0), where(c, 0.0, g)),
)
COMPARISONS = {
    op: Elementwise(op, getattr(torch, op), f"torch.{op}({{}}, {{}})")
    for op in ("lt", "le", "gt", "ge", "eq", "ne")
}
OPERATORS.update(ADD=ADD, SUB=SUB, MUL=MUL, DIV=DIV, NEG=NEG, POW=POW)


def _unary(prim):
    def apply(x: Value) -> Value:
        return x.tape.apply(prim, x) if is_var(x) else prim.evaluate(x)

    apply.__name__ = prim.name
    return apply


exp, log, log1p, sigmoid, sign, sin, cos, trigamma, digamma = map(
    _unary, (EXP, LOG, LOG1P, SIGMOID, SIGN, SIN, COS, TRIGAMMA, DIGAMMA)
)
lgamma, softplus, logsigmoid, square, expm1 = map(
    _unary, (LGAMMA, SOFTPLUS, LOGSIGMOID, SQUARE, EXPM1)
)
log_ndtr, log1mexp, log_i0, log_i0_slope = map(_unary, (LOG_NDTR, LOG1MEXP, LOG_I0, LOG_I0_SLOPE))


def logaddexp(a: Value, b: Value) -> Value:
    tape = next((v.tape for v in (a, b) if is_var(v)), None)
    return tape.apply(LOGADDEXP, a, b) if tape else LOGADDEXP.evaluate(a, b)


def where(cond: Value, a: Value, b: Value) -> Value:
    tape = next((v.tape for v in (cond, a, b) if is_var(v)), None)
    return tape.apply(WHERE, cond, a, b) if tape else WHERE.evaluate(cond, a, b)


# -- reductions and shapes --------------------------------------------------------------------
def _batched_dims(dims, ndim: int) -> tuple[int, ...]:
    return tuple(d % ndim + 1 for d in dims)


class Sum(Prim):
    """``x.sum(dims, keepdim)``; ``dims=None`` sums every per-chain dimension."""

    name = "sum"

    def fn(self, x, dims=None, keepdim=False):
        return (
            torch.as_tensor(x).sum(dims, keepdim=keepdim)
            if dims is not None
            else torch.as_tensor(x).sum()
        )

    def emit(self, tape, out, x, dims=None, keepdim=False):
        dims = tuple(range(x.ndim)) if dims is None else dims
        if not dims:
            return x.name
        return f"{x.name}.sum({_batched_dims(dims, x.ndim)!r}, keepdim={keepdim})"

    def vjp(self, tape, g, out, x, dims=None, keepdim=False):
        if dims is None or keepdim or isinstance(g, float):
            return (g,)  # broadcasts back over the summed dimensions
        kept = tuple(1 if i in {d % x.ndim for d in dims} else n for i, n in enumerate(x.shape))
        return (reshape(materialize(tape, g, out.shape), kept),)


class SumTo(Prim):
    """Unbroadcast: ``x`` broadcast to ``logical``, summed down to ``target``."""

    name = "sum_to"

    def fn(self, x, logical, target):
        return torch.broadcast_to(torch.as_tensor(x, dtype=torch.float64), logical).sum_to_size(
            target
        )

    def emit(self, tape, out, x, logical, target):
        rank, lead = len(logical), len(logical) - len(target)
        padded_x = (1,) * (rank - x.ndim) + x.shape
        dims, factor = [], 1
        for i in range(rank):
            if (i < lead or target[i - lead] == 1) and logical[i] != 1:
                if padded_x[i] == 1:
                    factor *= logical[i]
                else:
                    dims.append(i - (rank - x.ndim) + 1)
        x_lead = x.ndim - len(target)  # x's dims left of the target's, all summed away
        if dims == list(range(1, x_lead + 1)):
            src = f"{x.name}.sum({tuple(dims)!r})" if dims else x.name
        else:
            src = f"{x.name}.sum({tuple(dims)!r}, keepdim=True).reshape({(-1, *target)!r})"
        return f"{src} * {float(factor)!r}" if factor != 1 else src


class Expand(Prim):
    name = "expand"

    def fn(self, x, shape):
        return torch.broadcast_to(torch.as_tensor(x, dtype=torch.float64), shape)

    def emit(self, tape, out, x, shape):
        return f"{padded(tape, x, len(shape))}.expand({(-1, *shape)!r})"

    def vjp(self, tape, g, out, x, shape):
        return (sum_to(tape, g, out.shape, x.shape),)


class Reshape(Prim):
    name = "reshape"

    def fn(self, x, shape):
        return torch.as_tensor(x).reshape(shape)

    def emit(self, tape, out, x, shape):
        return f"{x.name}.reshape({(-1, *shape)!r})"

    def vjp(self, tape, g, out, x, shape):
        return (reshape(materialize(tape, g, out.shape), x.shape),)


class Permute(Prim):
    name = "permute"

    def fn(self, x, perm):
        return torch.as_tensor(x).permute(perm)

    def emit(self, tape, out, x, perm):
        return f"{x.name}.permute({(0, *(p + 1 for p in perm))!r})"

    def vjp(self, tape, g, out, x, perm):
        inverse = tuple(sorted(range(len(perm)), key=lambda i: perm[i]))
        return (tape.apply(PERMUTE, materialize(tape, g, out.shape), perm=inverse),)


class Gather(Prim):
    """``x.reshape(-1)[positions]``: any indexing, as a gather of flat positions (a constant
    int64 tensor of the result's shape), so one rule serves basic and advanced indices."""

    name = "gather"

    def fn(self, x, positions):
        return torch.as_tensor(x).reshape(-1)[positions]

    def simplify(self, tape, x, positions):
        """Every element once, in order (``x[..., 0]`` of a trailing dim of one): a reshape,
        which copies nothing and has no scatter in its gradient."""
        if positions.numel() == math.prod(shape_of(x)) and torch.equal(
                positions.reshape(-1), torch.arange(positions.numel())):
            return reshape(x, tuple(positions.shape))
        return None

    def emit(self, tape, out, x, positions):
        flat = x.name if x.ndim == 1 else f"{x.name}.reshape(C, -1)"
        return f"{flat}[:, {tape.const(positions)}]"

    def vjp(self, tape, g, out, x, positions):
        g = materialize(tape, g, out.shape)
        return (tape.apply(SCATTER_ADD, g, positions=positions, shape=x.shape),)


class ScatterAdd(Prim):
    """Adjoint of :class:`Gather`: add ``g`` into zeros of ``shape`` at the flat positions
    (also how a bijector lays a vector out as a triangular matrix)."""

    name = "scatter_add"

    def fn(self, g, positions, shape):
        out = torch.zeros(math.prod(shape), dtype=torch.float64)
        g = torch.as_tensor(g, dtype=torch.float64).reshape(-1)
        return out.index_add_(0, positions.reshape(-1), g).reshape(shape)

    def infer(self, g, positions, shape):
        return tuple(shape), torch.float64

    def emit(self, tape, out, g, positions, shape):
        flat_positions = tape.const(positions.reshape(-1))
        return (
            f"{g.name}.new_zeros((C, {math.prod(shape)})).index_add_(1, {flat_positions}, "
            f"{g.name}.reshape(C, -1)).reshape({(-1, *shape)!r})"
        )

    def vjp(self, tape, adjoint, out, g, positions, shape):
        return (tape.apply(GATHER, materialize(tape, adjoint, out.shape), positions=positions),)


class MatMul(Prim):
    """``a @ b`` with at least one side batched; per-chain ranks 1 or 2 (constants may be
    matrices of any rank that broadcast, batched operands are vectors or matrices)."""

    name = "matmul"

    def fn(self, a, b):
        return torch.matmul(torch.as_tensor(a), torch.as_tensor(b))

    def emit(self, tape, out, a, b):
        ra, rb = len(shape_of(a)), len(shape_of(b))
        if is_var(a) and is_var(b):
            if ra == rb == 1:
                return f"({a.name} * {b.name}).sum(-1)"
            if ra == rb == 2:
                return f"{a.name} @ {b.name}"
            if (ra, rb) == (2, 1):
                return f"({a.name} @ {b.name}.unsqueeze(2)).squeeze(2)"
            if (ra, rb) == (1, 2):
                return f"({a.name}.unsqueeze(1) @ {b.name}).squeeze(1)"
        elif is_var(a) and ra in (1, 2) and rb in (1, 2):
            return f"{a.name} @ {tape.const(b)}"
        elif is_var(b) and rb == 1 and ra in (1, 2):  # (C, D) @ a^T
            return f"{b.name} @ {tape.const(a.mT.contiguous() if ra == 2 else a)}"
        elif is_var(b) and rb == 2 and ra in (1, 2):
            return f"{tape.const(a)} @ {b.name}"
        raise Unsupported(f"matmul of per-chain shapes {shape_of(a)} and {shape_of(b)}")

    def vjp(self, tape, g, out, a, b):
        g = materialize(tape, g, out.shape)
        ra, rb = len(shape_of(a)), len(shape_of(b))
        grad_a = grad_b = None
        if is_var(a):
            if rb == 1:  # outer product of g and b (a dot product when a is a vector)
                grad_a = g * b if ra == 1 else reshape(g, (*out.shape, 1)) * b
            else:
                grad_a = tape.apply(MATMUL, g, transpose(b))
        if is_var(b):
            if ra == 1:
                grad_b = (
                    g * a
                    if rb == 1
                    else reshape(a, (shape_of(a)[0], 1)) * reshape(g, (1, out.shape[-1]))
                )
            else:
                grad_b = (
                    tape.apply(MATMUL, g, a) if rb == 1 else tape.apply(MATMUL, transpose(a), g)
                )
        return grad_a, grad_b


def transpose(x: Value) -> Value:
    """The per-chain matrix transpose."""
    if is_var(x):
        return x.tape.apply(PERMUTE, x, perm=(1, 0))
    return x.mT.contiguous()


class Concat(Prim):
    """``torch.cat(parts, dim)`` with constant parts broadcast over chains."""

    name = "cat"

    def fn(self, parts, dim):
        return torch.cat([torch.as_tensor(p, dtype=torch.float64) for p in parts], dim)

    def emit(self, tape, out, parts, dim):
        items = [
            p.name if is_var(p) else f"{tape.const(p)}.expand(C, *{tuple(p.shape)!r})"
            for p in parts
        ]
        return f"torch.cat([{', '.join(items)}], {dim % out.ndim + 1})"

    def vjp(self, tape, g, out, parts, dim):
        g = materialize(tape, g, out.shape)
        axis, start, contributions = dim % out.ndim, 0, []
        for p in parts:
            size = shape_of(p)[axis]
            contributions.append(
                tape.apply(NARROW, g, dim=axis, start=start, length=size) if is_var(p) else None
            )
            start += size
        return (contributions,)


class Columns(Prim):
    """The flat gradient ``(C, D)`` from per-block adjoints: ``torch.column_stack`` takes a
    per-chain scalar as one column and a vector as its columns, in a single call."""

    name = "columns"

    def fn(self, parts):
        return torch.cat([torch.as_tensor(p, dtype=torch.float64).reshape(-1) for p in parts])

    def emit(self, tape, out, parts):
        items = []
        for p in parts:
            if not is_var(p):
                items.append(f"{tape.const(p.reshape(-1))}.expand(C, {p.numel()})")
            else:
                items.append(p.name if p.ndim <= 1 else f"{p.name}.reshape(C, -1)")
        return f"torch.column_stack([{', '.join(items)}])"


class Narrow(Prim):
    name = "narrow"

    def fn(self, x, dim, start, length):
        return torch.as_tensor(x).narrow(dim, start, length)

    def emit(self, tape, out, x, dim, start, length):
        return f"{x.name}.narrow({dim + 1}, {start}, {length})"

    def vjp(self, tape, g, out, x, dim, start, length):
        """``g`` in its slice of zeros of ``x``'s shape (a concatenation with constants)."""
        g = materialize(tape, g, out.shape)
        before, after = (
            torch.zeros((*x.shape[:dim], n, *x.shape[dim + 1 :]), dtype=torch.float64)
            for n in (start, x.shape[dim] - start - length)
        )
        parts = [p for p in (before, g, after) if shape_of(p)[dim] > 0]
        return (tape.apply(CAT, parts, dim=dim) if len(parts) > 1 else g,)


class CumSum(Prim):
    name = "cumsum"

    def fn(self, x, dim):
        return torch.as_tensor(x).cumsum(dim)

    def emit(self, tape, out, x, dim):
        return f"{x.name}.cumsum({dim % x.ndim + 1})"

    def vjp(self, tape, g, out, x, dim):
        g = materialize(tape, g, out.shape)
        return (tape.apply(REVERSE_CUMSUM, g, dim=dim % x.ndim),)


class ReverseCumSum(Prim):
    name = "reverse_cumsum"

    def fn(self, x, dim):
        return torch.as_tensor(x).flip(dim).cumsum(dim).flip(dim)

    def emit(self, tape, out, x, dim):
        d = dim + 1
        return f"{x.name}.flip({d}).cumsum({d}).flip({d})"


class LogCumSumExp(Prim):
    """``torch.logcumsumexp(x, dim)``: running sums in log space (a linear recursion's
    partial sums without overflow)."""

    name = "logcumsumexp"

    def fn(self, x, dim):
        return torch.logcumsumexp(torch.as_tensor(x), dim)

    def emit(self, tape, out, x, dim):
        return f"torch.logcumsumexp({x.name}, {dim + 1})"

    def vjp(self, tape, g, out, x, dim):
        """``dx_j = sum_{i >= j} g_i exp(x_j - out_i)``, every factor at most ``|g_i|``: the
        positive and negative parts of ``g`` each as a reversed logcumsumexp of
        ``log|g| - out``, so that neither ``exp(x)`` nor ``exp(-out)`` is formed."""
        g = materialize(tape, g, out.shape)
        grad: Value = 0.0
        for sign in (1.0, -1.0):
            log_part = log(tape.apply(MAXIMUM, g * sign, 0.0))
            if not is_var(log_part) and bool(torch.isneginf(log_part).all()):
                continue  # a constant adjoint without entries of this sign
            tail = tape.apply(REVERSE_LOGCUMSUMEXP, log_part - out, dim=dim)
            grad = grad + sign * exp(x + tail)
        return (grad,)


class ReverseLogCumSumExp(Prim):
    name = "reverse_logcumsumexp"

    def fn(self, x, dim):
        return torch.logcumsumexp(torch.as_tensor(x).flip(dim), dim).flip(dim)

    def emit(self, tape, out, x, dim):
        d = dim + 1
        return f"torch.logcumsumexp({x.name}.flip({d}), {d}).flip({d})"


class LogSumExp(Prim):
    name = "logsumexp"

    def fn(self, x, dim, keepdim=False):
        return torch.logsumexp(torch.as_tensor(x), dim, keepdim=keepdim)

    def emit(self, tape, out, x, dim, keepdim=False):
        return (
            f"torch.logsumexp({x.name}, {_batched_dims(_dims(dim), x.ndim)!r}, keepdim={keepdim})"
        )

    def vjp(self, tape, g, out, x, dim, keepdim=False):
        kept = tuple(
            1 if i in {d % x.ndim for d in _dims(dim)} else n for i, n in enumerate(x.shape)
        )
        g_kept = reshape(materialize(tape, g, out.shape), kept)
        out_kept = reshape(out, kept)
        return (g_kept * exp(x - out_kept),)


class LogSoftmax(Prim):
    name = "log_softmax"

    def fn(self, x, dim):
        return torch.log_softmax(torch.as_tensor(x), dim)

    def emit(self, tape, out, x, dim):
        return f"torch.log_softmax({x.name}, {dim % x.ndim + 1})"

    def vjp(self, tape, g, out, x, dim):
        g = materialize(tape, g, out.shape)
        return (g - exp(out) * tape.apply(SUM, g, dims=(dim,), keepdim=True),)


# -- a discrete chain summed out (ppl.passes.chains) -------------------------------------------
class ChainLogSumExp(Prim):
    """``chain_logsumexp(F, start)``: the log sum over the paths of a chain of ``K`` states
    with log factors ``F (T, K, K)`` from state ``start``, by the forward recursion; its
    VJP is ``g`` times the pairwise marginals (:class:`ChainMarginals`)."""

    name = "chain_logsumexp"

    def fn(self, F, start):
        return chain_logsumexp(torch.as_tensor(F, dtype=torch.float64), start)

    def emit(self, tape, out, F, start):
        return f"{tape.const(chain_logsumexp)}({F.name}, {start})"

    def vjp(self, tape, g, out, F, start):
        return (g * tape.apply(CHAIN_MARGINALS, F, out, start=start),)


class ChainMarginals(Prim):
    """``P(z_{t-1} = j, z_t = k)`` of that chain, ``(T, K, K)``, by forward-backward from
    ``F`` and its ``log_z``."""

    name = "chain_marginals"

    def fn(self, F, log_z, start):
        return chain_marginals(torch.as_tensor(F, dtype=torch.float64),
                               torch.as_tensor(log_z, dtype=torch.float64), start)

    def emit(self, tape, out, F, log_z, start):
        return f"{tape.const(chain_marginals)}({F.name}, {log_z.name}, {start})"


# -- indexing by per-chain integers (a Gibbs block's view of discrete sites) ------------------
class IndexSelect(Prim):
    """``table[index]`` along the first dimension of a constant ``table``, for a per-chain
    integer ``index`` (``locs[z]``): no gradient flows, the table being data."""

    name = "index_select"

    def fn(self, table, index):
        return torch.as_tensor(table, dtype=torch.float64)[torch.as_tensor(index).long()]

    def emit(self, tape, out, table, index):
        return f"{tape.const(torch.as_tensor(table, dtype=torch.float64))}[{index.name}]"

    def vjp(self, tape, g, out, table, index):
        return None, None


class TakeLast(Prim):
    """``table[..., index]`` along the last dimension, element by element (``log p[z]`` of
    a Categorical whose value ``z`` is per-chain data); ``table`` broadcasts with ``index``."""

    name = "take_last"

    def fn(self, table, index):
        table = torch.as_tensor(table, dtype=torch.float64)
        batch = torch.broadcast_shapes(table.shape[:-1], torch.as_tensor(index).shape)
        index = torch.as_tensor(index).long().expand(batch).unsqueeze(-1)
        return torch.gather(table.expand(*batch, table.shape[-1]), -1, index).squeeze(-1)

    def emit(self, tape, out, table, index):
        rank, size = out.ndim, shape_of(table)[-1]
        src = padded(tape, table, rank + 1) if is_var(table) else tape.const(table)
        return (f"torch.gather({src}.expand(C, *{out.shape!r}, {size}), -1, "
                f"{padded(tape, index, rank)}.expand(C, *{out.shape!r}).unsqueeze(-1))"
                ".squeeze(-1)")

    def vjp(self, tape, g, out, table, index):
        if not is_var(table):
            return None, None
        size = shape_of(table)[-1]
        spread = tape.apply(SCATTER_LAST, materialize(tape, g, out.shape), index, size=size)
        return sum_to(tape, spread, (*out.shape, size), table.shape), None


class ScatterLast(Prim):
    """Adjoint of :class:`TakeLast`: ``g`` added into zeros of ``(*g.shape, size)`` at
    ``index`` along the last dimension."""

    name = "scatter_last"

    def fn(self, g, index, size):
        g = torch.as_tensor(g, dtype=torch.float64)
        index = torch.as_tensor(index).long().expand(g.shape).unsqueeze(-1)
        return torch.zeros(*g.shape, size, dtype=torch.float64).scatter_add_(
            -1, index, g.unsqueeze(-1))

    def emit(self, tape, out, g, index, size):
        shape = out.shape[:-1]
        return (f"torch.zeros(C, *{out.shape!r}, dtype=torch.float64).scatter_add_(-1, "
                f"{padded(tape, index, len(shape))}.expand(C, *{shape!r}).unsqueeze(-1), "
                f"{padded(tape, g, len(shape))}.expand(C, *{shape!r}).unsqueeze(-1))")


# -- linear algebra (per-chain matrices) --------------------------------------------------------
def _cholesky_or_nan(x: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factors, NaN for a matrix that is not positive definite."""
    factor, info = torch.linalg.cholesky_ex(x)
    return torch.where((info == 0)[..., None, None], factor, torch.nan)


def _triangle(n: int, upper: bool) -> torch.Tensor:
    ones = torch.ones(n, n, dtype=torch.float64)
    return ones.triu() if upper else ones.tril()


class Cholesky(Prim):
    """The lower Cholesky factor of a per-chain matrix (its lower triangle is read). A
    matrix that is not positive definite gives NaN: a divergence for the sampler, not an
    error that ends the run."""

    name = "cholesky"

    def fn(self, x):
        return _cholesky_or_nan(torch.as_tensor(x))

    def emit(self, tape, out, x):
        return f"{tape.const(_cholesky_or_nan)}({x.name})"

    def vjp(self, tape, g, out, x):
        """Murray (2016), symmetrized as torch does: ``dx = L^-T (Q + Q^T) L^-1`` with ``Q``
        the lower triangle of ``L^T dL`` weighted 1/2 below the diagonal and 1/4 on it
        (``dL = g``, ``dx``: the adjoints)."""
        g = materialize(tape, g, out.shape)
        weights = _triangle(out.shape[-1], upper=False) * 0.5
        weights.diagonal().mul_(0.5)
        q = tape.apply(MATMUL, transpose(out), g) * weights
        left = tape.apply(
            TRIANGULAR_SOLVE, transpose(out), q + transpose(q), upper=True, left=True
        )
        return (tape.apply(TRIANGULAR_SOLVE, out, left, upper=False, left=False),)


class TriangularSolve(Prim):
    """``torch.linalg.solve_triangular(a, b, upper=upper, left=left)``: ``X`` with
    ``a X = b`` (``left``) or ``X a = b``, for per-chain matrices ``a`` and ``b``."""

    name = "solve_triangular"

    def fn(self, a, b, upper, left=True):
        return torch.linalg.solve_triangular(
            torch.as_tensor(a), torch.as_tensor(b), upper=upper, left=left
        )

    def emit(self, tape, out, a, b, upper, left=True):
        a_src, b_src = (v.name if is_var(v) else tape.const(v) for v in (a, b))
        return f"torch.linalg.solve_triangular({a_src}, {b_src}, upper={upper}, left={left})"

    def vjp(self, tape, g, out, a, b, upper, left=True):
        """The adjoint ``db`` solves the transposed system; ``da = -db X^T`` (``-X^T db``
        on the right), on ``a``'s triangle, the only one read."""
        g = materialize(tape, g, out.shape)
        grad_b = tape.apply(TRIANGULAR_SOLVE, transpose(a), g, upper=not upper, left=left)
        grad_a = None
        if is_var(a):
            pair = (grad_b, transpose(out)) if left else (transpose(out), grad_b)
            grad_a = tape.apply(MATMUL, *pair) * -_triangle(a.shape[-1], upper)
        return grad_a, grad_b if is_var(b) else None


def _dims(dim) -> tuple[int, ...]:
    return tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)


SUM, SUM_TO, EXPAND, RESHAPE, PERMUTE = Sum(), SumTo(), Expand(), Reshape(), Permute()
GATHER, SCATTER_ADD, MATMUL, CAT, NARROW = Gather(), ScatterAdd(), MatMul(), Concat(), Narrow()
COLUMNS = Columns()
INDEX_SELECT, TAKE_LAST, SCATTER_LAST = IndexSelect(), TakeLast(), ScatterLast()
CUMSUM, REVERSE_CUMSUM, LOGSUMEXP, LOG_SOFTMAX = (
    CumSum(),
    ReverseCumSum(),
    LogSumExp(),
    LogSoftmax(),
)
LOGCUMSUMEXP, REVERSE_LOGCUMSUMEXP = LogCumSumExp(), ReverseLogCumSumExp()
CHOLESKY, TRIANGULAR_SOLVE = Cholesky(), TriangularSolve()
CHAIN_LOGSUMEXP, CHAIN_MARGINALS = ChainLogSumExp(), ChainMarginals()


def reshape(x: Value, shape: tuple[int, ...]) -> Value:
    if shape_of(x) == tuple(shape):
        return x
    return (
        x.tape.apply(RESHAPE, x, shape=tuple(shape))
        if is_var(x)
        else torch.as_tensor(x).reshape(shape)
    )


def sum_all(x: Value) -> Value:
    """Sum over every per-chain dimension: a per-chain scalar."""
    if not is_var(x):
        return torch.as_tensor(x, dtype=torch.float64).sum()
    return x if x.ndim == 0 else x.tape.apply(SUM, x)
