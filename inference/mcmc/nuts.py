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
with its own direction, step size, metric, masks and proposals; a chain that has finished its
transition (or whose subtree died) keeps stepping with step size 0 until the deepest chain is
done, or, with ``compact=True``, is left out of the log density calls (worth it when the
density's cost grows with the number of rows; see ``bench/mcmc_kernels.py``).

Cost: on CPU the overhead of a torch operation on small tensors (2-5 us here) is comparable
to a small model's whole gradient, so the leapfrog loop issues only three operations per step
(positions, momenta and gradients are kept as one tensor per step, out of place, never
copied). Everything else is computed per *chunk* of steps, vectorized over the steps:
velocities, energies, divergences, the running momentum sums (``cumsum``), every U-turn check
whose block ends in the chunk (the dot products are gathered with precomputed indices), and,
once per subtree, the multinomial selection (``logcumsumexp`` gives every progressive-sampling
decision at once). A chunk is the whole subtree up to 16 steps, then a quarter of it. The
checks are lazy but exact: a chain's subtree is cut at its first failing step, so the draws do
not depend on the chunking; the steps integrated after a failure within the chunk are the
price (they count in ``MCMCRun.num_grad_evals``, not in the chain's ``num_grad_evals``).

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

from .base import Info, KernelBase, State, make_info
from .integrators import LogDensityFn, Metric, sample_momentum, sharp
from .rng import RNG, rand, randn

__all__ = ["NUTS", "nuts_transition"]


@dataclass(frozen=True)
class NUTS(KernelBase):
    """No-U-Turn sampler with multinomial sampling and Stan's U-turn checks.

    ``max_tree_depth``: at most ``2^max_tree_depth - 1`` leapfrog steps per transition.
    ``divergence_threshold``: energy error that marks a divergence. ``compact``: evaluate the
    log density only on chains still building their tree (see the module docstring).
    """

    max_tree_depth: int = 10
    divergence_threshold: float = 1000.0
    compact: bool = False

    target_accept: ClassVar[float | None] = 0.8

    def step(self, rng: RNG, state: State) -> tuple[State, Info]:
        """One NUTS transition for every chain."""
        with torch.no_grad():
            return nuts_transition(
                self.fn, rng, state, self.max_tree_depth, self.divergence_threshold, self.compact
            )


_PREDRAWN = 64  # uniforms drawn with the momentum: doublings 0..4 need 41
_MIN_CHUNK = 16  # steps integrated between two rounds of checks (or a quarter subtree)
_NEVER = 1 << 40  # "no failing step"


def _no_uturn(ps_a: list[Tensor], ps_b: list[Tensor], rhos: list[Tensor]) -> Tensor:
    """Generalized criterion for several (sub)trees at once: for each triple,
    ``p#_a . rho > 0 and p#_b . rho > 0``; returns the per-chain conjunction ``(C,)``."""
    dots = torch.linalg.vecdot(torch.stack(ps_a + ps_b), torch.stack(rhos + rhos))
    return dots.amin(0) > 0


class _CheckPlan(NamedTuple):
    """Indices of the U-turn checks whose blocks end in one chunk of a subtree: velocities
    ``xa``, ``xb`` into ``PSx`` (``PSx[t + 1] = p#_t``), momentum-sum bounds ``hi``, ``lo``
    into ``Sx`` (``Sx[t + 2] = S_t``, so ``rho = S_hi - S_lo``), and the step ``tick`` at which
    each check is made (as a column, to broadcast over chains)."""

    xa: Tensor
    xb: Tensor
    hi: Tensor
    lo: Tensor
    tick: Tensor


_PLANS: dict[tuple[int, int, str], _CheckPlan | None] = {}


def _check_plan(start: int, stop: int, device: torch.device) -> _CheckPlan | None:
    """Checks for steps ``start .. stop - 1`` of a subtree (cached). The block of size
    ``2^i`` ending at step ``e`` is ``[a, e]`` with halves ``A = [a, m)`` and ``B = [m, e]``;
    it is checked whole and, for ``i >= 2``, as ``A + first point of B`` and
    ``B + last point of A`` (Stan's extra checks between subtrees)."""
    key = (start, stop, str(device))
    if key in _PLANS:
        return _PLANS[key]
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
        plan = _CheckPlan(cols[0], cols[1], cols[2], cols[3], cols[4].unsqueeze(-1))
    _PLANS[key] = plan
    return plan


def nuts_transition(
    fn: LogDensityFn,
    rng: RNG,
    state: State,
    max_tree_depth: int = 10,
    divergence_threshold: float = 1000.0,
    compact: bool = False,
) -> tuple[State, Info]:
    """One NUTS transition of all chains (see the module docstring for the algorithm).

    Weights are kept as ``lw = log_density - kinetic = -H``; differences of ``lw`` are
    log weight ratios, and ``lw < lw0 - divergence_threshold`` is a divergence.
    """
    z0, lp0, g0, step_size, metric = state
    num_chains, dim = z0.shape
    dtype, device = z0.dtype, z0.device
    xi = randn(rng, num_chains, (dim + _PREDRAWN,), dtype=dtype, device=device)
    p0 = sample_momentum(metric, xi[:, :dim])
    u_pre = torch.special.ndtr(xi[:, dim:])
    ps0 = sharp(metric, p0)
    lw0 = torch.sub(lp0, torch.linalg.vecdot(p0, ps0), alpha=0.5)
    threshold = lw0 - divergence_threshold

    # Tree ends as (z, p, grad, p#) stacks plus densities; the proposal as (z, grad) and
    # (log density, lw) stacks; log total weight; momentum sum; per-subtree histories.
    left = right = torch.stack((z0, p0, g0, ps0))
    left_lp = right_lp = lp0
    prop_zg, prop_lpw = torch.stack((z0, g0)), torch.stack((lp0, lw0))
    log_w, rho = lw0, p0
    depth = torch.zeros(num_chains, dtype=torch.int64, device=device)
    active = torch.ones(num_chains, dtype=torch.bool, device=device)
    hist_lw: list[Tensor] = []
    hist_alive: list[Tensor] = []
    neg_step = -step_size
    ar_chains = torch.arange(num_chains, device=device)
    offset = 0
    rows: list[int] | None = None
    for j in range(max_tree_depth):
        n = 1 << j
        if offset + n + 2 <= _PREDRAWN:
            u = u_pre[:, offset : offset + n + 2]
            offset += n + 2
        else:
            offset = _PREDRAWN
            rows = active.nonzero().flatten().tolist()
            u = rand(rng, num_chains, (n + 2,), dtype=dtype, device=device, rows=rows)
        forward = u[:, 0] < 0.5
        fwd_col = forward.unsqueeze(-1)
        step = (torch.where(forward, step_size, neg_step) * active).unsqueeze(-1)
        junction = torch.where(fwd_col, right, left)
        a_lp = torch.where(forward, right_lp, left_lp)
        far_ps = torch.where(fwd_col, left[3], right[3])
        idx = None
        if compact and j > 0:
            rows = active.nonzero().flatten().tolist()
            if len(rows) < num_chains:
                idx = torch.tensor(rows, dtype=torch.int64, device=device)
        sub = _build_subtree(fn, n, junction, a_lp, step, metric, threshold, u[:, 2:], active,
                             idx, compact, ar_chains)
        valid, sub_zg, sub_lpw, lws, end, lp_last, ps_b, p_b, s_ext, lw_k, alive_k = sub
        hist_lw.append(lw_k)
        hist_alive.append(alive_k)
        if not bool(valid.any()):
            break
        # Biased progressive sampling between the old tree and the new subtree.
        take = valid & (u[:, 1].log() < lws - log_w)
        prop_zg = torch.where(take.unsqueeze(-1), sub_zg, prop_zg)
        prop_lpw = torch.where(take, sub_lpw, prop_lpw)
        log_w = torch.where(valid, torch.logaddexp(log_w, lws), log_w)
        # Extend the tree at the chosen end.
        ext_r = valid & forward
        ext_l = valid ^ ext_r
        right = torch.where(ext_r.unsqueeze(-1), end, right)
        left = torch.where(ext_l.unsqueeze(-1), end, left)
        right_lp = torch.where(ext_r, lp_last, right_lp)
        left_lp = torch.where(ext_l, lp_last, left_lp)
        rho_old = rho
        rho = torch.where(valid.unsqueeze(-1), rho + s_ext[0], rho)
        # U-turn on the merged tree, on the old tree + the subtree's first point b and on the
        # subtree + the junction point a (s_ext = (S_last, S_last + p_a)).
        keep = _no_uturn(
            [left[3], far_ps, junction[3]],
            [right[3], ps_b, end[3]],
            [rho, rho_old + p_b, s_ext[1]],
        )
        depth += valid
        active = valid & keep
        if j + 1 < max_tree_depth and not bool(active.any()):
            break

    lw_all = torch.cat(hist_lw)
    alive_all = torch.cat(hist_alive)
    num_steps = alive_all.sum(0)
    accept_prob = ((lw_all - lw0).clamp(max=0.0).exp() * alive_all).sum(0) / num_steps
    divergent = (alive_all & (lw_all < threshold)).any(0)
    z, g = prop_zg.unbind(0)
    lp, lw = prop_lpw.unbind(0)
    new_state = State(z, lp, g, step_size, metric)
    return new_state, make_info(accept_prob, divergent, -lw, num_steps, step_size, depth)


def _build_subtree(
    fn: LogDensityFn,
    n: int,
    junction: Tensor,
    lp: Tensor,
    step: Tensor,
    metric: Metric,
    threshold: Tensor,
    u: Tensor,
    active: Tensor,
    idx: Tensor | None,
    compact: bool,
    ar_chains: Tensor,
):
    """Integrate ``n = 2^j`` leapfrog steps from the junction point ``(z, p, grad, p#)``.

    The loop only integrates; after each chunk the velocities, log weights ``lw``, momentum
    sums and all U-turn checks of the chunk are computed at once, and each chain's first
    failing step (divergence or U-turn) is kept. Returns: chains whose subtree is valid,
    the multinomial proposal ``(z, grad)`` and ``(log density, lw)``, the subtree's log
    weight, its last point ``(z, p, grad, p#)`` and density, ``p#`` and ``p`` of its first
    point, ``(S_last, S_last + p_a)``, and per-step ``lw`` and "still building" masks.
    """
    z, p, g, a_ps = junction.unbind(0)
    num_chains, dim = z.shape
    dense = metric.inverse_mass.dim() == 3
    half = 0.5 * step
    minv_step = None if dense else metric.inverse_mass * step
    # PSx[t + 1] = p#_t and Sx[t + 2] = S_t = p_0 + ... + p_t, for t >= -1 / -2 (the junction
    # point a is "step -1", so S_-1 = 0 and S_-2 = -p_a).
    psx = z.new_empty((n + 1, num_chains, dim))
    sx = z.new_empty((n + 2, num_chains, dim))
    psx[0] = a_ps
    torch.neg(p, out=sx[0])
    sx[1].zero_()
    zs: list[Tensor] = []
    pms: list[Tensor] = []
    gs: list[Tensor] = []
    lps: list[Tensor] = []
    lw_chunks: list[Tensor] = []
    first_bad = torch.full((num_chains,), _NEVER, dtype=torch.int64, device=z.device)
    alive = active
    chunk = n if n <= _MIN_CHUNK else max(_MIN_CHUNK, n // 4)
    start = 0
    for k in range(n):
        p = torch.addcmul(p, g, half)
        if dense:
            z = torch.addcmul(z, sharp(metric, p), step)
        else:
            z = torch.addcmul(z, p, minv_step)
        if idx is None:
            lp, g = fn(z)
        else:
            lp_part, g_part = fn(z.index_select(0, idx))
            lp = lp.index_copy(0, idx, lp_part)
            g = g.index_copy(0, idx, g_part)
        p = torch.addcmul(p, g, half)
        zs.append(z)
        pms.append(p)
        gs.append(g)
        lps.append(lp)
        if k + 1 < n and (k + 1 - start) < chunk:
            continue
        # Checks for steps start..k, vectorized over the steps.
        stop = k + 1
        p_chunk = torch.stack(pms[start:stop])
        ps_chunk = psx[start + 1 : stop + 1]
        ps_chunk.copy_(sharp(metric, p_chunk))
        lw = torch.sub(torch.stack(lps[start:stop]), torch.linalg.vecdot(p_chunk, ps_chunk),
                       alpha=0.5)
        torch.nan_to_num_(lw, nan=-math.inf, posinf=-math.inf)
        lw_chunks.append(lw)
        s_chunk = sx[start + 2 : stop + 2]
        torch.cumsum(p_chunk, 0, out=s_chunk)
        s_chunk.add_(sx[start + 1])
        ticks = torch.arange(start, stop, device=z.device).unsqueeze(-1)
        bad = torch.where(lw < threshold, ticks, _NEVER).amin(0)
        plan = _check_plan(start, stop, z.device)
        if plan is not None:
            rho = sx.index_select(0, plan.hi) - sx.index_select(0, plan.lo)
            dots = torch.minimum(
                torch.linalg.vecdot(psx.index_select(0, plan.xa), rho),
                torch.linalg.vecdot(psx.index_select(0, plan.xb), rho),
            )
            bad = torch.minimum(bad, torch.where(dots > 0, _NEVER, plan.tick).amin(0))
        first_bad = torch.minimum(first_bad, bad)
        alive = active & (first_bad == _NEVER)
        start = stop
        if not bool(alive.any()):
            break
        if compact and k + 1 < n:
            rows = alive.nonzero().flatten()
            idx = rows if rows.numel() < num_chains else None

    done = len(zs)
    lw_all = torch.cat(lw_chunks) if len(lw_chunks) > 1 else lw_chunks[0]
    steps = torch.arange(done, device=z.device).unsqueeze(-1)
    alive_steps = active & (steps <= first_bad)
    end = torch.stack((z, p, g, psx[done]))
    s_ext = torch.stack((sx[done + 1], sx[done + 1] - sx[0]))
    if done < n or n == 1:  # cut short (nothing valid) or a single step
        sub_zg = torch.stack((z, g))
        sub_lpw = torch.stack((lp, lw_all[-1]))
        log_weight = lw_all[-1]
    else:
        # Progressive multinomial sampling within the subtree, all steps at once: step k
        # replaces the proposal when log u_k < lw_k - log(sum_{i<=k} w_i); the last one wins.
        cum = torch.logcumsumexp(lw_all, 0)
        chosen = torch.where(u[:, :n].T.log() < lw_all - cum, steps, 0).amax(0)
        sub_zg = torch.stack(zs + gs)[torch.stack((chosen, chosen + n)), ar_chains]
        sub_lpw = torch.stack((torch.stack(lps), lw_all))[:, chosen, ar_chains]
        log_weight = cum[-1]
    return (alive, sub_zg, sub_lpw, log_weight, end, lp, psx[1], pms[0], s_ext, lw_all,
            alive_steps)
