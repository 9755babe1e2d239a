"""A traced site records its distribution's constructor arguments: the constructor's own
work (broadcasting, normalizing) is recorded only when the model reads what it derived, by
replaying the constructor, and no operation nobody reads stays in the graph."""

import torch

from ppl import model, plate, sample
from ppl.ir.interpreter import LogDensity
from ppl.stdlib import Beta, Categorical, Normal


@model
def ar1(y):
    x = torch.zeros(())
    for t in range(len(y)):
        x = sample(f"x_{t}", Normal(0.9 * x, 1.0))
        sample(f"y_{t}", Normal(x, 1.0), obs=y[t])


def test_a_time_series_records_four_nodes_per_step_and_no_dead_ones():
    graph = ar1.graph(torch.randn(20))
    calls = [n.target for n in graph.nodes if n.kind == "call"]
    # input and output; per step mul, x_t, y[t], y_t (the first mul is of a constant)
    assert len(graph) == 2 + 4 * 20 - 1
    assert set(calls) == {"Tensor.mul", "Tensor.__getitem__"}
    read = {r for n in graph.nodes for r in n.refs()}
    assert all(n.name in read for n in graph.nodes if n.kind == "call")
    assert graph.site("x_3").kwargs[1] == ("scale", 1.0)  # the argument as given


@model
def reads_derived(y):
    mu = sample("mu", Normal(0.0, 1.0))
    d = Normal(mu, torch.ones(3))  # loc is broadcast to (3,) inside the constructor
    shift = d.loc.sum() + Beta(torch.sigmoid(mu) + 0.5, 1.5).mean  # read back by the model
    probs = Categorical(logits=torch.stack([mu, -mu, 0.5 * mu])).probs
    with plate("data", 3):
        sample("y", Normal(d.loc + shift, probs + 0.5), obs=y)


def test_what_a_constructor_derived_is_recorded_when_the_model_reads_it():
    y = torch.tensor([0.3, -1.2, 0.8])
    graph = reads_derived.graph(y)
    for mu in (-0.7, 0.0, 1.3):
        latents = {"mu": torch.tensor(mu)}
        expected = reads_derived.log_density(latents, y)
        torch.testing.assert_close(LogDensity(graph, latents).run(), expected)
