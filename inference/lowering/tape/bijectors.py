"""Unconstraining bijectors written in tape primitives.

``unconstrain(support, u)`` maps an unconstrained ``u`` into a support exactly as
``torch.distributions.biject_to(support)`` does and returns the value and its ``log|det J|``
terms, so the flat parameterization matches the autograd path; ``unconstrained_shape`` gives
the shape of the unconstrained block of a value.

    >>> from torch.distributions import constraints
    >>> unconstrained_shape(constraints.simplex, (3,))
    (2,)
"""

from __future__ import annotations

import math

import torch
from torch.distributions import biject_to, constraints

from ppl.stdlib import constraints as ppl_constraints

from .prims import (
    ABS,
    CAT,
    COMPARISONS,
    CUMSUM,
    GATHER,
    LOG_2,
    NARROW,
    SCATTER_ADD,
    SUM,
    TANH,
    exp,
    log,
    log1p,
    logsigmoid,
    reshape,
    sigmoid,
    sign,
    softplus,
    square,
    where,
)
from .tape import Unsupported, Value, Var

__all__ = ["INTERVALS", "base_support", "unconstrain", "unconstrained_shape"]


ELEMENTWISE_SUPPORTS = (
    type(constraints.real),
    constraints.greater_than,
    constraints.greater_than_eq,
    constraints.less_than,
    constraints.interval,
    constraints.half_open_interval,
)


def base_support(support: constraints.Constraint) -> constraints.Constraint:
    """The support whose bijector maps ``support``: ``independent`` and a mixture's support
    map as their base does (``biject_to`` of ``ppl.stdlib`` unwraps them alike)."""
    while isinstance(support, (constraints.independent, MIXTURE)):
        support = support.base_constraint
    return support


INTERVALS = (constraints.interval, constraints.half_open_interval)
MIXTURE = ppl_constraints.MixtureSameFamilyConstraint
ORDERED = type(ppl_constraints.ordered)
POSITIVE_ORDERED = type(ppl_constraints.positive_ordered)  # a subclass: test it first
SIMPLEX = type(constraints.simplex)
CORR_CHOLESKY = type(constraints.corr_cholesky)
LOWER_CHOLESKY = type(constraints.lower_cholesky)
POSITIVE_DEFINITE = type(constraints.positive_definite)


