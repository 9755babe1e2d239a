"""The generalized no-U-turn criterion and where NUTS checks it inside a subtree.

A (sub)tree with momentum sum ``rho`` and velocities ``p#_-``, ``p#_+`` at its two ends keeps
going while ``p#_- . rho > 0`` and ``p#_+ . rho > 0`` (Betancourt 2017, the generalized
criterion with ``p# = M^{-1} p``). Inside a subtree of ``2^j`` steps, Stan's recursive tree
checks every aligned block of ``2^i`` steps when its two halves merge, and for ``i >= 2`` also
each half extended by the neighbouring point of the other half. :func:`check_plan` lists these
checks as index vectors so that all checks of a chunk of steps are one batched computation.

>>> plan = check_plan(0, 4, torch.device("cpu"))
>>> plan.tick.flatten().tolist()  # blocks {0,1} at step 1; {2,3} and [0, 3] (3 checks) at 3
[1, 3, 3, 3, 3]
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["CheckPlan", "check_plan", "column", "no_uturn"]

_CACHE: dict[tuple, object] = {}


def column(start: int, stop: int, device: torch.device) -> Tensor:
    """``arange(start, stop)`` as a column ``(stop - start, 1)`` (cached)."""
    key = ("col", start, stop, str(device))
    if key not in _CACHE:
        _CACHE[key] = torch.arange(start, stop, device=device).unsqueeze(-1)
    return _CACHE[key]  # type: ignore[return-value]


def no_uturn(ps_a: list[Tensor], ps_b: list[Tensor], rhos: list[Tensor]) -> Tensor:
    """Generalized criterion for several (sub)trees at once: for each triple,
    ``p#_a . rho > 0 and p#_b . rho > 0``; returns the per-chain conjunction ``(C,)``."""
    dots = torch.linalg.vecdot(torch.stack(ps_a + ps_b), torch.stack(rhos + rhos))
    return dots.amin(0) > 0


class CheckPlan(NamedTuple):
    """Indices of the U-turn checks whose blocks end in one chunk of a subtree: velocities
    ``xa``, ``xb`` into ``PS`` (``PS[t + 1] = p#_t``, ``PS[0]`` the junction point's), bounds
    ``hi``, ``lo`` into the padded running momentum sums ``SX`` (``SX[t + 2] = p_a + S_t``, so
    a block's momentum sum is ``SX[hi] - SX[lo]``), and the step ``tick`` at which each check
    is made (as a column, to broadcast over chains)."""

    xa: Tensor
    xb: Tensor
    hi: Tensor
    lo: Tensor
    tick: Tensor


def check_plan(start: int, stop: int, device: torch.device) -> CheckPlan | None:
    """Checks for steps ``start .. stop - 1`` of a subtree (cached). The block of size
    ``2^i`` ending at step ``e`` is ``[a, e]`` with halves ``A = [a, m)`` and ``B = [m, e]``;
    it is checked whole and, for ``i >= 2``, as ``A + first point of B`` and
    ``B + last point of A`` (Stan's extra checks between subtrees)."""
    key = ("plan", start, stop, str(device))
    if key in _CACHE:
        return _CACHE[key]  # type: ignore[return-value]
    rows: list[tuple[int, int, int, int, int]] = []
    for e in range(start | 1, stop, 2):
        size = 2
        while (e + 1) % size == 0:
            a = e + 1 - size
            m = a + size // 2
            rows.append((a + 1, e + 1, e + 2, a + 1, e))
            if size >= 4:
                rows.append((a + 1, m + 1, m + 2, a + 1, e))
                rows.append((m, e + 1, e + 2, m, e))
            size *= 2
    plan = None
    if rows:
        cols = torch.tensor(rows, dtype=torch.int64, device=device).T.contiguous()
        plan = CheckPlan(cols[0], cols[1], cols[2], cols[3], cols[4].unsqueeze(-1))
    _CACHE[key] = plan
    return plan
