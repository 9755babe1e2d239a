"""``infer(..., method=SMC(...))`` end to end: the model's graph, the particle engine and the
filter, against exact answers (Kalman and RTS for a linear-Gaussian model, the forward
algorithm for a discrete HMM); evidence checked by the unbiasedness of Z itself."""

import math

import pytest
import torch

from ppl import infer, model, sample, scan
from ppl.inference import SMC
from ppl.inference.testing import DiscreteHMM, LinearGaussianSSM
from ppl.stdlib import Normal

SSM = LinearGaussianSSM(a=0.9, q=0.5, r=1.0)
YS = SSM.simulate(12, seed=3)


def ratio_mean_and_se(log_zs, exact):
    ratios = torch.tensor([math.exp(v - exact) for v in log_zs], dtype=torch.float64)
    return float(ratios.mean()), float(ratios.std()) / math.sqrt(len(ratios))


def test_the_evidence_of_a_linear_gaussian_model_is_unbiased():
    method = SMC(num_particles=100)
    log_zs = [float(infer(SSM.model(), YS, method=method, seed=s).log_evidence)
              for s in range(150)]
    mean, se = ratio_mean_and_se(log_zs, SSM.kalman(YS).log_evidence)
    assert abs(mean - 1) < 3 * se and se < 0.1, (mean, se)


def test_final_filtering_mean_and_smoothing_means_match_kalman_and_rts():
    runs = [infer(SSM.model(), YS, method=SMC(num_particles=500, keep_history=True), seed=s)
            for s in range(12)]
    last = f"x_{len(YS) - 1}"
    filtered = torch.stack([r.mean(last) for r in runs])
    z = (filtered.mean() - SSM.kalman(YS).means[-1]) / (filtered.std() / math.sqrt(len(runs)))
    assert abs(float(z)) < 4, z
    smoothed = torch.stack([
        torch.stack([p[f"x_{t}"].mean() for t in range(len(YS))])
        for p in (r.smooth(100, torch.Generator().manual_seed(i)) for i, r in enumerate(runs))])
    se = smoothed.std(0) / math.sqrt(len(runs))
    z = (smoothed.mean(0) - torch.tensor(SSM.smoothed_means(YS), dtype=torch.float64)) / se
    assert z.abs().max() < 4, z


def test_a_discrete_hmm_matches_the_forward_algorithm():
    hmm = DiscreteHMM()
    ys = hmm.simulate(15, seed=1)
    log_z, marginals = hmm.forward(ys)
    runs = [infer(hmm.model(), ys, method=SMC(num_particles=200), seed=s) for s in range(100)]
    mean, se = ratio_mean_and_se([float(r.log_evidence) for r in runs], log_z)
    assert abs(mean - 1) < 3 * se and se < 0.1, (mean, se)
    last = f"z_{len(ys) - 1}"
    p1 = torch.stack([(r.log_weights.softmax(0) * (r.samples[last] == 1)).sum() for r in runs])
    z = (p1.mean() - marginals[-1, 1]) / (p1.std() / math.sqrt(len(runs)))
    assert abs(float(z)) < 4, z


def test_a_scan_model_filters_as_its_unrolled_twin():
    @model
    def ar_scan(ys):
        def step(x, y):
            x = sample("x", Normal(0.9 * x, 0.5))
            sample("y", Normal(x, 1.0), obs=y)
            return x, None
        scan(step, torch.tensor(0.0), ys)

    @model
    def ar_loop(ys):
        x = torch.tensor(0.0)
        for t in range(len(ys)):
            x = sample(f"x[{t}]", Normal(0.9 * x, 0.5))
            sample(f"y[{t}]", Normal(x, 1.0), obs=ys[t])

    ys = YS.float()
    a = infer(ar_scan, ys, method=SMC(num_particles=300), seed=7)
    b = infer(ar_loop, ys, method=SMC(num_particles=300), seed=7)
    assert float(a.log_evidence) == pytest.approx(float(b.log_evidence), abs=1e-5)
    torch.testing.assert_close(a.samples[f"x[{len(ys) - 1}]"], b.samples[f"x[{len(ys) - 1}]"])


def test_a_proposal_model_guides_the_particles():
    @model
    def locally_optimal(ys):  # p(x_t | x_{t-1}, y_t): prior variance q^2, likelihood 1
        v0 = 1 / (1 / SSM.s0**2 + 1)
        x = sample("x_0", Normal(v0 * ys[0], math.sqrt(v0)))
        v = 1 / (1 / SSM.q**2 + 1)
        for t in range(1, len(ys)):
            x = sample(f"x_{t}", Normal(v * (SSM.a * x / SSM.q**2 + ys[t]), math.sqrt(v)))

    method = SMC(num_particles=20, proposal=locally_optimal)
    log_zs = [float(infer(SSM.model(), YS, method=method, seed=s).log_evidence)
              for s in range(100)]
    mean, se = ratio_mean_and_se(log_zs, SSM.kalman(YS).log_evidence)
    assert abs(mean - 1) < 3 * se and se < 0.05, (mean, se)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="resample"):
        SMC(resample="bogus")
    with pytest.raises(ValueError, match="num_particles"):
        SMC(num_particles=0)


def test_the_progress_line_counts_steps_and_resamplings(capsys):
    res = infer(SSM.model(), YS, method=SMC(num_particles=200, progress_bar=True), seed=0)
    final = capsys.readouterr().err.split("\r")[-1].split()
    steps, resamplings = len(YS), int(res.resampled.sum())
    assert final[:3] == ["filtering", f"{steps}/{steps}", "100%"]
    assert final[3:5] == ["resampled", str(resamplings)] and resamplings > 0
    infer(SSM.model(), YS, method=SMC(num_particles=200, progress_bar=False), seed=0)
    assert capsys.readouterr().err == ""
