"""The sum over a chain of discrete states, in log space: the forward algorithm as an op.

``chain_logsumexp(F, start)`` is ``log sum_z exp(sum_t F[t, z_{t-1}, z_t])`` over every
path ``z_0 .. z_{T-1}`` of ``K`` states from ``z_{-1} = start``: ``F (..., T, K, K)``
holds the log factors of each step given the state before it (``F[0]`` reads only row
``start``), leading dims are independent chains. ``chain_marginals(F, log_z, start)`` is
its gradient, by the forward-backward recursion: ``dlog Z / dF[t, j, k] = P(z_{t-1} = j,
z_t = k)``, the pairwise posterior marginals (zero off row ``start`` at ``t = 0``), whose
sums over ``j`` are ``state_marginals``, ``P(z_t = k)``. ``chain_sample(F, start, u)``
draws whole paths from the chain's posterior ``P(z_{0:T-1})`` (forward filtering, backward
sampling: the joint, not each ``z_t`` from its own marginal), as Gibbs needs. The
``enumerate_discrete`` pass writes ``ppl.chain_logsumexp`` for a scan whose carry is its
step's discrete site (``ppl.passes.chain_enumeration``); the tape and the C backend run the
same two recursions. Both are ``O(T K^2)`` in C (``ppl.inference.lowering.native.chain``), one step
at a time; in torch they run in blocks of about ``sqrt(T)`` steps, ``O(T K^3)`` arithmetic
in about ``2 sqrt(T)`` calls instead of ``T``.

    >>> import torch
    >>> F = torch.log(torch.tensor([[[0.5, 0.5], [0.0, 0.0]], [[0.9, 0.1], [0.2, 0.8]]]))
    >>> round(float(chain_logsumexp(F, 0).exp()), 4)   # 0.5 (0.9 + 0.1) + 0.5 (0.2 + 0.8)
    1.0
    >>> chain_marginals(F, chain_logsumexp(F, 0), 0)[1]
    tensor([[0.4500, 0.0500],
            [0.1000, 0.4000]])
    >>> chain_sample(F, 0, torch.tensor([0.4, 0.3]))   # z_1 = 0 w.p. 0.55: then z_0 | z_1
    tensor([0, 0])
"""

from __future__ import annotations

import math

import torch


def chain_logsumexp(F: torch.Tensor, start: int) -> torch.Tensor:
    """``log sum_z exp(sum_t F[..., t, z_{t-1}, z_t])`` with ``z_{-1} = start``: shape
    ``F.shape[:-3]``. Differentiable by autograd (its gradient is :func:`chain_marginals`)."""
    return torch.logsumexp(_messages(F[..., 0, start, :], F[..., 1:, :, :])[..., -1, :], -1)


def chain_marginals(F: torch.Tensor, log_z: torch.Tensor, start: int) -> torch.Tensor:
    """``P(z_{t-1} = j, z_t = k)`` for every ``t, j, k`` (shape of ``F``), from the forward
    messages ``alpha_t[k]`` (the log weight of the paths from ``start`` ending in
    ``z_t = k``) and the backward messages ``beta_t[k]`` (of the paths after ``z_t = k``) of
    the chain whose log partition function is ``log_z`` (``chain_logsumexp(F, start)``)."""
    steps = F[..., 1:, :, :]
    alpha = _messages(F[..., 0, start, :], steps)
    beta = _messages(torch.zeros_like(alpha[..., 0, :]),
                     steps.flip(-3).transpose(-1, -2)).flip(-2)
    log_z = log_z[..., None, None, None]
    out = torch.zeros_like(F)
    out[..., 1:, :, :] = torch.exp(alpha[..., :-1, :, None] + steps + beta[..., 1:, None, :]
                                   - log_z)
    out[..., 0, start, :] = torch.exp(F[..., 0, start, :] + beta[..., 0, :] - log_z[..., 0, 0])
    return out


def state_marginals(F: torch.Tensor, start: int) -> torch.Tensor:
    """``P(z_t = k)`` for every step ``t`` and state ``k``: shape ``(..., T, K)``."""
    with torch.no_grad():
        return chain_marginals(F, chain_logsumexp(F, start), start).sum(-2)