def unconstrained_shape(support: constraints.Constraint, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of the unconstrained block for a value of ``shape``: elementwise and ordered
    bijectors keep it, stick-breaking drops one entry of the last dim (asking torch's
    ``inverse_shape`` would import its symbolic-shape stack)."""
    base = base_support(support)
    if isinstance(base, (*ELEMENTWISE_SUPPORTS, ORDERED)):
        return tuple(shape)
    if isinstance(base, SIMPLEX):
        return (*shape[:-1], shape[-1] - 1)
    if isinstance(base, CORR_CHOLESKY):
        return (*shape[:-2], shape[-1] * (shape[-1] - 1) // 2)
    if isinstance(base, (LOWER_CHOLESKY, POSITIVE_DEFINITE)):
        return (*shape[:-2], shape[-1] * (shape[-1] + 1) // 2)
    return tuple(biject_to(support).inverse_shape(shape))


def unconstrain(
    support: constraints.Constraint, u: Value, bounds: tuple | None = None
) -> tuple[Value, list]:
    """``(biject_to(support)(u), log|det J| terms)``; ``bounds`` overrides an interval's
    ``(low, high)`` when they are batched values (e.g. ``Uniform`` with random bounds)."""
    support = base_support(support)
    if isinstance(support, type(constraints.real)):
        return u, []
    if isinstance(support, (constraints.greater_than, constraints.greater_than_eq)):
        return _shifted(support.lower_bound, exp(u), 1.0), [u]
    if isinstance(support, constraints.less_than):
        return _shifted(support.upper_bound, exp(u), -1.0), [u]
    if isinstance(support, INTERVALS):
        low, high = bounds if bounds is not None else (support.lower_bound, support.upper_bound)
        width = high - low
        value = low + width * sigmoid(u)
        return value, [log(width), logsigmoid(u), logsigmoid(-u)]
    if isinstance(support, POSITIVE_ORDERED):
        return u.tape.apply(CUMSUM, exp(u), dim=u.ndim - 1), [u]
    if isinstance(support, ORDERED):
        return _ordered(u)
    if isinstance(support, SIMPLEX):
        return _stick_breaking(u)
    if isinstance(support, CORR_CHOLESKY):
        return _corr_cholesky(u)
    if isinstance(support, LOWER_CHOLESKY):
        return _lower_cholesky(u)
    if isinstance(support, POSITIVE_DEFINITE):
        return _positive_definite(u)
    raise Unsupported(f"no generated bijector for support {support}")


def _ordered(u: Var) -> tuple[Value, list]:
    """``OrderedTransform`` along the last dim: ``cumsum([u_0, exp(u_1), ...])``, whose
    ``log|det J|`` is the sum of ``u_1, ...`` (``u`` with its first entry masked out, a term
    of ``u``'s own shape)."""
    tape, last, n = u.tape, u.ndim - 1, u.shape[-1]
    if n == 1:
        return u, []
    head = tape.apply(NARROW, u, dim=last, start=0, length=1)
    tail = tape.apply(NARROW, u, dim=last, start=1, length=n - 1)
    steps = tape.apply(CAT, [head, exp(tail)], dim=last)
    mask = torch.ones(n, dtype=torch.float64)
    mask[0] = 0.0
    return tape.apply(CUMSUM, steps, dim=last), [u * mask]


def _stick_breaking(u: Var) -> tuple[Value, list]:
    """torch's ``StickBreakingTransform`` along the last dim, in log space: with
    ``s = u - log(n - i)``, ``z = sigmoid(s)`` and ``r = cumsum(log(1 - z))``, the value is
    ``exp([log z_i + r_{i-1}, ..., r_{n-1}])`` (``r_{-1} = 0``) and ``log|det J|`` is
    ``sum(log z + r)`` (torch's ``-s + logsigmoid(s) + log y[:-1]``, simplified)."""
    tape, last, n = u.tape, u.ndim - 1, u.shape[-1]
    shifted = u - torch.arange(n, 0, -1, dtype=torch.float64).log()
    log_z, log_rest = logsigmoid(shifted), logsigmoid(-shifted)
    remaining = tape.apply(CUMSUM, log_rest, dim=last)
    leftover = tape.apply(SUM, log_rest, dims=(last,), keepdim=True)
    log_value = tape.apply(CAT, [log_z + (remaining - log_rest), leftover], dim=last)
    return exp(log_value), [log_z, remaining]


def _triangle_positions(batch: tuple[int, ...], d: int, diagonal: bool) -> torch.Tensor:
    """Flat positions in a ``(*batch, d, d)`` tensor of each matrix's strictly lower
    triangle, row by row (then its diagonal, with ``diagonal``): where the entries of an
    unconstrained ``(*batch, n)`` block go."""
    rows, cols = torch.tril_indices(d, d, offset=-1)
    cells = rows * d + cols
    if diagonal:
        cells = torch.cat([cells, torch.arange(d) * (d + 1)])
    starts = torch.arange(math.prod(batch), dtype=torch.int64).reshape(batch) * (d * d)
    return starts.unsqueeze(-1) + cells


def _corr_cholesky(u: Var) -> tuple[Value, list]:
    """torch's ``CorrCholeskyTransform``: ``r = tanh(u)`` (clamped off +-1 as torch does)
    fills the strict lower triangle row by row, and row ``i`` is ``r_ij`` times
    ``sqrt(prod_{k<j} (1 - r_ik^2))``, with that product over the whole row on the diagonal.
    The products are running sums of ``log(1 - r^2)``, which also give ``log|det J|``: the
    tanh term ``log(1 - tanh(u)^2)`` of each entry and half the running sum at each
    entry two or more left of the diagonal (torch's ``1 - cumsum(y^2)``, in log space)."""
    tape, batch, n = u.tape, u.shape[:-1], u.shape[-1]
    d = round(0.5 + math.sqrt(0.25 + 2 * n))
    limit = 1.0 - torch.finfo(torch.float64).eps
    t = tape.apply(TANH, u)
    clamped = tape.apply(COMPARISONS["gt"], tape.apply(ABS, t), limit)
    r_entries = where(clamped, sign(t) * limit, t)
    positions = _triangle_positions(batch, d, diagonal=False)
    r = tape.apply(SCATTER_ADD, r_entries, positions=positions, shape=(*batch, d, d))
    log_rest = log1p(-square(r))  # 0 off the strict lower triangle
    running = tape.apply(CUMSUM, log_rest, dim=len(batch) + 1)
    value = (r + torch.eye(d, dtype=torch.float64)) * exp(0.5 * (running - log_rest))
    log_det = [-2.0 * (u + softplus(-2.0 * u) - LOG_2)]
    rows, cols = torch.tril_indices(d, d, offset=-1)
    two_left = (cols <= rows - 2).to(torch.float64)
    if bool(two_left.any()):
        log_det.append(0.5 * tape.apply(GATHER, running, positions=positions) * two_left)
    return value, log_det


def _lower_cholesky(u: Var) -> tuple[Var, list]:
    """ppl's ``LowerCholeskyTransform``: the first ``d(d-1)/2`` entries fill the strict
    lower triangle row by row, the exponentials of the last ``d`` the diagonal;
    ``log|det J|`` is the sum of those last ``d`` (``u`` masked)."""
    tape, batch, n = u.tape, u.shape[:-1], u.shape[-1]
    last = u.ndim - 1
    d = round((math.sqrt(8 * n + 1) - 1) / 2)
    m = n - d
    diag = exp(tape.apply(NARROW, u, dim=last, start=m, length=d))
    entries = diag if m == 0 else tape.apply(
        CAT, [tape.apply(NARROW, u, dim=last, start=0, length=m), diag], dim=last)
    positions = _triangle_positions(batch, d, diagonal=True)
    factor = tape.apply(SCATTER_ADD, entries, positions=positions, shape=(*batch, d, d))
    on_diagonal = torch.zeros(n, dtype=torch.float64)
    on_diagonal[m:] = 1.0
    return factor, [u * on_diagonal]


def _positive_definite(u: Var) -> tuple[Value, list]:
    """ppl's ``biject_to(positive_definite)``: ``L L^T`` of the lower Cholesky factor
    above (products summed over the last dim, so batches of matrices need no batched matrix
    product); ``log|det J|`` adds ``d log 2 + sum_i (d - i) log L_ii`` to the factor's."""
    factor, _ = _lower_cholesky(u)
    tape, batch, n, d = u.tape, u.shape[:-1], u.shape[-1], factor.shape[-1]
    rows = reshape(factor, (*batch, d, 1, d))
    columns = reshape(factor, (*batch, 1, d, d))
    value = tape.apply(SUM, rows * columns, dims=(len(batch) + 2,), keepdim=False)
    weights, log_two = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    weights[n - d:] = torch.arange(d, 0, -1, dtype=torch.float64) + 1.0
    log_two[n - d:] = LOG_2
    return value, [u * weights, log_two]


def _shifted(bound, positive: Value, sign: float) -> Value:
    if isinstance(bound, (int, float)) and bound == 0 and sign > 0:
        return positive
    return bound + sign * positive
