"""Particle MCMC (PMMH, particle Gibbs with ancestor sampling, SMC²) against exact answers:
the posterior of a linear-Gaussian model's static parameter on a grid (prior times Kalman
likelihood), its evidence, and the RTS smoother's means for the conditional filter."""

import math

import pytest
import torch

from ppl import factor, infer, model, sample
from ppl.errors import ModelError
from ppl.inference import PMMH, SMC2, ParticleGibbs
from ppl.inference.lowering.native import compiler_available
from ppl.inference.mcmc import MALA
from ppl.inference.results.diagnostics import mcse_mean
from ppl.inference.smc import native
from ppl.inference.smc.blocks import one_thread
from ppl.inference.smc.native_blocks import block_filters
from ppl.inference.smc.native_conditional import path_sweeps
from ppl.inference.smc.static import StaticModel
from ppl.inference.testing.sequential import DiscreteHMM, LinearGaussianSSM
from ppl.stdlib import (
    Beta,
    Categorical,
    HalfNormal,
    Normal,
    TruncatedNormal,
    Uniform,
    VonMises,
)

TRUTH = LinearGaussianSSM(a=0.7, q=1.0, r=0.7)
YS = TRUTH.simulate(20, seed=2)
GRID = torch.linspace(-1.0, 1.0, 2001, dtype=torch.float64)
NO_CC = pytest.mark.skipif(not compiler_available(), reason="no C compiler: no C filter")
#: The filters' backends: torch everywhere, C where a compiler is.
BACKENDS = ["torch", pytest.param("native", marks=NO_CC)]


@model
def ssm(ys):
    a = sample("a", Uniform(-1.0, 1.0))
    x = sample("x_0", Normal(0.0, 1.0))
    sample("y_0", Normal(x, 0.7), obs=ys[0])
    for t in range(1, len(ys)):
        x = sample(f"x_{t}", Normal(a * x, 1.0))
        sample(f"y_{t}", Normal(x, 0.7), obs=ys[t])


@model
def ssm_scale(ys):
    q = sample("q", HalfNormal(1.0))
    x = sample("x_0", Normal(0.0, 1.0))
    sample("y_0", Normal(x, 0.7), obs=ys[0])
    for t in range(1, len(ys)):
        x = sample(f"x_{t}", Normal(0.7 * x, q))
        sample(f"y_{t}", Normal(x, 0.7), obs=ys[t])


def exact_a():
    return TRUTH.grid_posterior(YS, "a", lambda a: torch.full_like(a, -math.log(2.0)), GRID)


def assert_mean_within_mcse(draws, exact_mean, z_max=4.0):
    """The chains' mean is within ``z_max`` Monte Carlo standard errors of the exact one."""
    mcse = float(mcse_mean(draws))
    z = (float(draws.mean()) - exact_mean) / mcse
    assert abs(z) < z_max, f"mean {float(draws.mean()):.4f} vs exact {exact_mean:.4f}: z = {z:.2f}"


def test_grid_posterior_is_a_normalized_density_with_the_kalman_likelihood():
    post = exact_a()
    widths = torch.diff(GRID)
    mass = float(((post.density[1:] + post.density[:-1]) / 2 * widths).sum())
    assert mass == pytest.approx(1.0, abs=1e-9)
    at = 1000  # a = 0: the density is prior x likelihood / evidence
    log_lik = LinearGaussianSSM(a=0.0, q=1.0, r=0.7).kalman(YS).log_evidence
    expected = math.exp(log_lik - math.log(2.0) - post.log_evidence)
    assert float(post.density[at]) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="unknown parameter 'b'"):
        TRUTH.grid_posterior(YS, "b", lambda a: a, GRID)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pmmh_posterior_mean_matches_the_grid(backend):
    method = PMMH(static=["a"], num_particles=30, num_warmup=150, num_samples=200, chains=4,
                  backend=backend)
    post = infer(ssm, YS, method=method, seed=0)
    assert post.samples["a"].shape == (4, 200) and post.extra["backend"] == backend
    assert_mean_within_mcse(post.samples["a"], exact_a().mean)
    rate = post.extra["accept_rate"]
    assert bool(((rate > 0.05) & (rate < 0.7)).all()), rate
    assert "mcse_mean" in post.summary().columns


