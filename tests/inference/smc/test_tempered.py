"""Tempered SMC: the conjugate suite's exact posteriors (MCSE z-scores over independent runs
taken as chains), an unbiased evidence estimate (mean of exp(log Zhat - log Z) within 3 SE
of 1), two lowerings whatever the number of stages, the tuner, and bad settings."""

import math
import warnings

import pytest
import torch

from ppl import infer, model, plate, sample
from ppl.errors import ModelError
from ppl.inference import mcmc
from ppl.inference.lowering import flat as flat_module
from ppl.inference.lowering.flat import FastPathWarning
from ppl.inference.smc import TemperedSMC
from ppl.inference.smc.tempered import PopulationTuner, conditional_ess, next_beta
from ppl.inference.testing import ConjugateCase, ExactPosterior, check_draws, conjugate_cases
from ppl.passes import condition, enumerate_discrete, noncenter
from ppl.stdlib import HalfNormal, Normal

CASES = conjugate_cases()
KERNELS = {
    "normal_normal": mcmc.MALA(),
    "beta_binomial": mcmc.RWMH(),
    "gamma_poisson": mcmc.NUTS(),
    "mvn_correlated": mcmc.MALA(metric="dense"),
    "discrete_mixture": mcmc.HMC(num_steps=3),
}
#: ~15 s each on a shared machine: the 4-d case needs many stages from its wide prior, the
#: enumerated mixture runs on the autograd path
SLOW_CASES = {"mvn_correlated", "discrete_mixture"}


def run_chains(case, kernel, runs: int = 4, particles: int = 400, **options):
    """``runs`` independent runs' equally weighted (systematically resampled) particles as
    chains ``(runs, particles, *shape)``: the MCSE then sees the spread between runs."""
    passes = [enumerate_discrete()] if case.discrete else []
    posts = [infer(case.model, *case.args, **case.kwargs, passes=passes, seed=seed,
                   method=TemperedSMC(particles, kernel, num_moves=4, **options))
             for seed in range(runs)]
    draws = [p.resample(generator=torch.Generator().manual_seed(i)) for i, p in enumerate(posts)]
    return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}, posts


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.slow] if n in SLOW_CASES else []) for n in sorted(KERNELS)])
def test_conjugate_suite(name):
    case = CASES[name]
    samples, posts = run_chains(case, KERNELS[name])
    check_draws(samples, case)
    assert all(p.extra["betas"][-1] == 1.0 for p in posts)


@pytest.mark.slow
def test_evidence_is_unbiased_on_the_conjugate_normal():
    """Z-hat / Z over 150 seeds with few particles (so the estimator's spread is visible)."""
    case = CASES["normal_normal"]
    method = TemperedSMC(64, mcmc.MALA(), num_moves=2)
    ratios = torch.tensor([
        math.exp(float(infer(case.model, *case.args, method=method, seed=s).log_evidence)
                 - case.log_evidence) for s in range(150)])
    se = ratios.std() / math.sqrt(len(ratios))
    print(f"mean Zhat/Z = {float(ratios.mean()):.4f}, SE {float(se):.4f}")
    assert abs(ratios.mean() - 1) < 3 * se, (ratios.mean(), se)
    assert se > 0.005  # the check has power: the runs do scatter


def test_evidence_with_a_fixed_schedule_is_close_in_a_short_run():
    """Exact evidence of the Beta-binomial case; with 2000 particles the estimate's log is
    within a few of its own delta-method SEs (the fast check; the slow one tests Z itself)."""
    case = CASES["beta_binomial"]
    betas = [0.01, 0.05, 0.2, 0.5, 1.0]
    post = infer(case.model, *case.args, method=TemperedSMC(2000, mcmc.RWMH(), betas=betas),
                 seed=0)
    assert post.extra["betas"] == [0.0, *betas]
    assert abs(float(post.log_evidence) - case.log_evidence) < 0.05


def test_beta_changes_never_lower_the_model_again(monkeypatch):
    built = []
    original = flat_module.FlatModel.from_graph.__func__

    def counting(cls, graph, backend="auto"):
        built.append(graph.name)
        return original(cls, graph, backend)

    monkeypatch.setattr(flat_module.FlatModel, "from_graph", classmethod(counting))
    case = CASES["normal_normal"]
    post = infer(case.model, *case.args, method=TemperedSMC(200, target_cess=0.95), seed=0)
    assert len(post.extra["betas"]) > 5
    assert len(built) == 2  # the full graph and its prior, once each


