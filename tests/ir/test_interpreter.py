"""The interpreter protocol: the walk resolves every node's arguments and calls one method per
node kind with them; a meaning overrides only what it changes."""

import torch

from ppl import model, plate, sample
from ppl.handlers import condition, scale, trace
from ppl.ir import Interpreter, LogDensity, LogDensityCodeGen, Simulate, compile_log_density
from ppl.stdlib import Normal


@model
def nested(y):
    x = sample("x", Normal(0.0, 1.0))
    w = sample("w", Normal(torch.zeros(2), 1.0).to_event(1))
    with plate("data", 3):
        sample("y", Normal(x + w.sum(), 2.0), obs=y)


Y = torch.tensor([0.5, -1.0, 2.0])


def test_methods_receive_resolved_arguments_and_built_distributions():
    seen = {}

    class Recorder(Simulate):
        def sample(self, node, args, kwargs):
            seen[node.address] = kwargs
            return super().sample(node, args, kwargs)

        def observe(self, node, args, kwargs):
            seen[node.address] = (args, kwargs)
            return super().observe(node, args, kwargs)

    interp = Recorder(nested.graph(Y))
    values = interp.run()
    assert isinstance(seen["w"]["base_distribution"], torch.distributions.Normal)  # the hook
    (value,), params = seen["y"]
    assert torch.equal(value, Y)
    loc = torch.broadcast_to(values["x"] + values["w"].sum(), params["loc"].shape)
    torch.testing.assert_close(params["loc"], loc)


def test_the_distribution_hook_is_the_one_place_distributions_are_built():
    built = []

    class Families(LogDensity):
        def distribution(self, spec, params):
            built.append(spec.family)
            return super().distribution(spec, params)

    values = {"x": torch.tensor(0.3), "w": torch.tensor([0.1, -0.2])}
    Families(nested.graph(Y), values).run()
    assert built == ["Normal", "Normal", "Independent", "Normal"]


def test_code_generator_values_are_source_expressions():
    graph = nested.graph(Y)
    gen = LogDensityCodeGen(graph, "log_density")
    gen.source()
    x = graph.site("x")
    assert gen.env[x.name] == f"v_{x.name}"
    assert isinstance(gen, Interpreter)


def test_scaled_sites_mean_the_same_on_the_trace_and_on_every_walk():
    @model
    def scaled():
        x = sample("x", Normal(0.0, 1.0))
        with scale(0.25), plate("data", 2):
            sample("y", Normal(x, 1.0), obs=torch.tensor([0.5, 1.5]))

    values = {"x": torch.tensor(0.7)}
    graph = scaled.graph()
    with trace() as tr, condition(values):
        scaled()
    expected = sum(site.log_prob_sum for site in tr.trace.sites.values())
    torch.testing.assert_close(LogDensity(graph, values).run(), expected)
    torch.testing.assert_close(compile_log_density(graph)(values), expected)
