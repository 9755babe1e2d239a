"""The runner: reproducibility, chain-count invariance, chain methods, thinning, shapes,
gradient bookkeeping, non-finite densities, initialization errors."""

from __future__ import annotations

import math

import pytest
import torch

from ppl.inference.mcmc import HMC, MALA, NUTS, RWMH, Info, Slice, chain_generators, sample

KERNELS = {
    "nuts": NUTS(),
    "nuts-dense": NUTS(metric="dense"),
    "hmc": HMC(trajectory_length=2.0, jitter=0.3),
    "mala": MALA(),
    "rwmh": RWMH(),
    "slice": Slice(),
    "slice-random": Slice(direction="random", num_directions=2),
}


def _init(num_chains, dim=5):
    base = torch.tensor([0.5, -1.0, 0.0, 2.0, 1.0, -0.5, 0.3], dtype=torch.float64)[:dim]
    offsets = torch.arange(num_chains, dtype=torch.float64).unsqueeze(-1) * 0.1
    return base + offsets


def _assert_runs_equal(a, b, chains=slice(None)):
    assert torch.equal(a.draws[chains], b.draws[chains])
    for x, y in zip(a.info, b.info, strict=True):
        assert torch.equal(x[chains], y[chains])
    for x, y in zip(a.warmup_info, b.warmup_info, strict=True):
        assert torch.equal(x[chains], y[chains])
    assert torch.equal(a.step_size[chains], b.step_size[chains])
    assert torch.equal(a.inverse_mass_matrix[chains], b.inverse_mass_matrix[chains])


@pytest.mark.parametrize("name", list(KERNELS))
def test_same_seed_same_draws_and_chain_count_invariance(name, gaussian5):
    kernel = KERNELS[name]
    first = sample(kernel, gaussian5, _init(3), 60, 30, seed=7)
    again = sample(kernel, gaussian5, _init(3), 60, 30, seed=7)
    _assert_runs_equal(first, again)
    other = sample(kernel, gaussian5, _init(3), 60, 30, seed=8)
    assert not torch.equal(first.draws, other.draws)
    alone = sample(kernel, gaussian5, _init(1), 60, 30, seed=7)
    _assert_runs_equal(alone, first, chains=slice(0, 1))


def test_sequential_and_processes_match_batched(gaussian5):
    batched = sample(NUTS(), gaussian5, _init(2), 40, 20, seed=3)
    sequential = sample(NUTS(), gaussian5, _init(2), 40, 20, seed=3, chain_method="sequential")
    _assert_runs_equal(batched, sequential)
    assert sequential.chain_method == "sequential"
    processes = sample(NUTS(), gaussian5, _init(2), 40, 20, seed=3, chain_method="processes",
                       num_processes=2)
    _assert_runs_equal(batched, processes)
    # One chain per worker: no lockstep padding, the same evaluations as "sequential".
    assert processes.num_grad_evals == sequential.num_grad_evals <= batched.num_grad_evals
    with pytest.raises(ValueError, match="chain_method"):
        sample(NUTS(), gaussian5, _init(2), 1, 1, chain_method="threads")


def test_seed_forms(gaussian5):
    from_int = sample(MALA(), gaussian5, _init(2), 10, 10, seed=4)
    gens = chain_generators(4, 2)
    from_list = sample(MALA(), gaussian5, _init(2), 10, 10, seed=gens)
    _assert_runs_equal(from_int, from_list)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    a = sample(MALA(), gaussian5, _init(2), 10, 10, seed=g1)
    b = sample(MALA(), gaussian5, _init(2), 10, 10, seed=g2)
    _assert_runs_equal(a, b)


def test_single_generator_drives_a_kernel_directly(gaussian5):
    kernel = NUTS(gaussian5, step_size=0.5)
    state = kernel.init(_init(2))
    s1, i1 = kernel.step(torch.Generator().manual_seed(0), state)
    s2, i2 = kernel.step(torch.Generator().manual_seed(0), state)
    assert torch.equal(s1.position, s2.position) and torch.equal(i1.accept_prob, i2.accept_prob)


def test_thinning_keeps_every_kth_draw(gaussian5):
    full = sample(HMC(num_steps=3), gaussian5, _init(2), 20, 10, seed=1)
    thinned = sample(HMC(num_steps=3), gaussian5, _init(2), 20, 10, seed=1, thin=3)
    assert thinned.draws.shape == (2, 4, 5)
    assert torch.equal(thinned.draws, full.draws[:, ::3])
    assert torch.equal(thinned.info.accept_prob, full.info.accept_prob[:, ::3])


