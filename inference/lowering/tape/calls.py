"""Torch calls of a graph, replayed on the tape: one rule per supported operation.

A ``call`` node whose arguments are all constants is evaluated by the real torch function at
build time; one with a batched argument goes through ``CALL_RULES[name]``, where ``name`` is
the call target without its namespace (``Tensor.add``, ``torch.add`` and ``Tensor.__add__``
are all ``add``; reflected dunders swap their operands). A target without a rule raises
``Unsupported`` and the model falls back to the autograd path.

    >>> from ppl.inference.lowering.tape.tape import Tape
    >>> tape = Tape()
    >>> x = tape.input("x", (3,))
    >>> call_rule("Tensor.__rsub__")(tape, x, 1.0).shape
    (3,)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ppl.shapes import broadcast_shapes

from . import prims as P
from .tape import Unsupported, Value, contains_var, is_var, shape_of

Rule = Callable[..., Value]


def _binary(prim: P.Prim) -> Rule:
    return lambda tape, a, b, **kw: tape.apply(prim, a, b) if not kw else _unsupported_kwargs(kw)


def _unary(prim: P.Prim) -> Rule:
    return lambda tape, a, **kw: tape.apply(prim, a) if not kw else _unsupported_kwargs(kw)


def _unsupported_kwargs(kwargs: dict) -> Value:
    raise Unsupported(f"keyword arguments {sorted(kwargs)}")


def _dims_of(dim, ndim: int) -> tuple[int, ...] | None:
    if dim is None:
        return None
    return tuple(d % ndim for d in (dim if isinstance(dim, (tuple, list)) else (dim,)))


def _sum(tape, x, dim=None, keepdim=False, dtype=None):
    return tape.apply(P.SUM, x, dims=_dims_of(dim, x.ndim), keepdim=keepdim)


def _mean(tape, x, dim=None, keepdim=False):
    dims = _dims_of(dim, x.ndim)
    count = math.prod(x.shape) if dims is None else math.prod(x.shape[d] for d in dims)
    return _sum(tape, x, dim, keepdim) / float(count)


def _reshape_to(tape, x, *shape):
    shape = (
        shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)) else shape
    )
    target = tuple(torch.empty(x.shape, dtype=torch.float64).reshape(shape).shape)
    return P.reshape(x, target)


def _static_shape_op(method: str) -> Rule:
    """An op that only changes the shape (unsqueeze, squeeze, flatten...): a reshape whose
    target is computed once from the per-chain shape."""

    def rule(tape, x, *args, **kwargs):
        target = tuple(
            getattr(torch.empty(x.shape, dtype=torch.float64), method)(*args, **kwargs).shape
        )
        return P.reshape(x, target)

    return rule


def _expand(tape, x, *sizes):
    sizes = (
        sizes[0] if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, torch.Size)) else sizes
    )
    target = tuple(torch.empty(x.shape, dtype=torch.float64).expand(tuple(sizes)).shape)
    return x if target == x.shape else tape.apply(P.EXPAND, x, shape=target)


def _broadcast_tensors(tape, *values):
    shape = broadcast_shapes(*(shape_of(v) for v in values))
    return tuple(
        _expand(tape, v, shape) if is_var(v) else torch.broadcast_to(torch.as_tensor(v), shape)
        for v in values
    )


def _getitem(tape, x, index):
    if is_var(index) and index.dtype in (torch.int64, torch.int32):  # per-chain integers
        if len(shape_of(x)) == 1:
            return tape.apply(P.TAKE_LAST, x, index)  # a vector (latent or data) at index
        if not is_var(x):
            return tape.apply(P.INDEX_SELECT, x, index)  # rows of a data table
        if not shape_of(index):  # a row of a per-chain table (trans[z]): the rows dim last
            rows_last = tape.apply(P.PERMUTE, x, perm=(*range(1, x.ndim), 0))
            return tape.apply(P.TAKE_LAST, rows_last, index)
    if contains_var(index):
        raise Unsupported("indexing by a batched value")
    if not is_var(x):
        return x[index]
    positions = torch.arange(math.prod(x.shape)).reshape(x.shape)[index]
    return tape.apply(P.GATHER, x, positions=positions)


def _flip(tape, x, dims):
    """``torch.flip``: a gather of the per-chain elements in reversed order along ``dims``."""
    positions = torch.arange(math.prod(x.shape)).reshape(x.shape).flip(_dims_of(dims, x.ndim))
    return tape.apply(P.GATHER, x, positions=positions)


def _diag_embed(tape, x, offset=0, dim1=-2, dim2=-1):
    """``torch.diag_embed`` (main diagonal, last two dims): ``x[..., :, None] * I``."""
    if (offset, dim1 % (x.ndim + 1), dim2 % (x.ndim + 1)) != (0, x.ndim - 1, x.ndim):
        raise Unsupported(f"diag_embed with offset={offset}, dim1={dim1}, dim2={dim2}")
    n = x.shape[-1]
    return P.reshape(x, (*x.shape, 1)) * torch.eye(n, dtype=torch.float64)


def _permute(tape, x, *dims):
    dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    return tape.apply(P.PERMUTE, x, perm=tuple(d % x.ndim for d in dims))


def _transpose(tape, x, dim0=0, dim1=1):
    perm = list(range(x.ndim))
    perm[dim0 % x.ndim], perm[dim1 % x.ndim] = perm[dim1 % x.ndim], perm[dim0 % x.ndim]
    return tape.apply(P.PERMUTE, x, perm=tuple(perm))


def _attr(tape, x, name):
    if name == "mT" or (name == "T" and x.ndim == 2):
        return _transpose(tape, x, -1, -2)
    raise Unsupported(f"tensor attribute {name} of per-chain shape {x.shape}")


def _cat(tape, parts, dim=0):
    parts = [p if is_var(p) else torch.as_tensor(p, dtype=torch.float64) for p in parts]
    return tape.apply(P.CAT, list(parts), dim=dim % len(shape_of(parts[0])))


def _stack(tape, parts, dim=0):
    rank = len(shape_of(parts[0])) + 1
    d = dim % rank
    expanded = [
        P.reshape(p, shape_of(p)[:d] + (1,) + shape_of(p)[d:])
        if is_var(p)
        else torch.as_tensor(p, dtype=torch.float64).unsqueeze(d)
        for p in parts
    ]
    return _cat(tape, expanded, d)


def _cumsum(tape, x, dim, dtype=None):
    return tape.apply(P.CUMSUM, x, dim=dim % x.ndim)


def _logcumsumexp(tape, x, dim):
    return tape.apply(P.LOGCUMSUMEXP, x, dim=dim % x.ndim)


def _cholesky(tape, x, upper=False):
    if x.ndim != 2:
        raise Unsupported(f"cholesky of per-chain shape {x.shape}")
    factor = tape.apply(P.CHOLESKY, x)
    return P.transpose(factor) if upper else factor


def _cholesky_ex(tape, x, upper=False, check_errors=False):
    """``(L, info)`` with ``info`` all zeros: a failed factorization is NaN in ``L``."""
    return _cholesky(tape, x, upper), torch.zeros(x.shape[:-2], dtype=torch.int32)


def _solve_triangular(tape, a, b, *, upper, left=True, unitriangular=False):
    if unitriangular or len(shape_of(a)) != 2 or len(shape_of(b)) != 2:
        raise Unsupported(
            f"solve_triangular of per-chain shapes {shape_of(a)}, {shape_of(b)}"
            + (" (unitriangular)" if unitriangular else "")
        )
    return tape.apply(P.TRIANGULAR_SOLVE, a, b, upper=upper, left=left)


def _logsumexp(tape, x, dim, keepdim=False):
    return tape.apply(P.LOGSUMEXP, x, dim=_dims_of(dim, x.ndim), keepdim=keepdim)


def _log_softmax(tape, x, dim, dtype=None):
    return tape.apply(P.LOG_SOFTMAX, x, dim=dim % x.ndim)


def _softmax(tape, x, dim, dtype=None):
    return P.exp(_log_softmax(tape, x, dim))


def _clamp(tape, x, min=None, max=None):
    """``torch.clamp``: the bound where ``x`` passes it (no gradient there), as torch's."""
    for bound, beyond in ((min, "lt"), (max, "gt")):
        if bound is not None:
            x = P.where(tape.apply(P.COMPARISONS[beyond], x, bound), bound, x)
    return x


