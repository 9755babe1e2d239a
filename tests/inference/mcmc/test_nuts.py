"""NUTS internals: the U-turn checks match the recursive tree, lazy chunked checks and
compaction do not change the draws, tree depth and step counts agree, divergences are
reported on a funnel."""

from __future__ import annotations

import pytest
import torch

import ppl.inference.mcmc.nuts as nuts_module
import ppl.inference.mcmc.uturn as uturn_module
from ppl.inference.mcmc import NUTS, sample
from ppl.inference.rng import chain_generators


def _recursive_checks(a: int, n: int) -> list[tuple[frozenset, int, int]]:
    """Stan's build_tree on steps [a, a + n): every merge checks the whole block and, from
    size 4, each half extended by the neighbouring point of the other half. A check is
    (velocity steps, first and last step of the momentum sum)."""
    if n == 1:
        return []
    m, e = a + n // 2, a + n - 1
    out = _recursive_checks(a, n // 2) + _recursive_checks(m, n // 2)
    out.append((frozenset((a, e)), a, e))
    if n >= 4:
        out += [(frozenset((a, m)), a, m), (frozenset((m - 1, e)), m - 1, e)]
    return out


def _merge_checks(n: int) -> list[tuple[frozenset, int, int]]:
    """The merge of a subtree of n steps with the old tree, in the same notation: the old tree
    is "old" (its far end "far"), the junction point "a" = step -1; the merged tree's sum runs
    from "old" to step n - 1, the old tree + first step from "old" to step 0."""
    return [(frozenset(("far", n - 1)), "old", n - 1), (frozenset(("far", 0)), "old", 0),
            (frozenset(("a", n - 1)), -1, n - 1)]


def _plan_checks(start: int, stop: int, n: int) -> list[tuple[frozenset, int, int]]:
    plan = uturn_module.check_plan(start, stop, n, torch.device("cpu"))
    k = plan.hi.numel() // 2
    assert torch.equal(plan.hi[:k], plan.hi[k:]) and torch.equal(plan.lo[:k], plan.lo[k:])
    # Rows: V[t + 3] = p#_t, V[2] = p#_a, V[n + 3] = p#_far; S[t + 3] = rho_old + S_t, S[2] =
    # rho_old, S[1] = rho_old - p_a, S[0] = 0: S[hi] - S[lo] sums steps lo - 2 .. hi - 3,
    # from the junction point when lo = 1 and over the old tree too when lo = 0.
    label = {2: "a", n + 3: "far"}
    velocity = [label.get(x, x - 3) for x in plan.velocity.tolist()]
    first = {0: "old", 1: -1}
    checks = [(frozenset((velocity[i], velocity[i + k])), first.get(lo, lo - 2), hi - 3)
              for i, (hi, lo) in enumerate(zip(plan.hi[:k].tolist(), plan.lo[:k].tolist(),
                                               strict=True))]
    ticks = plan.tick.flatten().tolist()
    assert ticks[:k] == ticks[k : 2 * k] and ticks[2 * k :] == list(range(start, stop))
    return checks


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 4, 6])
def test_check_plan_matches_recursive_tree(depth):
    n = 1 << depth
    expected = sorted(_recursive_checks(0, n) + _merge_checks(n), key=repr)
    assert sorted(_plan_checks(0, n, n), key=repr) == expected
    # Split into chunks, the plans still cover every check exactly once, the merge last.
    chunk = max(2, n // 4)
    pieces = [c for s in range(0, n, chunk) for c in _plan_checks(s, min(s + chunk, n), n)]
    assert sorted(pieces, key=repr) == expected
    ticks = uturn_module.check_plan(0, n, n, torch.device("cpu")).tick.flatten().tolist()
    assert ticks[: -n][-3:] == [n] * 3


def _standard_normal(z):
    return -0.5 * (z * z).sum(-1), -z


def _run_steps(kernel, num_chains=3, dim=50, iterations=4):
    state = kernel.init(torch.linspace(-1, 1, num_chains * dim, dtype=torch.float64)
                        .reshape(num_chains, dim))
    gens = chain_generators(5, num_chains)
    out = []
    for _ in range(iterations):
        state, info = kernel.step(gens, state)
        out.append((state.position, info))
    return out


def test_chunked_checks_and_compaction_do_not_change_draws(monkeypatch):
    # A small step size makes deep trees (several chunks per subtree).
    reference = _run_steps(NUTS(_standard_normal, step_size=0.02, compact=False))
    assert max(int(info.tree_depth.max()) for _, info in reference) >= 6
    monkeypatch.setattr(nuts_module, "_MIN_CHUNK", 2)
    small_chunks = _run_steps(NUTS(_standard_normal, step_size=0.02, compact=False))
    compacted = _run_steps(NUTS(_standard_normal, step_size=0.02, compact=True))
    for (z_ref, info_ref), (z1, info1), (z2, info2) in zip(
        reference, small_chunks, compacted, strict=True
    ):
        assert torch.equal(z_ref, z1) and torch.equal(z_ref, z2)
        for a, b, c in zip(info_ref, info1, info2, strict=True):
            assert torch.equal(a, b) and torch.equal(a, c)


def test_tree_depth_and_step_counts_agree():
    run = sample(NUTS(max_tree_depth=6, compact=False), _standard_normal,
                 torch.zeros(4, 20, dtype=torch.float64), 100, 100, seed=0)
    depth, steps = run.info.tree_depth, run.info.num_grad_evals
    assert ((2**depth - 1 <= steps) & (steps <= 2 ** (depth + 1) - 1)).all()
    assert (depth <= 6).all() and (depth >= 1).all()
    # Tiny fixed step: every transition reaches the maximum depth, 2^3 - 1 steps.
    capped = sample(NUTS(step_size=1e-3, max_tree_depth=3), _standard_normal,
                    torch.zeros(2, 20, dtype=torch.float64), 0, 10, seed=0, adapt=False)
    assert (capped.info.tree_depth == 3).all() and (capped.info.num_grad_evals == 7).all()
    # Lockstep rows: every chain is evaluated on every call without compaction.
    assert run.num_grad_evals == 4 * run.num_fn_calls
    counted = run.info.num_grad_evals.sum() + run.warmup_info.num_grad_evals.sum()
    assert counted <= run.num_grad_evals
    # Compaction evaluates fewer rows for the same draws.
    compacted = sample(NUTS(max_tree_depth=6), _standard_normal,
                       torch.zeros(4, 20, dtype=torch.float64), 100, 100, seed=0)
    assert torch.equal(compacted.draws, run.draws)
    assert counted <= compacted.num_grad_evals < run.num_grad_evals


def test_funnel_divergences_are_reported(funnel):
    init = torch.tensor([[0.0, 1.0], [1.0, -1.0], [-1.0, 0.5], [2.0, 0.0]], dtype=torch.float64)
    run = sample(NUTS(step_size=1.5), funnel, init, 0, 50, seed=1, adapt=False)
    assert run.info.divergent.dtype == torch.bool
    assert run.num_divergent > 0
    assert torch.isfinite(run.draws).all()
    adapted = sample(NUTS(), funnel, init, 150, 150, seed=1)
    assert torch.isfinite(adapted.draws).all()
    assert torch.isfinite(adapted.info.accept_prob).all()
    assert adapted.info.divergent.shape == (4, 150)


def test_divergent_transitions_keep_a_valid_point():
    """A density that is nan beyond |z| > 2: every trajectory reaching it is divergent and
    the chain stays inside."""

    def fn(z):
        lp, g = _standard_normal(z)
        bad = (z.abs() > 2.0).any(-1)
        return torch.where(bad, torch.nan, lp), torch.where(bad.unsqueeze(-1), torch.nan, g)

    run = sample(NUTS(step_size=1.0), fn, torch.zeros(3, 2, dtype=torch.float64), 0, 200,
                 seed=2, adapt=False)
    assert run.num_divergent > 0
    assert (run.draws.abs() <= 2.0).all()
    assert torch.isfinite(run.info.energy).all()
