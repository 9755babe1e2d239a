"""The generated steps against the reference interpreters: per-site log weights equal the
sites' log densities at the particles' values, the steps' weights with given values sum to
the joint log density (hypothesis, random chain models), draws follow the seed, params
are arguments (new values, same code), fallbacks are named, bad live input is refused."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppl import model, param, sample
from ppl.inference.lowering.particles import ParticleEngine, SamplerFallbackWarning
from ppl.ir.interpreter import LogDensity, Simulate
from ppl.stdlib import (
    Bernoulli,
    Categorical,
    Dirichlet,
    Exponential,
    Gamma,
    HalfNormal,
    LogNormal,
    MultivariateNormal,
    Normal,
    Poisson,
    StudentT,
    VonMises,
)
from ppl.trace import site_log_prob

NUM = 6  # particles


class SiteLogDensities(LogDensity):
    """The reference: each site's own log density, by address."""

    def __init__(self, graph, values):
        super().__init__(graph, values)
        self.sites = {}

    def add_site(self, node, dist, value):
        self.sites[node.address] = site_log_prob(dist, value, node.meta.attr("scale")).sum()

    def factor(self, node, args, kwargs):
        self.sites[node.address] = args[0].sum()
        return args[0]


@model
def mixed(ys, counts):
    """Continuous, discrete and vector latents in three steps."""
    scale = sample("scale", HalfNormal(1.0))
    z = sample("z", Categorical(torch.tensor([0.2, 0.3, 0.5])))
    means = torch.tensor([-2.0, 0.0, 2.0])
    sample("y_0", Normal(means[z] + 0.0, scale), obs=ys[0])
    w = sample("w", Dirichlet(torch.tensor([1.0, 2.0, 3.0])))
    v = sample("v", MultivariateNormal(torch.zeros(3), scale_tril=torch.eye(3) * 0.5))
    u = sample("u", Normal(torch.zeros(3), 0.5).to_event(1))
    sample("y_1", Normal((w * v).sum() + u.sum(), scale), obs=ys[1])
    b = sample("b", Bernoulli(0.3))
    rate = sample("rate", Gamma(2.0, 1.0))
    sample("c", Poisson(rate * (1.0 + b)).expand([3]).to_event(1), obs=counts)


def _mixed_graph():
    return mixed.graph(torch.tensor([0.3, -0.7]), torch.tensor([1.0, 4.0, 2.0]))


def _particles(graph, num):
    """``num`` prior draws of every latent, stacked by address, and the draws one by one."""
    draws = [Simulate(graph).run() for _ in range(num)]
    latents = [n.address for n in graph.latent_nodes]
    stacked = {a: torch.stack([d[a] for d in draws]) for a in latents}
    return stacked, [{a: d[a] for a in latents} for d in draws]


def test_score_steps_equal_each_sites_reference_log_density():
    torch.manual_seed(0)
    g = _mixed_graph()
    engine = ParticleEngine.from_graph(g)
    assert engine.fallback_reason is None  # every site here has a rule (Independent too)
    stacked, rows = _particles(g, NUM)
    reference = [SiteLogDensities(g, row) for row in rows]
    for r in reference:
        r.run()
    live = {}
    for k in range(engine.num_steps):
        latents = engine.schedule.steps[k].latents
        out = engine.score_step(k, live, {a: stacked[a] for a in latents}, NUM)
        assert set(out.site_log_weights) == set(engine.step_sites(k))
        for address, weight in out.site_log_weights.items():
            assert weight.dtype == torch.float64 and weight.shape == (NUM,)
            expected = torch.stack([r.sites[address] for r in reference]).to(torch.float64)
            torch.testing.assert_close(weight, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.log_weight, sum(out.site_log_weights.values()))
        live.update({a: stacked[a] for a in latents})


