"""The particle filter on a 1-D linear Gaussian state-space model, against the Kalman filter:
the evidence estimator is unbiased (mean of exp(log Zhat - log Z) within 3 SE of 1 over
many seeds), filtering means agree within Monte Carlo error (z-scores across independent
runs), for all four resampling schemes; plus memory, genealogy and protocol errors."""

import math

import pytest
import torch

from ppl.inference.lowering.particles import StepOutput
from ppl.inference.smc import DegenerateWeights, ParticleFilter
from ppl.inference.testing import LinearGaussianSSM

A, Q, R, M0, S0 = 0.9, 0.5, 1.0, 0.0, 1.0  # x_t = A x_{t-1} + N(0, Q^2), y_t = x_t + N(0, R^2)
EXACT = LinearGaussianSSM(a=A, q=Q, r=R, m0=M0, s0=S0)
SCHEMES = ["multinomial", "residual", "stratified", "systematic"]
# the default suite checks the evidence of the default scheme; the other three are slow
EVIDENCE_SCHEMES = [s if s == "systematic" else pytest.param(s, marks=pytest.mark.slow)
                    for s in SCHEMES]


class BootstrapProgram:
    """The model as a particle program with the prior (bootstrap) proposal."""

    def __init__(self, ys: torch.Tensor):
        self.ys = ys
        self.reads: list[set[str]] = []
        self.weights: list[torch.Tensor] = []

    @property
    def num_steps(self) -> int:
        return len(self.ys)

    def step_sites(self, k):
        return (f"x_{k}", f"y_{k}")

    def needed_after(self, k):
        return frozenset({f"x_{k}"}) if k < self.num_steps - 1 else frozenset()

    def run_step(self, k, live, num_particles, generator=None):
        self.reads.append(set(live))
        noise = torch.randn(num_particles, generator=generator, dtype=torch.float64)
        x = M0 + S0 * noise if k == 0 else A * live[f"x_{k - 1}"] + Q * noise
        log_lik = torch.distributions.Normal(x, R).log_prob(self.ys[k])
        self.weights.append(log_lik)
        return StepOutput({f"x_{k}": x}, log_lik, {f"y_{k}": log_lik})

    def transition_log_density(self, k, prev, values):
        loc = A * prev[f"x_{k - 1}"][None, :]
        return torch.distributions.Normal(loc, Q).log_prob(values[f"x_{k}"][:, None])


YS = EXACT.simulate(20)
_KALMAN = EXACT.kalman(YS)
LOG_Z, FILTER_MEANS = _KALMAN.log_evidence, _KALMAN.means


@pytest.mark.parametrize("scheme", EVIDENCE_SCHEMES)
def test_evidence_estimate_is_unbiased(scheme):
    """Z-hat / Z has mean 1; with 50 particles and adaptive resampling over 20 steps, its
    spread is large enough that a biased estimator (e.g. the final weights alone) fails."""
    filt = ParticleFilter(num_particles=50, resample=scheme, ess_threshold=0.5)
    ratios = torch.tensor([
        math.exp(float(filt.run_program(BootstrapProgram(YS),
                                        torch.Generator().manual_seed(s)).log_evidence) - LOG_Z)
        for s in range(200)
    ])
    se = ratios.std() / math.sqrt(len(ratios))
    assert abs(ratios.mean() - 1) < 3 * se, (ratios.mean(), se)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_filtering_means_match_kalman(scheme):
    """Per step, the mean of 30 independent runs' estimates against the Kalman mean, with the
    standard error of that average (the filters' O(1/N) bias is far below it)."""
    filt = ParticleFilter(num_particles=1000, resample=scheme, ess_threshold=0.5)
    runs = [filt.run_program(BootstrapProgram(YS), torch.Generator().manual_seed(100 + s))
            for s in range(30)]
    estimates = torch.stack([torch.stack([r.extra["filtering_means"][f"x_{t}"]
                                          for t in range(len(YS))]) for r in runs])
    se = estimates.std(0) / math.sqrt(len(runs))
    z = (estimates.mean(0) - torch.tensor(FILTER_MEANS, dtype=torch.float64)) / se
    assert z.abs().max() < 4.0, z
    final = runs[0]
    assert float(final.mean(f"x_{len(YS) - 1}")) == pytest.approx(
        float(estimates[0, -1]), abs=1e-12)


def test_backward_simulation_matches_the_rts_smoother():
    """FFBSi path means per step, averaged over 20 independent filters, against RTS."""
    filt = ParticleFilter(num_particles=200, keep_history=True)
    estimates = []
    for s in range(20):
        post = filt.run_program(BootstrapProgram(YS), torch.Generator().manual_seed(500 + s))
        paths = post.smooth(100, torch.Generator().manual_seed(s))
        assert sorted(paths) == sorted(f"x_{t}" for t in range(len(YS)))
        estimates.append(torch.stack([paths[f"x_{t}"].mean() for t in range(len(YS))]))
    estimates = torch.stack(estimates)
    se = estimates.std(0) / math.sqrt(len(estimates))
    z = (estimates.mean(0) - torch.tensor(EXACT.smoothed_means(YS), dtype=torch.float64)) / se
    assert z.abs().max() < 4.0, z


