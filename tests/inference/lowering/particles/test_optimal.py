"""The locally optimal proposal on the engine: detected where a step is linear-Gaussian (one
Normal latent, Normal observations with means elementwise affine in it), refused with the
reason elsewhere; where detected the step's weight is the exact predictive density,
the same for every draw (vector latents, several observations, a broadcast one); the
look-ahead weights of the auxiliary filter."""

import math

import pytest
import torch

from ppl import factor, model, sample
from ppl.inference.lowering.particles import ParticleEngine, Schedule
from ppl.inference.lowering.particles.optimal import GaussianStep, gaussian_step
from ppl.inference.testing import LinearGaussianSSM
from ppl.stdlib import Categorical, Laplace, Normal

N = 64
C = torch.tensor([1.5, -0.5, 2.0])
D = torch.tensor([0.3, 0.0, -1.0])
Y1 = torch.tensor([0.7, -0.2, 1.1])
Y2 = torch.tensor([[0.1, 0.4, -0.6], [1.0, -0.3, 0.2]])


@model
def vector_step(y1, y2):
    z = sample("z", Normal(torch.zeros(3), 1.0).to_event(1))
    sample("w", Normal(z, 2.0).to_event(1), obs=torch.tensor([0.5, -0.5, 0.0]))
    x = sample("x", Normal(0.5 * z, torch.exp(0.1 * z)).to_event(1))
    sample("y1", Normal(C * x + D, torch.tensor([0.5, 1.0, 0.8])).to_event(1), obs=y1)
    sample("y2", Normal(((x - 1) / 2).expand(2, 3), 0.7).to_event(2), obs=y2)
    sample("u", Normal(0.0, 1.0), obs=torch.tensor(0.25))  # reads no latent


def vector_predictive(z: torch.Tensor) -> torch.Tensor:
    """log p(y1, y2, u | z): per element i, (y1_i, y2_0i, y2_1i) is Gaussian with loadings
    (c_i, 1/2, 1/2) on x_i ~ N(z_i / 2, exp(z_i / 10)^2)."""
    z = z.double()
    m, s = 0.5 * z, torch.exp(0.1 * z)
    loads = torch.stack([C.double().expand(len(z), 3), torch.full((len(z), 3), 0.5),
                         torch.full((len(z), 3), 0.5)], -1)  # (N, 3, 3): element, site
    mean = loads * m[..., None] + torch.stack(
        [D.double().expand(len(z), 3), torch.full((len(z), 3), -0.5),
         torch.full((len(z), 3), -0.5)], -1)
    noise = torch.stack([torch.tensor([0.5, 1.0, 0.8], dtype=torch.float64),
                         torch.full((3,), 0.7, dtype=torch.float64),
                         torch.full((3,), 0.7, dtype=torch.float64)], -1) ** 2
    cov = loads[..., :, None] * loads[..., None, :] * (s**2)[..., None, None] + torch.diag_embed(
        noise.expand(len(z), 3, 3))
    ys = torch.stack([Y1, Y2[0], Y2[1]], -1).double()
    mvn = torch.distributions.MultivariateNormal(mean, cov)
    return mvn.log_prob(ys).sum(-1) + Normal(0.0, 1.0).log_prob(torch.tensor(0.25)).double()


