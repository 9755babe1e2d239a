"""The generalized no-U-turn criterion and where NUTS checks it inside a subtree.

A (sub)tree with momentum sum ``rho`` and velocities ``p#_-``, ``p#_+`` at its two ends keeps
going while ``p#_- . rho > 0`` and ``p#_+ . rho > 0`` (Betancourt 2017, the generalized
criterion with ``p# = M^{-1} p``). Inside a subtree of ``2^j`` steps, Stan's recursive tree
checks every aligned block of ``2^i`` steps when its two halves merge, and for ``i >= 2`` also
each half extended by the neighbouring point of the other half; the merge of the finished
subtree with the old tree is checked the same way. :func:`check_plan` lists these checks as
index vectors so that all checks of a chunk of steps are one gather and one batched dot
product.

The rows the indices refer to: NUTS stacks the momenta of a subtree as
``P = [0, rho_old - p_a, p_a, p_0, ..., p_{m-1}, p_far]`` (``p_a`` the junction point the
subtree starts from, ``p_t`` its steps, ``p_far`` the other end of the old tree, ``rho_old``
the old tree's momentum sum), velocities ``V = M^{-1} P`` and running sums ``S = cumsum(P)``,
so ``S[t + 3] = rho_old + p_0 + ... + p_t``. The momentum sum over steps ``a .. e`` is
``S[e + 3] - S[a + 2]``, that of the old tree extended by the subtree's first point is
``S[3] - S[0]``, and so on: every check is ``V[x] . (S[hi] - S[lo]) > 0`` for both of its
``x``.

>>> plan = check_plan(0, 4, 4, torch.device("cpu"))
>>> plan.tick.flatten().tolist()[:8]  # blocks {0,1} at step 1; {2,3}, [0,3] (3 checks), merge (3)
[1, 3, 3, 3, 3, 4, 4, 4]
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["CheckPlan", "check_plan", "column"]

_CACHE: dict[tuple, object] = {}


def column(start: int, stop: int, device: torch.device) -> Tensor:
    """``arange(start, stop)`` as a column ``(stop - start, 1)`` (cached)."""
    key = ("col", start, stop, device)
    if key not in _CACHE:
        _CACHE[key] = torch.arange(start, stop, device=device).unsqueeze(-1)
    return _CACHE[key]  # type: ignore[return-value]


class CheckPlan(NamedTuple):
    """The ``K`` checks of one chunk of a subtree, as rows into the stacks of the module
    docstring, each listed twice (once per velocity): ``velocity`` ``(2K,)``; ``hi``, ``lo``
    ``(2K,)``, the momentum sum ``S[hi] - S[lo]``; ``tick`` ``(2K + steps, 1)``: the step each
    check fails at (the subtree's size for the merge with the old tree), followed by the
    chunk's steps themselves (for their divergence checks)."""

    velocity: Tensor
    hi: Tensor
    lo: Tensor
    tick: Tensor


def check_plan(start: int, stop: int, size: int, device: torch.device) -> CheckPlan:
    """Checks for steps ``start .. stop - 1`` of a subtree of ``size`` steps (cached).

    The block of ``2^i`` steps ending at step ``e`` is ``[a, e]`` with halves ``A = [a, m)``
    and ``B = [m, e]``; it is checked whole and, for ``i >= 2``, as ``A + first point of B``
    and ``B + last point of A``. When ``stop == size`` the merge with the old tree follows:
    the merged tree (velocities at ``p_far`` and the last step), the old tree plus the first
    step, and the subtree plus the junction point.
    """
    key = ("plan", start, stop, size, device)
    if key in _CACHE:
        return _CACHE[key]  # type: ignore[return-value]
    rows: list[tuple[int, int, int, int, int]] = []  # (velocity, velocity, hi, lo, tick)
    for e in range(start | 1, stop, 2):
        span = 2
        while (e + 1) % span == 0:
            a = e + 1 - span
            m = a + span // 2
            rows.append((a + 3, e + 3, e + 3, a + 2, e))
            if span >= 4:
                rows.append((a + 3, m + 3, m + 3, a + 2, e))
                rows.append((m + 2, e + 3, e + 3, m + 1, e))
            span *= 2
    if stop == size:
        last, far = size + 2, size + 3
        rows += [(far, last, last, 0, size), (far, 3, 3, 0, size), (2, last, last, 1, size)]
    xa, xb, hi, lo, tick = torch.tensor(rows, dtype=torch.int64, device=device).T
    steps = torch.arange(start, stop, dtype=torch.int64, device=device)
    plan = CheckPlan(torch.cat((xa, xb)), torch.cat((hi, hi)), torch.cat((lo, lo)),
                     torch.cat((tick, tick, steps)).unsqueeze(-1))
    _CACHE[key] = plan
    return plan
