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
same two recursions. Both are ``O(T K^2)`` in C (``ppl.inference.lowering.native.chain``),
one step at a time; in torch (the generated backend without a C compiler, autograd, CUDA) they are a
parallel prefix scan, ``O(T K^3)`` arithmetic in about ``4 log2 T`` calls instead of ``T``,
and autograd's gradient of ``chain_logsumexp`` is ``chain_marginals`` (no tape through the
scan).

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
    ``F.shape[:-3]``. Differentiable by autograd: its gradient is :func:`chain_marginals`."""
    return _ChainLogZ.apply(F, start)


class _ChainLogZ(torch.autograd.Function):
    """``chain_logsumexp`` with the forward-backward marginals as its backward (one scan
    each way, not autograd through the scan's levels); vmap-able for ``torch.func``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(F: torch.Tensor, start: int) -> torch.Tensor:
        alpha = _messages(F[..., 0, start, :], F[..., 1:, :, :])
        return torch.logsumexp(alpha[..., -1, :], -1).to(F.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0], output)
        ctx.start = inputs[1]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        F, log_z = ctx.saved_tensors
        return grad[..., None, None, None] * chain_marginals(F, log_z, ctx.start), None


def chain_marginals(F: torch.Tensor, log_z: torch.Tensor, start: int) -> torch.Tensor:
    """``P(z_{t-1} = j, z_t = k)`` for every ``t, j, k`` (shape of ``F``), from the forward
    messages ``alpha_t[k]`` (the log weight of the paths from ``start`` ending in
    ``z_t = k``) and the backward messages ``beta_t[k]`` (of the paths after ``z_t = k``) of
    the chain whose log partition function is ``log_z`` (``chain_logsumexp(F, start)``)."""
    steps = F[..., 1:, :, :]
    first = F[..., 0, start, :]  # alpha and beta as two chains of one scan:
    alpha, beta = _messages(torch.stack([first, torch.zeros_like(first)]),
                            torch.stack([steps, steps.flip(-3).transpose(-1, -2)]))
    beta = beta.flip(-2)
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
        alpha = _messages(F[..., 0, start, :], F[..., 1:, :, :])  # (..., T, K), float64
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


_EXACT_K = 4
"""Chains of at most this many states multiply by exact ``logsumexp``s (a ``K^3``
intermediate); longer ones by scaled matmuls."""


def _log_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The matrix product in the log semiring, ``log(exp(a) @ exp(b))``, states first: ``a``
    is ``(I, J, ...)``, ``b`` ``(J, K, ...)``, the result ``(I, K, ...)``.

    With few states an exact ``logsumexp``. Otherwise a matmul of ``exp(a - r)`` and
    ``exp(b - c)``, ``r`` each row's largest entry of ``a`` and ``c`` each column's of ``b``
    (rows of ``-inf`` scaled by 1): in float64 (which the callers use) a term
    ``a[i, j] + b[j, k]`` is lost only if it lies about 700 below ``r[i] + c[k]``, negligible
    against the term that sets them; ``-inf`` (impossible) stays exact."""
    if a.shape[1] <= _EXACT_K:
        return torch.logsumexp(a[:, :, None] + b[None], 1)
    r = a.detach().amax(1, keepdim=True).nan_to_num(neginf=0.0)
    c = b.detach().amax(0, keepdim=True).nan_to_num(neginf=0.0)

    def states_last(x: torch.Tensor) -> torch.Tensor:
        return x.movedim((0, 1), (-2, -1)).contiguous()

    product = torch.matmul(states_last(torch.exp(a - r)), states_last(torch.exp(b - c)))
    return product.movedim((-2, -1), (0, 1)).log() + r + c


def _messages(first: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """``m_0 = first``, ``m_i[k] = log sum_j exp(m_{i-1}[j] + steps[i-1, j, k])``: all
    ``S + 1`` messages, ``(..., S + 1, K)``, in float64.

    A parallel prefix scan: the steps, padded with identities to a power of two ``n``, are
    multiplied in adjacent pairs level by level up to two products (``S K^3`` arithmetic in
    ``log2 n`` calls); then, from the top down, the message entering each node gives those
    entering its two children (the left child's, then that times the left child's product;
    ``S K^2``): about ``4 log2 S`` torch calls at any ``S`` (40 at ``S = 1,000``). The
    states are the leading dims throughout, so that every elementwise op runs along the
    long dims (chains and steps), not the ``K`` states."""
    S, K = steps.shape[-3], steps.shape[-1]
    if S == 0:
        return first.double().unsqueeze(-2)
    n = 1 << (S - 1).bit_length()
    identity = torch.full((K, K), -math.inf, dtype=torch.float64, device=steps.device)
    identity.diagonal().zero_()
    padded = torch.cat([steps.double(), identity.expand(*steps.shape[:-3], n - S, K, K)], -3)
    levels = [padded.movedim((-2, -1), (0, 1))]  # (K, K, ..., n)
    while levels[-1].shape[-1] > 2:
        levels.append(_log_matmul(levels[-1][..., 0::2], levels[-1][..., 1::2]))
    entry = first.double().movedim(-1, 0)[None, :, ..., None]  # (1, K, ..., nodes)
    for level in reversed(levels):
        right = _log_matmul(entry, level[..., 0::2])
        entry = torch.stack([entry, right], -1).flatten(-2)
    last = _log_matmul(entry[..., S - 1], levels[0][..., S - 1])
    return torch.cat([entry[..., :S], last[..., None]], -1)[0].movedim(0, -1)
