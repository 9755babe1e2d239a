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

import torch
from torch.distributions import biject_to, constraints

from ppl.stdlib import constraints as ppl_constraints

from .prims import CAT, CUMSUM, NARROW, SUM, exp, log, logsigmoid, sigmoid
from .tape import Unsupported, Value, Var

__all__ = ["base_support", "unconstrain", "unconstrained_shape"]


ELEMENTWISE_SUPPORTS = (
    type(constraints.real),
    constraints.greater_than,
    constraints.greater_than_eq,
    constraints.less_than,
    constraints.interval,
    constraints.half_open_interval,
)


def base_support(support: constraints.Constraint) -> constraints.Constraint:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support


ORDERED = type(ppl_constraints.ordered)
POSITIVE_ORDERED = type(ppl_constraints.positive_ordered)  # a subclass: test it first
SIMPLEX = type(constraints.simplex)


def unconstrained_shape(support: constraints.Constraint, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of the unconstrained block for a value of ``shape``: elementwise and ordered
    bijectors keep it, stick-breaking drops one entry of the last dim (asking torch's
    ``inverse_shape`` would import its symbolic-shape stack)."""
    base = base_support(support)
    if isinstance(base, (*ELEMENTWISE_SUPPORTS, ORDERED)):
        return tuple(shape)
    if isinstance(base, SIMPLEX):
        return (*shape[:-1], shape[-1] - 1)
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
    if isinstance(support, (constraints.interval, constraints.half_open_interval)):
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


def _shifted(bound, positive: Value, sign: float) -> Value:
    if isinstance(bound, (int, float)) and bound == 0 and sign > 0:
        return positive
    return bound + sign * positive
