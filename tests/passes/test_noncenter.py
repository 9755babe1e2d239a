"""``noncenter``: a change of variables x = m + s * x_raw that leaves the prior unchanged."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppl import model, plate, sample
from ppl.ir import GraphBuilder, IRError, LogDensity, Meta, Simulate, compile_log_density
from ppl.passes import noncenter, run, simplify, unconstrain
from ppl.stdlib import Cauchy, HalfNormal, Laplace, Normal


def test_auto_picks_sites_with_latent_loc_or_scale(zoo):
    g = noncenter()(zoo.funnel.graph())
    assert sorted(g.attrs["noncentered"]) == ["a", "b", "c"]
    assert [n.address for n in g.latent_nodes] == ["mu", "s", "a__raw", "b__raw", "c__raw"]
    for site in "abc":
        node = g.site(site)
        assert node.target == "ppl.identity" and node.meta.attr("raw") == f"{site}__raw"
        assert g.site(f"{site}__raw").meta.plates == node.meta.plates
    es = noncenter()(zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y))
    assert es.attrs["noncentered"] == {"theta": "theta__raw"}
    assert es.site("theta__raw").target == "Normal"


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**16))
def test_log_density_is_a_change_of_variables(zoo, seed):
    """log p_new(raw, rest) = log p(m + s raw, rest) + sum log s  (+ sum log x for LogNormal)."""
    graph = zoo.funnel.graph()
    new = noncenter()(graph)
    gen = torch.Generator().manual_seed(seed)
    mu, s = torch.randn((), generator=gen), torch.rand((), generator=gen) + 0.2
    raw = {k: torch.randn(3, generator=gen) for k in "abc"}
    values = {"mu": mu, "s": s, **{f"{k}__raw": v for k, v in raw.items()}}
    x = {"a": mu + s * raw["a"], "b": mu + s * raw["b"], "c": torch.exp(mu + s * raw["c"])}
    jacobian = 3 * 3 * torch.log(s) + torch.log(x["c"]).sum()
    expected = LogDensity(graph, {"mu": mu, "s": s, **x}).run() + jacobian
    torch.testing.assert_close(LogDensity(new, values).run(), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(compile_log_density(new)(values), expected, rtol=1e-5, atol=1e-4)
    interp = LogDensity(new, values)
    interp.run()
    torch.testing.assert_close(interp.env[new.site("c").name], x["c"])


def test_student_t_keeps_its_df():
    """StudentT with a traced loc cannot be traced yet (its Chi2 validates); build the graph."""
    b = GraphBuilder("t")
    mu = b.add(
        "sample", "Normal", kwargs=(("loc", 0.0), ("scale", 1.0)), address="mu", meta=Meta(shape=())
    )
    x = b.add(
        "sample",
        "StudentT",
        kwargs=(("df", 4.0), ("loc", mu), ("scale", 2.0)),
        address="x",
        meta=Meta(shape=()),
    )
    b.add("output", "output", (x,))
    graph = b.build()
    new = noncenter()(graph)
    assert dict(new.site("x__raw").kwargs)["df"] == 4.0
    mu_v, raw = torch.tensor(0.3), torch.tensor(-1.7)
    expected = LogDensity(graph, {"mu": mu_v, "x": mu_v + 2.0 * raw}).run() + torch.log(
        torch.tensor(2.0)
    )
    torch.testing.assert_close(LogDensity(new, {"mu": mu_v, "x__raw": raw}).run(), expected)


def test_eight_schools_identity_per_element(zoo):
    graph = zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y)
    new = run(graph, [noncenter(["theta"]), simplify()])
    mu, tau, raw = torch.tensor(1.5), torch.tensor(3.0), torch.linspace(-1.0, 1.0, 8)
    expected = LogDensity(
        graph, {"mu": mu, "tau": tau, "theta": mu + tau * raw}
    ).run() + 8 * torch.log(tau)
    torch.testing.assert_close(
        LogDensity(new, {"mu": mu, "tau": tau, "theta__raw": raw}).run(), expected
    )


def test_prior_moments_unchanged():
    @model
    def m():
        mu = sample("mu", Normal(1.0, 1.0))
        s = sample("s", HalfNormal(1.0))
        with plate("g", 2):
            x = sample("x", Normal(mu, s))
            sample("w", Laplace(x, s))
        sample("c", Cauchy(mu, 0.1))

    graph = m.graph()
    new = noncenter(["x", "w", "c"])(graph)
    n = 2000
    torch.manual_seed(0)
    before = [Simulate(graph).run() for _ in range(n)]
    after = [Simulate(new).run() for _ in range(n)]
    for site in ("x", "w"):
        a = torch.stack([d[site] for d in before])
        b = torch.stack([d[site] for d in after])
        # means within ~4 standard errors, standard deviations within 10%
        assert (a.mean(0) - b.mean(0)).abs().max() < 4 * (a.std(0).max() * (2 / n) ** 0.5)
        assert ((a.std(0) / b.std(0)) - 1).abs().max() < 0.1
    a = torch.stack([d["c"] for d in before])
    b = torch.stack([d["c"] for d in after])
    assert (a.median() - b.median()).abs() < 0.1


def test_composes_with_unconstrain_either_way(zoo):
    graph = zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y)
    one = run(graph, [noncenter(), unconstrain()])
    two = run(graph, [unconstrain(), noncenter()])
    latents = {
        "mu": torch.tensor(0.5),
        "tau__unconstrained": torch.tensor(0.7),
        "theta__raw": torch.randn(8),
    }
    torch.testing.assert_close(LogDensity(one, latents).run(), LogDensity(two, latents).run())


def test_errors_name_the_site(zoo):
    graph = zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y)
    with pytest.raises(IRError, match="'tau' is not a latent site of a loc-scale family"):
        noncenter(["tau"])(graph)
    with pytest.raises(IRError, match="'y'"):
        noncenter("y")(graph)


def test_independent_wrapped_sites():
    @model
    def m():
        mu = sample("mu", Normal(0.0, 1.0))
        s = sample("s", HalfNormal(1.0))
        sample("x", Normal(mu, s).expand([3]).to_event(1))

    graph = m.graph()
    new = noncenter()(graph)
    raw = new.site("x__raw")
    assert raw.target == "Independent" and dict(raw.kwargs)["reinterpreted_batch_ndims"] == 1
    mu, s, r = torch.tensor(0.4), torch.tensor(1.7), torch.randn(3)
    expected = LogDensity(graph, {"mu": mu, "s": s, "x": mu + s * r}).run() + 3 * torch.log(s)
    torch.testing.assert_close(LogDensity(new, {"mu": mu, "s": s, "x__raw": r}).run(), expected)
