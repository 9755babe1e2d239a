"""The spread of log Zhat across independent runs: each run is exactly ``infer`` with its
seed, the variance shrinks like 1 / num_particles (the particle filter's known rate), the
pooled estimate is unbiased for Z, and any method with an evidence works."""

import math

import pytest
import torch

from ppl import infer
from ppl.inference import mcmc
from ppl.inference.smc import SMC, TemperedSMC, log_evidence_runs
from ppl.inference.testing import LinearGaussianSSM, conjugate_cases

SSM = LinearGaussianSSM(a=0.9, q=0.5, r=1.0)
YS = SSM.simulate(20, seed=5)


def test_each_run_is_infer_with_its_seed():
    method = SMC(64)
    runs = log_evidence_runs(SSM.model(), (YS,), method, seeds=[3, 7, 11])
    alone = torch.tensor([float(infer(SSM.model(), YS, method=method, seed=s).log_evidence)
                          for s in (3, 7, 11)], dtype=torch.float64)
    assert torch.equal(runs.log_evidences, alone)
    assert runs.var == pytest.approx(float(alone.var()))
    assert runs.mean == pytest.approx(float(alone.mean()))


def test_the_variance_falls_like_one_over_the_particles_and_pooling_is_unbiased():
    """var(log Zhat) ~ c T / N: quadrupling N divides it by about 4 (3.5 at these sizes,
    from 200-run references; each variance from 120 runs has a relative SE of about 0.13, so
    the ratio lies in [2, 6.5] but for a broken estimator); the pooled Zhat over the runs is
    within 3 SE of Z."""
    exact = SSM.kalman(YS).log_evidence
    small = log_evidence_runs(SSM.model(), (YS,), SMC(50), seeds=range(120))
    large = log_evidence_runs(SSM.model(), (YS,), SMC(200), seeds=range(200, 320))
    assert 2.0 < small.var / large.var < 6.5, (small.var, large.var)
    ratios = torch.exp(small.log_evidences - exact)
    se = float(ratios.std()) / math.sqrt(len(ratios))
    assert abs(math.exp(small.pooled - exact) - 1) < 3 * se, (small.pooled, exact, se)
    assert small.mean < exact  # Jensen: log Zhat is biased low


def test_other_methods_and_bad_seeds():
    case = conjugate_cases()["beta_binomial"]
    runs = log_evidence_runs(case.model, case.args, TemperedSMC(200, mcmc.RWMH()), seeds=range(4))
    assert runs.log_evidences.shape == (4,)
    assert abs(runs.pooled - case.log_evidence) < 0.1
    with pytest.raises(ValueError, match="at least 2 seeds"):
        log_evidence_runs(case.model, case.args, TemperedSMC(50), seeds=[0])
