"""The No-U-Turn Sampler, iterative and batched over chains.

One transition (Hoffman & Gelman 2014 with Betancourt 2017's multinomial variant, as in Stan):

* draw ``p0 ~ N(0, M)``; the tree starts as the single point ``(z0, p0)``;
* doubling ``j`` (``j = 0 .. max_tree_depth - 1``) picks a direction uniformly and integrates a
  new subtree of ``2^j`` leapfrog steps from that end of the tree. Within the subtree the
  proposal is a multinomial draw over its points with weights ``exp(-H)``, done progressively
  (the point at step ``k`` replaces the current one with probability ``w_k / sum_{i<=k} w_i``).
  Between the old tree and a complete new subtree the proposal moves to the subtree's with
  probability ``min(1, W_subtree / W_tree)`` (biased progressive sampling), which favours
  points far from the start;
* the generalized no-U-turn criterion, with ``rho`` the sum of momenta over a (sub)tree and
  ``p#`` the velocities ``M^{-1} p`` at its two ends, continues while ``p#_- . rho > 0`` and
  ``p#_+ . rho > 0``. It is checked on every merge of two halves inside the subtree, on the
  merge of tree and subtree, and, as Stan does, also on each half extended by the first point
  of the other half (this catches U-turns hidden at the boundary between subtrees);
* a subtree is discarded when it U-turns or when any of its points has an energy error
  ``H - H0 > divergence_threshold`` or a non-finite density (a *divergence*); either ends the
  transition, keeping the proposal of the tree so far.

The acceptance statistic for step-size adaptation is the mean over all integrated points of
``min(1, exp(H0 - H))``; ``tree_depth`` counts the completed doublings (Stan's convention).

Batching: all chains step in lockstep through the same doubling ``j`` and step ``k``, each
with its own direction, step size, metric, masks and proposals. A chain that has finished its
transition (or whose subtree died) waits until the deepest chain is done: with
``compact=True`` (the default) it is left out of the log density calls (its unused position
drifts), else it steps with step size 0 and stays where it is. Measured in
``bench/mcmc_kernels.py``: when the chains need different depths, lockstep pads ~25-55% of
the chain-steps, which costs nothing for a cheap density (a call costs the same for 1 or 4
rows; batched still beats one chain after another by 2-3x) and is recovered by compaction
for an expensive one (logistic regression, N = 5000: 1.85x the throughput of plain lockstep,
1.3x that of sequential chains); compaction costs 5-15% on cheap densities.

Cost: on CPU a torch operation on small tensors costs 1.5-6 us here, comparable to a small
model's whole gradient, so what a transition costs beyond the density is its number of torch
operations (``bench/mcmc_kernels.py`` counts them). The leapfrog loop issues two per step: the
closing half step of the momentum at one point and the opening one of the next are merged,
and positions, half-step momenta and gradients are kept per step, out of place, never copied.
Everything else is computed once per *chunk* of steps, vectorized over the steps: the
points' momenta, velocities, energies, divergences, the running momentum sums (one
``cumsum``) and every U-turn check whose block ends in the chunk, including the three checks
of the merge with the old tree, as one gather and one batched dot product
(:func:`~.uturn.check_plan`); a chain's first failing check or step is one ``amin``. A chunk
is the whole subtree up to 16 steps, then a quarter of it. The checks are lazy but exact: a
chain's subtree is cut at its first failing step, so the draws do not depend on the chunking;
the steps integrated after a failure within the chunk are the price (they count in
``MCMCRun.num_grad_evals``, not in the chain's ``num_grad_evals``). Per doubling there is one
synchronizing read (does any chain go on?); the multinomial draw within the subtree is
computed for all its steps at once. With one chain the per-doubling choices are Python
branches on Python numbers read from the tensors, and the proposal is a reference to one
step; with several they are ``where`` masks, and the proposal is an index into all points
of the transition in build order (kept until its end), gathered once.

In C: :class:`~ppl.inference.mcmc.native_nuts.NativeNUTS` runs the same algorithm with a
model's compiled potential: each chain builds its own tree (no lockstep), a stretch of
transitions with the warmup's per-step adaptation is one call, and chains are spread over the
cores. The infer methods pick it when the kernel is built. Everything below describes the
torch implementation.

Randomness per chain and transition: one normal draw of ``D + 41`` numbers (the momentum, and
through the normal CDF the uniforms of the first five doublings); deeper doublings draw
``2^j + 2`` uniforms, only for chains still building, so chain ``c`` is unaffected by others.
Everything else is elementwise per chain or a reduction read at the chain's own last step,
so with a row-wise deterministic density chain ``c`` is bitwise the same in any batch.

>>> import torch
>>> fn = lambda z: (-0.5 * (z * z).sum(-1), -z)
>>> kernel = NUTS(fn, step_size=0.5)
>>> state = kernel.init(torch.zeros(3, 2, dtype=torch.float64))
>>> state, info = kernel.step(torch.Generator().manual_seed(0), state)
>>> info.tree_depth.shape
torch.Size([3])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from ppl.inference.rng import RNG, rand, randn

from .base import Info, KernelBase, State, check_count, make_info
from .integrators import LogDensityFn, Metric, sample_momentum, sharp
from .uturn import check_plan, column

__all__ = ["NUTS", "nuts_transition"]


@dataclass(frozen=True)
class NUTS(KernelBase):
    """No-U-Turn sampler with multinomial sampling and Stan's U-turn checks.

    ``max_tree_depth``: at most ``2^max_tree_depth - 1`` leapfrog steps per transition.
    ``divergence_threshold``: energy error that marks a divergence. ``compact``: evaluate the
    log density only on chains still building their tree (see the module docstring; the
    draws are the same either way when the density is row-wise deterministic).
    """

    max_tree_depth: int = 10
    divergence_threshold: float = 1000.0
    compact: bool = True

    target_accept: ClassVar[float | None] = 0.8

    def __post_init__(self) -> None:
        check_count(type(self).__name__, "max_tree_depth", self.max_tree_depth, 1)

    def step(self, rng: RNG, state: State) -> tuple[State, Info]:
        """One NUTS transition for every chain."""
        with torch.no_grad():
            return nuts_transition(
                self.fn, rng, state, self.max_tree_depth, self.divergence_threshold, self.compact
            )


# The predrawn uniforms, as rows of one (_PREDRAWN, C) block: the directions of doublings
# 0..4, then their tree-merge uniforms, then their step uniforms (doubling j's 2^j from row
# _STEPS + 2^j - 1 on).
_PREDRAWN_DOUBLINGS = 5
_TOPS = _PREDRAWN_DOUBLINGS
_STEPS = 2 * _PREDRAWN_DOUBLINGS
_PREDRAWN = _STEPS + (1 << _PREDRAWN_DOUBLINGS) - 1
_MIN_CHUNK = 16  # steps integrated between two rounds of checks (or a quarter subtree)
_NEVER = 1 << 40  # "no failing step"
_LOG_HALF = math.log(0.5)
_CONSTANTS: dict[tuple, Tensor] = {}


def _constant(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``value`` as a cached 0-dim tensor: comparing with one costs a third of comparing
    with a Python number (which torch wraps into a new tensor every time)."""
    key = (value, dtype, device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(value, dtype=dtype, device=device)
    return _CONSTANTS[key]


def _sizes(num_doublings: int, device: torch.device) -> Tensor:
    """The column ``2^j``, ``j < num_doublings`` (cached)."""
    key = ("sizes", num_doublings, device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = (1 << column(0, num_doublings, device)).contiguous()
    return _CONSTANTS[key]


class _Subtree(NamedTuple):
    """What :func:`_build_subtree` found. ``first_bad`` ``(C,)``: the first step that diverged
    or closed a U-turning block (the subtree is discarded), ``n`` when only the merge with the
    old tree U-turns (the subtree is kept, the transition ends), ``_NEVER`` when the tree goes
    on. ``lw`` ``(steps, C)``: ``-H`` of the integrated steps (non-finite: ``-inf``), ``lp`` their
    log densities; ``rho``: the momentum sum of the old tree and the subtree; ``end``: the last
    step's ``(z, p, grad)``; ``zs``, ``gs``: every step's position and gradient."""

    first_bad: Tensor
    lw: Tensor
    lp: Tensor
    rho: Tensor
    end: tuple[Tensor, Tensor, Tensor]
    zs: list[Tensor]
    gs: list[Tensor]


def nuts_transition(
    fn: LogDensityFn,
    rng: RNG,
    state: State,
    max_tree_depth: int = 10,
    divergence_threshold: float = 1000.0,
    compact: bool = True,
) -> tuple[State, Info]:
    """One NUTS transition of all chains (see the module docstring for the algorithm).

    Weights are kept as ``lw = log_density - kinetic = -H``; differences of ``lw`` are
    log weight ratios, and ``lw < lw0 - divergence_threshold`` is a divergence. With one
    chain the per-doubling choices are plain Python branches; with several they are
    ``where`` masks (the values are the same, so chain 0 does not depend on the batch).
    """
    transition = _Transition(fn, rng, state, divergence_threshold)
    if state.position.shape[0] == 1:
        return transition.single(max_tree_depth)
    return transition.batched(max_tree_depth, compact)


class _Transition:
    """One transition in progress: the initial point, momentum and weight, the predrawn
    uniforms and the leapfrog factors, shared by the single-chain and the batched doubling
    loops and by :meth:`finish`."""

    def __init__(self, fn: LogDensityFn, rng: RNG, state: State, divergence_threshold: float):
        z0, lp0, g0, step_size, metric = state
        num_chains, dim = z0.shape
        self.fn, self.rng, self.state, self.metric = fn, rng, state, metric
        self.dtype, self.device = z0.dtype, z0.device
        xi = randn(rng, num_chains, (dim + _PREDRAWN,), dtype=self.dtype, device=self.device)
        self.p0 = sample_momentum(metric, xi[:, :dim])
        self.log_u = torch.special.log_ndtr(xi[:, dim:]).T  # (_PREDRAWN, C) log uniforms
        self.lw0 = torch.sub(lp0, torch.linalg.vecdot(self.p0, sharp(metric, self.p0)), alpha=0.5)
        self.threshold = self.lw0 - _constant(divergence_threshold, self.dtype, self.device)
        eps = step_size.unsqueeze(-1)
        # The leapfrog factors forward in time: of the gradient in half and whole momentum
        # steps, of p (diagonal metric) or p# (dense) in position steps.
        move = eps if metric.dense else metric.inverse_mass * eps
        self.forward = (eps * _constant(0.5, self.dtype, self.device), eps, move)
        self.zero = torch.zeros_like(self.p0)
        self.log_half = _constant(_LOG_HALF, self.dtype, self.device)
        self.hist_lw: list[Tensor] = []

    def subtree(self, n: int, junction: tuple[Tensor, Tensor, Tensor], rho: Tensor,
                far_p: Tensor, factors: tuple[Tensor, Tensor, Tensor],
                active: Tensor | None = None, idx: Tensor | None = None,
                compact: bool = False) -> _Subtree:
        """:func:`_build_subtree` from ``junction`` with the leapfrog ``factors`` (signed for the
        direction); keeps its log weights for :meth:`finish`."""
        z, p, g = junction
        sub = _build_subtree(self.fn, n, z, p, g, self.state.log_density, rho - p, far_p,
                             self.zero, *factors, self.metric, self.threshold, active, idx,
                             compact)
        self.hist_lw.append(sub.lw)
        return sub

    def lw_steps(self) -> Tensor:
        """``-H`` of all steps so far, in build order ``(steps, C)``."""
        if len(self.hist_lw) > 1:
            self.hist_lw[:] = [torch.cat(self.hist_lw)]
        return self.hist_lw[0]

    def single(self, max_tree_depth: int) -> tuple[State, Info]:
        """The doublings of one chain: the choices are Python branches on Python numbers (the
        same comparisons of the same values as :meth:`batched`)."""
        state = self.state
        log_half = float(self.log_half)
        predrawn = self.log_u[:, 0].tolist()
        right = left = (state.position, self.p0, state.grad)
        rho, log_w = self.p0, self.lw0
        proposal = (state.position, state.grad, state.log_density, self.lw0)
        backward = None  # the leapfrog factors backward in time, made on first use
        num_steps = depth = 0
        for j in range(max_tree_depth):
            n = 1 << j
            if j < _PREDRAWN_DOUBLINGS:
                u = predrawn[j], predrawn[_TOPS + j], *predrawn[_STEPS + n - 1 : _STEPS + 2 * n - 1]
            else:
                u = rand(self.rng, 1, (n + 2,), dtype=self.dtype, device=self.device).log()
                u = u.flatten().tolist()
            forward, log_top, log_u_steps = u[0] < log_half, u[1], u[2:]
            if forward:
                sub = self.subtree(n, right, rho, left[1], self.forward)
            else:
                backward = backward or tuple(-f for f in self.forward)
                sub = self.subtree(n, left, rho, right[1], backward)
            first_bad = int(sub.first_bad)
            num_steps += min(first_bad + 1, n)
            if first_bad < n:
                break
            depth += 1
            cum = torch.logcumsumexp(sub.lw, 0)
            log_w_sub = cum[-1]
            if log_top < float(log_w_sub - log_w):
                gaps = (sub.lw - cum).flatten().tolist()
                k = max(i for i in range(n) if log_u_steps[i] < gaps[i])
                proposal = (sub.zs[k], sub.gs[k], sub.lp[k], sub.lw[k])
            log_w = torch.logaddexp(log_w, log_w_sub)
            if first_bad == n:
                break
            if forward:
                right = sub.end
            else:
                left = sub.end
            rho = sub.rho
        counts = torch.tensor([[num_steps], [depth]], device=self.device)
        return self.finish(proposal, counts[0], counts[1], num_steps - 1)

    def batched(self, max_tree_depth: int, compact: bool) -> tuple[State, Info]:
        """The doublings of several chains in lockstep, the choices as ``where`` masks. The
        proposal is kept as an index into the points in build order (the initial one, then
        each subtree's steps) and gathered once at the end."""
        state = self.state
        z0, lp0, g0 = state.position, state.log_density, state.grad
        num_chains = z0.shape[0]
        device = self.device
        one, minus_one = (_constant(v, self.dtype, device) for v in (1.0, -1.0))
        never, none = (_constant(v, torch.int64, device) for v in (_NEVER, -1))
        right = left = torch.stack((z0, self.p0, g0))
        rho, log_w = self.p0, self.lw0
        points_z, points_g, points_lp = [z0], [g0], [lp0.unsqueeze(0)]
        proposal = torch.zeros(num_chains, dtype=torch.int64, device=device)
        forward_pre = (self.log_u[:_PREDRAWN_DOUBLINGS] < self.log_half).unsqueeze(-1)
        sign_pre = torch.where(forward_pre, one, minus_one)
        active = torch.ones(num_chains, dtype=torch.bool, device=device)
        depth = torch.zeros(num_chains, dtype=torch.int64, device=device)
        first_bads: list[Tensor] = []
        chains = torch.arange(num_chains, device=device)
        idx = None  # chains to evaluate (None: all)
        for j in range(max_tree_depth):
            n = 1 << j
            if j < _PREDRAWN_DOUBLINGS:
                forward, sign = forward_pre[j], sign_pre[j]
                log_top = self.log_u[_TOPS + j]
                log_u_steps = self.log_u[_STEPS + n - 1 : _STEPS + 2 * n - 1]
            else:
                rows = active.nonzero().flatten().tolist()
                u = rand(self.rng, num_chains, (n + 2,), dtype=self.dtype, device=device,
                         rows=rows).log().T
                forward = (u[0] < self.log_half).unsqueeze(-1)
                sign, log_top, log_u_steps = torch.where(forward, one, minus_one), u[1], u[2:]
            if not compact:  # finished chains are evaluated too: keep them where they are
                sign = sign * active.unsqueeze(-1)
            junction = torch.where(forward, right, left).unbind(0)
            far_p = torch.where(forward, left, right)[1]
            sub = self.subtree(n, junction, rho, far_p, tuple(f * sign for f in self.forward),
                               active, idx, compact)
            first_bad = torch.where(active, sub.first_bad, none)  # finished chains: -1
            first_bads.append(first_bad)
            size = _constant(n, torch.int64, device)
            valid = first_bad >= size
            depth += valid
            points_z += sub.zs
            points_g += sub.gs
            points_lp.append(sub.lp)
            if len(sub.zs) == n:  # else it was cut short: no chain takes it or goes on
                cum = torch.logcumsumexp(sub.lw, 0)
                log_w_sub = cum[-1]
                take = valid & (log_top < log_w_sub - log_w)
                points = column(n, 2 * n, device)  # the subtree's steps in build order
                chosen = torch.where(log_u_steps < sub.lw - cum, points, none).amax(0)
                proposal = torch.where(take, chosen, proposal)
                log_w = torch.logaddexp(log_w, log_w_sub)
            active = first_bad == never
            if j + 1 == max_tree_depth or not bool(active.any()):
                break
            end = torch.stack(sub.end)
            right = torch.where(forward, end, right)
            left = torch.where(forward, left, end)
            rho = sub.rho
            if compact:
                live = active.nonzero().flatten()
                idx = live if live.numel() < num_chains else None
        # Steps per doubling: up to the first failing one, none once finished.
        steps = torch.stack(first_bads).add_(1).clamp_(min=0)
        num_steps = torch.minimum(steps, _sizes(len(first_bads), device)).sum(0)
        lw_points = torch.cat((self.lw0.unsqueeze(0), self.lw_steps()))
        at = (proposal, chains)
        picked = (torch.stack(points_z)[at], torch.stack(points_g)[at],
                  torch.cat(points_lp)[at], lw_points[at])
        return self.finish(picked, num_steps, depth, (num_steps - 1).unsqueeze(0))

    def finish(self, proposal: tuple[Tensor, ...], num_steps: Tensor, depth: Tensor,
               last: int | Tensor) -> tuple[State, Info]:
        """The new state and the statistics of the transition. A chain's steps are a prefix
        of the steps in build order; its acceptance statistic and divergence are read at its
        ``last`` step (an index, or ``(1, C)`` indices), from a running sum, so they do not
        depend on other chains' steps."""
        z, g, lp, lw = proposal
        lw_all = self.lw_steps()
        metro = torch.cumsum((lw_all - self.lw0).clamp_(max=0.0).exp_(), 0)
        if isinstance(last, int):
            metro_last, lw_last = metro[last], lw_all[last]
        else:
            metro_last, lw_last = metro.gather(0, last)[0], lw_all.gather(0, last)[0]
        state = self.state
        info = make_info(metro_last / num_steps, lw_last < self.threshold, -lw, num_steps,
                         state.step_size, depth)
        return State(z, lp, g, state.step_size, self.metric), info


def _build_subtree(
    fn: LogDensityFn,
    n: int,
    z: Tensor,
    p_a: Tensor,
    g: Tensor,
    lp: Tensor,
    offset: Tensor,
    far_p: Tensor,
    zero: Tensor,
    half: Tensor,
    kick: Tensor,
    move: Tensor,
    metric: Metric,
    threshold: Tensor,
    active: Tensor | None,
    idx: Tensor | None,
    compact: bool,
) -> _Subtree:
    """Integrate ``n = 2^j`` leapfrog steps from the junction point ``(z, p_a, g)`` and check
    them (see :class:`_Subtree` for what comes back).

    ``offset = rho_old - p_a`` and ``far_p`` (the momentum at the other end of the tree) let
    the merge checks share the subtree's momentum stack ``[0, offset, p_a, p_0 .. p_m, far_p]``
    with :func:`~.uturn.check_plan`. ``half``, ``kick = 2 half``, ``move``: the signed
    factors of the gradient in half and whole momentum steps and of ``p`` (``p#`` for a dense
    metric) in position steps; the loop merges the two momentum half steps between points,
    two operations per step. ``lp``: any ``(C,)``
    densities to fill the rows of chains left out of the density calls. ``active``: the chains
    still building (``None``: all); ``idx``: the rows to evaluate (``None``: all), narrowed
    between chunks to the chains still alive when ``compact``.
    """
    dense = metric.dense
    num_chains = z.shape[0]
    device = z.device
    never = _constant(_NEVER, torch.int64, device)
    zero_dot = _constant(0.0, z.dtype, device)
    zs: list[Tensor] = []
    gs: list[Tensor] = []
    halves: list[Tensor] = []  # momenta half a step before each point
    lps: list[Tensor] = []
    chunk = n if n <= _MIN_CHUNK else max(_MIN_CHUNK, n // 4)
    start = 0
    first_bad: Tensor | None = None
    p = torch.addcmul(p_a, g, half)
    for k in range(n):
        if k:  # the closing half step of the last point and the opening one of this one
            p = torch.addcmul(p, g, kick)
        z = torch.addcmul(z, sharp(metric, p) if dense else p, move)
        if idx is None:
            lp, g = fn(z)
        else:
            lp_part, g_part = fn(z.index_select(0, idx))
            lp = lp.index_copy(0, idx, lp_part)
            g = g.index_copy(0, idx, g_part)
        zs.append(z)
        gs.append(g)
        halves.append(p)
        lps.append(lp)
        stop = k + 1
        if stop < n and stop - start < chunk:
            continue
        # Everything for steps 0..stop-1 (recomputed from step 0 when a subtree has several
        # chunks, so the values do not depend on the chunking); checks for start..stop-1.
        # The points' momenta are their half-step momenta plus the closing half kick.
        mom = torch.addcmul(torch.stack([zero, offset, p_a, *halves, far_p]),
                            torch.stack([zero, zero, zero, *gs, zero]), half)
        vel = sharp(metric, mom)
        sums = torch.cumsum(mom, 0)
        lp_steps = torch.stack(lps)
        lw = torch.sub(lp_steps, torch.linalg.vecdot(mom, vel)[3 : stop + 3], alpha=0.5)
        torch.nan_to_num_(lw, nan=-math.inf, posinf=-math.inf)
        plan = check_plan(start, stop, n, device)
        rho = sums.index_select(0, plan.hi) - sums.index_select(0, plan.lo)
        dots = torch.linalg.vecdot(vel.index_select(0, plan.velocity), rho)
        ok = torch.cat((dots > zero_dot, (lw[start:] if start else lw) >= threshold))
        bad = torch.where(ok, never, plan.tick).amin(0)
        first_bad = bad if first_bad is None else torch.minimum(first_bad, bad)
        start = stop
        if stop == n:
            break
        alive = first_bad == never
        if active is not None:
            alive &= active
        if not bool(alive.any()):
            break
        if compact:
            live = alive.nonzero().flatten()
            idx = live if live.numel() < num_chains else None
    assert first_bad is not None
    return _Subtree(first_bad, lw, lp_steps, sums[-2], (z, mom[-2], g), zs, gs)