@pytest.mark.parametrize("backend", BACKENDS)
def test_pmmh_on_a_positive_scale_uses_the_jacobian(backend):
    grid = torch.linspace(1e-4, 4.0, 4001, dtype=torch.float64)
    half_normal = torch.distributions.HalfNormal(torch.tensor(1.0, dtype=torch.float64))
    exact = TRUTH.grid_posterior(YS, "q", half_normal.log_prob, grid)
    method = PMMH(static="q", num_particles=30, num_warmup=150, num_samples=200, chains=4,
                  backend=backend)
    post = infer(ssm_scale, YS, method=method, seed=1)
    assert bool((post.samples["q"] > 0).all())
    assert_mean_within_mcse(post.samples["q"], exact.mean)


@pytest.mark.parametrize("backend", BACKENDS)
def test_particle_gibbs_posterior_mean_matches_the_grid(backend):
    method = ParticleGibbs(static=["a"], num_particles=10, num_warmup=60, num_samples=200,
                           chains=4, theta_moves=2, filter_backend=backend)
    post = infer(ssm, YS, method=method, seed=0)
    assert post.samples["x_19"].shape == (4, 200)
    assert_mean_within_mcse(post.samples["a"], exact_a().mean)
    # every chain moves; one chain's rate after 60 adapting sweeps varies from about 0.02
    # to 0.6 over seeds, on either filter
    rate = post.extra["accept_rate"]
    assert bool((rate > 0).all()) and float(rate.mean()) > 0.1, rate
    assert post.extra["filter_backend"] == backend


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", ["systematic", "multinomial"])
def test_conditional_filter_leaves_the_smoothing_distribution_invariant(backend, scheme):
    """With ``a`` fixed, PGAS sweeps of the path alone are a Markov chain whose marginals
    are the smoothing distribution: the RTS smoother's means, within MCSE, at every step."""
    split = StaticModel(ssm.graph(YS), ["a"], "test")
    chains, sweeps, burn = 8, 100, 10
    theta = {"a": torch.full((chains,), TRUTH.a, dtype=torch.float64)}
    generator = torch.Generator().manual_seed(0)
    update, reason = path_sweeps(split, 10, resample=scheme, backend=backend)
    assert reason is None
    with one_thread():
        path, draws = update(theta, None, generator), []
        for sweep in range(sweeps):
            path = update(theta, path, generator)
            if sweep >= burn:
                draws.append(torch.stack([path[f"x_{t}"] for t in range(len(YS))], -1))
    draws = torch.stack(draws, 1)  # (chains, draws, T)
    exact = torch.tensor(TRUTH.smoothed_means(YS), dtype=torch.float64)
    z = (draws.mean((0, 1)) - exact) / mcse_mean(draws)
    assert float(z.abs().max()) < 4.5, z  # 20 steps: a max |z| over 4.5 is rare (p ~ 1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_smc2_posterior_mean_and_unbiased_evidence(backend):
    exact = exact_a()
    means, log_z, moves = [], [], []
    for seed in range(6):
        post = infer(ssm, YS, method=SMC2(static=["a"], num_theta=150, num_particles=50,
                                          backend=backend), seed=seed)
        assert post.extra["backend"] == backend
        means.append(float(post.mean("a")))
        log_z.append(float(post.log_evidence))
        moves += post.extra["accept_rate"]
    assert moves and min(moves) > 0.05, moves  # the data move the parameter particles
    means = torch.tensor(means, dtype=torch.float64)
    se = float(means.std() / math.sqrt(len(means)))
    assert abs(float(means.mean()) - exact.mean) < 5 * se, (means, exact.mean)
    ratio = torch.exp(torch.tensor(log_z, dtype=torch.float64) - exact.log_evidence)
    ratio_se = float(ratio.std() / math.sqrt(len(ratio)))
    assert abs(float(ratio.mean()) - 1.0) < 3 * ratio_se, (ratio, ratio_se)


