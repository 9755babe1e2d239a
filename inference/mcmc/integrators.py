"""Euclidean metrics and the velocity Verlet (leapfrog) integrator, batched over chains.

The Hamiltonian is ``H(z, p) = -log_density(z) + K(p)`` with kinetic energy
``K(p) = 0.5 * p^T M^{-1} p``; ``M^{-1}`` (the *inverse mass matrix*, ideally the posterior
covariance) is diagonal ``(C, D)`` or dense ``(C, D, D)``, one per chain. ``p# = M^{-1} p``
(the "sharp" momentum, i.e. the velocity) is what moves the position and what the no-U-turn
criterion projects on.

All functions work in place on preallocated ``(C, D)`` buffers and run under ``no_grad``:
the gradient comes from the log density function, never from autograd.

>>> metric = make_metric(torch.ones(2, 3, dtype=torch.float64))
>>> z = torch.zeros(2, 3, dtype=torch.float64); p = torch.ones(2, 3, dtype=torch.float64)
>>> fn = lambda x: (-0.5 * (x * x).sum(-1), -x)
>>> lp, g = fn(z)
>>> lp, g = leapfrog_(fn, z, p, g, torch.full((2, 1), 0.1, dtype=torch.float64), metric, p.clone())
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

LogDensityFn = Callable[[Tensor], tuple[Tensor, Tensor]]

__all__ = [
    "LogDensityFn",
    "Metric",
    "make_metric",
    "sharp",
    "kinetic_energy",
    "sample_momentum",
    "scale_by_sqrt_inverse_mass",
    "leapfrog_",
]

#: Dense products whose broadcast temporary has at most this many elements multiply by
#: broadcasting and summing: bitwise independent of the number of chains (so chain c is the
#: same in any batch) and faster than batched matmul for small matrices. Larger ones use
#: matmul (memory-bound instead, but no longer bitwise batch-invariant).
_DENSE_BROADCAST_MAX_ELEMENTS = 1 << 22


class Metric(NamedTuple):
    """A per-chain Euclidean metric.

    ``inverse_mass``: ``(C, D)`` diagonal or ``(C, D, D)`` dense ``M^{-1}``;
    ``mass_sqrt``: a factor ``F`` with ``F F^T = M`` (draws momenta ``p = F xi``);
    ``inverse_mass_sqrt``: a factor ``L`` with ``L L^T = M^{-1}`` (scales random-walk and
    slice proposals to the posterior's shape). Diagonal factors are stored as ``(C, D)``.
    """

    inverse_mass: Tensor
    mass_sqrt: Tensor
    inverse_mass_sqrt: Tensor

    @property
    def dense(self) -> bool:
        return self.inverse_mass.dim() == 3


def make_metric(inverse_mass: Tensor) -> Metric:
    """Precompute the factors of ``inverse_mass`` (``(C, D)`` or ``(C, D, D)``) once per
    adaptation window, so that steps never factorize."""
    if inverse_mass.dim() == 2:
        root = inverse_mass.sqrt()
        return Metric(inverse_mass, root.reciprocal(), root)
    if inverse_mass.dim() != 3 or inverse_mass.shape[-1] != inverse_mass.shape[-2]:
        raise ValueError(
            f"inverse mass matrix must be (chains, dim) or (chains, dim, dim), got "
            f"{tuple(inverse_mass.shape)}"
        )
    chol = torch.linalg.cholesky(inverse_mass)
    eye = torch.eye(inverse_mass.shape[-1], dtype=inverse_mass.dtype, device=inverse_mass.device)
    # M = (L L^T)^{-1} = L^{-T} L^{-1}, so F = L^{-T}.
    chol_inv = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)
    return Metric(inverse_mass, chol_inv.transpose(-1, -2).contiguous(), chol)


def _matvec(matrix: Tensor, vector: Tensor, out: Tensor | None = None) -> Tensor:
    """Per-chain ``matrix[c] @ vector[..., c, :]`` for ``(C, D, D)`` and ``(..., C, D)``."""
    if vector.numel() * matrix.shape[-1] <= _DENSE_BROADCAST_MAX_ELEMENTS:
        return torch.sum(matrix * vector.unsqueeze(-2), dim=-1, out=out)
    result = torch.matmul(matrix, vector.unsqueeze(-1)).squeeze(-1)
    return result if out is None else out.copy_(result)


def sharp(metric: Metric, p: Tensor, out: Tensor | None = None) -> Tensor:
    """``M^{-1} p`` per chain (the velocity), written to ``out`` when given."""
    if metric.inverse_mass.dim() == 2:
        return torch.mul(p, metric.inverse_mass, out=out)
    return _matvec(metric.inverse_mass, p, out)


def kinetic_energy(p: Tensor, p_sharp: Tensor) -> Tensor:
    """``0.5 * p . M^{-1} p`` per chain, given ``p_sharp = M^{-1} p``."""
    return 0.5 * torch.linalg.vecdot(p, p_sharp)


def sample_momentum(metric: Metric, xi: Tensor) -> Tensor:
    """Turn standard normal ``xi`` ``(C, D)`` into momenta ``p ~ N(0, M)``."""
    if metric.mass_sqrt.dim() == 2:
        return xi * metric.mass_sqrt
    return _matvec(metric.mass_sqrt, xi)


def scale_by_sqrt_inverse_mass(metric: Metric, xi: Tensor) -> Tensor:
    """``L xi`` with ``L L^T = M^{-1}``: a standard normal ``xi`` becomes ``N(0, M^{-1})``."""
    if metric.inverse_mass_sqrt.dim() == 2:
        return xi * metric.inverse_mass_sqrt
    return _matvec(metric.inverse_mass_sqrt, xi)


def leapfrog_(
    fn: LogDensityFn,
    z: Tensor,
    p: Tensor,
    grad: Tensor,
    step_size: Tensor,
    metric: Metric,
    p_sharp: Tensor,
) -> tuple[Tensor, Tensor]:
    """One velocity Verlet step of size ``step_size`` ``(C, 1)``, in place on ``z`` and ``p``.

    ``p += eps/2 * grad; z += eps * M^{-1} p; (lp, grad) = fn(z); p += eps/2 * grad``. It
    returns the new ``(log_density, grad)``; ``p_sharp`` is scratch space and holds
    ``M^{-1} p`` at the half step afterwards. A negative ``step_size`` integrates backwards in
    time; a zero one leaves the chain where it is (used to freeze finished chains).
    """
    p.addcmul_(grad, step_size, value=0.5)
    sharp(metric, p, out=p_sharp)
    z.addcmul_(p_sharp, step_size)
    log_density, grad = fn(z)
    p.addcmul_(grad, step_size, value=0.5)
    return log_density, grad
