"""Resample-move in the particle filter: filtering means against the Kalman filter and the
moved ``keep`` path against the RTS smoother (z-scores over independent runs), an unbiased
evidence (mean of Zhat / Z over seeds within 3 SE of 1), path diversity restored, constrained
latents moved through their bijection, and bad settings."""

import math

import pytest
import torch

from ppl import infer, model, sample
from ppl.inference import mcmc
from ppl.inference.lowering.particles import StepOutput
from ppl.inference.smc import SMC, ParticleFilter, ResampleMove
from ppl.inference.testing import DiscreteHMM, LinearGaussianSSM
from ppl.stdlib import LogNormal, Normal

SSM = LinearGaussianSSM(a=0.9, q=0.5, r=1.0)
YS = SSM.simulate(15, seed=3)


def z_scores(estimates: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``(runs, ...)`` estimates against exact values, in units of the runs' standard error."""
    return (estimates.mean(0) - exact) / (estimates.std(0) / math.sqrt(estimates.shape[0]))


@pytest.mark.parametrize("kernel", [mcmc.MALA(), mcmc.RWMH(), mcmc.HMC(num_steps=3)],
                         ids=["MALA", "RWMH", "HMC"])
def test_moved_filter_matches_kalman_and_its_kept_start_matches_rts(kernel):
    method = SMC(300, keep=("x_0",), ess_threshold=1.0, move=ResampleMove(kernel, 2))
    runs = [infer(SSM.model(), YS, method=method, seed=s) for s in range(16)]
    filtered = torch.stack([torch.stack([r.extra["filtering_means"][f"x_{t}"]
                                         for t in range(len(YS))]) for r in runs])
    z = z_scores(filtered, torch.tensor(SSM.kalman(YS).means, dtype=torch.float64))
    assert z.abs().max() < 5, z
    start = torch.stack([r.mean("x_0") for r in runs])
    z0 = z_scores(start, torch.tensor(SSM.smoothed_means(YS)[0], dtype=torch.float64))
    assert abs(float(z0)) < 5, z0
    accepts = runs[0].extra["move_accept_prob"]
    assert len(accepts) == len(YS) - 1 and 0.1 < sum(accepts) / len(accepts) <= 1.0


def test_the_evidence_stays_unbiased_with_moves():
    method = SMC(32, move=ResampleMove(mcmc.MALA(), 1, lag=2))
    exact = SSM.kalman(YS).log_evidence
    ratios = torch.tensor([math.exp(float(infer(SSM.model(), YS, method=method, seed=s)
                                          .log_evidence) - exact) for s in range(80)])
    se = float(ratios.std()) / math.sqrt(len(ratios))
    assert abs(float(ratios.mean()) - 1) < 3 * se and 0.005 < se < 0.2, (ratios.mean(), se)


def test_moves_restore_the_diversity_of_early_states():
    ys = SSM.simulate(40, seed=4)

    def distinct_starts(move):
        post = infer(SSM.model(), ys, seed=0, method=SMC(500, keep=("x_0",), move=move,
                                                         ess_threshold=1.0))
        return len(torch.unique(post.samples["x_0"]))

    plain, moved = distinct_starts(None), distinct_starts(ResampleMove(mcmc.MALA(), 2))
    assert moved > 5 * plain and moved > 400, (plain, moved)


def test_a_positive_latent_moves_through_its_bijection():
    @model
    def volatility(ys):
        s = sample("s_0", LogNormal(0.0, 0.5))
        sample("y_0", Normal(0.0, s), obs=ys[0])
        for t in range(1, len(ys)):
            s = sample(f"s_{t}", LogNormal(0.8 * torch.log(s), 0.4))
            sample(f"y_{t}", Normal(0.0, s), obs=ys[t])

    ys = torch.tensor([0.3, -1.2, 2.0, 0.1, -0.4, 1.5], dtype=torch.float64)
    moved = [infer(volatility, ys, seed=s, method=SMC(300, ess_threshold=1.0,
                                                      move=ResampleMove(mcmc.MALA(), 2)))
             for s in range(8)]
    assert all(bool((r.samples["s_5"] > 0).all()) for r in moved)
    reference = infer(volatility, ys, method=SMC(20000), seed=99)
    estimate = torch.stack([r.extra["filtering_means"]["s_5"] for r in moved])
    assert abs(float(z_scores(estimate, reference.extra["filtering_means"]["s_5"]))) < 5


def test_bad_settings_and_programs_are_refused():
    with pytest.raises(ValueError, match="num_moves"):
        ResampleMove(num_moves=0)
    with pytest.raises(ValueError, match="lag"):
        ResampleMove(lag=0)
    with pytest.raises(TypeError, match="MCMC kernel"):
        ResampleMove(kernel="mala")
    hmm = DiscreteHMM()
    with pytest.raises(ValueError, match="'z_0' is discrete"):
        infer(hmm.model(), hmm.simulate(4), method=SMC(50, ess_threshold=1.0,
                                                        move=ResampleMove()), seed=0)

    class Hand:  # a hand-written program has no score_step to move with
        num_steps = 2
        def step_sites(self, k): return (f"x{k}",)
        def needed_after(self, k): return frozenset()
        def run_step(self, k, live, n, generator=None):
            zero = torch.zeros(n, dtype=torch.float64)
            return StepOutput({f"x{k}": zero}, zero, {})

    with pytest.raises(TypeError, match="score_step"):
        ParticleFilter(10, move=ResampleMove()).run_program(Hand())
