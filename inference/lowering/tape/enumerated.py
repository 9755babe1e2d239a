"""Enumerated graphs on the tape: the tensor operations ``ppl.passes.contraction`` runs.

After ``enumerate_discrete`` a graph sums its discrete sites out with one
``ppl.contract_enumerated`` call. Its plan depends only on the graph's structure, so the tape
replays it with :class:`TapeOps`: each step becomes tape primitives (``add``, ``logsumexp``
over one dim, ``sum`` over plate dims) whose VJPs the tape already has, and factors that do
not depend on the position fold to constants at build time.

    >>> import torch
    >>> from ppl.passes import contract_enumerated
    >>> from ppl.inference.lowering.tape.tape import Tape
    >>> tape = Tape()
    >>> like = tape.input("like", (2,))
    >>> prior = torch.tensor([0.3, 0.7]).log()
    >>> log_z = contract_enumerated((prior, like), ((), ()), ((0,), (0,)), (-1,), ((),),
    ...                             ops=TapeOps)
    >>> log_z.shape, [i.prim.name for i in tape.instrs]
    ((), ['add', 'logsumexp', 'sum'])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import prims as P
from .tape import Value, is_var, shape_of


class TapeOps:
    """``ppl.passes.contraction.TorchOps`` on tape values (a ``Var`` or a constant)."""

    shape = staticmethod(shape_of)
    reshape = staticmethod(P.reshape)

    @staticmethod
    def add(a: Value, b: Value) -> Value:
        tape = a.tape if is_var(a) else b.tape if is_var(b) else None
        return tape.apply(P.ADD, a, b) if tape else torch.as_tensor(a) + torch.as_tensor(b)

    @staticmethod
    def sum(x: Value, dims: Sequence[int]) -> Value:
        if not is_var(x):
            return torch.as_tensor(x).sum(tuple(dims), keepdim=True)
        return x.tape.apply(P.SUM, x, dims=tuple(d % x.ndim for d in dims), keepdim=True)

    @staticmethod
    def logsumexp(x: Value, dim: int) -> Value:
        if not is_var(x):
            return torch.logsumexp(torch.as_tensor(x), dim, keepdim=True)
        return x.tape.apply(P.LOGSUMEXP, x, dim=(dim % x.ndim,), keepdim=True)

    @staticmethod
    def total(x: Value) -> Value:
        return P.sum_all(x)
