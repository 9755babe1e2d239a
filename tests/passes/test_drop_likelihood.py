"""drop_likelihood: the prior graph keeps every latent (same layout), has the prior's density,
reads observed values where the model did, and runs before enumerate_discrete."""

import pytest
import torch

from ppl import factor, model, plate, sample
from ppl.ir import LogDensity, PassError
from ppl.passes import drop_likelihood, enumerate_discrete, run
from ppl.stdlib import Bernoulli, Gamma, Normal


@model
def autoregressive(y):
    s = sample("s", Gamma(2.0, 2.0))
    first = sample("y0", Normal(0.0, s), obs=y[0])
    x = sample("x", Normal(first, 1.0))  # a latent whose parameter is an observed value
    with plate("rest", len(y) - 1):
        sample("y", Normal(x, s), obs=y[1:])
    factor("penalty", -0.5 * x * x)


Y = torch.tensor([0.7, 1.2, 0.4, 0.9])


def test_prior_graph_has_the_prior_density():
    graph = autoregressive.graph(Y)
    prior = drop_likelihood()(graph)
    assert [n.address for n in prior.latent_nodes] == [n.address for n in graph.latent_nodes]
    assert not prior.nodes_of("observe")
    values = {"s": torch.tensor(1.3), "x": torch.tensor(0.2)}
    expected = (Gamma(2.0, 2.0).log_prob(values["s"]) + Normal(Y[0], 1.0).log_prob(values["x"])
                - 0.5 * values["x"] ** 2)
    assert float(LogDensity(prior, values).run()) == pytest.approx(float(expected))
    no_factors = drop_likelihood(factors=True)(graph)
    assert float(LogDensity(no_factors, values).run()) == pytest.approx(
        float(expected + 0.5 * values["x"] ** 2))


@model
def mixture(y):
    mu = sample("mu", Normal(0.0, 2.0))
    with plate("data", len(y)):
        z = sample("z", Bernoulli(0.3))
        sample("y", Normal(mu + 2 * z, 1.0), obs=y)


def test_runs_before_enumerate_discrete():
    graph = mixture.graph(Y)
    prior = run(graph, [drop_likelihood(), enumerate_discrete()])
    value = {"mu": torch.tensor(0.4)}
    assert float(LogDensity(prior, value).run()) == pytest.approx(
        float(Normal(0.0, 2.0).log_prob(value["mu"])), abs=1e-6)
    with pytest.raises(PassError, match="drop_likelihood"):
        run(graph, [enumerate_discrete(), drop_likelihood()])


@model
def logistic(x, y):
    w = sample("w", Normal(0.0, 1.0).expand((3,)).to_event(1))
    with plate("data", len(y)):
        sample("y", Bernoulli(logits=x @ w), obs=y)


def test_the_likelihood_computations_go_too():
    x, y = torch.randn(50, 3), (torch.rand(50) < 0.5).float()
    prior = drop_likelihood()(logistic.graph(x, y))
    assert [n.kind for n in prior.nodes if n.kind != "call"] == ["sample", "output"]
    bound = [k for k, v in prior.data.items() if torch.is_tensor(v) and v.shape[:1] == (50,)]
    assert not bound  # neither x nor y stays in the prior graph