@pytest.mark.parametrize("method", [PMMH, ParticleGibbs, SMC2])
def test_bad_static_sites_are_named(method):
    with pytest.raises(ModelError, match="static site 'b' is not a site of graph 'ssm'"):
        infer(ssm, YS, method=method(static=["b"]), seed=0)
    with pytest.raises(ModelError, match="static site 'y_3' is observed"):
        infer(ssm, YS, method=method(static=["y_3"]), seed=0)
    with pytest.raises(ModelError, match="static= names no site"):
        infer(ssm, YS, method=method(static=[]), seed=0)


def test_a_static_site_that_reads_the_path_is_refused():
    with pytest.raises(ModelError, match="must not depend on the latent path"):
        StaticModel(ssm.graph(YS), ["x_3"], "PMMH")


@model
def second_order(ys):
    a = sample("a", Uniform(-1.0, 1.0))
    before, x = 0.0, 0.0
    for t in range(len(ys)):
        before, x = x, sample(f"x_{t}", Normal(a * x + 0.5 * before, 1.0))
        sample(f"y_{t}", Normal(x, 1.0), obs=ys[t])


def test_particle_gibbs_refuses_a_path_that_is_not_markov():
    with pytest.raises(ModelError, match=r"step 2 \(sites \['x_2', 'y_2'\]\) reads \['x_0'\]"):
        infer(second_order, YS[:5], method=ParticleGibbs(static=["a"]), seed=0)
    method = PMMH(static=["a"], num_particles=10, num_warmup=5, num_samples=5, chains=1)
    assert infer(second_order, YS[:5], method=method, seed=0).samples["a"].shape == (1, 5)


def test_settings_are_checked_by_name():
    with pytest.raises(ValueError, match="PMMH: num_particles must be an integer >= 2"):
        PMMH(static=["a"], num_particles=1)
    with pytest.raises(ValueError, match="SMC2: resample must be one of"):
        SMC2(static=["a"], resample="bogus")
    with pytest.raises(ValueError, match="ParticleGibbs: theta_moves"):
        ParticleGibbs(static=["a"], theta_moves=0)
    with pytest.raises(ValueError, match="ParticleGibbs: filter_backend must be one of"):
        ParticleGibbs(static=["a"], filter_backend="gpu")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", ["systematic", "residual"])
def test_block_filter_evidence_is_unbiased_per_block(backend, scheme):
    """Each block's estimate of p(y | a) is unbiased for its own a (Kalman, exact)."""
    split = StaticModel(ssm.graph(YS), ["a"], "test")
    values = torch.tensor([-0.5, 0.0, 0.7], dtype=torch.float64)
    reps = 80  # 200 particles: sd(log Z) ~ 0.6, so the ratio's mean and sd are reliable
    theta = {"a": values.repeat_interleave(reps)}
    start, reason = block_filters(split, 200, resample=scheme, backend=backend)
    assert reason is None
    with one_thread():
        log_z = start(theta, torch.Generator().manual_seed(0)).run()
    for i, a in enumerate(values.tolist()):
        exact = LinearGaussianSSM(a=a, q=1.0, r=0.7).kalman(YS).log_evidence
        ratio = torch.exp(log_z[i * reps:(i + 1) * reps] - exact)
        se = float(ratio.std() / math.sqrt(reps))
        assert abs(float(ratio.mean()) - 1.0) < 3.5 * se, (a, float(ratio.mean()), se)


@pytest.mark.slow
def test_smc2_evidence_is_unbiased_over_many_seeds():
    exact = exact_a()
    log_z, means = [], []
    for seed in range(24):
        post = infer(ssm, YS, method=SMC2(static=["a"], num_theta=200, num_particles=60),
                     seed=100 + seed)
        log_z.append(float(post.log_evidence))
        means.append(float(post.mean("a")))
    ratio = torch.exp(torch.tensor(log_z, dtype=torch.float64) - exact.log_evidence)
    assert abs(float(ratio.mean()) - 1.0) < 3 * float(ratio.std() / math.sqrt(len(ratio)))
    means = torch.tensor(means, dtype=torch.float64)
    assert abs(float(means.mean()) - exact.mean) < 4 * float(means.std() / math.sqrt(24))