def test_run_step_weights_are_the_observed_sites_at_the_drawn_values():
    g = _mixed_graph()
    engine = ParticleEngine.from_graph(g)
    gen = torch.Generator().manual_seed(1)
    live = {}
    for k in range(engine.num_steps):
        out = engine.run_step(k, live, NUM, gen)
        assert set(out.values) == set(engine.schedule.steps[k].latents)
        assert set(out.site_log_weights) == set(engine.schedule.steps[k].observed)
        live.update(out.values)
        for i in range(NUM):  # each particle, through the reference interpreter
            row = {a: v[i] for a, v in live.items()}
            ref = SiteLogDensities(g, {**row, **_fill(g, row)})
            ref.run()
            for address, weight in out.site_log_weights.items():
                torch.testing.assert_close(weight[i], ref.sites[address].to(torch.float64),
                                           rtol=1e-5, atol=1e-5)
    assert out.values["b"].dtype == torch.float64 and set(out.values["b"].tolist()) <= {0, 1}


def _fill(graph, row):
    """Values for the latents later steps draw (the reference needs every latent)."""
    return {n.address: Simulate(graph).run()[n.address] for n in graph.latent_nodes
            if n.address not in row}


@st.composite
def chain_specs(draw):
    """A random chain: per step a transition family, whether the step is observed, and an
    observation family."""
    length = draw(st.integers(1, 5))
    return [(draw(st.sampled_from(["normal", "lognormal", "studentt"])), draw(st.booleans()),
             draw(st.sampled_from(["normal", "exponential", "poisson"])))
            for _ in range(length)]


def _chain_model(spec):
    @model
    def chain():
        x = sample("x_0", Normal(0.0, 1.0))
        for t, (transition, observed, emission) in enumerate(spec, start=1):
            if transition == "normal":
                x = sample(f"x_{t}", Normal(0.8 * x, 0.7))
            elif transition == "lognormal":
                x = torch.log(sample(f"x_{t}", LogNormal(0.5 * x, 0.4)))
            else:
                x = sample(f"x_{t}", StudentT(4.0, torch.tanh(x), 1.0))
            if observed:
                obs = torch.tensor(1.0 + 0.5 * t)
                if emission == "normal":
                    sample(f"y_{t}", Normal(x, 1.0), obs=obs)
                elif emission == "exponential":
                    sample(f"y_{t}", Exponential(torch.exp(0.3 * x)), obs=obs)
                else:
                    sample(f"y_{t}", Poisson(torch.exp(0.2 * x)), obs=torch.tensor(float(t)))
    return chain


@settings(max_examples=12, deadline=None)
@given(chain_specs(), st.integers(0, 2**31 - 1))
def test_steps_with_given_values_sum_to_the_joint_log_density(spec, seed):
    torch.manual_seed(seed)
    g = _chain_model(spec).graph()
    engine = ParticleEngine.from_graph(g)
    stacked, rows = _particles(g, 3)
    total = torch.zeros(3, dtype=torch.float64)
    for k in range(engine.num_steps):
        step = engine.schedule.steps[k]
        live = {a: stacked[a] for a in step.reads}
        total += engine.score_step(k, live, {a: stacked[a] for a in step.latents}, 3).log_weight
    expected = torch.stack([LogDensity(g, row).run() for row in rows]).to(torch.float64)
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=1e-6)


def test_the_same_seed_gives_the_same_particles():
    engine = ParticleEngine.from_graph(_mixed_graph())

    def run(seed):
        gen, live = torch.Generator().manual_seed(seed), {}
        for k in range(engine.num_steps):
            live.update(engine.run_step(k, live, 500, gen).values)
        return live

    a, b, c = run(7), run(7), run(8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["scale"], c["scale"])


