"""The first stage of the auxiliary particle filter (Pitt & Shephard 1999).

Before step ``k`` the filter twists the normalized weights ``W_{k-1}`` by a look-ahead
``p̂_i = p̂(y_k | x_{k-1,i})`` (the program's ``lookahead_log_weight``, :class:`LookAhead`):
``U_i ∝ W_{k-1,i} p̂_i``. It resamples on ``U`` (when their ESS is low), propagates, and
divides each new particle's weight by its ancestor's ``p̂``. The evidence grows by
``log Σ_i W_{k-1,i} p̂_i`` (:func:`first_stage`) plus the log of the ``U``-weighted mean
of the second-stage weights: with resampling at every step, ``Σ_i W_{k-1,i} p̂_i`` times
the plain mean of ``p(y_k, x_k | x_{k-1}) / (q(x_k) p̂)``, which keeps it unbiased. The
final step has nothing to look ahead to, so the final weights target the filtering
distribution itself.

    >>> import math, torch
    >>> log_w = torch.full((4,), -math.log(4), dtype=torch.float64)
    >>> twisted, log_increment = first_stage(log_w, torch.log(torch.tensor(
    ...     [1.0, 1.0, 2.0, 4.0], dtype=torch.float64)), 1)
    >>> [round(u, 6) for u in twisted.exp().tolist()], round(float(log_increment.exp()), 6)
    ([0.125, 0.125, 0.25, 0.5], 2.0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .resampling import DegenerateWeights

__all__ = ["LookAhead", "first_stage", "lookahead_of"]


@runtime_checkable
class LookAhead(Protocol):
    """A particle program with first-stage weights: ``lookahead_log_weight(k, live, n)``
    returns ``(n,)`` float64 ``log p̂(y_k | x_{k-1})`` of the live particles before step
    ``k``."""

    def lookahead_log_weight(self, k: int, live: Mapping[str, Tensor],
                             num_particles: int) -> Tensor: ...


def lookahead_of(program: object) -> Callable[[int, Mapping[str, Tensor], int], Tensor]:
    """The program's look-ahead, or a ``TypeError`` saying the auxiliary filter needs one."""
    if not isinstance(program, LookAhead):
        raise TypeError(f"{type(program).__name__} has no lookahead_log_weight(k, live, n): "
                        "the auxiliary particle filter needs first-stage weights")
    return program.lookahead_log_weight


def first_stage(log_w: Tensor, log_lookahead: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The twisted normalized log weights ``log U`` and ``log Σ_i W_i p̂_i``, from the
    normalized ``log_w`` and the look-ahead of step ``k`` (checked: ``(N,)`` float64, no
    NaN or ``+inf``, not every particle zero)."""
    if log_lookahead.shape != log_w.shape or log_lookahead.dtype != torch.float64:
        raise TypeError(f"step {k}: the look-ahead log weight is {log_lookahead.dtype} of "
                        f"shape {tuple(log_lookahead.shape)}; expected float64 "
                        f"{tuple(log_w.shape)}")
    if torch.isnan(log_lookahead).any() or torch.isposinf(log_lookahead).any():
        raise DegenerateWeights(f"step {k}: the look-ahead log weights have NaN or +inf "
                                "(a prior mean that is not finite, e.g. a Cauchy's?)")
    twisted = log_w + log_lookahead.to(log_w.device)
    log_increment = torch.logsumexp(twisted, 0)
    if torch.isneginf(log_increment):
        raise DegenerateWeights(f"step {k}: the look-ahead gives every particle weight zero")
    return twisted - log_increment, log_increment