@pytest.mark.slow
def test_particle_gibbs_with_a_gradient_kernel_for_theta():
    method = ParticleGibbs(static=["a"], num_particles=10, num_warmup=200, num_samples=600,
                           chains=4, kernel=MALA())
    post = infer(ssm, YS, method=method, seed=3)
    assert post.extra["kernel"] == "MALA"
    assert_mean_within_mcse(post.samples["a"], exact_a().mean)


@model
def impossible_above_half(ys):
    """A factor ``log max(1/2 - a, 0)`` at each step: no path is possible once ``a >= 1/2``."""
    a, x = sample("a", Uniform(-1.0, 1.0)), 0.0
    for t, y in enumerate(ys):
        x = sample(f"x_{t}", Normal(a * x, 1.0))
        sample(f"y_{t}", Normal(x, 0.7), obs=y)
        factor(f"cap_{t}", torch.log(torch.clamp(0.5 - a + 0.0 * x, min=0.0)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_impossible_block_keeps_log_z_minus_inf_while_the_others_go_on(backend):
    split = StaticModel(impossible_above_half.graph(YS[:5]), ["a"], "test")
    start, _ = block_filters(split, 50, backend=backend)
    run = start({"a": torch.tensor([0.0, 0.9, 0.2], dtype=torch.float64)},
                torch.Generator().manual_seed(0))
    log_z = run.run(until=2)
    assert run.step == 2 and torch.isneginf(log_z[1]) and torch.isfinite(log_z[[0, 2]]).all()
    assert torch.isneginf(run.run()[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_select_and_merge_move_whole_blocks(backend):
    """Blocks selected or merged carry their filters: a block's later evidence is that of
    its own theta (a = 0.9 against a = -0.9 differ by tens of nats on this series)."""
    split = StaticModel(ssm.graph(YS), ["a"], "test")
    start, _ = block_filters(split, 300, backend=backend)
    generator = torch.Generator().manual_seed(0)
    theta = {"a": torch.tensor([0.7, -0.9], dtype=torch.float64)}
    good = start(theta, generator)
    good.run(until=10)
    good.select(torch.tensor([0, 0]))
    bad = start({"a": torch.tensor([-0.9, -0.9], dtype=torch.float64)}, generator)
    bad.run(until=10)
    bad.merge(torch.tensor([False, True]), good)
    rest = bad.run()
    exact = {a: LinearGaussianSSM(a=a, q=1.0, r=0.7).kalman(YS).log_evidence for a in (0.7, -0.9)}
    assert abs(float(rest[1]) - exact[0.7]) < 3 and abs(float(rest[0]) - exact[-0.9]) < 3
    with pytest.raises(ValueError, match="cannot merge a filter at step 0 into one at step 10"):
        good.merge(torch.tensor([True, True]), start(theta, generator))


@NO_CC
@pytest.mark.parametrize("method", [
    PMMH(static=["a"], num_particles=20, num_warmup=10, num_samples=10, chains=2,
         backend="native"),
    SMC2(static=["a"], num_theta=30, num_particles=20, backend="native"),
    ParticleGibbs(static=["a"], num_particles=10, num_warmup=5, num_samples=5,
                  filter_backend="native"),
], ids=["PMMH", "SMC2", "ParticleGibbs"])
def test_new_theta_runs_on_the_same_compiled_filter(monkeypatch, method):
    """Static values are run-time inputs of the C filter: a run compiles it once, whatever
    values its proposals, parameter particles or sweeps give theta."""
    builds = []
    original = native.compile_library
    monkeypatch.setattr(native, "compile_library", lambda *a: builds.append(1) or original(*a))
    post = infer(ssm, YS, method=method, seed=0)
    assert "native" in (post.extra.get("backend"), post.extra.get("filter_backend"))
    assert len(builds) == 1


@NO_CC
def test_native_backend_names_what_rules_c_out_and_auto_says_why():
    @model
    def von_mises_noise(ys):
        a = sample("a", Uniform(-1.0, 1.0))
        for t in range(len(ys)):
            sample(f"x_{t}", VonMises(a, 1.0))
            sample(f"y_{t}", Normal(a, 1.0), obs=ys[t])

    with pytest.raises(ValueError, match=r"PMMH\(backend='native'\) cannot filter graph "
                                         r"'von_mises_noise' in C: .*VonMises"):
        infer(von_mises_noise, YS[:3], method=PMMH(static=["a"], backend="native"), seed=0)
    method = SMC2(static=["a"], num_theta=20, num_particles=10)
    post = infer(von_mises_noise, YS[:3], method=method, seed=0)
    assert post.extra["backend"] == "torch" and "VonMises" in post.extra["backend_reason"]
    with pytest.raises(ValueError, match="SMC2: backend must be one of"):
        SMC2(static=["a"], backend="cuda")


@NO_CC
def test_the_c_path_update_reads_a_reference_it_did_not_return():
    """The C sweep reuses its last path's buffer when handed that path back; a copy (or a
    path from torch) gives the same sweep."""
    split = StaticModel(ssm.graph(YS), ["a"], "test")
    update, _ = path_sweeps(split, 10, backend="native")
    theta = {"a": torch.full((3,), TRUTH.a, dtype=torch.float64)}
    path = update(theta, None, torch.Generator().manual_seed(0))
    copy = {a: v.clone() for a, v in path.items()}
    again = [update(theta, ref, torch.Generator().manual_seed(1)) for ref in (path, copy)]
    assert all(torch.equal(again[0][a], again[1][a]) for a in path)
    assert any(not torch.equal(again[0][a], path[a]) for a in path)


@model
def truncated_prior(ys):
    """A TruncatedNormal prior on ``a`` (a family without a C sampling rule)."""
    a, xs = sample("a", TruncatedNormal(0.0, 1.0, -1.0, 1.0)), [0.0]
    for t, y in enumerate(ys):
        xs.append(sample(f"x_{t}", Normal(a * xs[-1], 1.0)))
        sample(f"y_{t}", Normal(xs[-1], 0.7), obs=y)


@NO_CC
def test_a_static_prior_without_a_c_sampling_rule_still_filters_in_c():
    """The static values are placed by the method, so their step is never compiled."""
    method = PMMH(static=["a"], num_particles=20, num_warmup=10, num_samples=10, chains=2,
                  backend="native")
    assert infer(truncated_prior, YS[:5], method=method, seed=0).extra["backend"] == "native"
    method = ParticleGibbs(static=["a"], num_particles=10, num_warmup=5, num_samples=5,
                           filter_backend="native")
    post = infer(truncated_prior, YS[:5], method=method, seed=0)
    assert post.extra["filter_backend"] == "native"


MEANS = torch.tensor([-1.0, 1.0], dtype=torch.float64)
HMM_YS = DiscreteHMM().simulate(20, seed=1)


@model
def sticky_hmm(ys):
    """A 2-state HMM whose probability of staying put, ``stay``, is static."""
    stay = sample("stay", Beta(5.0, 2.0))
    z = sample("z_0", Categorical(torch.tensor([0.5, 0.5])))
    sample("y_0", Normal(MEANS[z], 1.0), obs=ys[0])
    for t in range(1, len(ys)):
        p1 = torch.where(z == 1, stay, 1 - stay)
        z = sample(f"z_{t}", Categorical(torch.stack([1 - p1, p1], -1)))
        sample(f"y_{t}", Normal(MEANS[z], 1.0), obs=ys[t])


def sticky_posterior_mean() -> float:
    """``E[stay | y]`` on a grid: the Beta prior times the forward algorithm's evidence."""
    grid = torch.linspace(0.00125, 0.99875, 400, dtype=torch.float64)  # bin midpoints
    log_post = torch.tensor([
        DiscreteHMM(trans=((s, 1 - s), (1 - s, s))).forward(HMM_YS)[0] for s in grid.tolist()])
    log_post += torch.distributions.Beta(5.0, 2.0).log_prob(grid)
    weights = torch.softmax(log_post, 0)
    return float((weights * grid).sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_particle_gibbs_on_a_discrete_path_matches_the_forward_algorithm(backend):
    """Categorical path sites (int64) on either filter, and theta given the path."""
    method = ParticleGibbs(static=["stay"], num_particles=10, num_warmup=60, num_samples=200,
                           chains=4, filter_backend=backend)
    post = infer(sticky_hmm, HMM_YS, method=method, seed=0)
    assert post.samples["z_7"].dtype == torch.int64
    assert_mean_within_mcse(post.samples["stay"], sticky_posterior_mean())