def chain_sample(F: torch.Tensor, start: int,
                 u: torch.Tensor | torch.Generator | None = None) -> torch.Tensor:
    """One path ``z_0 .. z_{T-1}`` (indices, int64, shape ``F.shape[:-2]``) per chain, drawn
    from ``P(z) = exp(sum_t F[t, z_{t-1}, z_t] - chain_logsumexp(F, start))``.

    Forward filtering, backward sampling: ``z_{T-1}`` from ``alpha_{T-1}``, then ``z_t``
    given ``z_{t+1} = k`` from ``alpha_t[j] + F[t+1, j, k]``, each by inverting its CDF at
    ``u[..., t]`` (``u``: uniforms of shape ``F.shape[:-2]``, or a generator to draw them
    from). The ``T - 1`` backward steps are maps ``k -> z_t``, tabulated for all ``t`` at
    once and composed by doubling (``log2 T`` gathers), so the draw takes ``O(T K^2)``
    arithmetic in about 20 torch calls besides the forward messages. Impossible states
    (``-inf``) are never drawn."""
    shape = F.shape[:-2]
    if not isinstance(u, torch.Tensor):
        u = torch.rand(shape, generator=u, dtype=torch.float64, device=F.device)
    with torch.no_grad():
        alpha = _messages(F[..., 0, start, :], F[..., 1:, :, :]).double()  # (..., T, K)
        last = _inverse_cdf(alpha[..., -1, :], u[..., -1])  # (...,)
        # back[..., t, k, j] = log P(z_t = j | z_{t+1} = k) + const, for t < T - 1
        back = alpha[..., :-1, None, :] + F[..., 1:, :, :].double().transpose(-1, -2)
        maps = _inverse_cdf(back, u[..., :-1, None])  # (..., T - 1, K): z_{t+1} -> z_t
        identity = torch.arange(F.shape[-1], device=F.device).expand(*shape[:-1], 1, -1)
        maps = torch.cat([maps, identity], -2)  # the map after the last step is the identity
        d = 1
        while d < maps.shape[-2]:  # maps[t] becomes map_t o map_{t+1} o ... o map_{t+2d-1}
            maps = torch.cat([torch.gather(maps[..., :-d, :], -1, maps[..., d:, :]),
                              maps[..., -d:, :]], -2)
            d *= 2
        return torch.gather(maps, -1, last[..., None, None].expand(*shape, 1)).squeeze(-1)


def _inverse_cdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The index whose CDF interval under ``softmax(logits, -1)`` holds ``u``."""
    cdf = torch.softmax(logits, -1).cumsum(-1)
    return (u[..., None] > cdf).sum(-1).clamp(max=logits.shape[-1] - 1)


def _log_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The matrix product in the log semiring: ``log(exp(a) @ exp(b))``."""
    return torch.logsumexp(a.unsqueeze(-1) + b.unsqueeze(-3), -2)


def _messages(first: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """``m_0 = first``, ``m_i[k] = log sum_j exp(m_{i-1}[j] + steps[i-1, j, k])``: all
    ``S + 1`` messages, ``(..., S + 1, K)``. In blocks of ``L ~ sqrt(S)`` steps: the log
    products of each block's prefixes for all blocks at once (``L`` batched steps), then the
    message entering each block (``S / L`` steps), so a chain of 1,000 steps costs about 64
    torch calls, not 1,000."""
    S, K = steps.shape[-3], steps.shape[-1]
    if S == 0:
        return first.unsqueeze(-2)
    L = math.isqrt(S - 1) + 1
    B = -(-S // L)
    identity = torch.full((K, K), -math.inf, dtype=steps.dtype, device=steps.device)
    identity.diagonal().zero_()
    pad = identity.expand(*steps.shape[:-3], B * L - S, K, K)
    blocks = torch.cat([steps, pad], -3).reshape(*steps.shape[:-3], B, L, K, K)
    prefixes = [blocks[..., 0, :, :]]
    for i in range(1, L):
        prefixes.append(_log_matmul(prefixes[-1], blocks[..., i, :, :]))
    prefix = torch.stack(prefixes, -3)  # (..., B, L, K, K)
    entries = [first]
    for b in range(B - 1):
        entries.append(torch.logsumexp(entries[-1].unsqueeze(-1) + prefix[..., b, -1, :, :], -2))
    entry = torch.stack(entries, -2)  # (..., B, K)
    inside = torch.logsumexp(entry[..., :, None, :, None] + prefix, -2)  # (..., B, L, K)
    inside = inside.reshape(*steps.shape[:-3], B * L, K)[..., :S, :]
    return torch.cat([first.unsqueeze(-2), inside], -2)
