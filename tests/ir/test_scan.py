"""Loop nodes (``ppl.scan`` traced once): the same log density as the unrolled twin on every
path, print -> parse identity, golden text, lint of malformed bodies, shapes of draws, and
refusals by name where a loop is not handled.

Regenerate the golden files with
``PPL_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/ir/test_scan.py``.
"""

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppl import ModelError, model, param, plate, sample, scan
from ppl.handlers import condition, trace
from ppl.ir import (
    DynamicModelError,
    Generate,
    IRError,
    LogDensity,
    Simulate,
    compile_log_density,
    parse,
    print_graph,
)
from ppl.ir.loop import step_index_sites
from ppl.ir.parser import graph_diff
from ppl.passes import noncenter, simplify, unroll
from ppl.stdlib import Bernoulli, Gamma, Normal

GOLDEN = Path(__file__).parent / "golden"


# -- random step bodies and their unrolled twins --------------------------------------------------
def site_dist(family: str, theta: torch.Tensor):
    """A family with its parameter affine in the carry (through the family's link)."""
    if family == "Normal":
        return Normal(theta, 0.7)
    if family == "Gamma":
        return Gamma(torch.nn.functional.softplus(theta) + 0.5, 1.3)
    return Bernoulli(logits=theta)


def step_body(spec, carry, x_t, address):
    for i, (family, observed, a, b) in enumerate(spec):
        value = sample(address(f"s{i}"), site_dist(family, a * carry + b),
                       obs=x_t[i] if observed else None)
        carry = 0.5 * carry + 0.25 * value
    return carry


def models(spec):
    @model
    def scanned(data):
        def step(carry, x_t):
            carry = step_body(spec, carry, x_t, lambda n: n)
            return carry, carry * 2.0
        return scan(step, torch.tensor(0.1), data)

    @model
    def unrolled(data):
        carry = torch.tensor(0.1)
        for t in range(data.shape[0]):
            carry = step_body(spec, carry, data[t], lambda n, t=t: f"{n}[{t}]")
        return carry

    return scanned, unrolled


def data_for(spec, T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cols = []
    for family, *_ in spec:
        z = torch.randn(T, generator=g)
        cols.append(z if family == "Normal" else z.exp() if family == "Gamma" else (z > 0).float())
    return torch.stack(cols, -1)


site_spec = st.tuples(st.sampled_from(["Normal", "Gamma", "Bernoulli"]), st.booleans(),
                      st.floats(-1.5, 1.5), st.floats(-1.0, 1.0))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.lists(site_spec, min_size=1, max_size=3), T=st.integers(1, 8),
       seed=st.integers(0, 2**16))
def test_scan_log_density_equals_the_unrolled_twin_on_every_path(spec, T, seed):
    scanned, unrolled = models(spec)
    data = data_for(spec, T, seed)
    draw = unrolled.sample(data, seed=seed)
    latent = {a: v for a, v in draw.items() if not spec[int(a[1:a.index("[")])][1]}
    expected = unrolled.log_density(latent, data)
    graph = scanned.graph(data)
    assert [n.kind for n in graph].count("loop") == 1
    assert not graph.latent_nodes  # the body is traced once, not T times
    torch.testing.assert_close(scanned.log_density(latent, data), expected)
    torch.testing.assert_close(LogDensity(graph, latent).run(), expected)
    torch.testing.assert_close(compile_log_density(graph)(latent), expected)
    flat = unroll()(graph)
    assert sorted(n.address for n in flat.latent_nodes) == sorted(latent)
    torch.testing.assert_close(LogDensity(flat, latent).run(), expected)
    torch.testing.assert_close(compile_log_density(flat)(latent), expected)
    # the text form of a loop graph reads back as the same graph
    text = print_graph(graph)
    again = parse(text, data=graph.data)
    assert graph_diff(again, graph) is None
    assert print_graph(again) == text
    torch.testing.assert_close(LogDensity(again, latent).run(), expected)