@pytest.mark.parametrize("name", ["nuts", "hmc", "slice"])
def test_info_shapes_and_dtypes(name, gaussian5):
    run = sample(KERNELS[name], gaussian5, _init(3), 30, 12, seed=0)
    assert isinstance(run.info, Info)
    assert run.draws.shape == (3, 12, 5)
    for field in run.info:
        assert field.shape == (3, 12)
    for field in run.warmup_info:
        assert field.shape == (3, 30)
    assert run.info.divergent.dtype == torch.bool
    assert run.info.num_grad_evals.dtype == torch.int64
    assert run.info.tree_depth.dtype == torch.int64
    assert run.info.accept_prob.dtype == torch.float64
    assert run.step_size.shape == (3,)
    assert run.inverse_mass_matrix.shape == (3, 5)
    assert run.warmup_time > 0 and run.sampling_time > 0
    # The final state continues the chains.
    state, info = KERNELS[name].bind(gaussian5).step(chain_generators(1, 3), run.final_state)
    assert state.position.shape == (3, 5) and info.accept_prob.shape == (3,)


def test_gradient_bookkeeping_for_static_kernels(gaussian5):
    chains, warmup, draws = 3, 7, 11
    hmc = sample(HMC(num_steps=5, step_size=0.2), gaussian5, _init(chains), warmup, draws,
                 seed=0, adapt=False)
    assert hmc.num_grad_evals == chains * (1 + 5 * (warmup + draws))
    assert (hmc.info.num_grad_evals == 5).all()
    for kernel in (MALA(step_size=0.2), RWMH(step_size=0.2)):
        run = sample(kernel, gaussian5, _init(chains), warmup, draws, seed=0, adapt=False)
        assert run.num_grad_evals == chains * (1 + warmup + draws)
        assert run.num_fn_calls == 1 + warmup + draws
    # With adaptation, the step-size searches add to the total.
    adapted = sample(HMC(num_steps=5), gaussian5, _init(chains), warmup, draws, seed=0)
    assert adapted.num_grad_evals > chains * (1 + 5 * (warmup + draws))


def _broken(z):
    """Standard normal, but nan where z_0 > 1 and -inf (outside the support) where z_1 < -1."""
    lp = -0.5 * (z * z).sum(-1)
    grad = -z
    lp = torch.where(z[:, 0] > 1.0, math.nan, lp)
    grad = torch.where((z[:, 0] > 1.0).unsqueeze(-1), math.nan, grad)
    lp = torch.where(z[:, 1] < -1.0, -math.inf, lp)
    return lp, grad


@pytest.mark.parametrize("name", list(KERNELS))
def test_non_finite_density_is_rejected_and_sampling_continues(name):
    # A fixed path length would make adaptation shrink the step towards 0 here: a walk of
    # length 2 from inside a box of width ~2 ends outside whatever the step size.
    kernel = HMC(num_steps=4, jitter=0.3) if name == "hmc" else KERNELS[name]
    run = sample(kernel, _broken, torch.zeros(3, 2, dtype=torch.float64), 150, 100, seed=0)
    assert torch.isfinite(run.draws).all()
    assert (run.draws[..., 0] <= 1.0).all() and (run.draws[..., 1] >= -1.0).all()
    assert torch.isfinite(run.step_size).all() and (run.step_size > 0).all()
    if name.startswith(("nuts", "hmc", "mala")):
        # Trajectories into the bad regions are divergent (nan and -inf alike, as in Stan).
        assert run.info.divergent.any() or run.warmup_info.divergent.any()
    # Points are still accepted: the chains move.
    assert (run.draws[:, 1:] != run.draws[:, :-1]).any(-1).float().mean() > 0.05


def test_non_finite_initial_density_names_the_chains(gaussian5):
    init = _init(3)
    init[1, 0] = math.nan
    with pytest.raises(ValueError, match=r"chains \[1\]"):
        sample(NUTS(), gaussian5, init, 5, 5)


def test_thread_count_restored_and_bad_arguments(gaussian5):
    before = torch.get_num_threads()
    sample(RWMH(), gaussian5, _init(1), 2, 2, num_threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="chains, dim"):
        sample(NUTS(), gaussian5, torch.zeros(5, dtype=torch.float64), 1, 1)
    with pytest.raises(ValueError, match="log density"):
        sample(NUTS(), None, _init(1), 1, 1)
    with pytest.raises(ValueError, match="thin"):
        sample(NUTS(), gaussian5, _init(1), 1, 1, thin=0)
