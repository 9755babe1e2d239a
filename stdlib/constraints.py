"""Constraints (supports and parameter domains) for ppl models.

torch's constraints are re-exported; ``ordered`` and ``positive_ordered``, which torch
lacks, are added (their bijectors live in :mod:`ppl.stdlib.transforms` and are registered
with ``biject_to`` / ``transform_to`` on import of ``ppl.stdlib``).

Names for the graph IR live in :mod:`ppl.registry` (``register_constraint``,
``describe_constraint``, ``make_constraint``, re-exported here): torch's constraints are
named there, and this module names its own on import.

    >>> import torch
    >>> from ppl.stdlib import constraints
    >>> constraints.describe_constraint(constraints.interval(0.0, 2.0))
    ('interval', (0.0, 2.0))
    >>> constraints.describe_constraint(constraints.ordered)
    ('ordered', ())
    >>> bool(constraints.ordered.check(torch.tensor([-1.0, 0.5, 2.0])))
    True
"""

from __future__ import annotations

import torch
from torch.distributions.constraints import (
    Constraint,
    MixtureSameFamilyConstraint,
    boolean,
    cat,
    corr_cholesky,
    dependent,
    dependent_property,
    greater_than,
    greater_than_eq,
    half_open_interval,
    independent,
    integer_interval,
    interval,
    is_dependent,
    less_than,
    lower_cholesky,
    lower_triangular,
    multinomial,
    nonnegative,
    nonnegative_integer,
    one_hot,
    positive,
    positive_definite,
    positive_integer,
    positive_semidefinite,
    real,
    real_vector,
    simplex,
    square,
    stack,
    symmetric,
    unit_interval,
)

from ppl.registry import constraint_names, describe_constraint, make_constraint, register_constraint

__all__ = [
    "Constraint",
    "MixtureSameFamilyConstraint",
    "boolean",
    "cat",
    "constraint_names",
    "corr_cholesky",
    "dependent",
    "dependent_property",
    "describe_constraint",
    "greater_than",
    "greater_than_eq",
    "half_open_interval",
    "independent",
    "integer_interval",
    "interval",
    "is_dependent",
    "less_than",
    "lower_cholesky",
    "lower_triangular",
    "make_constraint",
    "mixture_same_family",
    "multinomial",
    "nonnegative",
    "nonnegative_integer",
    "one_hot",
    "ordered",
    "positive",
    "positive_definite",
    "positive_integer",
    "positive_ordered",
    "positive_semidefinite",
    "real",
    "real_vector",
    "simplex",
    "square",
    "stack",
    "symmetric",
    "unit_interval",
]


class _Ordered(Constraint):
    """Real vectors (last dim) with strictly increasing entries."""

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        increasing = (value[..., 1:] > value[..., :-1]).all(-1)
        return increasing & (value == value).all(-1)


class _PositiveOrdered(_Ordered):
    """Strictly increasing vectors of positive reals."""

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return super().check(value) & (value > 0).all(-1)


ordered = _Ordered()
positive_ordered = _PositiveOrdered()
mixture_same_family = MixtureSameFamilyConstraint

register_constraint("ordered", ordered)
register_constraint("positive_ordered", positive_ordered)