def _to(tape, x, *args, **kwargs):
    """Float casts are no-ops (the potential runs in float64); anything else is refused."""
    target = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.dtype)), None)
    if target is None or target.is_floating_point:
        return x
    raise Unsupported(f"cast of a batched value to {target}")


def _where(tape, cond, a, b):
    """``torch.where``; the gradient flows to the branch each element takes (as torch's)."""
    return P.where(cond, a, b)


def _pow(tape, a, b):
    if isinstance(b, (int, float)) and b == 2:
        return tape.apply(P.SQUARE, a)
    return tape.apply(P.POW, a, b)


def _constant_like(fill: float | None) -> Rule:
    """``x.new_ones(size)``, ``torch.zeros_like(x)``...: a constant that depends on ``x`` only
    through its shape (``fill=None``: the value is the call's ``fill_value`` argument)."""

    def rule(tape, x, *args, **kwargs):
        kwargs.pop("dtype", None), kwargs.pop("device", None), kwargs.pop("requires_grad", None)
        args = list(args)
        size = shape_of(x) if not args or fill is None and len(args) == 1 else args.pop(0)
        value = fill if fill is not None else (args.pop(0) if args else kwargs.pop("fill_value"))
        return torch.full(tuple(size), float(value), dtype=torch.float64)

    return rule


