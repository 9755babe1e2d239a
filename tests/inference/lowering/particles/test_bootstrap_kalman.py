"""A bootstrap particle filter written on the engine (multinomial resampling in float64)
gives an unbiased estimate of a linear-Gaussian model's evidence: over 200 seeds the mean
of exp(log Zhat - log Z), log Z from a Kalman filter, is 1 within 3 standard errors."""

import math

import torch

from ppl import model, sample
from ppl.inference.lowering.particles import ParticleEngine
from ppl.inference.testing import LinearGaussianSSM
from ppl.stdlib import Normal

PHI, T, N, SEEDS = 0.9, 30, 256, 200


EXACT = LinearGaussianSSM(a=PHI)
linear_gaussian = EXACT.model()


def kalman_log_evidence(ys: torch.Tensor) -> float:
    return EXACT.kalman(ys).log_evidence


def bootstrap_log_evidence(engine: ParticleEngine, num: int, gen: torch.Generator) -> float:
    """Propagate from the prior, weight by the observations, resample every step."""
    live, log_z = {}, torch.zeros((), dtype=torch.float64)
    for k in range(engine.num_steps):
        out = engine.run_step(k, live, num, gen)
        log_w = out.log_weight
        log_z = log_z + torch.logsumexp(log_w, 0) - math.log(num)
        ancestors = torch.multinomial(torch.softmax(log_w, 0), num, replacement=True,
                                      generator=gen)
        live = {a: v[ancestors] for a, v in {**live, **out.values}.items()
                if a in engine.needed_after(k)}
    return float(log_z)


def test_bootstrap_filter_on_the_engine_is_unbiased_for_the_kalman_evidence():
    torch.manual_seed(0)
    x, ys = torch.randn(()), []
    for _ in range(T):
        ys.append(float(x + torch.randn(())))
        x = PHI * x + torch.randn(())
    ys = torch.tensor(ys)
    engine = ParticleEngine.from_graph(linear_gaussian.graph(ys))
    exact = kalman_log_evidence(ys)
    ratios = torch.tensor([
        math.exp(bootstrap_log_evidence(engine, N, torch.Generator().manual_seed(seed)) - exact)
        for seed in range(SEEDS)], dtype=torch.float64)
    standard_error = float(ratios.std()) / math.sqrt(SEEDS)
    assert abs(float(ratios.mean()) - 1.0) < 3 * standard_error, (
        f"mean ratio {float(ratios.mean()):.4f}, standard error {standard_error:.4f}")
    assert standard_error < 0.1  # the estimator is not so noisy that the check says nothing


@model
def locally_optimal(ys):
    """p(x_t | x_{t-1}, y_t) of the model: prior and likelihood variances 1 and 1."""
    x = sample("x_0", Normal(0.5 * ys[0], math.sqrt(0.5)))
    for t in range(1, len(ys)):
        x = sample(f"x_{t}", Normal(0.5 * (PHI * x + ys[t]), math.sqrt(0.5)))


def _data(seed=0):
    torch.manual_seed(seed)
    return torch.randn(T)


def test_with_the_locally_optimal_proposal_the_weight_is_the_predictive_density():
    ys = _data()
    engine = ParticleEngine.from_graph(linear_gaussian.graph(ys),
                                       proposal=locally_optimal.graph(ys))
    x0 = torch.randn(50, dtype=torch.float64)
    out = engine.run_step(1, {"x_0": x0}, 50, torch.Generator().manual_seed(0))
    predictive = Normal(PHI * x0, math.sqrt(2.0)).log_prob(ys[1].double())
    # exact up to the float32 literals the trace records (sqrt(0.5), the data)
    torch.testing.assert_close(out.log_weight, predictive, rtol=1e-6, atol=1e-6)
    assert set(out.site_log_weights) == {"x_1", "y_1"} and out.values["x_1"].shape == (50,)
    assert engine.needed_after(0) == {"x_0"}


def test_the_guided_filter_is_unbiased_and_less_noisy_than_the_bootstrap_one():
    ys = _data(1)
    exact = kalman_log_evidence(ys)
    guided = ParticleEngine.from_graph(linear_gaussian.graph(ys),
                                       proposal=locally_optimal.graph(ys))
    ratios = torch.tensor([
        math.exp(bootstrap_log_evidence(guided, 32, torch.Generator().manual_seed(s)) - exact)
        for s in range(100)], dtype=torch.float64)
    standard_error = float(ratios.std()) / math.sqrt(100)
    assert abs(float(ratios.mean()) - 1.0) < 3 * standard_error
    assert standard_error < 0.05
