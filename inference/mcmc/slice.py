"""Univariate slice sampling with stepping out (Neal 2003), batched over chains.

Along a line ``z + t d`` the update draws the level ``y = log p(z) - Exp(1)``, places an
interval of width ``w`` at random around ``t = 0``, steps it out by ``w`` at each end while the
end is above the level (at most ``max_steps_out`` steps in all, split at random between the two
ends, which keeps the move reversible), then samples ``t`` uniformly in the interval, shrinking
it towards 0 after every point below the level. The new point is an exact draw from the
density restricted to the line, so no accept/reject step is needed.

``direction="coordinate"`` sweeps the coordinates in order (``d = e_i``,
``w = step_size * sqrt(M^{-1}_ii)``); ``direction="random"`` uses ``num_directions`` random
directions ``d = L xi / |xi|`` (``L L^T = M^{-1}``, ``w = step_size``), for which a Gaussian
posterior with covariance ``M^{-1}`` has unit scale along the line. The two interval ends are
evaluated in one call of ``2 C`` rows; a chain still stepping or shrinking draws only its own
uniforms. ``nan`` densities count as below the level; a chain that fails to find a point in
``max_shrinks`` shrinkages stays put and is flagged divergent.

>>> import torch
>>> fn = lambda z: (-0.5 * (z * z).sum(-1), -z)
>>> kernel = Slice(fn)
>>> state = kernel.init(torch.zeros(2, 3, dtype=torch.float64))
>>> state, info = kernel.step(torch.Generator().manual_seed(0), state)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ppl.inference.rng import RNG, rand, randn

from .base import Info, KernelBase, State, make_info
from .integrators import LogDensityFn, scale_by_sqrt_inverse_mass

__all__ = ["Slice", "slice_along"]


@dataclass(frozen=True)
class Slice(KernelBase):
    """Slice sampler; ``step_size`` is the initial bracket width in units of ``sqrt(M^{-1})``."""

    step_size: float | Tensor = 2.0
    direction: str = "coordinate"
    num_directions: int = 1
    max_steps_out: int = 32
    max_shrinks: int = 100

    target_accept: ClassVar[float | None] = None
    step_size_search: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.direction not in ("coordinate", "random"):
            raise ValueError(f"direction must be 'coordinate' or 'random', got {self.direction!r}")

    def step(self, rng: RNG, state: State) -> tuple[State, Info]:
        """One sweep over the coordinates, or ``num_directions`` random-direction updates.
        Random draws per chain and step: the directions (random mode), then one block of
        ``11`` uniforms per update; more only for chains needing over 8 shrinkages."""
        with torch.no_grad():
            z, lp, g, eps, metric = state
            num_chains, dim = z.shape
            dtype, device = z.dtype, z.device
            evals = torch.zeros(num_chains, dtype=torch.int64, device=device)
            failed = torch.zeros(num_chains, dtype=torch.bool, device=device)
            if self.direction == "coordinate":
                inv = metric.inverse_mass
                widths = eps.unsqueeze(-1) * (inv.diagonal(dim1=-2, dim2=-1) if inv.dim() == 3
                                              else inv).sqrt()
                eye = torch.eye(dim, dtype=dtype, device=device)
                directions = [eye[i].expand(num_chains, dim) for i in range(dim)]
                widths_list = list(widths.T)
            else:
                xi = randn(rng, num_chains, (self.num_directions, dim), dtype=dtype, device=device)
                d = scale_by_sqrt_inverse_mass(
                    metric, (xi / xi.norm(dim=-1, keepdim=True)).transpose(0, 1)
                )
                directions = list(d)
                widths_list = [eps] * self.num_directions
            block = _UNIFORMS_PER_UPDATE
            u = rand(rng, num_chains, (len(directions) * block,), dtype=dtype, device=device)
            for i, (d, width) in enumerate(zip(directions, widths_list, strict=True)):
                z, lp, g, n, f = slice_along(
                    self.fn, rng, z, lp, g, d, width, u[:, i * block : (i + 1) * block],
                    self.max_steps_out, self.max_shrinks,
                )
                evals += n
                failed |= f
            ones = torch.ones_like(lp)
            return State(z, lp, g, eps, metric), make_info(ones, failed, -lp, evals, eps)


_UNIFORMS_PER_UPDATE = 11  # level, offset, split, then 8 shrinkage points


def slice_along(
    fn: LogDensityFn,
    rng: RNG,
    z: Tensor,
    lp: Tensor,
    g: Tensor,
    d: Tensor,
    width: Tensor,
    u: Tensor,
    max_steps_out: int = 32,
    max_shrinks: int = 100,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One slice update of every chain along ``z + t d`` (``d`` ``(C, D)``, ``width`` ``(C,)``).

    ``u`` ``(C, 3 + K)``: uniforms for the level, the interval offset, the split of the
    stepping-out budget and the first ``K`` shrinkage points; later shrinkage points are drawn
    from ``rng`` for the chains that need them. Returns the new position, density, gradient,
    the density evaluations each chain needed and the chains whose shrinkage failed.
    """
    num_chains = z.shape[0]
    dtype, device = z.dtype, z.device
    level = lp + torch.log(u[:, 0])
    lo = -width * u[:, 1]
    hi = lo + width
    left_budget = torch.floor(max_steps_out * u[:, 2])
    right_budget = (max_steps_out - 1) - left_budget
    evals = torch.zeros(num_chains, dtype=torch.int64, device=device)
    # Stepping out: evaluate both ends of every chain in one batched call.
    grow_lo, grow_hi = left_budget > 0, right_budget > 0
    while bool((grow_lo | grow_hi).any()):
        ends = torch.cat((z + lo.unsqueeze(-1) * d, z + hi.unsqueeze(-1) * d))
        lp_ends, _ = fn(ends)
        evals += grow_lo.long() + grow_hi.long()
        grow_lo = grow_lo & (lp_ends[:num_chains] > level)
        grow_hi = grow_hi & (lp_ends[num_chains:] > level)
        lo = torch.where(grow_lo, lo - width, lo)
        hi = torch.where(grow_hi, hi + width, hi)
        left_budget = left_budget - grow_lo.to(dtype)
        right_budget = right_budget - grow_hi.to(dtype)
        grow_lo = grow_lo & (left_budget > 0)
        grow_hi = grow_hi & (right_budget > 0)
    # Shrinkage.
    searching = torch.ones(num_chains, dtype=torch.bool, device=device)
    z_new, lp_new, g_new = z, lp, g
    predrawn = u.shape[1] - 3
    for it in range(max_shrinks):
        if it < predrawn:
            v = u[:, 3 + it]
        else:
            rows = searching.nonzero().flatten().tolist()
            v = rand(rng, num_chains, (1,), dtype=dtype, device=device, rows=rows)[:, 0]
        t = lo + (hi - lo) * v
        cand = z + t.unsqueeze(-1) * d
        lp_cand, g_cand = fn(cand)
        evals += searching
        hit = searching & (lp_cand > level)
        hit_col = hit.unsqueeze(-1)
        z_new = torch.where(hit_col, cand, z_new)
        lp_new = torch.where(hit, lp_cand, lp_new)
        g_new = torch.where(hit_col, g_cand, g_new)
        searching = searching & ~hit
        if not bool(searching.any()):
            break
        lo = torch.where(searching & (t < 0), t, lo)
        hi = torch.where(searching & (t >= 0), t, hi)
    return z_new, lp_new, g_new, evals, searching
