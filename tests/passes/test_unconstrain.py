"""``unconstrain``: the new density at u is the old one at T(u) times |det J_T(u)|.

Jacobians are checked two ways: against torch's ``log_abs_det_jacobian`` of ``biject_to``
and against autograd Jacobians of the graph's own map from u to the constrained values
(restricted to the free coordinates of simplex / Cholesky / matrix supports).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd.functional import jacobian
from torch.distributions import biject_to, constraints

from ppl import model, plate, sample
from ppl.ir import GraphBuilder, IRError, LogDensity, Meta, compile_log_density
from ppl.passes import constrained_values, latent_transforms, run, simplify, unconstrain
from ppl.stdlib import Bernoulli, Gamma, Normal, Uniform, Wishart
from ppl.stdlib import constraints as C

FREE = {  # the free coordinates of each constrained value, for square Jacobians
    "simplex": lambda y: y[..., :-1].reshape(-1),
    "corr_cholesky": lambda y: y[tuple(torch.tril_indices(y.shape[-1], y.shape[-1], -1))],
    "lower_cholesky": lambda y: y[tuple(torch.tril_indices(y.shape[-1], y.shape[-1]))],
    "positive_definite": lambda y: y[tuple(torch.tril_indices(y.shape[-1], y.shape[-1]))],
}


def random_unconstrained(graph, seed):
    g = torch.Generator().manual_seed(seed)
    return {n.address: torch.randn(n.meta.shape, generator=g) for n in graph.latent_nodes}


def kind_of(support) -> str:
    for name in FREE:
        c = getattr(constraints, name)
        if support == c or type(support) is type(c):
            return name
    return "elementwise"


def check_change_of_variables(graph, seed, rtol=1e-4):
    """log p_new(u) == log p(T(u)) + sum log|det J_T(u)|, with J by autograd."""
    new = unconstrain()(graph)
    u = random_unconstrained(new, seed)
    sites = latent_transforms(new)
    y = constrained_values(new, u)
    values = {n.address: u[n.address] for n in graph.latent_nodes if n.address not in sites}
    values.update(y)
    log_det = torch.zeros(())
    for address, site in sites.items():
        probe_support = site.support if not hasattr(site.support, "family") else None
        free = FREE.get(kind_of(probe_support), lambda t: t.reshape(-1))

        def fn(v, address=address, site=site, free=free):
            return free(constrained_values(new, {**u, site.unconstrained: v})[address])

        J = jacobian(fn, u[site.unconstrained]).reshape(-1, u[site.unconstrained].numel())
        log_det = log_det + torch.linalg.slogdet(J)[1]
    expected = LogDensity(graph, values).run() + log_det
    torch.testing.assert_close(LogDensity(new, u).run(), expected, rtol=rtol, atol=rtol)
    torch.testing.assert_close(compile_log_density(new)(u), expected, rtol=rtol, atol=rtol)
    return new, u, y


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**16))
def test_change_of_variables_on_traced_constrained_model(zoo, seed):
    graph = zoo.constrained.graph(torch.tensor(0.7))
    new, u, y = check_change_of_variables(graph, seed)
    assert sorted(latent_transforms(new)) == ["corr", "p", "rate", "u", "w", "width"]
    assert {n.address for n in new.latent_nodes} == {
        "lo",
        "rate__unconstrained",
        "p__unconstrained",
        "width__unconstrained",
        "u__unconstrained",
        "w__unconstrained",
        "corr__unconstrained",
    }
    # the random bounds are honoured: lo < u < lo + width
    assert y["u"] > u["lo"] and y["u"] < u["lo"] + y["width"]
    assert torch.allclose(y["w"].sum(), torch.tensor(1.0))


def test_matches_torch_log_abs_det_jacobian(zoo):
    graph = zoo.constrained.graph(torch.tensor(0.7))
    new = unconstrain()(graph)
    u = random_unconstrained(new, 3)
    y = constrained_values(new, u)
    rest = {"lo": u["lo"]}
    supports = {
        "rate": C.positive,
        "p": C.unit_interval,
        "width": C.positive,
        "u": C.interval(u["lo"], u["lo"] + y["width"]),
        "w": C.simplex,
        "corr": C.corr_cholesky,
    }
    log_det = torch.zeros(())
    for address, support in supports.items():
        t = biject_to(support)
        torch.testing.assert_close(y[address], t(u[address + "__unconstrained"]))
        log_det = log_det + t.log_abs_det_jacobian(u[address + "__unconstrained"], y[address]).sum()
    expected = LogDensity(graph, {**rest, **y}).run() + log_det
    torch.testing.assert_close(LogDensity(new, u).run(), expected)


def improper_graph(support, event_shape):
    """x ~ ImproperUniform(support) observed through a Normal on its sum (built by hand)."""
    b = GraphBuilder("improper")
    x = b.add(
        "sample",
        "ImproperUniform",
        kwargs=(("support", support), ("batch_shape", ()), ("event_shape", event_shape)),
        address="x",
        meta=Meta(shape=event_shape, dtype="float32"),
    )
    total = b.add("call", "Tensor.sum", (x,))
    b.add("observe", "Normal", (torch.tensor(1.0),), (("loc", total), ("scale", 2.0)), address="y")
    b.add("output", "output", (None,))
    return b.build()


@pytest.mark.parametrize(
    "support,shape",
    [
        (C.ordered, (3,)),
        (C.positive_ordered, (3,)),
        (C.lower_cholesky, (3, 3)),
        (C.simplex, (4,)),
        (C.corr_cholesky, (3, 3)),
        (C.positive_definite, (2, 2)),
        (C.interval(-1.0, 2.0), (2,)),
        (C.greater_than(1.5), ()),
    ],
)
def test_other_supports(support, shape):
    check_change_of_variables(improper_graph(support, shape), seed=1)


def test_traced_wishart_and_plates():
    @model
    def m():
        cov = sample("cov", Wishart(4.0, torch.eye(2)))
        with plate("groups", 3):
            s = sample("s", Gamma(2.0, 1.0))
            sample("x", Normal(cov[0, 0] * s, 1.0), obs=torch.zeros(3))

    graph = m.graph()
    new, u, _ = check_change_of_variables(graph, seed=5)
    assert new.site("s__unconstrained").meta.plates == graph.site("s").meta.plates
    assert new.site("cov__unconstrained").meta.shape == (3,)


def test_leaves_real_and_discrete_sites_and_is_idempotent(zoo):
    x, y = zoo.logistic_data
    graph = zoo.logistic.graph(x, y)
    assert unconstrain()(graph).nodes == graph.nodes

    @model
    def m():
        sample("k", Bernoulli(0.5))
        sample("g", Gamma(1.0, 1.0))

    once = unconstrain()(m.graph())
    assert [n.address for n in once.latent_nodes] == ["k", "g__unconstrained"]
    twice = unconstrain()(once)
    assert twice.nodes == once.nodes
    with pytest.raises(IRError, match="'k' is discrete"):
        unconstrain(["k"])(m.graph())


def test_eight_schools_pipeline_and_text(zoo):
    graph = run(zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y), [unconstrain(), simplify()])
    text = str(graph)
    assert '"tau__unconstrained"' in text and "torch.exp(%tau__unconstrained)" in text
    assert latent_transforms(graph)["tau"].unconstrained == "tau__unconstrained"


def test_random_bounds_keep_their_dependency():
    @model
    def m():
        lo = sample("lo", Normal(0.0, 1.0))
        hi = sample("hi", Uniform(lo, lo + 3.0))
        sample("z", Uniform(lo, hi))

    new = unconstrain()(m.graph())
    u = {
        "lo": torch.tensor(0.4),
        "hi__unconstrained": torch.tensor(-0.3),
        "z__unconstrained": torch.tensor(1.1),
    }
    y = constrained_values(new, u)
    assert 0.4 < y["hi"] < 3.4 and 0.4 < y["z"] < y["hi"]
    check_change_of_variables(m.graph(), seed=2)
