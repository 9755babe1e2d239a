"""Subsampled plates on the graph path: the indices are an input drawn per evaluation, the
scaled log likelihood is unbiased for the full one (exactly, over all subsets), the graph and
trace paths agree on the same indices, and VI on minibatches finds the full-data posterior."""

import itertools
import math

import pytest
import torch

from ppl import infer, model, param, plate, sample, subsample
from ppl.errors import ModelError
from ppl.handlers import seed
from ppl.inference import ELBO, NUTS, VI, AutoNormal
from ppl.ir import IRError, LogDensity, log_density, parse, print_graph
from ppl.stdlib import Normal

SIZE, BATCH = 6, 2


@model
def normal_mean(x):
    mu = sample("mu", Normal(0.0, 1.0))
    with plate("data", len(x), subsample_size=BATCH) as ind:
        sample("x", Normal(mu, 1.0), obs=x[ind])


@pytest.fixture
def x():
    return torch.randn(SIZE, generator=torch.Generator().manual_seed(3))


def full_log_joint(x, mu):
    return Normal(0.0, 1.0).log_prob(mu) + Normal(mu, 1.0).log_prob(x).sum()


def test_the_indices_are_an_unbound_input_that_prints_and_parses_back(x):
    graph = normal_mean.graph(x)
    (indices,) = [n for n in graph.inputs if n.meta.attr("subsample") == "data"]
    assert indices.meta.shape == (BATCH,) and indices.meta.attr("size") == SIZE
    assert indices.name not in graph.data  # not frozen: drawn on each evaluation
    (observe,) = graph.nodes_of("observe")
    assert observe.meta.attr("scale") == pytest.approx(SIZE / BATCH)
    text = print_graph(graph)
    assert print_graph(parse(text)) == text


def test_the_average_over_all_subsets_is_the_full_log_density(x):
    graph = normal_mean.graph(x)
    mu = torch.tensor(0.4)
    subsets = [torch.tensor(s) for s in itertools.combinations(range(SIZE), BATCH)]
    for evaluate in (lambda ind: LogDensity(graph, {"mu": mu}, inputs={"data_indices": ind}).run(),
                     lambda ind: log_density(graph)({"mu": mu}, data={"data_indices": ind})):
        mean = torch.stack([evaluate(ind) for ind in subsets]).mean()
        assert torch.allclose(mean, full_log_joint(x, mu))


def test_drawn_indices_are_unbiased_and_fresh_on_each_evaluation(x):
    compiled = log_density(normal_mean.graph(x))
    mu = torch.tensor(0.4)
    with seed(0):
        draws = torch.stack([compiled({"mu": mu}) for _ in range(1500)])
    assert len(torch.unique(draws)) == math.comb(SIZE, BATCH)  # every subset turns up
    z = (draws.mean() - full_log_joint(x, mu)) / (draws.std() / math.sqrt(len(draws)))
    assert abs(float(z)) < 4


def test_graph_and_trace_paths_agree_on_the_same_indices(x):
    graph = normal_mean.graph(x)
    values = {"mu": torch.tensor(-0.3)}
    for ind in (torch.tensor([5, 0]), torch.tensor([2, 3])):
        with subsample({"data": ind}):
            trace_lp = normal_mean.log_density(values, x)
        graph_lp = LogDensity(graph, values, inputs={"data_indices": ind}).run()
        assert torch.allclose(trace_lp, graph_lp)


def test_a_gradient_sampler_refuses_the_subsampled_plate_by_name(x):
    with pytest.raises(IRError, match="subsampled plate 'data'.*TapeInterpreter"):
        infer(normal_mean, x, method=NUTS(num_warmup=5, num_samples=5, chains=1), seed=0)


def test_given_indices_of_the_wrong_length_are_refused():
    with subsample({"data": torch.tensor([0, 1, 2])}), pytest.raises(ModelError, match="'data'"):
        with plate("data", 10, subsample_size=2):
            pass


def test_vi_on_minibatches_finds_the_full_data_posterior():
    """mu ~ N(0, 0.5^2), x_i ~ N(mu, 1): the posterior is N(sum x / (n + 4), 1 / (n + 4)).
    Without the n / batch scaling VI would find N(sum x_b / (batch + 4), 1 / (batch + 4)):
    a mean 3 posterior sds lower and a scale 3 times wider."""
    n, batch, steps = 200, 20, 400
    data = 1.5 + torch.randn(n, generator=torch.Generator().manual_seed(0))

    @model
    def conjugate(x):
        mu = sample("mu", Normal(0.0, 0.5))
        with plate("data", len(x), subsample_size=batch) as ind:
            sample("x", Normal(mu, 1.0), obs=x[ind])

    post_mean, post_sd = float(data.sum()) / (n + 4), 1 / math.sqrt(n + 4)

    def cosine(optimizer):
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=1e-4)

    res = infer(conjugate, data, method=VI(AutoNormal(conjugate), steps=steps, lr=0.05,
                                           lr_schedule=cosine), seed=0)
    loc = float(res.params.get("auto.mu.loc").detach())
    scale = float(res.params.get("auto.mu.scale").detach())
    assert abs(loc - post_mean) < post_sd
    assert post_sd / 1.5 < scale < 1.5 * post_sd


def test_vi_shares_one_minibatch_between_guide_and_model():
    """Local latents: z_i ~ N(0, 1), x_i ~ N(z_i, 1), so q(z_i) should reach N(x_i / 2, 1/2).
    The guide indexes its per-point params with its plate's indices; only if the model's plate
    draws the same ones does each loc meet its own data point."""
    n, batch, steps = 12, 4, 300
    data = 2.0 * torch.randn(n, generator=torch.Generator().manual_seed(1))

    @model
    def local(x):
        with plate("data", len(x), subsample_size=batch) as ind:
            z = sample("z", Normal(0.0, 1.0))
            sample("x", Normal(z, 1.0), obs=x[ind])

    def guide(x):
        loc = param("loc", torch.zeros(n))
        with plate("data", len(x), subsample_size=batch) as ind:
            sample("z", Normal(loc[ind], math.sqrt(0.5)))

    def cosine(optimizer):
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=1e-3)

    res = infer(local, data, method=VI(guide, objective=ELBO(num_particles=8), steps=steps,
                                       lr=0.1, lr_schedule=cosine), seed=0)
    # 0.25 is a third of the posterior sd of each z_i
    assert torch.allclose(res.params.get("loc").detach(), data / 2, atol=0.25)