def test_a_vector_step_with_several_observations_weighs_by_the_exact_predictive():
    graph = vector_step.graph(Y1, Y2)
    schedule = [["z", "w"], ["x", "y1", "y2", "u"]]
    engine = ParticleEngine.from_graph(graph, schedule, optimal=True)
    assert engine.proposal_kinds == ("optimal", "optimal")
    assert gaussian_step(graph, engine.schedule.steps[1]) == GaussianStep("x", ("y1", "y2"))
    z = torch.randn(N, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = engine.run_step(1, {"z": z}, N, torch.Generator().manual_seed(2))
    torch.testing.assert_close(out.log_weight, vector_predictive(z), rtol=1e-6, atol=1e-6)
    # the same earlier latent for every particle: the weight does not depend on the draw
    same = engine.run_step(1, {"z": z[:1].expand(N, 3)}, N, torch.Generator().manual_seed(3))
    assert float(same.log_weight.std()) < 1e-12 and float(same.values["x"].std(0).min()) > 0.1


def test_an_affine_mean_built_from_several_terms_is_exact():
    @model
    def one(ys):
        x = sample("x", Normal(1.0, 2.0))
        sample("y", Normal(-(x - 3) / 2 + 1.0 * x, 0.5), obs=ys[0])  # 0.5 x + 1.5

    ys = torch.tensor([2.5])
    engine = ParticleEngine.from_graph(one.graph(ys), optimal=True)
    out = engine.run_step(0, {}, N, torch.Generator().manual_seed(0))
    mean, variance = 0.5 * 1.0 + 1.5, 0.25 * 4.0 + 0.25
    exact = torch.tensor(-0.5 * (math.log(2 * math.pi * variance) + (2.5 - mean) ** 2 / variance),
                         dtype=torch.float64)
    torch.testing.assert_close(out.log_weight, exact.expand(N), rtol=1e-9, atol=1e-9)


@model
def observed_as(ys, kind: str):
    x = sample("x", Laplace(0.0, 1.0) if kind == "laplace prior" else Normal(0.0, 1.0))
    if kind == "square":
        sample("y", Normal(x * x, 1.0), obs=ys[0])
    elif kind == "reciprocal":
        sample("y", Normal(1 / x, 1.0), obs=ys[0])
    elif kind == "sine":
        sample("y", Normal(torch.sin(x), 1.0), obs=ys[0])
    elif kind == "scale":
        sample("y", Normal(x, torch.exp(x)), obs=ys[0])
    elif kind == "laplace":
        sample("y", Laplace(x, 1.0), obs=ys[0])
    elif kind == "factor":
        factor("f", -x * x)
    else:
        sample("y", Normal(x, 1.0), obs=ys[0])


@pytest.mark.parametrize("kind, reason", [
    ("square", "the mean of observation 'y' of 'x' is not affine in it"),
    ("reciprocal", "the mean of observation 'y' of 'x' is not affine in it"),
    ("sine", "the mean of observation 'y' of 'x' is not affine in it"),
    ("scale", "the observed value or scale of observation 'y' of 'x' reads it"),
    ("laplace", "observation 'y' of 'x' is Laplace, not Normal"),
    ("laplace prior", "the prior of 'x' is Laplace, not Normal"),
    ("factor", "factor 'f' reads 'x'"),
])
def test_other_steps_are_not_detected_and_say_why(kind, reason):
    graph = observed_as.graph(torch.tensor([0.5]), kind)
    assert gaussian_step(graph, Schedule.from_graph(graph).steps[0]) == reason
    with pytest.raises(ValueError, match=f"step 0: {reason}"):
        ParticleEngine.from_graph(graph, optimal=True)


def test_a_step_with_two_latents_is_not_detected():
    @model
    def two(ys):
        a = sample("a", Normal(0.0, 1.0))
        b = sample("b", Normal(a, 1.0))
        sample("y", Normal(b, 1.0), obs=ys[0])

    graph = two.graph(torch.tensor([0.5]))
    assert gaussian_step(graph, Schedule.from_graph(graph).steps[0]) == (
        "the step draws 2 latents ['a', 'b'], not one")


def test_lookahead_weights():
    ssm = LinearGaussianSSM(a=0.9, q=0.5, r=1.0)
    ys = ssm.simulate(3, seed=0)
    x0 = torch.randn(N, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    prior_mean = ParticleEngine.from_graph(ssm.model().graph(ys))
    assert prior_mean.lookahead_kinds == ("prior mean",) * 3
    torch.testing.assert_close(prior_mean.lookahead_log_weight(1, {"x_0": x0}, N),
                               Normal(0.9 * x0, 1.0).log_prob(ys[1]))
    adapted = ParticleEngine.from_graph(ssm.model().graph(ys), optimal=True)
    assert adapted.lookahead_kinds == ("predictive",) * 3
    torch.testing.assert_close(adapted.lookahead_log_weight(1, {"x_0": x0}, N),
                               Normal(0.9 * x0, math.sqrt(0.25 + 1.0)).log_prob(ys[1]),
                               rtol=1e-6, atol=1e-6)

    @model
    def switching(ys):
        z = sample("z", Categorical(torch.tensor([0.3, 0.7])))
        sample("y", Normal(2.0 * z, 1.0), obs=ys[0])

    discrete = ParticleEngine.from_graph(switching.graph(torch.tensor([1.0])))
    assert discrete.lookahead_kinds == ("none",)
    assert bool((discrete.lookahead_log_weight(0, {}, N) == 0).all())
