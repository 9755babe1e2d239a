"""The sum over a chain of discrete states, in log space: the forward algorithm as an op.

``chain_logsumexp(F, start)`` is ``log sum_z exp(sum_t F[t, z_{t-1}, z_t])`` over every
path ``z_0 .. z_{T-1}`` of ``K`` states from ``z_{-1} = start``: ``F (..., T, K, K)``
holds the log factors of each step given the state before it (``F[0]`` reads only row
``start``), leading dims are independent chains. The forward recursion costs ``O(T K^2)``
time and memory. ``chain_marginals(F, log_z, start)`` is its gradient, by the
forward-backward recursion: ``dlog Z / dF[t, j, k] = P(z_{t-1} = j, z_t = k)``, the
pairwise posterior marginals (zero off row ``start`` at ``t = 0``), whose sums over
``j`` are ``state_marginals``, ``P(z_t = k)``. The
``enumerate_discrete`` pass writes ``ppl.chain_logsumexp`` for a scan whose carry is its
step's discrete site (``ppl.passes.chain_enumeration``); the tape and the C backend run
the same two recursions.

    >>> import torch
    >>> F = torch.log(torch.tensor([[[0.5, 0.5], [0.0, 0.0]], [[0.9, 0.1], [0.2, 0.8]]]))
    >>> round(float(chain_logsumexp(F, 0).exp()), 4)   # 0.5 (0.9 + 0.1) + 0.5 (0.2 + 0.8)
    1.0
    >>> chain_marginals(F, chain_logsumexp(F, 0), 0)[1]
    tensor([[0.4500, 0.0500],
            [0.1000, 0.4000]])
"""

from __future__ import annotations

import torch


def chain_logsumexp(F: torch.Tensor, start: int) -> torch.Tensor:
    """``log sum_z exp(sum_t F[..., t, z_{t-1}, z_t])`` with ``z_{-1} = start``: shape
    ``F.shape[:-3]``. Differentiable by autograd through the recursion (its gradient is
    :func:`chain_marginals`)."""
    alpha = F[..., 0, start, :]
    for t in range(1, F.shape[-3]):
        alpha = torch.logsumexp(alpha.unsqueeze(-1) + F[..., t, :, :], -2)
    return torch.logsumexp(alpha, -1)


def chain_marginals(F: torch.Tensor, log_z: torch.Tensor, start: int) -> torch.Tensor:
    """``P(z_{t-1} = j, z_t = k)`` for every ``t, j, k`` (shape of ``F``), from the forward
    messages ``alpha_t`` and backward messages ``beta_t`` of the chain whose log partition
    function is ``log_z`` (``chain_logsumexp(F, start)``, broadcast over ``F``'s leading
    dims)."""
    T = F.shape[-3]
    alphas = [F[..., 0, start, :]]  # alpha_t[k]: log weight of the paths ending in z_t = k
    for t in range(1, T):
        alphas.append(torch.logsumexp(alphas[-1].unsqueeze(-1) + F[..., t, :, :], -2))
    beta = torch.zeros_like(alphas[0])  # beta_t[k]: log weight of the paths after z_t = k
    out = torch.zeros_like(F)
    log_z = log_z[..., None, None]
    for t in range(T - 1, 0, -1):
        out[..., t, :, :] = torch.exp(alphas[t - 1].unsqueeze(-1) + F[..., t, :, :]
                                      + beta.unsqueeze(-2) - log_z)
        beta = torch.logsumexp(F[..., t, :, :] + beta.unsqueeze(-2), -1)
    out[..., 0, start, :] = torch.exp(F[..., 0, start, :] + beta - log_z[..., 0])
    return out


def state_marginals(F: torch.Tensor, start: int) -> torch.Tensor:
    """``P(z_t = k)`` for every step ``t`` and state ``k``: shape ``(..., T, K)``."""
    with torch.no_grad():
        return chain_marginals(F, chain_logsumexp(F, start), start).sum(-2)
