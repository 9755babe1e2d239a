"""The operations a family's tape rule is written with (the ``ops`` of ``Family.log_density``).

A rule in :mod:`ppl.stdlib.log_densities` receives this module as ``ops`` and calls only
what is listed in ``__all__``. Every operation takes tape ``Var`` s or constants (tensors,
floats) alike: with no ``Var`` among its arguments it is evaluated at once, so the terms of
a rule that do not depend on the position fold into build-time constants. Structural
operations take ``dim=-1`` style dimensions of the per-chain shape.

    >>> import torch
    >>> from ppl.inference.lowering.tape import ops
    >>> from ppl.inference.lowering.tape.tape import Tape
    >>> x = Tape().input("x", (3,))
    >>> ops.sum_last(ops.log(x)).shape, float(ops.sum_last(ops.exp(torch.zeros(3))))
    ((), 3.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ppl.shapes import broadcast_shapes

from . import prims as P
from .prims import (
    exp,
    expm1,
    lgamma,
    log,
    log1p,
    logsigmoid,
    sigmoid,
    softplus,
    square,
    where,
)
from .tape import Tape, Unsupported, Value, is_var, shape_of

__all__ = [
    "Unsupported",
    "abs",
    "broadcast_to",
    "cat",
    "cholesky",
    "cholesky_log_diagonal",
    "compare",
    "cos",
    "diagonal",
    "exp",
    "expm1",
    "broadcast_source",
    "is_var",
    "lgamma",
    "log",
    "log1mexp",
    "log1p",
    "log_i0",
    "log_ndtr",
    "log_softmax",
    "logaddexp",
    "logsigmoid",
    "logsumexp",
    "matmul",
    "narrow",
    "reshape",
    "shape_of",
    "sigmoid",
    "softplus",
    "solve_triangular",
    "square",
    "sum_last",
    "take_last",
    "transpose",
    "where",
]


def _tape(values: Sequence[Any]) -> Tape | None:
    return next((v.tape for v in values if is_var(v)), None)


def _apply(prim: P.Prim, *args: Value, **attrs: Any) -> Value:
    """``prim`` recorded on the tape of its ``Var`` arguments, or evaluated on constants."""
    tape = _tape(args)
    return tape.apply(prim, *args, **attrs) if tape else prim.evaluate(*args, **attrs)


def abs(x: Value) -> Value:
    return _apply(P.ABS, x)


def compare(op: str, a: Value, b: Value) -> Value:
    """``torch.<op>(a, b)`` for ``op`` in lt, le, gt, ge, eq, ne (a boolean value)."""
    return _apply(P.COMPARISONS[op], a, b)


def sum_last(x: Value) -> Value:
    """``x.sum(-1)``."""
    if is_var(x):
        return x.tape.apply(P.SUM, x, dims=(-1,))
    return torch.as_tensor(x, dtype=torch.float64).sum(-1)


def log_softmax(x: Value) -> Value:
    """``torch.log_softmax(x, -1)``."""
    if is_var(x):
        return x.tape.apply(P.LOG_SOFTMAX, x, dim=-1)
    return torch.log_softmax(torch.as_tensor(x, dtype=torch.float64), -1)


def matmul(a: Value, b: Value) -> Value:
    """``a @ b`` (at most one side a per-chain matrix; see ``prims.MatMul``)."""
    return _apply(P.MATMUL, a, b)


def cholesky(x: Value) -> Value:
    """The lower Cholesky factor of a per-chain matrix (NaN where it is not positive
    definite: a divergence, as ``prims.Cholesky`` says)."""
    return _apply(P.CHOLESKY, x)


def solve_triangular(a: Value, b: Value, upper: bool, left: bool = True) -> Value:
    """``X`` with ``a X = b`` (``left``) or ``X a = b``, for triangular per-chain matrices
    ``a`` and per-chain matrices ``b``."""
    return _apply(P.TRIANGULAR_SOLVE, a, b, upper=upper, left=left)


def transpose(x: Value) -> Value:
    """The transpose of a per-chain matrix."""
    return P.transpose(x)


def reshape(x: Value, shape: Sequence[int]) -> Value:
    return P.reshape(x, tuple(shape))


def narrow(x: Value, dim: int, start: int, length: int) -> Value:
    """``x.narrow(dim, start, length)``."""
    if not is_var(x):
        return torch.as_tensor(x, dtype=torch.float64).narrow(dim, start, length)
    return x.tape.apply(P.NARROW, x, dim=dim % x.ndim, start=start, length=length)


def cat(parts: Sequence[Value], dim: int = -1) -> Value:
    """``torch.cat(parts, dim)``; every part has the full rank."""
    tape = _tape(parts)
    if tape is None:
        return torch.cat([torch.as_tensor(p, dtype=torch.float64) for p in parts], dim)
    rank = len(shape_of(next(p for p in parts if is_var(p))))
    return tape.apply(P.CAT, list(parts), dim=dim % rank)


def take_last(table: Value, index: Value) -> Value:
    """``table[..., index]`` for an integer ``index`` over the last dim: a gather of fixed
    positions for a constant index, a per-chain gather for per-chain data."""
    if is_var(index):
        return index.tape.apply(P.TAKE_LAST, table, index)
    if not is_var(table):
        return P.TAKE_LAST.evaluate(table, index)
    shape = shape_of(table)
    batch = broadcast_shapes(shape[:-1], tuple(index.shape))
    flat = torch.arange(math.prod(shape)).reshape(shape).expand(*batch, shape[-1])
    positions = torch.gather(flat, -1, index.long().expand(batch).unsqueeze(-1)).squeeze(-1)
    return table.tape.apply(P.GATHER, table, positions=positions)


def cos(x: Value) -> Value:
    return _apply(P.COS, x)


def log_ndtr(x: Value) -> Value:
    """``log Phi(x)``, the standard normal CDF, accurate far into the lower tail."""
    return _apply(P.LOG_NDTR, x)


def log1mexp(x: Value) -> Value:
    """``log(1 - exp(x))`` for ``x <= 0``."""
    return _apply(P.LOG1MEXP, x)


def logaddexp(a: Value, b: Value) -> Value:
    return _apply(P.LOGADDEXP, a, b)


def log_i0(x: Value) -> Value:
    """``log I0(x)``, the modified Bessel function, as torch's ``VonMises`` computes it."""
    return _apply(P.LOG_I0, x)


