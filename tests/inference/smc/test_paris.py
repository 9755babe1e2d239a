"""PaRIS additive smoothing against the RTS smoother of a linear-Gaussian model: sums of
smoothed means, lag-one products and second moments at once (z-scores over independent
runs), the online estimates against the smoother of the data so far, and bad input."""

import math

import pytest
import torch

from ppl import infer
from ppl.inference.lowering.particles import StepOutput
from ppl.inference.smc import SMC, AdditiveSmoother, ParticleFilter
from ppl.inference.testing import LinearGaussianSSM

SSM = LinearGaussianSSM(a=0.9, q=0.5, r=1.0)
YS = SSM.simulate(15, seed=3)


def moments(k, prev, current):
    """(x_k, x_{k-1} x_k, x_k^2) per particle; the lag-one term is 0 at step 0."""
    x = current[f"x_{k}"]
    lag = torch.zeros_like(x) if prev is None else prev[f"x_{k - 1}"] * x
    return torch.stack([x, lag, x * x], dim=1)


def exact_sums(ys):
    s = SSM.smoothed(ys)
    m = torch.tensor(s.means, dtype=torch.float64)
    v = torch.tensor(s.variances, dtype=torch.float64)
    cross = torch.tensor(s.cross, dtype=torch.float64)
    return torch.stack([m.sum(), (m[1:] * m[:-1] + cross).sum(), (m * m + v).sum()])


def test_smoothed_additive_functionals_match_rts():
    method = SMC(150, additive=AdditiveSmoother(moments, num_backward=2))
    runs = [infer(SSM.model(), YS, method=method, seed=s) for s in range(12)]
    final = torch.stack([r.extra["additive"] for r in runs])
    mid = torch.stack([r.extra["additive_online"][7] for r in runs])
    for estimates, exact in ((final, exact_sums(YS)), (mid, exact_sums(YS[:8]))):
        z = (estimates.mean(0) - exact) / (estimates.std(0) / math.sqrt(len(runs)))
        assert z.abs().max() < 4.5, (z, estimates.mean(0), exact)
    # the check has power: the filter's sum of second moments is over 5 SEs away
    kalman = SSM.kalman(YS)
    filtered = sum(m * m + v for m, v in zip(kalman.means, kalman.variances, strict=True))
    se = float(final[:, 2].std()) / math.sqrt(len(runs))
    assert abs(filtered - float(exact_sums(YS)[2])) > 5 * se


def test_bad_terms_and_programs_are_refused():
    with pytest.raises(TypeError, match="h must be a function"):
        AdditiveSmoother("x")
    with pytest.raises(ValueError, match="num_backward"):
        AdditiveSmoother(moments, num_backward=0)
    scalar = AdditiveSmoother(lambda k, prev, cur: torch.tensor(1.0))
    with pytest.raises(ValueError, match="one term per particle"):
        infer(SSM.model(), YS, method=SMC(20, additive=scalar), seed=0)

    class Hand:
        num_steps = 2
        def step_sites(self, k): return (f"x{k}",)
        def needed_after(self, k): return frozenset()
        def run_step(self, k, live, n, generator=None):
            zero = torch.zeros(n, dtype=torch.float64)
            return StepOutput({f"x{k}": zero}, zero, {})

    with pytest.raises(TypeError, match="transition_log_density"):
        ParticleFilter(10, additive=AdditiveSmoother(moments)).run_program(Hand())
