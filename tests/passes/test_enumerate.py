"""``enumerate_discrete``: the marginal equals the brute-force sum over all assignments, and
``posterior_of_enumerated`` the brute-force conditionals."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppl import model, plate, sample
from ppl.ir import IRError, LogDensity, compile_log_density
from ppl.passes import enumerate_discrete, posterior_of_enumerated, run, simplify, temper
from ppl.stdlib import Bernoulli, Binomial, Categorical, Normal


def assignments(graph, sites):
    """Every joint assignment of ``sites`` (address -> values list) in the original graph."""
    per_element = []
    for address, values in sites.items():
        node = graph.site(address)
        shape = node.meta.shape or ()
        n = int(torch.tensor(shape).prod()) if shape else 1
        per_element += [(address, shape, values)] * n
    for combo in itertools.product(*[vals for _, _, vals in per_element]):
        out, i = {}, 0
        for address in sites:
            shape = graph.site(address).meta.shape or ()
            n = int(torch.tensor(shape).prod()) if shape else 1
            dtype = getattr(torch, graph.site(address).meta.dtype)
            out[address] = torch.tensor(combo[i : i + n], dtype=dtype).reshape(shape)
            i += n
        yield out


def brute_force(graph, sites, continuous):
    """(log marginal, {address: P(site = values[k] | continuous) per element})."""
    terms, assigns = [], []
    for a in assignments(graph, sites):
        terms.append(LogDensity(graph, {**continuous, **a}).run())
        assigns.append(a)
    log_terms = torch.stack(terms)
    weights = torch.softmax(log_terms, 0)
    marginals = {}
    for address, values in sites.items():
        stacked = torch.stack([a[address] for a in assigns])  # (n_assign, *batch)
        probs = [
            (weights.reshape(-1, *[1] * (stacked.dim() - 1)) * (stacked == v)).sum(0)
            for v in values
        ]
        marginals[address] = torch.stack(probs, -1)
    return torch.logsumexp(log_terms, 0), marginals


def check(graph, sites, continuous, **kw):
    new = enumerate_discrete(**kw)(graph)
    assert not any(n.address in sites for n in new.latent_nodes)
    expected, marginals = brute_force(graph, sites, continuous)
    torch.testing.assert_close(LogDensity(new, continuous).run(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compile_log_density(new)(continuous), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        LogDensity(simplify()(new), continuous).run(), expected, rtol=1e-5, atol=1e-5
    )
    for g in (new, simplify()(new)):
        posterior = posterior_of_enumerated(g, continuous)
        for address, probs in marginals.items():
            torch.testing.assert_close(posterior[address], probs, rtol=1e-4, atol=1e-5)
    return new


@settings(max_examples=6, deadline=None)
@given(st.floats(-2, 2), st.floats(-2, 2), st.floats(0.05, 0.95))
def test_gaussian_mixture_in_a_plate(zoo, loc0, loc1, w):
    graph = zoo.mixture.graph(zoo.mixture_data)
    continuous = {"weights": torch.tensor([w, 1 - w]), "locs": torch.tensor([loc0, loc1])}
    new = check(graph, {"z": [0, 1]}, continuous)
    record = new.attrs["enumerated"][0]
    assert record["sites"][0]["plates"] == ["data"] and record["absorbed"] == ["x"]
    assert new.has_site("enumerated__log_marginal")


@settings(max_examples=6, deadline=None)
@given(st.floats(-2, 2), st.floats(-2, 2))
def test_hmm_chain(zoo, loc0, loc1):
    graph = zoo.hmm.graph(zoo.hmm_data)
    check(
        graph, {"z_0": [0, 1], "z_1": [0, 1], "z_2": [0, 1]}, {"locs": torch.tensor([loc0, loc1])}
    )


def test_two_independent_bernoullis(zoo):
    graph = zoo.two_bernoullis.graph(torch.tensor(1.7))
    check(graph, {"a": [0.0, 1.0], "b": [0.0, 1.0]}, {"scale": torch.tensor(0.8)})


def test_global_and_local_sites_in_plates():
    @model
    def m(y):
        g = sample("g", Bernoulli(0.3))
        with plate("groups", 3, dim=-2):
            z = sample("z", Bernoulli(0.2 + 0.6 * g))
            with plate("items", 2, dim=-1):
                sample("y", Normal(z + 0.5 * g, 1.0), obs=y)

    y = torch.tensor([[0.1, 0.4], [1.2, 0.9], [-0.3, 1.5]])
    check(m.graph(y), {"g": [0.0, 1.0], "z": [0.0, 1.0]}, {})


def test_continuous_child_and_binomial():
    @model
    def m(y):
        k = sample("k", Binomial(3, 0.4))
        c = sample("c", Categorical(torch.tensor([0.2, 0.5, 0.3])))
        x = sample("x", Normal(k - c, 1.0))
        sample("y", Normal(x, 0.5), obs=y)

    graph = m.graph(torch.tensor(0.7))
    new = check(graph, {"k": [0.0, 1.0, 2.0, 3.0], "c": [0, 1, 2]}, {"x": torch.tensor(0.2)})
    assert (
        new.site("x").target == "ImproperUniform"
        and new.site("x").meta.attr("role") == "enumeration_child"
    )
    assert new.site("y").kind == "observe"  # y reads x, not the enumerated sites


def test_tempered_observations_stay_tempered(zoo):
    graph = zoo.two_bernoullis.graph(torch.tensor(1.7))
    tempered = temper(0.5)(graph)
    expected, _ = brute_force(
        tempered, {"a": [0.0, 1.0], "b": [0.0, 1.0]}, {"scale": torch.tensor(0.8)}
    )
    new = run(graph, [temper(0.5), enumerate_discrete()])
    torch.testing.assert_close(LogDensity(new, {"scale": torch.tensor(0.8)}).run(), expected)


def test_explicit_sites_and_errors(zoo):
    graph = zoo.hmm.graph(zoo.hmm_data)
    with pytest.raises(IRError, match="discrete site 'z_1' depends on enumerated sites"):
        enumerate_discrete(["z_0"])(graph)
    with pytest.raises(IRError, match="'locs' cannot be enumerated"):
        enumerate_discrete(["locs"])(graph)
    with pytest.raises(IRError, match="not latent sites"):
        enumerate_discrete(["nope"])(graph)
    eight = zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y)
    assert enumerate_discrete()(eight) is eight  # nothing to enumerate

    @model
    def unplated():
        z = sample("z", Bernoulli(torch.full((3,), 0.5)))
        sample("y", Normal(z, 1.0), obs=torch.zeros(3))

    with pytest.raises(IRError, match=r"'z' has batch shape \(3,\).*not a plate"):
        enumerate_discrete()(unplated.graph())
