"""``enumerate_discrete`` on chains: an HMM written as a Python loop is summed out exactly (the
forward algorithm's answer at T=200), in O(T K^2) (the plan's widest factor stays K^2 and the
layout two dims as T grows), and min-fill keeps coupled chains at their treewidth."""

import math
import warnings

import pytest
import torch

from ppl import model, plate, sample
from ppl.inference.mcmc.gibbs.method import assign_blocks
from ppl.ir import IRError, LogDensity, compile_log_density
from ppl.passes import EnumerationWarning, enumerate_discrete, enumeration_plans, plan_contraction
from ppl.stdlib import Bernoulli, Categorical, Dirichlet, Normal, Poisson


@model
def hmm(y, K: int = 2):
    with plate("states", K):
        trans = sample("trans", Dirichlet(torch.ones(K, dtype=y.dtype)))
        mu = sample("mu", Normal(torch.zeros((), dtype=y.dtype), 3.0))
    z = 0
    for t in range(len(y)):
        z = sample(f"z_{t}", Categorical(trans[z]))
        sample(f"y_{t}", Normal(mu[z], 1.0), obs=y[t])


def forward_algorithm(trans, mu, y):
    """log p(y | trans, mu) by the forward recursion, the chain starting from state 0."""
    log_trans = trans.log()
    emission = torch.distributions.Normal(mu, torch.ones_like(mu)).log_prob(y[:, None])  # (T, K)
    alpha = log_trans[0] + emission[0]
    for t in range(1, len(y)):
        alpha = torch.logsumexp(alpha[:, None] + log_trans, 0) + emission[t]
    return torch.logsumexp(alpha, 0)


def test_hmm_log_density_is_the_forward_algorithm():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(200, generator=g, dtype=torch.float64) * 2.0
    trans = torch.tensor([[0.9, 0.1], [0.25, 0.75]], dtype=torch.float64)
    mu = torch.tensor([-1.3, 1.1], dtype=torch.float64)
    graph = enumerate_discrete()(hmm.graph(y))
    assert not any(n.address.startswith("z_") for n in graph.latent_nodes)
    ones = torch.ones(2, dtype=torch.float64)
    prior = (torch.distributions.Dirichlet(ones).log_prob(trans).sum()
             + torch.distributions.Normal(0 * ones, 3 * ones).log_prob(mu).sum())
    expected = forward_algorithm(trans, mu, y) + prior
    values = {"trans": trans, "mu": mu}
    torch.testing.assert_close(LogDensity(graph, values).run(), expected, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(compile_log_density(graph)(values), expected, rtol=1e-12,
                               atol=1e-10)


@pytest.mark.parametrize("K", [2, 3])
def test_chain_plan_stays_k_squared_as_t_grows(K):
    for T in (4, 16, 64):
        graph = enumerate_discrete()(hmm.graph(torch.zeros(T), K))
        (plan,) = enumeration_plans(graph)
        assert plan.largest([K] * T) == K * K  # no factor over more than two states
        assert [s.var for s in plan.steps] == list(range(T))  # forward-algorithm order
        dims = {site["dim"] for site in graph.attrs["enumerated"][0]["sites"]}
        assert len(dims) == 2  # z_t reuses z_{t-2}'s dim: the rank does not grow with T


def test_min_fill_keeps_coupled_chains_at_their_treewidth():
    """A factorial HMM: chains a_t and b_t, an observation reading (a_t, b_t). Its treewidth
    is 2, so no factor needs more than three variables, whatever T."""
    for T in (3, 30, 300):
        a, b = list(range(T)), list(range(T, 2 * T))
        factor_vars = [(a[0],), (b[0],), (a[0], b[0])]
        for t in range(1, T):
            factor_vars += [(a[t - 1], a[t]), (b[t - 1], b[t]), (a[t], b[t])]
        plan = plan_contraction(factor_vars, [()] * len(factor_vars), [()] * (2 * T))
        assert plan.largest([2] * (2 * T)) == 8
        assert {s.var for s in plan.steps} == set(range(2 * T))


def test_auto_names_the_discrete_sites_it_leaves():
    @model
    def m(y):
        n = sample("n", Poisson(3.0))
        c = sample("c", Categorical(torch.ones(80) / 80))
        z = sample("z", Bernoulli(0.4))
        sample("y", Normal(z + 0.01 * c + 0.1 * n, 1.0), obs=y)

    with pytest.warns(EnumerationWarning) as caught:
        graph = enumerate_discrete(max_size=64)(m.graph(torch.tensor(0.5)))
    (message,) = [str(w.message) for w in caught]
    assert "'n': its distribution Poisson has no finite enumerable support" in message
    assert "'c': its support has 80 values, more than max_size=64" in message
    assert set(graph.attrs["enumeration_skipped"]) == {"n", "c"}
    assert [n.address for n in graph.latent_nodes] == ["n", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped: no warning
        enumerate_discrete(["z", "c"], max_size=80)(m.graph(torch.tensor(0.5)))


def test_gibbs_enumerate_passes_max_size():
    @model
    def m(y):
        c = sample("c", Categorical(torch.ones(5) / 5))
        sample("y", Normal(c * 1.0, 1.0), obs=y)

    graph = m.graph(torch.tensor(2.0))
    with pytest.raises(IRError, match="'c' cannot be enumerated: its support has 5 values, more "
                                      "than max_size=4"):
        assign_blocks(graph, discrete="enumerate", max_size=4)
    enumerated, _ = assign_blocks(graph, discrete="enumerate", max_size=5)
    assert enumerated.attrs["enumerated"][0]["sites"][0]["address"] == "c"
    assert math.isclose(float(LogDensity(enumerated, {}).run().exp()),
                        float(sum(torch.distributions.Normal(float(k), 1.0).log_prob(
                            torch.tensor(2.0)).exp() / 5 for k in range(5))), rel_tol=1e-5)