def test_next_beta_hits_the_target_cess():
    g = torch.Generator().manual_seed(0)
    log_lik = -50 * torch.rand(1000, generator=g, dtype=torch.float64)
    log_w = torch.full((1000,), -math.log(1000), dtype=torch.float64)
    beta = next_beta(log_w, log_lik, 0.0, 0.8)
    assert 0 < beta < 1
    assert conditional_ess(log_w, beta * log_lik) == pytest.approx(0.8, abs=1e-4)
    assert next_beta(log_w, torch.zeros(1000, dtype=torch.float64), 0.3, 0.8) == 1.0
    dead = log_lik.clone()
    dead[:10] = -math.inf  # impossible particles get weight zero, not NaN
    assert 0 < next_beta(log_w, dead, 0.0, 0.8) < 1


def test_population_tuner():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4000, 2, generator=g, dtype=torch.float64) * torch.tensor([3.0, 0.5])
    log_w = torch.full((4000,), -math.log(4000), dtype=torch.float64)
    diag = PopulationTuner(dense=False, target_accept=0.5, step_size=1.0).metric(z, log_w)
    assert diag.inverse_mass.shape == (4000, 2)
    assert diag.inverse_mass[0].tolist() == pytest.approx([9.0, 0.25], rel=0.1)
    dense = PopulationTuner(dense=True, target_accept=0.5, step_size=1.0).metric(z, log_w)
    assert dense.inverse_mass.shape == (4000, 2, 2)
    tuner = PopulationTuner(dense=False, target_accept=0.5, step_size=1.0)
    tuner.update(0.9)
    assert tuner.step_size > 1.0
    tuner.update(0.1)
    assert tuner.step_size == pytest.approx(math.exp(0.8 - 0.8))


@model
def regression(x, y):
    w = sample("w", Normal(0.0, 1.0))
    with plate("data", len(x)):
        sample("y", Normal(w * x, 1.0), obs=y)


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(ValueError, match="betas must increase"):
        TemperedSMC(betas=[0.5, 0.2, 1.0])
    with pytest.raises(ValueError, match="betas must increase"):
        TemperedSMC(betas=[0.5, 0.9])
    with pytest.raises(TypeError, match="must be an MCMC kernel"):
        TemperedSMC(kernel="MALA")
    with pytest.raises(ValueError, match="target_cess"):
        TemperedSMC(target_cess=1.5)
    x = torch.linspace(-1, 1, 5)

    @model
    def two(x):
        w = sample("w", Normal(0.0, 1.0))
        sample("v", Normal(w, 1.0))

    with pytest.raises(ModelError, match="the passes add the observations"):
        infer(two, x, method=TemperedSMC(50), passes=[condition({"v": torch.tensor(0.3)})],
              seed=0)


def test_an_infer_method_factory_gives_its_kernel():
    from ppl.inference import RWMH

    x = torch.linspace(-1, 1, 10)
    post = infer(regression, x, 0.5 * x, method=TemperedSMC(100, RWMH()), seed=0)
    assert post.extra["kernel"] == "RWMH"
    assert post.samples["w"].shape == (100,)
    assert "tempering stages" in str(post.summary())


@model
def matrix_regression(x, y):
    w = sample("w", Normal(0.0, 1.0).expand((2,)).to_event(1))
    with plate("data", len(y)):
        sample("y", Normal(x @ w, 1.0), obs=y)  # x @ w does not batch over particles


def test_a_model_that_does_not_vectorize_draws_its_particles_under_vmap():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(20, 2, generator=g)
    y = x @ torch.tensor([0.5, -1.0]) + torch.randn(20, generator=g)
    precision = torch.eye(2, dtype=torch.float64) + x.double().T @ x.double()
    cov = torch.linalg.inv(precision)
    exact = ExactPosterior(cov @ x.double().T @ y.double(), cov.diagonal().sqrt(), cov)
    case = ConjugateCase("matrix_regression", matrix_regression, (x, y), {}, {"w": exact})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPathWarning)  # not one by one
        samples, _ = run_chains(case, mcmc.MALA(), runs=4, particles=200)
    check_draws(samples, case)


@model
def funnel(y):
    s = sample("s", HalfNormal(1.0))
    with plate("data", len(y)):
        theta = sample("theta", Normal(0.0, s))
        sample("y", Normal(theta, 1.0), obs=y)


def test_latents_only_the_passes_made_are_drawn_one_by_one_from_the_prior_graph():
    y = torch.tensor([0.5, -0.3, 1.2])
    with pytest.warns(FastPathWarning, match=r"\['theta__raw'\].*one by one"):
        post = infer(funnel, y, method=TemperedSMC(50, mcmc.RWMH(), num_moves=1),
                     passes=[noncenter()], seed=0)
    assert post.samples["theta__raw"].shape == (50, 3)
    assert bool((post.samples["s"] > 0).all())
