"""Resampling: draw ancestor indices from log weights, in float64, never out of range.

Four schemes, each unbiased (particle ``i`` has ``N * W_i`` offspring in expectation):

- ``multinomial``: ``N`` independent draws from the weights;
- ``stratified``: one uniform in each of the ``N`` strata ``[j/N, (j+1)/N)``;
- ``systematic``: one uniform, shifted by ``j/N``: every count is ``floor`` or ``ceil`` of
  ``N * W_i``;
- ``residual``: ``floor(N * W_i)`` copies of each, the rest multinomially from the residuals.

Log weights of any float dtype are normalized in float64 and their cumulative sums taken in
float64; a uniform that rounding puts past the last cumulative sum maps to the last particle
with positive weight, so no weight vector yields an index outside ``[0, N-1]`` nor one of a
particle of weight zero. NaN log weights, or all of them ``-inf``, raise
:class:`DegenerateWeights` naming where they came from. Every function takes a batch
``(..., N)`` of weight vectors and returns ``(..., num_samples)`` indices.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> resample(torch.tensor([0.0, -float("inf"), 0.0]), "systematic", generator=g).tolist()
    [0, 2, 2]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["DegenerateWeights", "SCHEMES", "normalize", "ess", "resample", "multinomial",
           "stratified", "systematic", "residual"]


class DegenerateWeights(ValueError):
    """Log weights that define no distribution: some are NaN, or all are ``-inf``."""


def normalize(log_weights: Tensor, where: str = "the weights") -> Tensor:
    """Normalized log weights in float64 (``logsumexp`` 0 along the last dim); raises
    :class:`DegenerateWeights` saying ``where`` and how many are NaN, or that none is finite."""
    log_weights = log_weights.to(torch.float64)
    if log_weights.shape[-1] == 0:
        raise DegenerateWeights(f"{where}: no particles to weight")
    nan = torch.isnan(log_weights)
    if nan.any():
        raise DegenerateWeights(
            f"{where}: {int(nan.sum())} of {log_weights.numel()} log weights are NaN")
    if torch.isposinf(log_weights).any():
        raise DegenerateWeights(
            f"{where}: {int(torch.isposinf(log_weights).sum())} log weights are +inf")
    total = torch.logsumexp(log_weights, -1, keepdim=True)
    if torch.isneginf(total).any():
        raise DegenerateWeights(f"{where}: every log weight is -inf (no particle is possible)")
    return log_weights - total


def ess(log_weights: Tensor) -> Tensor:
    """Kish's effective sample size ``1 / sum W_i^2`` of (unnormalized) log weights, float64."""
    return torch.exp(-torch.logsumexp(2 * normalize(log_weights), -1))


def _invert_cdf(weights: Tensor, uniforms: Tensor) -> Tensor:
    """Indices ``i`` with ``cdf[i-1] <= u * total < cdf[i]`` for uniforms in ``[0, 1)``,
    clamped to the last particle of positive weight."""
    cdf = torch.cumsum(weights, -1)
    points = uniforms * cdf[..., -1:]
    index = torch.searchsorted(cdf, points.contiguous(), right=True)
    positive = torch.arange(weights.shape[-1], device=weights.device).expand_as(weights)
    last = torch.where(weights > 0, positive, 0).amax(-1, keepdim=True)
    return torch.minimum(index, last)


def _uniforms(shape: tuple[int, ...], generator: torch.Generator | None,
              device: torch.device) -> Tensor:
    """Uniforms drawn where ``generator`` lives (a CPU generator may serve CUDA weights)."""
    source = device if generator is None else generator.device
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=source).to(device)


def multinomial(weights: Tensor, num_samples: int, generator: torch.Generator | None = None
                ) -> Tensor:
    """``num_samples`` independent draws from normalized float64 ``weights (..., N)``."""
    u = _uniforms((*weights.shape[:-1], num_samples), generator, weights.device)
    return _invert_cdf(weights, u)


def _strata(weights: Tensor, num_samples: int) -> Tensor:
    return torch.arange(num_samples, dtype=torch.float64, device=weights.device)


def stratified(weights: Tensor, num_samples: int, generator: torch.Generator | None = None
               ) -> Tensor:
    """One uniform in each stratum ``[j/n, (j+1)/n)``."""
    u = _uniforms((*weights.shape[:-1], num_samples), generator, weights.device)
    return _invert_cdf(weights, (_strata(weights, num_samples) + u) / num_samples)


def systematic(weights: Tensor, num_samples: int, generator: torch.Generator | None = None
               ) -> Tensor:
    """One uniform for all strata: ``u_j = (j + U) / n``."""
    u = _uniforms((*weights.shape[:-1], 1), generator, weights.device)
    return _invert_cdf(weights, (_strata(weights, num_samples) + u) / num_samples)


def residual(weights: Tensor, num_samples: int, generator: torch.Generator | None = None
             ) -> Tensor:
    """``floor(n W_i)`` copies of particle ``i`` first, then the remaining ``R`` draws
    multinomially from the residuals ``n W_i - floor(n W_i)`` (batched: output position ``j``
    is a deterministic copy while ``j`` is below the number of copies, else a residual draw)."""
    scaled = weights * num_samples
    copies = torch.floor(scaled)
    cum_copies = torch.cumsum(copies, -1)
    total_copies = cum_copies[..., -1:]
    position = _strata(weights, num_samples).expand(*weights.shape[:-1], num_samples)
    deterministic = torch.searchsorted(cum_copies, position.contiguous(), right=True)
    leftover = (scaled - copies).clamp_min(0.0)
    # all residuals zero only when every copy is deterministic; the weights stand in then
    leftover = torch.where(leftover.sum(-1, keepdim=True) > 0, leftover, weights)
    drawn = multinomial(leftover, num_samples, generator)
    index = torch.where(position < total_copies, deterministic, drawn)
    return index.clamp(0, weights.shape[-1] - 1)


SCHEMES: dict[str, Callable[[Tensor, int, torch.Generator | None], Tensor]] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}


def resample(log_weights: Tensor, scheme: str = "systematic", num_samples: int | None = None,
             generator: torch.Generator | None = None, where: str = "the weights") -> Tensor:
    """Ancestor indices ``(..., num_samples)`` (default ``N``) drawn from ``log_weights
    (..., N)`` by ``scheme`` (one of ``SCHEMES``); ``where`` names the weights in errors."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown resampling scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    weights = torch.exp(normalize(log_weights, where))
    n = log_weights.shape[-1] if num_samples is None else num_samples
    if n < 1:
        raise ValueError(f"{where}: num_samples must be at least 1, got {n}")
    return SCHEMES[scheme](weights, n, generator)