def test_generate_and_simulate_report_the_unrolled_addresses():
    spec = [("Normal", False, 0.9, 0.0), ("Gamma", True, 0.3, 0.2)]
    scanned, unrolled = models(spec)
    data = data_for(spec, 4, 0)
    graph = scanned.graph(data)
    drawn = Simulate(graph).run()
    assert sorted(drawn) == sorted(f"s{i}[{t}]" for i in range(2) for t in range(4))
    torch.testing.assert_close(drawn["s1[2]"], data[2, 1])
    given_values = {"s0[0]": torch.tensor(0.3), "s0[3]": torch.tensor(-1.0)}
    values, log_weight = Generate(graph, given_values).run()
    assert sorted(values) == [f"s0[{t}]" for t in range(4)]
    assert values["s0[3]"] is given_values["s0[3]"]
    # log weight = log p(given latents, observations | the drawn ones)
    full = unrolled.log_density(values, data)
    tr = trace().get_trace(condition(values)(unrolled.fn), data)
    drawn_terms = sum(tr.sites[s].fn.log_prob(tr.sites[s].value) for s in ("s0[1]", "s0[2]"))
    torch.testing.assert_close(log_weight, full - drawn_terms)


# -- plates in and around the step; pytrees -----------------------------------------------------
@model
def local_level(y):
    """A vector of 3 series in a plate, the step holding a plate; dict carry, tuple outputs."""
    scale = sample("scale", Gamma(2.0, 2.0))

    def step(carry, y_t):
        with plate("series", 3):
            level = sample("level", Normal(carry["level"], scale))
            sample("y", Normal(level, 1.0), obs=y_t)
        return {"level": level, "n": carry["n"] + 1.0}, (level, level.sum())

    (final, (levels, totals)) = scan(step, {"level": torch.zeros(3), "n": torch.tensor(0.0)}, y)
    return final["n"], levels, totals


def test_a_plate_inside_the_step_and_pytree_carries():
    y = torch.randn(5, 3)
    graph = local_level.graph(y)
    drawn = Simulate(graph).run()
    assert drawn["level[4]"].shape == (3,) and drawn["y[0]"].shape == (3,)
    values = {a: v for a, v in drawn.items() if a.startswith(("level", "scale"))}
    density = LogDensity(graph, values)
    torch.testing.assert_close(density.run(), local_level.log_density(values, y))
    n, levels, totals = density.env[graph.output.name]
    assert n.item() == 5.0 and levels.shape == (5, 3) and totals.shape == (5,)
    torch.testing.assert_close(levels[2], values["level[2]"])
    torch.testing.assert_close(totals, levels.sum(-1))
    body = graph.subgraphs["step"]
    assert [f.name for f in body.site("level").meta.plates] == ["series"]


def test_a_step_inside_a_plate_and_model_sample_shapes():
    @model
    def panel(y):
        with plate("units", 4):
            def step(x, y_t):
                x = sample("x", Normal(0.8 * x, 1.0))
                sample("y", Normal(x, 0.5), obs=y_t)
                return x, x
            return scan(step, torch.zeros(4), y)[1]

    y = torch.randn(6, 4)
    draws = panel.sample(y, seed=0)
    assert draws["x[5]"].shape == (4,) and len(draws) == 12
    graph = panel.graph(y)
    assert graph.subgraphs["step"].site("x").meta.plates[0].name == "units"
    sim = Simulate(graph).run()
    assert {a: v.shape for a, v in sim.items()} == {a: v.shape for a, v in draws.items()}
    values = {a: v for a, v in draws.items() if a.startswith("x")}
    torch.testing.assert_close(LogDensity(graph, values).run(), panel.log_density(values, y))


def test_the_sequential_plate_records_step_and_plate_of_each_site_on_both_paths():
    @model
    def hmm_like(y):
        x = torch.tensor(0.0)
        for t in plate("time", len(y)):
            x = sample(f"x_{t}", Normal(0.5 * x, 1.0))
            sample(f"y_{t}", Normal(x, 1.0), obs=y[t])

    y = torch.randn(3)
    tr = hmm_like.trace(y)
    assert tr.sites["y_2"].infer["steps"] == (("time", 2),)
    graph = hmm_like.graph(y)
    assert step_index_sites(graph)["x_1"] == (("time", 1),)
    assert [f.name for f in graph.site("x_1").meta.plates] == ["time"]
    assert graph_diff(parse(str(graph), data=graph.data), graph) is None


