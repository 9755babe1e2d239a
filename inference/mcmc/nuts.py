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
transition (or whose subtree died) waits, stepping with step size 0, until the deepest chain
is done; with ``compact=True`` (the default) it is also left out of the log density calls.
Measured in ``bench/mcmc_kernels.py``: when the chains need different depths, lockstep pads
~25-55% of the chain-steps, which costs nothing for a cheap density (a call costs the same
for 1 or 4 rows; batched still beats one chain after another by 2-3x) and is recovered by
compaction for an expensive one (logistic regression, N = 5000: 1.85x the throughput of plain
lockstep, 1.3x that of sequential chains); compaction costs 5-15% on cheap densities.

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
With one chain the per-doubling choices are Python branches instead of ``where`` masks.

Randomness per chain and transition: one normal draw of ``D + 64`` numbers (the momentum, and
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
from typing import ClassVar

import torch
from torch import Tensor

from .base import Info, KernelBase, State, make_info
from .integrators import LogDensityFn, Metric, sample_momentum, sharp
from .rng import RNG, rand, randn
from .uturn import check_plan, column, no_uturn

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

    def step(self, rng: RNG, state: State) -> tuple[State, Info]:
        """One NUTS transition for every chain."""
        with torch.no_grad():
            return nuts_transition(
                self.fn, rng, state, self.max_tree_depth, self.divergence_threshold, self.compact
            )


_PREDRAWN = 64  # uniforms drawn with the momentum (as normals): doublings 0..4 need 41
_PREDRAWN_DOUBLINGS = 5
_MIN_CHUNK = 16  # steps integrated between two rounds of checks (or a quarter subtree)
_NEVER = 1 << 40  # "no failing step"
_LOG_HALF = math.log(0.5)
_DIRECTION_INDEX: dict[str, tuple[Tensor, Tensor]] = {}
# Doubling j uses uniforms offset_j (direction), offset_j + 1 (tree merge), offset_j + 2 ...
# (its 2^j steps), with offset_j = sum_{i<j} (2^i + 2).
_OFFSETS = [(1 << j) - 1 + 2 * j for j in range(_PREDRAWN_DOUBLINGS + 1)]


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
    z0, lp0, g0, step_size, metric = state
    num_chains, dim = z0.shape
    single = num_chains == 1
    dtype, device = z0.dtype, z0.device
    xi = randn(rng, num_chains, (dim + _PREDRAWN,), dtype=dtype, device=device)
    p0 = sample_momentum(metric, xi[:, :dim])
    log_u_pre = torch.special.log_ndtr(xi[:, dim:])  # log of uniforms
    if str(device) not in _DIRECTION_INDEX:
        offsets = torch.tensor(_OFFSETS[:-1], device=device)
        _DIRECTION_INDEX[str(device)] = (offsets, offsets + 1)
    dir_idx, top_idx = _DIRECTION_INDEX[str(device)]
    forward_pre = log_u_pre[:, dir_idx] < _LOG_HALF  # (C, 5)
    forwards = forward_pre.unbind(1)
    forward_cols = forward_pre.unsqueeze(-1).unbind(1)
    forward_py = forward_pre[0].tolist() if single else None
    log_tops = log_u_pre[:, top_idx].unbind(1)
    log_u_rows = log_u_pre.T
    ps0 = sharp(metric, p0)
    lw0 = torch.sub(lp0, torch.linalg.vecdot(p0, ps0), alpha=0.5)
    threshold = lw0 - divergence_threshold
    eps_fwd = step_size.unsqueeze(-1)
    eps_bwd = -eps_fwd

    # Tree ends as (z, p, grad, p#) stacks plus densities and velocities; the proposal as
    # (z, grad) and (log density, lw) stacks; log total weight; momentum sum; histories.
    left = right = torch.stack((z0, p0, g0, ps0))
    left_lp = right_lp = lp0
    left_ps = right_ps = ps0
    prop_zg, prop_lpw = torch.stack((z0, g0)), torch.stack((lp0, lw0))
    log_w, rho = lw0, p0
    depth = torch.zeros(num_chains, dtype=torch.int64, device=device)
    depth_single = 0
    active = torch.ones(num_chains, dtype=torch.bool, device=device)
    hist_lw: list[Tensor] = []
    hist_alive: list[Tensor] = []
    ar_chains = torch.arange(num_chains, device=device)
    for j in range(max_tree_depth):
        n = 1 << j
        if j < _PREDRAWN_DOUBLINGS:
            forward, fwd_col, log_top = forwards[j], forward_cols[j], log_tops[j]
            log_u = log_u_rows[_OFFSETS[j] + 2 : _OFFSETS[j] + 2 + n]
            fwd_py = forward_py[j] if single else None
        else:
            rows = active.nonzero().flatten().tolist()
            u = rand(rng, num_chains, (n + 2,), dtype=dtype, device=device, rows=rows).log()
            forward = u[:, 0] < _LOG_HALF
            fwd_col = forward.unsqueeze(-1)
            log_top, log_u = u[:, 1], u[:, 2:].T
            fwd_py = bool(forward[0]) if single else None
        if single:
            step = eps_fwd if fwd_py else eps_bwd
            junction, a_lp, far_ps = ((right, right_lp, left_ps) if fwd_py
                                      else (left, left_lp, right_ps))
        else:
            step = torch.where(fwd_col, eps_fwd, eps_bwd) * active.unsqueeze(-1)
            junction = torch.where(fwd_col, right, left)
            a_lp = torch.where(forward, right_lp, left_lp)
            far_ps = torch.where(fwd_col, left_ps, right_ps)
        idx = None
        if compact and j > 0 and not single:
            live = active.nonzero().flatten()
            idx = live if live.numel() < num_chains else None
        (valid, select, lws, end, lp_last, ps_b, p_b, s_last, s_ext, lw_k, alive_k) = (
            _build_subtree(fn, n, junction.unbind(0), a_lp, step, metric, threshold, log_u,
                           active, idx, compact, ar_chains))
        hist_lw.append(lw_k)
        hist_alive.append(alive_k)
        if not bool(valid.any()):
            break
        # Biased progressive sampling between the old tree and the new subtree: the
        # subtree's own multinomial draw is only computed when some chain takes it.
        take = log_top < lws - log_w
        end_ps = end[3]
        rho_old = rho
        if single:  # the one chain is valid here
            if bool(take):
                prop_zg, prop_lpw = select()
            log_w = torch.logaddexp(log_w, lws)
            if fwd_py:
                right, right_lp, right_ps = end, lp_last, end_ps
            else:
                left, left_lp, left_ps = end, lp_last, end_ps
            rho = rho + s_last
        else:
            take = take & valid
            if bool(take.any()):
                sub_zg, sub_lpw = select()
                prop_zg = torch.where(take.unsqueeze(-1), sub_zg, prop_zg)
                prop_lpw = torch.where(take, sub_lpw, prop_lpw)
            log_w = torch.where(valid, torch.logaddexp(log_w, lws), log_w)
            ext_r = valid & forward
            ext_l = valid ^ ext_r
            ext_r_col, ext_l_col = ext_r.unsqueeze(-1), ext_l.unsqueeze(-1)
            right = torch.where(ext_r_col, end, right)
            left = torch.where(ext_l_col, end, left)
            right_lp = torch.where(ext_r, lp_last, right_lp)
            left_lp = torch.where(ext_l, lp_last, left_lp)
            right_ps = torch.where(ext_r_col, end_ps, right_ps)
            left_ps = torch.where(ext_l_col, end_ps, left_ps)
            rho = torch.where(valid.unsqueeze(-1), rho + s_last, rho)
        # U-turn on the merged tree, on the old tree + the subtree's first point b and on the
        # subtree + the junction point a (s_ext = S_subtree + p_a).
        keep = no_uturn(
            [left_ps, far_ps, junction[3]],
            [right_ps, ps_b, end_ps],
            [rho, rho_old + p_b, s_ext],
        )
        if single:
            depth_single += 1
            if not bool(keep):
                break
            continue
        depth += valid
        active = valid & keep
        if j + 1 < max_tree_depth and not bool(active.any()):
            break

    if single:
        depth = torch.full((1,), depth_single, dtype=torch.int64, device=device)
    lw_all = torch.cat(hist_lw)
    alive_all = torch.cat(hist_alive)
    num_steps = alive_all.sum(0)
    # A running sum read at each chain's last step: unlike sum(0), it does not depend on how
    # many (masked) steps other chains made, so chain c's statistic is bitwise the same in
    # any batch.
    metro = torch.cumsum((lw_all - lw0).clamp(max=0.0).exp() * alive_all, 0)
    accept_prob = metro.gather(0, (num_steps - 1).unsqueeze(0)).squeeze(0) / num_steps
    divergent = (alive_all & (lw_all < threshold)).any(0)
    z, g = prop_zg.unbind(0)
    lp, lw = prop_lpw.unbind(0)
    new_state = State(z, lp, g, step_size, metric)
    return new_state, make_info(accept_prob, divergent, -lw, num_steps, step_size, depth)


def _build_subtree(
    fn: LogDensityFn,
    n: int,
    junction: tuple[Tensor, ...],
    a_lp: Tensor,
    step: Tensor,
    metric: Metric,
    threshold: Tensor,
    log_u: Tensor,
    active: Tensor,
    idx: Tensor | None,
    compact: bool,
    ar_chains: Tensor,
):
    """Integrate ``n = 2^j`` leapfrog steps from the junction point ``(z, p, grad, p#)``.

    The loop only integrates; after each chunk the velocities, log weights ``lw``, momentum
    sums and all U-turn checks of the chunk are computed at once, and each chain's first
    failing step (divergence or U-turn) is kept. Returns: chains whose subtree is valid,
    a function drawing the multinomial proposal ``(z, grad)``, ``(log density, lw)`` (called
    only if some chain takes it), the subtree's log weight, its last point
    ``(z, p, grad, p#)`` and density, ``p#`` and ``p`` of its first point, its momentum sum
    ``S``, ``S + p_a``, and per-step ``lw`` and "still building" masks.
    """
    z, p_a, g, _ = junction
    num_chains = z.shape[0]
    dense = metric.inverse_mass.dim() == 3
    half = 0.5 * step
    minv_step = None if dense else metric.inverse_mass * step
    p = p_a
    if n == 1:  # a single step: no checks inside, the step is the proposal
        p = torch.addcmul(p, g, half)
        z = torch.addcmul(z, sharp(metric, p), step) if dense else torch.addcmul(z, p, minv_step)
        lp, g = fn(z)
        p = torch.addcmul(p, g, half)
        ps = sharp(metric, p)
        lw = torch.sub(lp, torch.linalg.vecdot(p, ps), alpha=0.5)
        torch.nan_to_num_(lw, nan=-math.inf, posinf=-math.inf)
        alive = active & (lw >= threshold)
        zg, lpw = torch.stack((z, g)), torch.stack((lp, lw))
        return (alive, lambda: (zg, lpw), lw, torch.stack((z, p, g, ps)), lp, ps, p, p,
                p + p_a, lw.unsqueeze(0), active.unsqueeze(0))
    zs: list[Tensor] = []
    gs: list[Tensor] = []
    pms = [p_a]  # momenta of the junction point and of every step
    lps = [a_lp]
    first_bad: Tensor | None = None
    alive = active
    chunk = n if n <= _MIN_CHUNK else max(_MIN_CHUNK, n // 4)
    start = 0
    lp = a_lp
    device = z.device
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
        gs.append(g)
        pms.append(p)
        lps.append(lp)
        if k + 1 < n and (k + 1 - start) < chunk:
            continue
        # Checks for steps start..k, vectorized over the steps (recomputed from step 0 when
        # a subtree has several chunks; PS[t + 1], lw_all[t + 1] belong to step t).
        stop = k + 1
        p_all = torch.stack(pms)
        ps_all = sharp(metric, p_all)
        lp_all = torch.stack(lps)
        lw_all = torch.sub(lp_all, torch.linalg.vecdot(p_all, ps_all), alpha=0.5)
        torch.nan_to_num_(lw_all, nan=-math.inf, posinf=-math.inf)
        sx = torch.nn.functional.pad(torch.cumsum(p_all, 0), (0, 0, 0, 0, 1, 0))
        bad = torch.where(lw_all[start + 1 :] < threshold, column(start, stop, device),
                          _NEVER).amin(0)
        plan = check_plan(start, stop, device)
        if plan is not None:
            rho = sx.index_select(0, plan.hi) - sx.index_select(0, plan.lo)
            dots = torch.minimum(
                torch.linalg.vecdot(ps_all.index_select(0, plan.xa), rho),
                torch.linalg.vecdot(ps_all.index_select(0, plan.xb), rho),
            )
            bad = torch.minimum(bad, torch.where(dots > 0, _NEVER, plan.tick).amin(0))
        first_bad = bad if first_bad is None else torch.minimum(first_bad, bad)
        alive = active & (first_bad == _NEVER)
        start = stop
        if not bool(alive.any()):
            break
        if compact and k + 1 < n:
            live = alive.nonzero().flatten()
            idx = live if live.numel() < num_chains else None

    done = len(zs)
    lw_steps = lw_all[1:]
    alive_steps = active & (column(0, done, device) <= first_bad)
    end = torch.stack((z, p, g, ps_all[done]))
    s_ext = sx[done + 1]
    s_last = s_ext - p_a
    if done < n:  # cut short: nothing is valid, the proposal is never used
        return (alive, None, lw_steps[-1], end, lp, ps_all[1], pms[1], s_last, s_ext, lw_steps,
                alive_steps)
    cum = torch.logcumsumexp(lw_steps, 0)

    def select() -> tuple[Tensor, Tensor]:
        """Progressive multinomial sampling within the subtree, all steps at once: step k
        replaces the proposal when log u_k < lw_k - log(sum_{i<=k} w_i); the last one wins.
        Returns the chosen ``(z, grad)`` and ``(log density, lw)`` stacks."""
        chosen = torch.where(log_u < lw_steps - cum, column(0, n, device), 0).amax(0)
        sub_zg = torch.stack(zs + gs)[torch.stack((chosen, chosen + n)), ar_chains]
        sub_lpw = torch.stack((lp_all[1:], lw_steps))[:, chosen, ar_chains]
        return sub_zg, sub_lpw

    return (alive, select, cum[-1], end, lp, ps_all[1], pms[1], s_last, s_ext, lw_steps,
            alive_steps)
