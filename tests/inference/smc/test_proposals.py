"""SMC proposals against the Kalman filter of a linear-Gaussian model: bootstrap, a user
``@model`` proposal, the auxiliary particle filter, the locally optimal proposal detected on
the graph and the fully adapted filter (both). Evidence by the unbiasedness of Z itself
(the mean over seeds of exp(log Zhat - log Z) within 3 standard errors of 1), filtering and
smoothing means by z-scores over seeds; the optimal proposal's exactness where it must be
exact, and what the detection leaves to the prior."""

import math

import pytest
import torch

from ppl import infer, model, sample
from ppl.inference import SMC, ParticleFilter
from ppl.inference.testing import LinearGaussianSSM
from ppl.stdlib import Normal, Poisson

SSM = LinearGaussianSSM(a=0.9, q=0.5, r=1.0)
YS = SSM.simulate(10, seed=3)
KALMAN = SSM.kalman(YS)


@model
def guide(ys):
    """A user proposal between the prior and the data (not the optimal one)."""
    x = sample("x_0", Normal(0.5 * ys[0], 0.7))
    for t in range(1, len(ys)):
        x = sample(f"x_{t}", Normal(0.5 * (SSM.a * x + ys[t]), 0.6))


METHODS = {
    "bootstrap": dict(),
    "guided": dict(proposal=guide),
    "auxiliary": dict(auxiliary=True, ess_threshold=1.0),  # resampling at every step
    "optimal": dict(proposal="optimal"),
    "fully adapted": dict(proposal="optimal", auxiliary=True),  # adaptive resampling
}


def runs(method: SMC, seeds, ssm=SSM, ys=YS):
    """The method's filter over one engine, once per seed."""
    engine = method.engine(ssm.model(), (ys,))
    return [method.filter.run_program(engine, torch.Generator().manual_seed(s)) for s in seeds]


@pytest.mark.parametrize("name", METHODS)
def test_the_evidence_is_unbiased(name):
    log_zs = torch.tensor([float(r.log_evidence)
                           for r in runs(SMC(100, **METHODS[name]), range(200))])
    ratios = torch.exp(log_zs.double() - KALMAN.log_evidence)
    mean, se = float(ratios.mean()), float(ratios.std()) / math.sqrt(len(ratios))
    assert abs(mean - 1) < 3 * se and se < 0.05, (mean, se)


@pytest.mark.parametrize("name", METHODS)
def test_filtering_means_match_kalman(name):
    results = runs(SMC(1000, **METHODS[name]), range(20))
    means = torch.stack([torch.stack([r.extra["filtering_means"][f"x_{t}"]
                                      for t in range(len(YS))]) for r in results])
    z = (means.mean(0) - torch.tensor(KALMAN.means, dtype=torch.float64)) / (
        means.std(0) / math.sqrt(len(results)))
    assert z.abs().max() < 4, z


@pytest.mark.parametrize("name", [*(pytest.param(name, marks=pytest.mark.slow)
                                    for name in ("guided", "auxiliary", "optimal")),
                                  "fully adapted"])
def test_smoothing_means_match_rts(name):
    results = runs(SMC(300, keep_history=True, **METHODS[name]), range(12))
    smoothed = torch.stack([
        torch.stack([p[f"x_{t}"].mean() for t in range(len(YS))])
        for p in (r.smooth(50, torch.Generator().manual_seed(i)) for i, r in enumerate(results))])
    se = smoothed.std(0) / math.sqrt(len(results))
    z = (smoothed.mean(0) - torch.tensor(SSM.smoothed_means(YS), dtype=torch.float64)) / se
    assert z.abs().max() < 4, z


def test_the_optimal_proposal_has_a_smaller_evidence_variance_than_the_bootstrap():
    informative = LinearGaussianSSM(a=0.9, q=1.0, r=0.5)  # where the prior proposes badly
    ys = informative.simulate(10, seed=3)
    variance = {name: torch.tensor([float(r.log_evidence) for r in runs(
        SMC(100, **METHODS[name]), range(100), informative, ys)]).var()
        for name in ("bootstrap", "optimal")}
    assert variance["optimal"] < 0.2 * variance["bootstrap"], variance


def test_one_optimal_step_gives_the_exact_evidence():
    ys = YS[:1]
    exact = SSM.kalman(ys).log_evidence
    for seed in range(3):
        res = infer(SSM.model(), ys, method=SMC(50, proposal="optimal"), seed=seed)
        assert float(res.log_evidence) == pytest.approx(exact, abs=1e-9)
        assert float(res.ess) == pytest.approx(50, abs=1e-9)


def test_the_fully_adapted_filter_has_equal_second_stage_weights():
    method = SMC(200, proposal="optimal", auxiliary=True, ess_threshold=1.0)
    res = infer(SSM.model(), YS, method=method, seed=0)
    assert res.extra["proposal_kinds"] == ("optimal",) * len(YS)
    assert res.extra["lookahead_kinds"] == ("predictive",) * len(YS)
    torch.testing.assert_close(res.ess_history, torch.full((len(YS),), 200.0,
                                                           dtype=torch.float64))
    assert bool(res.resampled[1:].all())
    # the bootstrap filter's weights do vary: the check above is not vacuous
    boot = infer(SSM.model(), YS, method=SMC(200, auxiliary=True, ess_threshold=1.0), seed=0)
    assert float(boot.ess_history.min()) < 190


@model
def mixed(ys):
    x = sample("x_0", Normal(0.0, 1.0))
    sample("y_0", Normal(2 * x + 1, 0.5), obs=ys[0])
    x = sample("x_1", Normal(0.9 * x, 1.0))
    sample("y_1", Normal(x**2, 0.5), obs=ys[1])
    x = sample("x_2", Normal(0.9 * x, 0.3))
    sample("y_2", Poisson(torch.exp(x)), obs=ys[2])


def test_steps_without_an_affine_gaussian_observation_use_the_prior():
    ys = torch.tensor([0.4, 1.2, 2.0])
    res = infer(mixed, ys, method=SMC(200, proposal="optimal", keep_history=True), seed=0)
    assert res.extra["proposal_kinds"] == ("optimal", "prior", "prior")
    assert res.extra["lookahead_kinds"] == ("predictive", "prior mean", "prior mean")
    assert torch.isfinite(res.log_evidence)


def test_a_model_without_any_optimal_step_is_refused_with_the_reasons():
    @model
    def squared(ys):
        x = sample("x", Normal(0.0, 1.0))
        sample("y", Normal(x**2, 0.5), obs=ys[0])

    with pytest.raises(ValueError, match=r"step 0: the mean of observation 'y' of 'x' is not "
                                         "affine in it"):
        infer(squared, torch.tensor([1.0]), method=SMC(10, proposal="optimal"), seed=0)


def test_settings_and_programs_are_checked():
    with pytest.raises(ValueError, match="'optimal'"):
        SMC(proposal="best")

    class NoLookAhead:
        num_steps = 1

        def step_sites(self, k):
            return ("x",)

        def needed_after(self, k):
            return frozenset()

    with pytest.raises(TypeError, match="lookahead_log_weight"):
        ParticleFilter(10, auxiliary=True).run_program(NoLookAhead())
