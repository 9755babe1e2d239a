"""The operations that passes emit, added to the graph IR's call allow-list (``ppl.ir.ops``).

Each is a small pure function of tensors (and of distributions / constraints given as
arguments), so the interpreter, the code generator and the text form treat it like any
torch op:

=============================  ===============================================================
``ppl.biject_to(u, s)``        ``biject_to(support)(u)``; ``s`` is a constraint, or a
                               distribution whose ``.support`` is used (random bounds)
``ppl.log_abs_det_jacobian``   ``(u, y, s)``: log|det J| of that bijection at ``u``
``ppl.log_prob(d, x, scale)``  ``d.log_prob(x)`` (times ``scale`` unless None), not summed
``ppl.expand_right(x, shape)`` expand the rightmost dims to ``shape``, keeping extra leading
                               (enumeration) dims
``ppl.contract_enumerated``    the log marginal of enumerated discrete sites (see
                               ``ppl.passes.contraction``)
``ppl.chain_logsumexp(F, s)``  the log marginal of a discrete chain summed out of a scan
                               (see ``ppl.passes.chains``)
=============================  ===============================================================

    >>> import torch
    >>> from torch.distributions import constraints
    >>> biject(torch.tensor(0.0), constraints.positive)
    tensor(1.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.distributions import Distribution, biject_to
from torch.distributions.constraints import Constraint

from ppl.ir import ops as _ir_ops
from ppl.trace import site_log_prob

from .chains import chain_logsumexp
from .contraction import contract_enumerated


def _support(s: Constraint | Distribution) -> Constraint:
    return s.support if isinstance(s, Distribution) else s


def biject(u: torch.Tensor, support: Constraint | Distribution) -> torch.Tensor:
    """The constrained value ``biject_to(support)(u)``."""
    return biject_to(_support(support))(u)


def log_abs_det_jacobian(
    u: torch.Tensor, y: torch.Tensor, support: Constraint | Distribution
) -> torch.Tensor:
    """log|det dy/du| of ``biject_to(support)`` at ``u`` (``y`` its image), per batch element."""
    return biject_to(_support(support)).log_abs_det_jacobian(u, y)


def log_prob(dist: Distribution, value: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """``dist.log_prob(value)`` (not summed), times ``scale`` when given: the site log-prob
    of ``ppl.trace.site_log_prob``, as an op."""
    return site_log_prob(dist, value, scale)


def expand_right(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``x.expand(shape)`` aligned on the right: leading dims beyond ``len(shape)`` are kept.

    A traced ``Tensor.expand`` is specialised to the shapes seen while tracing; when
    enumeration adds dims on the left, this form still broadcasts the rightmost ones.
    """
    shape = tuple(shape)
    extra = x.dim() - len(shape)
    return x.expand(tuple(x.shape[:extra]) + shape) if extra > 0 else x.expand(shape)


OPS: dict[str, Any] = {
    "ppl.biject_to": biject,
    "ppl.log_abs_det_jacobian": log_abs_det_jacobian,
    "ppl.log_prob": log_prob,
    "ppl.expand_right": expand_right,
    "ppl.contract_enumerated": contract_enumerated,
    "ppl.chain_logsumexp": chain_logsumexp,
}


def register() -> None:
    """Add the ops to ``ppl.ir.ops.PPL_OPS`` (idempotent) and refresh its lookup tables."""
    missing = {k: v for k, v in OPS.items() if _ir_ops.PPL_OPS.get(k) is not v}
    if missing:
        _ir_ops.PPL_OPS.update(missing)
        _ir_ops._tables.cache_clear()


register()