def test_smoothing_needs_history_and_a_transition_density():
    post = ParticleFilter(num_particles=20).run_program(BootstrapProgram(YS))
    with pytest.raises(ValueError, match="keep_history=True"):
        post.smooth(5)

    class NoDensity:  # the same program without transition_log_density
        def __init__(self):
            self.inner = BootstrapProgram(YS[:3])
            self.num_steps = 3

        def __getattr__(self, name):
            if name == "transition_log_density":
                raise AttributeError(name)
            return getattr(self.inner, name)

    post = ParticleFilter(num_particles=20, keep_history=True).run_program(NoDensity())
    with pytest.raises(TypeError, match="has no transition_log_density"):
        post.smooth(5)


def test_always_resampling_and_never_resampling():
    always = ParticleFilter(num_particles=200, ess_threshold=1.0).run_program(
        BootstrapProgram(YS), torch.Generator().manual_seed(0))
    assert always.resampled[1:].all() and not always.resampled[0]
    never = ParticleFilter(num_particles=200, ess_threshold=0.0).run_program(
        BootstrapProgram(YS), torch.Generator().manual_seed(0))
    assert not never.resampled.any()
    assert never.ess_history[-1] < never.ess_history[0]
    assert float(never.log_evidence_increments.sum()) == pytest.approx(float(never.log_evidence))


def test_without_resampling_the_estimate_is_importance_sampling():
    program = BootstrapProgram(YS)
    never = ParticleFilter(num_particles=200, ess_threshold=0.0).run_program(
        program, torch.Generator().manual_seed(0))
    total = torch.stack(program.weights).sum(0)  # each particle's whole-path log weight
    assert float(never.log_evidence) == pytest.approx(
        float(torch.logsumexp(total, 0) - math.log(200)), abs=1e-10)
    assert torch.allclose(never.log_weights, total - torch.logsumexp(total, 0))


def test_memory_stays_linear_and_keep_carries_paths():
    program = BootstrapProgram(YS)
    post = ParticleFilter(num_particles=100).run_program(program, torch.Generator().manual_seed(1))
    assert all(len(reads) <= 1 for reads in program.reads)  # only x_{k-1} is live at step k
    assert sorted(post.samples) == ["x_19"]
    kept = ParticleFilter(num_particles=100, keep=("x_0", "x_5")).run_program(
        BootstrapProgram(YS), torch.Generator().manual_seed(1))
    assert sorted(kept.samples) == ["x_0", "x_19", "x_5"]
    lineage = kept.lineage()
    assert lineage.shape == (20, 100)
    assert torch.equal(lineage[-1], torch.arange(100))
    with pytest.raises(ValueError, match="no step of the program has"):
        ParticleFilter(keep=("x_99",)).run_program(BootstrapProgram(YS))


def test_lineage_follows_ancestors():
    post = ParticleFilter(num_particles=64, ess_threshold=1.0, keep=("x_0",)).run_program(
        BootstrapProgram(YS[:5]), torch.Generator().manual_seed(2))
    lineage = post.lineage()
    # x_0 of a final particle is x_0 of its step-0 ancestor, which the filter carried along
    g = torch.Generator().manual_seed(2)  # step 0 makes the run's first draw: x_0
    x0 = M0 + S0 * torch.randn(64, generator=g, dtype=torch.float64)
    assert torch.equal(post.samples["x_0"], x0[lineage[0]])


class Broken(BootstrapProgram):
    def __init__(self, ys, fault):
        super().__init__(ys)
        self.fault = fault

    def run_step(self, k, live, num_particles, generator=None):
        out = super().run_step(k, live, num_particles, generator)
        if k < 2:
            return out
        if self.fault == "nan":
            lw = out.log_weight.clone()
            lw[:3] = math.nan
            return StepOutput(out.values, lw, {f"y_{k}": lw})
        if self.fault == "float32":
            return StepOutput(out.values, out.log_weight.float(), out.site_log_weights)
        if self.fault == "impossible":
            lw = torch.full_like(out.log_weight, -math.inf)
            return StepOutput(out.values, lw, {f"y_{k}": lw})
        return StepOutput({f"x_{k}": out.values[f"x_{k}"][:5]}, out.log_weight, {})


@pytest.mark.parametrize("fault, error, message", [
    ("nan", DegenerateWeights, r"step 2: 3 of 40 log weights are NaN; from the sites 'y_2' "
                               r"\(3 NaN\)"),
    ("float32", TypeError, r"step 2: the log weight is torch.float32"),
    ("impossible", DegenerateWeights, r"step 2: every particle has weight zero"),
    ("shape", ValueError, r"step 2: site 'x_2' has shape \(5,\); expected \(40, \*site_shape\)"),
])
def test_protocol_errors_name_the_step(fault, error, message):
    with pytest.raises(error, match=message):
        ParticleFilter(num_particles=40).run_program(Broken(YS, fault))


def test_reading_a_dropped_address_names_it():
    class Greedy(BootstrapProgram):
        def run_step(self, k, live, num_particles, generator=None):
            if k == 3:
                live["x_0"]
            return super().run_step(k, live, num_particles, generator)

    with pytest.raises(KeyError, match="'x_0', which is not live"):
        ParticleFilter(num_particles=10).run_program(Greedy(YS))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="resample must be one of"):
        ParticleFilter(resample="stratifed")
    with pytest.raises(ValueError, match="ess_threshold"):
        ParticleFilter(ess_threshold=1.5)
    with pytest.raises(ValueError, match="num_particles"):
        ParticleFilter(num_particles=0)
