"""The traced graph means the same as the model: log densities agree across the trace path,
the graph interpreter and the generated code, on fixed and hypothesis-generated models."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppl import factor, model, plate, sample
from ppl.ir import (
    DynamicModelError,
    Generate,
    IRError,
    LogDensity,
    Simulate,
    compile_log_density,
    trace_graph,
)
from ppl.stdlib import Bernoulli, Beta, Categorical, Gamma, HalfCauchy, Normal
from ppl.stdlib.reference_models import EIGHT_SCHOOLS_SIGMA as SIGMA
from ppl.stdlib.reference_models import EIGHT_SCHOOLS_Y as Y
from ppl.stdlib.reference_models import eight_schools, logistic, mixture


@model
def with_factor_and_loop(data):
    scale = sample("scale", Gamma(2.0, 2.0))
    total = torch.zeros(())
    for i in plate("steps", len(data)):
        total = total + sample(f"x_{i}", Normal(total, scale), obs=data[i])
    factor("penalty", -0.5 * scale**2)
    return total


def assert_paths_agree(m, args, kwargs=None, seed=0):
    kwargs = kwargs or {}
    graph = trace_graph(m, *args, **kwargs)
    draw = m.sample(*args, seed=seed, **kwargs)
    latents = {s.name: draw[s.name] for s in m.trace(*args, **kwargs).latent_sites()}
    expected = m.log_density(latents, *args, **kwargs)
    assert torch.allclose(LogDensity(graph, latents).run(), expected, rtol=1e-6, atol=1e-6)
    assert torch.allclose(compile_log_density(graph)(latents), expected, rtol=1e-6, atol=1e-6)
    return graph


def test_eight_schools_paths_agree():
    graph = assert_paths_agree(eight_schools, (SIGMA,), {"y": Y})
    assert [n.address for n in graph.random_nodes] == ["mu", "tau", "theta", "y"]
    assert graph.site("theta").meta.plates[0].name == "schools"
    assert graph.site("theta_scaled").is_deterministic_site


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_models_paths_agree(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(30, 3, generator=g)
    assert_paths_agree(logistic, (x, (x[:, 0] > 0).float()), seed=seed)
    assert_paths_agree(mixture, (torch.randn(6, generator=g),), seed=seed)
    assert_paths_agree(with_factor_and_loop, (torch.randn(4, generator=g),), seed=seed)


def test_graph_runs_without_the_function_and_with_new_data():
    graph = trace_graph(eight_schools, SIGMA, y=Y)
    values = {"mu": torch.tensor(1.0), "tau": torch.tensor(2.0), "theta": torch.zeros(8)}
    new_y = Y + 1
    expected = eight_schools.log_density(values, SIGMA, y=new_y)
    assert torch.allclose(compile_log_density(graph)(values, data={"y": new_y}), expected)
    assert torch.allclose(LogDensity(graph, values, inputs={"y": new_y}).run(), expected)


def test_simulate_and_generate():
    graph = trace_graph(eight_schools, SIGMA, y=Y)
    torch.manual_seed(0)
    draws = Simulate(graph).run()
    assert draws["theta"].shape == (8,) and torch.equal(draws["y"], Y)
    values, log_weight = Generate(graph, {"mu": torch.tensor(0.5)}).run()
    assert values["mu"] == 0.5 and values["theta"].shape == (8,)
    full = {"mu": values["mu"], "tau": values["tau"], "theta": values["theta"]}
    prior_of_drawn = (HalfCauchy(5.0).log_prob(full["tau"])
                      + Normal(full["mu"], full["tau"]).log_prob(full["theta"]).sum())
    expected = eight_schools.log_density(full, SIGMA, y=Y) - prior_of_drawn
    assert torch.allclose(log_weight, expected, atol=1e-5)


def test_generated_source_is_straight_line():
    src = compile_log_density(trace_graph(eight_schools, SIGMA, y=Y)).source
    body = src.split("log_p = 0.0", 1)[1]
    assert "for " not in body and "while " not in body and "if " not in body
    assert "values['theta']" in src


def test_graph_cache_rebinds_data():
    first = eight_schools.graph(SIGMA, y=Y)
    second = eight_schools.graph(SIGMA * 2, y=Y)
    assert [n.name for n in first] == [n.name for n in second]
    assert torch.equal(second.data["sigma"], SIGMA * 2)


def test_branching_on_a_random_value_is_dynamic():
    @model
    def dynamic():
        x = sample("x", Normal(0.0, 1.0))
        if x > 0:
            sample("y", Normal(1.0, 1.0))

    with pytest.raises(DynamicModelError) as err:
        trace_graph(dynamic)
    message = str(err.value)
    assert "'x'" in message and "test_tracer.py" in message and "if x > 0" in message
    assert len(dynamic.trace()) >= 1  # still fine on the trace path


def test_python_int_of_a_random_value_is_dynamic():
    @model
    def dynamic():
        k = sample("k", Categorical(torch.ones(3) / 3))
        return torch.zeros(3)[int(k)]

    with pytest.raises(DynamicModelError, match="'k'"):
        trace_graph(dynamic)


def test_branching_on_data_specializes():
    @model
    def on_data(y):
        mu = sample("mu", Normal(0.0, 1.0))
        loc = mu if y.sum() > 0 else -mu
        with plate("data", len(y)):
            sample("y", Normal(loc, 1.0), obs=y)

    graph = trace_graph(on_data, torch.ones(2))
    assert graph.attrs["reads_data"] is True
    assert_paths_agree(on_data, (torch.ones(2),))
    assert_paths_agree(on_data, (-torch.ones(2),))


def test_random_torch_functions_are_refused():
    @model
    def bad():
        mu = sample("mu", Normal(0.0, 1.0))
        return mu + torch.randn(())

    with pytest.raises(IRError, match="sample"):
        trace_graph(bad)


def test_inplace_updates_are_functionalized():
    @model
    def inplace(n):
        mu = sample("mu", Normal(0.0, 1.0))
        acc = torch.zeros(n)
        acc[0] = mu
        acc += 1.0
        sample("y", Normal(acc, 1.0).to_event(1), obs=torch.ones(n))

    assert_paths_agree(inplace, (3,))


# -- random models ---------------------------------------------------------------------------

FAMILIES = ["Normal", "Gamma", "Beta", "Bernoulli", "Categorical"]


@st.composite
def model_specs(draw):
    sites = []
    for i in range(draw(st.integers(1, 5))):
        family = draw(st.sampled_from(FAMILIES))
        earlier = [j for j, s in enumerate(sites) if s["family"] in ("Normal", "Gamma", "Beta")]
        parents = (
            draw(st.lists(st.sampled_from(earlier), max_size=2, unique=True)) if earlier else []
        )
        sites.append({
            "name": f"s{i}",
            "family": family,
            "parents": parents,
            "plate": draw(st.sampled_from([None, "p", "q"])),
            "observed": draw(st.booleans()),
        })
    sizes = {"p": draw(st.integers(1, 4)), "q": draw(st.integers(1, 3))}
    return sites, sizes


def spec_model(sites, sizes, data):
    """A model that interprets a random spec: parents enter through their means."""

    @model
    def random_model():
        values = {}
        for site in sites:
            signal = sum(
                (values[sites[j]["name"]].float().mean() for j in site["parents"]),
                torch.tensor(0.0),
            )
            family = site["family"]
            if family == "Normal":
                dist = Normal(signal, 1.0)
            elif family == "Gamma":
                dist = Gamma(torch.exp(0.1 * signal) + 0.5, 1.0)
            elif family == "Beta":
                dist = Beta(torch.sigmoid(signal) + 0.5, 1.5)
            elif family == "Bernoulli":
                dist = Bernoulli(logits=signal)
            else:
                dist = Categorical(logits=torch.stack([signal, -signal, 0.5 * signal]))
            obs = data[site["name"]] if site["observed"] else None
            if site["plate"] is None:
                values[site["name"]] = sample(site["name"], dist, obs=obs)
            else:
                with plate(site["plate"], sizes[site["plate"]]):
                    values[site["name"]] = sample(site["name"], dist, obs=obs)

    return random_model


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_specs(), st.integers(0, 2**16))
def test_random_models_paths_agree(spec, seed):
    sites, sizes = spec
    latent_only = [{**s, "observed": False} for s in sites]
    prior = spec_model(latent_only, sizes, {}).sample(seed=seed)
    data = {s["name"]: prior[s["name"]] for s in sites if s["observed"]}
    m = spec_model(sites, sizes, data)
    assert_paths_agree(m, (), seed=seed + 1)


def test_tracing_leaves_the_seed_stream_where_it_was():
    """A graph traced inside a seed scope and one served from the cache leave the same
    stream behind, so ``infer(..., seed=s)`` gives the same draws on a first and a later call."""
    import ppl.randomness as randomness

    @model
    def noisy(y):
        x = sample("x", Normal(0.0, 1.0))
        sample("y", Normal(x, 1.0), obs=y)

    def after_graph(trace: bool):
        with randomness.seeded(0):
            if trace:
                noisy.graph(torch.tensor(0.5))
            with randomness.drawing() as generator:
                return torch.randn(3, generator=generator)

    assert torch.equal(after_graph(True), after_graph(False))