_SWAPPED = {
    "radd": "add",
    "rsub": "sub",
    "rmul": "mul",
    "rtruediv": "truediv",
    "rdiv": "truediv",
    "rpow": "pow",
    "rmatmul": "matmul",
}

CALL_RULES: dict[str, Rule] = {
    "identity": lambda tape, x: x,
    "add": _binary(P.ADD),
    "sub": _binary(P.SUB),
    "mul": _binary(P.MUL),
    "truediv": _binary(P.DIV),
    "div": _binary(P.DIV),
    "pow": _pow,
    "matmul": _binary(P.MATMUL),
    "mv": _binary(P.MATMUL),
    "mm": _binary(P.MATMUL),
    "dot": _binary(P.MATMUL),
    "neg": _unary(P.NEG),
    "negative": _unary(P.NEG),
    "exp": _unary(P.EXP),
    "log": _unary(P.LOG),
    "log1p": _unary(P.LOG1P),
    "expm1": _unary(P.EXPM1),
    "sqrt": _unary(P.SQRT),
    "square": _unary(P.SQUARE),
    "abs": _unary(P.ABS),
    "sigmoid": _unary(P.SIGMOID),
    "expit": _unary(P.SIGMOID),
    "logsigmoid": _unary(P.LOGSIGMOID),
    "softplus": _unary(P.SOFTPLUS),
    "tanh": _unary(P.TANH),
    "sin": _unary(P.SIN),
    "cos": _unary(P.COS),
    "reciprocal": _unary(P.RECIPROCAL),
    "lgamma": _unary(P.LGAMMA),
    "gammaln": _unary(P.LGAMMA),
    "digamma": _unary(P.DIGAMMA),
    "erf": _unary(P.ERF),
    "log_ndtr": _unary(P.LOG_NDTR),
    "logaddexp": _binary(P.LOGADDEXP),
    "sum": _sum,
    "mean": _mean,
    "reshape": _reshape_to,
    "view": _reshape_to,
    "flatten": _static_shape_op("flatten"),
    "unsqueeze": _static_shape_op("unsqueeze"),
    "squeeze": _static_shape_op("squeeze"),
    "expand": _expand,
    "broadcast_to": _expand,
    "broadcast_tensors": _broadcast_tensors,
    "getitem": _getitem,
    "permute": _permute,
    "flip": _flip,
    "diag_embed": _diag_embed,
    "transpose": _transpose,
    "t": _transpose,
    "attr": _attr,
    "cat": _cat,
    "concat": _cat,
    "stack": _stack,
    "cumsum": _cumsum,
    "logsumexp": _logsumexp,
    "logcumsumexp": _logcumsumexp,
    "cholesky": _cholesky,
    "cholesky_ex": _cholesky_ex,
    "solve_triangular": _solve_triangular,
    "log_softmax": _log_softmax,
    "softmax": _softmax,
    "new_ones": _constant_like(1.0),
    "new_zeros": _constant_like(0.0),
    "ones_like": _constant_like(1.0),
    "zeros_like": _constant_like(0.0),
    "full_like": _constant_like(None),
    "to": _to,
    "as_tensor": _to,
    "type_as": lambda tape, x, other: _to(tape, x, getattr(other, "dtype", None)),
    "double": lambda tape, x: x,
    "float": lambda tape, x: x,
    "where": _where,
    "clamp": _clamp,
    "clip": _clamp,
    **{op: _binary(prim) for op, prim in P.COMPARISONS.items()},
}


def call_rule(target: str) -> Rule:
    """The rule for call target ``target`` (e.g. ``"Tensor.__radd__"``), or ``Unsupported``."""
    name = target.rsplit(".", 1)[-1].strip("_")
    if name in _SWAPPED:
        rule = CALL_RULES[_SWAPPED[name]]
        return lambda tape, a, b, **kw: rule(tape, b, a, **kw)
    if name not in CALL_RULES:
        raise Unsupported(f"no batched rule for call {target!r}")
    return CALL_RULES[name]