def logsumexp(x: Value, dim: int = -1) -> Value:
    """``torch.logsumexp(x, dim)``."""
    if not is_var(x):
        return torch.logsumexp(torch.as_tensor(x, dtype=torch.float64), dim)
    return x.tape.apply(P.LOGSUMEXP, x, dim=dim % x.ndim)


def broadcast_to(x: Value, shape: Sequence[int]) -> Value:
    """``x`` expanded to ``shape`` (a no-op when it has it already)."""
    if not is_var(x):
        return torch.broadcast_to(torch.as_tensor(x, dtype=torch.float64), tuple(shape))
    return x if x.shape == tuple(shape) else x.tape.apply(P.EXPAND, x, shape=tuple(shape))


def broadcast_source(x: Value) -> Value:
    """The value ``x`` was expanded from (``x`` itself when it is no expansion): e.g. the one
    matrix a plate broadcast to each of its elements, so a rule can use it once."""
    while is_var(x) and (instr := x.tape.defining(x)) is not None and instr.prim is P.EXPAND:
        x = instr.args[0]
    return x


def diagonal(x: Value) -> Value:
    """The diagonals of the matrices in the last two dims: ``x.diagonal(dim1=-2, dim2=-1)``."""
    if not is_var(x):
        return torch.as_tensor(x, dtype=torch.float64).diagonal(dim1=-2, dim2=-1)
    *batch, n, _ = x.shape
    cells = torch.arange(n) * (n + 1)
    starts = torch.arange(math.prod(batch), dtype=torch.int64).reshape(batch) * (n * n)
    return x.tape.apply(P.GATHER, x, positions=starts.unsqueeze(-1) + cells)


def cholesky_log_diagonal(x: Value) -> Value:
    """``log`` of the diagonal of the lower Cholesky factor of each matrix in the last two
    dims (half of ``log det x`` each): the factor unrolled entry by entry, so a batch of
    matrices is as many elementwise operations (a matrix that is not positive definite
    gives NaN)."""
    if not is_var(x):
        return torch.linalg.cholesky(torch.as_tensor(x, dtype=torch.float64)).diagonal(
            dim1=-2, dim2=-1).log()
    n = x.shape[-1]
    entry = [[narrow(narrow(x, -2, i, 1), -1, j, 1) for j in range(n)] for i in range(n)]
    factor: list[list[Value]] = [[0.0] * n for _ in range(n)]
    logs = []
    for j in range(n):
        pivot = entry[j][j] - sum((square(factor[j][k]) for k in range(j)), 0.0)
        logs.append(0.5 * log(pivot))
        factor[j][j] = exp(logs[-1])
        for i in range(j + 1, n):
            dot = sum((factor[i][k] * factor[j][k] for k in range(j)), 0.0)
            factor[i][j] = (entry[i][j] - dot) / factor[j][j]
    return reshape(cat(logs, -1), x.shape[:-1])
