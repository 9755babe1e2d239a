"""``simplify``: smaller graphs with exactly the same log density."""

import pytest
import torch

from ppl import deterministic, model, plate, sample
from ppl.ir import LogDensity, Simulate, compile_log_density
from ppl.passes import condition, do, enumerate_discrete, noncenter, run, simplify, unconstrain
from ppl.stdlib import Normal


def prior_point(graph, seed):
    torch.manual_seed(seed)
    draw = Simulate(graph).run()
    return {n.address: draw[n.address] for n in graph.latent_nodes}


def assert_same_density(before, after, values):
    assert torch.equal(LogDensity(after, values).run(), LogDensity(before, values).run())
    torch.testing.assert_close(compile_log_density(after)(values), LogDensity(before, values).run())


def traced(zoo):
    x, y = zoo.logistic_data
    return {
        "eight_schools": zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y),
        "constrained": zoo.constrained.graph(torch.tensor(0.2)),
        "logistic": zoo.logistic.graph(x, y),
        "mixture": zoo.mixture.graph(zoo.mixture_data),
        "hmm": zoo.hmm.graph(zoo.hmm_data),
        "funnel": zoo.funnel.graph(),
    }


@pytest.mark.parametrize(
    "name", ["eight_schools", "constrained", "logistic", "mixture", "hmm", "funnel"]
)
def test_preserves_log_density_exactly(zoo, name):
    graph = traced(zoo)[name]
    small = simplify()(graph)
    assert len(small) <= len(graph)
    for seed in range(3):
        assert_same_density(graph, small, prior_point(graph, seed))
    assert simplify()(small).nodes == small.nodes  # a fixed point


def test_shrinks_eight_schools(zoo):
    graph = zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y)
    small = simplify()(graph)
    # the tracer records a site's constructor arguments, never the constructor's
    # broadcast_tensors and getitems, so the traced graph is already as small
    assert (len(graph), len(small)) == (11, 11)
    assert not any(n.target in ("torch.broadcast_tensors", "ppl.getitem") for n in graph.nodes)


def test_after_other_passes(zoo):
    graph = run(
        zoo.eight_schools.graph(zoo.SIGMA), [condition({"y": zoo.Y}), noncenter(), unconstrain()]
    )
    small = simplify()(graph)
    assert len(small) < len(graph)
    assert not any(n.target in ("torch.zeros", "torch.ones") for n in small.nodes)  # folded
    values = {
        "mu": torch.tensor(0.3),
        "tau__unconstrained": torch.tensor(0.2),
        "theta__raw": torch.randn(8),
    }
    assert_same_density(graph, small, values)
    enumerated = enumerate_discrete()(zoo.mixture.graph(zoo.mixture_data))
    values = {"weights": torch.tensor([0.4, 0.6]), "locs": torch.tensor([-0.3, 0.8])}
    assert_same_density(enumerated, simplify()(enumerated), values)


def test_folds_constants_after_do(zoo):
    graph = do({"mu": torch.tensor(1.0), "tau": torch.tensor(2.0)})(
        zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y)
    )
    small = simplify()(graph)
    theta = small.site("theta")
    assert all(
        isinstance(v, torch.Tensor) for _, v in theta.kwargs
    )  # loc and scale are literals now
    torch.testing.assert_close(dict(theta.kwargs)["scale"], torch.full((8,), 2.0))
    values = {"theta": torch.randn(8)}
    assert_same_density(graph, small, values)


def test_common_subexpressions_and_dead_code():
    @model
    def m(x):
        a = sample("a", Normal(0.0, 1.0))
        u = (a * x).exp()
        v = (a * x).exp()
        (a * x).sin()  # never used
        with plate("data", len(x)):
            sample("y", Normal(u + v, 1.0), obs=x)
        return deterministic("d", u - v)

    graph = m.graph(torch.linspace(0.0, 1.0, 4))
    small = simplify()(graph)
    targets = [n.target for n in small.nodes]
    assert targets.count("Tensor.mul") == 1 and targets.count("Tensor.exp") == 1
    assert "Tensor.sin" not in targets
    assert_same_density(graph, small, {"a": torch.tensor(0.7)})


def test_removes_unused_inputs_and_their_data():
    @model
    def m(x, unused):
        a = sample("a", Normal(0.0, 1.0))
        sample("y", Normal(a, 1.0), obs=x)

    graph = m.graph(torch.tensor(0.5), torch.zeros(3))
    assert "unused" in graph and "unused" in graph.data
    small = simplify()(graph)
    assert "unused" not in small and "unused" not in small.data
    assert set(small.data) == {n.name for n in small.inputs} == {"x"}
