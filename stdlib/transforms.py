"""Bijectors that torch lacks, registered with ``biject_to`` and ``transform_to``.

* ``OrderedTransform``: R^n -> ordered vectors, ``y_0 = x_0``, ``y_i = y_{i-1} + exp(x_i)``;
* ``PositiveOrderedTransform``: R^n -> positive ordered vectors, ``y = cumsum(exp(x))``;
* ``LowerCholeskyTransform``: R^(d(d+1)/2) -> lower Cholesky factors (off-diagonal
  entries, then the log of the diagonal), the ``biject_to(lower_cholesky)`` that torch lacks;
* ``CholeskyOuterTransform``: L -> L L^T, so that ``biject_to(positive_definite)`` (e.g.
  the Wishart support) is their composition;
* the support of ``MixtureSameFamily`` maps with the bijector of its components' support.

Everything else (``interval`` with tensor bounds, ``simplex``, ``corr_cholesky``, ...) is
torch's own registration.

    >>> import torch
    >>> from torch.distributions import biject_to
    >>> from ppl.stdlib import constraints
    >>> t = biject_to(constraints.ordered)
    >>> bool(constraints.ordered.check(t(torch.randn(4))))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.distributions import biject_to, transform_to
from torch.distributions.constraint_registry import ConstraintRegistry
from torch.distributions.constraints import Constraint
from torch.distributions.transforms import ComposeTransform, Transform

from . import constraints


class OrderedTransform(Transform):
    """First coordinate free, then log-increments: R^n onto strictly increasing vectors."""

    domain = constraints.real_vector
    codomain = constraints.ordered
    bijective = True

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., :1], x[..., 1:].exp()], dim=-1).cumsum(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([y[..., :1], (y[..., 1:] - y[..., :-1]).log()], dim=-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Lower-triangular Jacobian with diagonal (1, exp(x_1), ..., exp(x_{n-1})).
        return x[..., 1:].sum(-1)


class PositiveOrderedTransform(Transform):
    """All log-increments: R^n onto strictly increasing vectors of positive reals."""

    domain = constraints.real_vector
    codomain = constraints.positive_ordered
    bijective = True

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.exp().cumsum(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([y[..., :1], y[..., 1:] - y[..., :-1]], dim=-1).log()

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.sum(-1)


def _tril_size_to_dim(n: int) -> int:
    d = int(round(((8 * n + 1) ** 0.5 - 1) / 2))
    if d * (d + 1) // 2 != n:
        raise ValueError(f"{n} is not a triangular number d(d+1)/2")
    return d


class LowerCholeskyTransform(Transform):
    """R^(d(d+1)/2) onto lower-triangular matrices with positive diagonal.

    The first d(d-1)/2 coordinates fill the strictly lower triangle row by row, the last d
    are the log of the diagonal. (torch's ``LowerCholeskyTransform`` maps d x d matrices
    and ignores their upper triangle, so it is not a bijection and ``biject_to`` has none.)
    """

    domain = constraints.real_vector
    codomain = constraints.lower_cholesky
    bijective = True

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        d = _tril_size_to_dim(x.shape[-1])
        m = d * (d - 1) // 2
        i, j = torch.tril_indices(d, d, offset=-1, device=x.device)
        y = x.new_zeros(x.shape[:-1] + (d, d))
        y[..., i, j] = x[..., :m]
        return y + torch.diag_embed(x[..., m:].exp())

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        d = y.shape[-1]
        i, j = torch.tril_indices(d, d, offset=-1, device=y.device)
        return torch.cat([y[..., i, j], y.diagonal(dim1=-2, dim2=-1).log()], dim=-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = _tril_size_to_dim(x.shape[-1])
        return x[..., d * (d - 1) // 2 :].sum(-1)

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        d = _tril_size_to_dim(shape[-1])
        return torch.Size(shape[:-1]) + (d, d)

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        d = shape[-1]
        return torch.Size(shape[:-2]) + (d * (d + 1) // 2,)


class CholeskyOuterTransform(Transform):
    """L -> L L^T, from lower Cholesky factors onto positive definite matrices.

    log|det J| = d log 2 + sum_i (d - i) log L_ii (i = 0..d-1), the Jacobian taken between
    the lower triangles of L and of L L^T.
    """

    domain = constraints.lower_cholesky
    codomain = constraints.positive_definite
    bijective = True

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x @ x.mT

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.linalg.cholesky(y)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        powers = torch.arange(d, 0, -1, dtype=x.dtype, device=x.device)
        log_diag = x.diagonal(dim1=-2, dim2=-1).log()
        return d * math.log(2) + (powers * log_diag).sum(-1)


def _lower_cholesky(constraint: Constraint) -> Transform:
    return LowerCholeskyTransform()


def _positive_definite(constraint: Constraint) -> Transform:
    return ComposeTransform([LowerCholeskyTransform(), CholeskyOuterTransform()])


def _ordered(constraint: Constraint) -> Transform:
    return OrderedTransform()


def _positive_ordered(constraint: Constraint) -> Transform:
    return PositiveOrderedTransform()


def _mixture(registry: ConstraintRegistry) -> Callable[[Constraint], Transform]:
    def factory(constraint: Constraint) -> Transform:
        base = constraint.base_constraint
        if any(isinstance(b, torch.Tensor) and b.dim() > 0 for b in vars(base).values()):
            raise NotImplementedError(
                "the support of a MixtureSameFamily whose components have parameter-dependent "
                f"supports ({base!r}) is their union, which has no bijector; use components "
                "with a common support"
            )
        return registry(base)

    return factory


for _registry in (biject_to, transform_to):
    _registry.register(type(constraints.ordered), _ordered)
    _registry.register(type(constraints.positive_ordered), _positive_ordered)
    _registry.register(constraints.MixtureSameFamilyConstraint, _mixture(_registry))
del _registry
biject_to.register(type(constraints.lower_cholesky), _lower_cholesky)
biject_to.register(type(constraints.positive_definite), _positive_definite)