def test_params_are_arguments_of_the_generated_code():
    @model
    def shifted():
        shift = param("engine_shift", torch.tensor(0.0))
        x = sample("x", Normal(shift, 1.0))
        sample("y", Normal(x, 1.0), obs=torch.tensor(2.0))

    engine = ParticleEngine.from_graph(shifted.graph(), params={"engine_shift": torch.tensor(0.0)})
    fn = engine.steps[0].fn
    x = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
    before = engine.run_step(0, {}, 5, torch.Generator().manual_seed(0))
    engine.set_params({"engine_shift": torch.tensor(3.0)})
    after = engine.run_step(0, {}, 5, torch.Generator().manual_seed(0))
    assert engine.steps[0].fn is fn
    torch.testing.assert_close(after.values["x"], before.values["x"] + 3.0)
    scored = engine.score_step(0, {}, {"x": x}, 5).site_log_weights["x"]
    torch.testing.assert_close(scored, Normal(3.0, 1.0).log_prob(x))
    with pytest.raises(KeyError, match="no params"):
        engine.set_params({"nope": torch.tensor(1.0)})


def test_a_family_without_a_rule_is_drawn_by_torch_and_named_once():
    @model
    def angles():
        a = sample("a", VonMises(0.0, 2.0))
        sample("y", Normal(a, 1.0), obs=torch.tensor(0.1))

    with pytest.warns(SamplerFallbackWarning, match="VonMises"):
        engine = ParticleEngine.from_graph(angles.graph())
    assert "VonMises has no sampling rule (site 'a')" in engine.fallback_reason
    draws = [engine.run_step(0, {}, 4000, torch.Generator().manual_seed(2)).values["a"]
             for _ in range(2)]
    assert torch.equal(*draws) and draws[0].shape == (4000,)
    # the circular mean of VonMises(0, 2) is 0, its mean resultant length I1(2) / I0(2)
    resultant = torch.special.i1(torch.tensor(2.0)) / torch.special.i0(torch.tensor(2.0))
    assert abs(float(torch.cos(draws[0]).mean()) - float(resultant)) < 5 * 0.5 / math.sqrt(4000)


def test_a_missing_live_latent_is_named():
    engine = ParticleEngine.from_graph(_mixed_graph())
    out = engine.run_step(0, {}, 3)
    with pytest.raises(KeyError, match=r"step 1 reads latents \['scale'\]"):
        engine.run_step(1, {a: v for a, v in out.values.items() if a != "scale"}, 3)


def test_a_proposal_that_cannot_run_is_refused_with_the_site_named():
    from ppl.inference.lowering.particles import ScheduleError

    @model
    def chain():
        x = sample("x_0", Normal(0.0, 1.0))
        sample("y_0", Normal(x, 1.0), obs=torch.tensor(0.0))
        x = sample("x_1", Normal(x, 1.0))
        sample("y_1", Normal(x, 1.0), obs=torch.tensor(0.0))

    @model
    def looks_ahead():
        x1 = sample("x_1", Normal(0.0, 1.0))
        sample("x_0", Normal(x1, 1.0))

    @model
    def observes():
        sample("x_0", Normal(0.0, 1.0), obs=torch.tensor(0.0))

    @model
    def unknown():
        sample("z", Normal(0.0, 1.0))

    g = chain.graph()
    with pytest.raises(ScheduleError, match=r"reads latents \['x_1'\], which the schedule "
                                            r"draws in steps \[1\]"):
        ParticleEngine.from_graph(g, proposal=looks_ahead.graph())
    with pytest.raises(ScheduleError, match=r"site 'x_0' is a observe site"):
        ParticleEngine.from_graph(g, proposal=observes.graph())
    with pytest.raises(ScheduleError, match=r"site 'z': the model 'chain' has no latent"):
        ParticleEngine.from_graph(g, proposal=unknown.graph())


def test_one_generator_call_per_site_for_all_particles(monkeypatch):
    from ppl.inference.lowering.particles import rng_ops

    calls = []
    normal = rng_ops.normal
    monkeypatch.setattr(rng_ops, "normal", lambda gen, shape: calls.append(shape) or
                        normal(gen, shape))
    engine = ParticleEngine.from_graph(_mixed_graph())
    live = engine.run_step(0, {}, 1000).values
    assert calls == [(1000,)]  # HalfNormal's scale; the Categorical draws uniforms
    calls.clear()
    engine.run_step(1, live, 1000)  # step 1 draws v (MultivariateNormal) and u (Independent)
    assert calls == [(1000, 3), (1000, 3)]