def test_unrolled_sites_record_the_scan_step_and_inner_plate_steps():
    @model
    def m():
        def step(c, _):
            for i in plate("inner", 2):
                c = sample(f"z{i}", Normal(c, 1.0))
            return c, None
        scan(step, torch.tensor(0.0), length=3, name="outer")

    graph = m.graph()
    steps = step_index_sites(unroll()(graph))
    assert steps["z1[2]"] == (("outer", 2), ("inner", 1))
    assert m.trace().sites["z1[2]"].infer["steps"] == (("outer", 2), ("inner", 1))


# -- the text form -------------------------------------------------------------------------------
@model
def ar1(y):
    rho = sample("rho", Normal(0.0, 1.0))

    def step(x, y_t):
        x = sample("x", Normal(rho * x, 1.0))
        sample("y", Normal(x, 1.0), obs=y_t)
        return x, x

    return scan(step, torch.tensor(0.0), y)


GOLDEN_MODELS = {"scan_ar1": (ar1, (torch.zeros(6),)),
                 "scan_local_level": (local_level, (torch.zeros(4, 3),))}


@pytest.mark.parametrize("name", sorted(GOLDEN_MODELS))
def test_golden(name):
    m, args = GOLDEN_MODELS[name]
    graph = m.graph(*args)
    text = print_graph(graph) + "\n"
    path = GOLDEN / f"{name}.ir"
    if os.environ.get("PPL_REGEN_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text
    assert graph_diff(parse(text), graph) is None


# -- lint of malformed loops ------------------------------------------------------------------
AR1_TEXT = print_graph(ar1.graph(torch.zeros(6)))

MALFORMED = {
    "carry leaf 0 changes type": ('%carry0 = input "carry" : float32[]',
                                  '%carry0 = input "carry" : float64[]'),
    "body inputs .* do not match": ('%x0 = input "x" : float32[]',
                                    '%x0 = input "captured" : float32[]'),
    "no body 'nobody'": ("%step = loop step(", "%step = loop nobody("),
    "length=T with an int T >= 1": ("length=6)", "length=0)"),
    "leading dim must be the loop's length": ("length=6)", "length=5)"),
    "reads loop %step other than": ("%step_0 = call ppl.getitem(%step, 0)",
                                   "%step_0 = call ppl.getitem(%step, 2)"),
    "returns a tuple of the 1 new carry": (
        "return (%x, %x)", "return %x"),
    "has the address 'x\\[3\\]'": ('%rho = sample "rho"', '%rho = sample "x[3]"'),
    "the body of no loop node": (
        "%step = loop step((tensor(0.0, f32),), (%y,), (%rho,), length=6)\n"
        "  %step_0 = call ppl.getitem(%step, 0) : float32[]\n"
        "  %step_1 = call ppl.getitem(%step, 1) : float32[6]\n"
        "  return (%step_0, %step_1)", "return %rho"),
}


@pytest.mark.parametrize("message", sorted(MALFORMED))
def test_lint_refuses_malformed_loops(message):
    old, new = MALFORMED[message]
    assert old in AR1_TEXT
    with pytest.raises(IRError, match=message):
        parse(AR1_TEXT.replace(old, new))


def test_lint_refuses_a_param_and_a_loop_inside_a_body():
    body = AR1_TEXT.index("    %mul")
    with_param = AR1_TEXT[:body] + '    %w = param "w"() : float32[]\n' + AR1_TEXT[body:]
    with pytest.raises(IRError, match="param 'w' inside a loop body"):
        parse(with_param)
    graph = ar1.graph(torch.zeros(6))
    with pytest.raises(IRError, match="a loop body holds no loops of its own"):
        graph.replace(subgraphs={"step": graph})  # a body that has a loop itself


def test_two_loops_with_the_same_site_names_are_refused():
    @model
    def twice():
        for _ in range(2):
            scan(lambda c, _: (sample("z", Normal(c, 1.0)), None), torch.tensor(0.0), length=2,
                 name="walk")

    with pytest.raises(IRError, match="body site 'z' is also a site of loop 'walk'"):
        twice.graph()
    with pytest.raises(ModelError, match="'z\\[0\\]' is used twice"):
        twice.trace()


# -- what the tracer refuses ---------------------------------------------------------------------
def test_python_control_flow_on_the_carry_names_the_scan_and_line():
    @model
    def branching():
        def step(x, _):
            if x > 0:  # the step is traced once: this branch would be baked in
                x = x - 1.0
            return sample("x", Normal(x, 1.0)), None
        scan(step, torch.tensor(1.0), length=4)

    with pytest.raises(DynamicModelError, match=r"scan 'step'.*__bool__\(\).*test_scan.py:\d+ "
                                                r"\(if x > 0"):
        branching.graph()
    assert len(branching.trace().sites) == 4  # the trace path runs it


def test_python_control_flow_on_the_slice_of_xs_is_reported():
    @model
    def on_slice(xs):
        def step(c, x_t):
            n = int(x_t)
            return c + n, sample("z", Normal(c, 1.0))
        scan(step, torch.tensor(0.0), xs)

    with pytest.raises(DynamicModelError, match="scan 'step' reads a value that changes"):
        on_slice.graph(torch.arange(3.0))


def test_scans_do_not_nest_on_either_path():
    @model
    def nested():
        def inner(c, _):
            return sample("z", Normal(c, 1.0)), None

        def outer(c, _):
            return scan(inner, c, length=2)[0], None
        scan(outer, torch.tensor(0.0), length=2)

    with pytest.raises(ModelError, match="scan 'inner' inside .*scan 'outer'"):
        nested.trace()
    with pytest.raises(ModelError, match="scan 'inner' inside the step of scan 'outer'"):
        nested.graph()


def test_a_param_in_the_step_is_refused_when_tracing():
    @model
    def with_param():
        def step(c, _):
            return sample("z", Normal(c * param("w", torch.tensor(1.0)), 1.0)), None
        scan(step, torch.tensor(0.0), length=2)

    with pytest.raises(IRError, match="param 'w' inside a loop body"):
        with_param.graph()


def test_passes_refuse_loops_by_name_and_run_after_unroll():
    graph = ar1.graph(torch.zeros(3))
    for p, name in ((noncenter(), "noncenter"), (simplify(), "simplify")):
        with pytest.raises(IRError, match=f"pass '{name}' does not handle loop nodes .*scan "
                                          "'step'.*unroll"):
            p(graph)
    flat = simplify()(noncenter()(unroll()(graph)))
    assert {n.address for n in flat.latent_nodes} >= {"x[0]__raw", "rho"}


def test_analysis_sees_the_unrolled_sites():
    graph = ar1.graph(torch.zeros(3))
    assert graph.markov_blanket("x[1]") == {"rho", "x[0]", "x[2]", "y[1]"}
    assert "x[2]" in graph.to_dot()


def test_a_python_int_init_stays_an_integer_on_both_paths():
    """``scan(step, 0, y)``: the init indexes ``trans[z]`` at step 0 when traced (int64, as
    on the trace path, where the step receives the int itself), and the log density is the
    trace path's."""
    from ppl.stdlib import Categorical

    @model
    def hmm(y):
        trans = torch.tensor([[0.9, 0.1], [0.2, 0.8]])

        def step(z, y_t):
            z = sample("z", Categorical(trans[z]))
            sample("y", Normal(2.0 * z, 1.0), obs=y_t)
            return z, None

        scan(step, 0, y)

    y = torch.tensor([0.1, 2.2, 1.9])
    latent = {f"z[{t}]": torch.tensor(v) for t, v in enumerate([0, 1, 1])}
    expected = hmm.log_density(latent, y)
    graph = hmm.graph(y)
    (loop,) = [n for n in graph if n.kind == "loop"]
    assert torch.as_tensor(loop.args[0][0]).dtype == torch.int64
    torch.testing.assert_close(LogDensity(graph, latent).run(), expected)
    torch.testing.assert_close(LogDensity(unroll()(graph), latent).run(), expected)
