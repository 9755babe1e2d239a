"""``vectorize_loops``: a scan whose carry is its step's own value, rewritten over a step dim,
has the unrolled twin's log density (hypothesis over random step bodies) and, lowered by
``FlatModel``, the unrolled twin's log density and gradient on the generated and native
backends; its tape does not grow with T; recurrences are unrolled with one warning naming
the loop; stacked values are accepted by ``log_density`` and ``predictive``."""

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppl import model, plate, predictive, sample, scan
from ppl.inference import FastPathWarning
from ppl.inference.lowering import FlatModel
from ppl.inference.lowering.native import compiler_available
from ppl.ir import LogDensity
from ppl.passes import unroll, vectorize_loops
from ppl.stdlib import Gamma, HalfNormal, LogNormal, Normal

F64 = torch.float64


def site_dist(family: str, theta):
    """A family whose parameter is ``theta`` through its link."""
    if family == "Normal":
        return Normal(theta, 0.8)
    if family == "Gamma":
        return Gamma(torch.nn.functional.softplus(theta) + 0.5, 1.3)
    return LogNormal(0.3 * theta, 0.6)


def random_ar_model(spec, use_step: bool):
    """Sites ``s{i}`` read the carry, the sites before them and a captured latent; the new
    carry is a function of the step's own values (never of the incoming carry)."""

    @model
    def m(data):
        scale = sample("scale", HalfNormal(1.0))

        def step(carry, x_t):
            values = []
            for i, (family, observed, a, b) in enumerate(spec):
                theta = a * carry + b * scale + sum(0.3 * v for v in values)
                if use_step:
                    theta = theta + 0.05 * x_t[-1]
                values.append(sample(f"s{i}", site_dist(family, theta),
                                     obs=x_t[i] if observed else None))
            new = 0.5 * values[-1] + 0.25 * values[0]
            return new, new * 2.0

        return scan(step, torch.tensor(0.2, dtype=F64), data)

    return m


def data_for(spec, T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cols = [torch.randn(T, generator=g, dtype=F64).exp() for _ in spec]
    cols.append(torch.arange(T, dtype=F64))
    return torch.stack(cols, -1)


site_spec = st.tuples(st.sampled_from(["Normal", "Gamma", "LogNormal"]), st.booleans(),
                      st.floats(-1.5, 1.5), st.floats(-1.0, 1.0))


def stacked(draw: dict, spec, T: int) -> dict:
    """The per-step latents of a prior draw as the stacked values of the vectorized graph."""
    out = {"scale": draw["scale"]}
    for i, (_, observed, *_) in enumerate(spec):
        if not observed:
            out[f"s{i}"] = torch.stack([draw[f"s{i}[{t}]"] for t in range(T)])
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(spec=st.lists(site_spec, min_size=1, max_size=3), T=st.integers(1, 7),
       use_step=st.booleans(), seed=st.integers(0, 2**16))
def test_the_vectorized_loop_has_the_unrolled_log_density(spec, T, use_step, seed):
    m = random_ar_model(spec, use_step)
    data = data_for(spec, T, seed)
    graph = m.graph(data)
    draw = m.sample(data, seed=seed)
    per_step = {a: v for a, v in draw.items()
                if a == "scale" or not spec[int(a[1:a.index("[")])][1]}
    expected = LogDensity(unroll()(graph), per_step).run()
    vectorized = vectorize_loops()(graph)
    assert not vectorized.subgraphs and "unvectorized_loops" not in vectorized.attrs
    values = stacked(draw, spec, T)
    density = LogDensity(vectorized, values)
    torch.testing.assert_close(density.run(), expected)
    torch.testing.assert_close(m.log_density(values, data), expected)
    final, ys = density.env[vectorized.output.name]
    twin = LogDensity(graph, per_step)
    twin.run()
    want_final, want_ys = twin.env[graph.output.name]
    torch.testing.assert_close(final, want_final)
    torch.testing.assert_close(ys, want_ys)


def permutation(vectorized: FlatModel, unrolled: FlatModel) -> torch.Tensor:
    """Index into the vectorized flat vector for each entry of the unrolled one."""
    blocks = {b.address: b for b in vectorized.blocks}
    index = []
    for b in unrolled.blocks:
        base, _, t = b.address.partition("[")
        v = blocks[base]
        if not t:
            index.extend(range(v.offset, v.offset + v.size))
            continue
        per_step = v.size // v.unconstrained_shape[0]
        start = v.offset + int(t[:-1]) * per_step
        index.extend(range(start, start + per_step))
    return torch.tensor(index)


BACKENDS = ["generated", "autograd"] + (["native"] if compiler_available() else [])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(spec=st.lists(site_spec, min_size=1, max_size=3), T=st.integers(2, 6),
       seed=st.integers(0, 2**16))
def test_flat_models_agree_with_the_unrolled_twin_on_every_backend(spec, T, seed):
    m = random_ar_model(spec, use_step=True)
    graph = m.graph(data_for(spec, T, seed))
    reference = FlatModel.from_graph(unroll()(graph), backend="autograd")
    z = torch.randn(3, reference.dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
    want_lp, want_grad = reference.log_density_and_grad(z)
    for backend in BACKENDS:
        flat = FlatModel.from_graph(graph, backend=backend)
        assert flat.backend == backend and flat.dim == reference.dim
        index = permutation(flat, reference)
        u = torch.empty_like(z)
        u[:, index] = z
        lp, grad = flat.log_density_and_grad(u)
        torch.testing.assert_close(lp, want_lp)
        torch.testing.assert_close(grad[:, index], want_grad)


@model
def stochastic_volatility(y):
    mu = sample("mu", Normal(0.0, 1.0))
    phi = sample("phi", Normal(0.9, 0.05))
    sigma = sample("sigma", HalfNormal(0.5))

    def step(h, y_t):
        h = sample("h", Normal(mu + phi * (h - mu), sigma))
        sample("y", Normal(0.0, torch.exp(h / 2)), obs=y_t)
        return h, None

    scan(step, mu, y)


def test_the_tape_does_not_grow_with_the_number_of_steps():
    sizes = {}  # both above the 256 elements up to which the tape merges equal constants
    for T in (1_000, 10_000):
        flat = FlatModel.from_graph(stochastic_volatility.graph(torch.randn(T, dtype=F64)),
                                    backend="generated")
        assert flat.dim == T + 3
        assert [b.address for b in flat.blocks] == ["mu", "phi", "sigma", "h"]
        sizes[T] = (len(flat.unconstrained.nodes), len(flat._lowered.tape.instrs))
    assert sizes[1_000] == sizes[10_000]


def test_a_plate_inside_the_step_and_a_step_inside_a_plate():
    @model
    def panel(y):
        tau = sample("tau", HalfNormal(1.0))
        with plate("units", 3):
            def step(level, y_t):
                with plate("sensors", 2):
                    level = sample("level", Normal(0.7 * level, tau))
                    sample("y", Normal(level, 1.0), obs=y_t)
                return level, level
            scan(step, torch.zeros(2, 3, dtype=F64), y)

    y = torch.randn(4, 2, 3, dtype=F64)
    graph = panel.graph(y)
    draw = panel.sample(y, seed=1)
    per_step = {a: v for a, v in draw.items() if not a.startswith("y")}
    vectorized = vectorize_loops()(graph)
    assert vectorized.site("level").meta.shape == (4, 2, 3)
    values = {"tau": draw["tau"], "level": torch.stack([draw[f"level[{t}]"] for t in range(4)])}
    torch.testing.assert_close(LogDensity(vectorized, values).run(),
                               LogDensity(unroll()(graph), per_step).run())


@model
def garch_like(y):
    """The volatility recurs on itself: h_t = a + b * h_{t-1} + c * y_{t-1}^2."""
    a = sample("a", HalfNormal(1.0))

    def step(carry, y_t):
        h, y_prev = carry
        h = a + 0.5 * h + 0.2 * y_prev**2
        sample("y", Normal(0.0, h.sqrt()), obs=y_t)
        return (h, y_t), None

    scan(step, (torch.tensor(1.0, dtype=F64), torch.tensor(0.0, dtype=F64)), y)


def test_a_recurrence_is_unrolled_with_one_warning_naming_the_loop():
    y = torch.randn(6, dtype=F64)
    graph = garch_like.graph(y)
    vectorized = vectorize_loops()(graph)
    assert "recurrence" in vectorized.attrs["unvectorized_loops"]["step"]
    with pytest.warns(FastPathWarning, match="scan 'step' is unrolled.*recurrence") as caught:
        flat = FlatModel.from_graph(graph, backend="generated")
    assert len([w for w in caught if issubclass(w.category, FastPathWarning)]) == 1
    reference = FlatModel.from_graph(unroll()(graph), backend="autograd")
    z = torch.randn(2, 1, dtype=F64)
    torch.testing.assert_close(flat.log_density_and_grad(z), reference.log_density_and_grad(z))


def test_predictive_and_log_density_read_stacked_posterior_draws():
    y = torch.randn(5, dtype=F64)
    draws = {"mu": torch.randn(2, 3, dtype=F64), "phi": torch.full((2, 3), 0.9, dtype=F64),
             "sigma": torch.full((2, 3), 0.3, dtype=F64), "h": torch.randn(2, 3, 5, dtype=F64)}

    class Draws:
        samples = draws

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = predictive(stochastic_volatility, Draws(), y, seed=0)
    for t in range(5):
        # predictive hands each draw to the model in its site's dtype
        torch.testing.assert_close(out[f"h[{t}]"], draws["h"][..., t].to(out[f"h[{t}]"].dtype))
    assert out["y[0]"].shape == (2, 3)
    one = {k: v[0, 0] for k, v in draws.items()}
    per_step = {**{k: v for k, v in one.items() if k != "h"},
                **{f"h[{t}]": one["h"][t] for t in range(5)}}
    torch.testing.assert_close(stochastic_volatility.log_density(one, y),
                               stochastic_volatility.log_density(per_step, y))


def test_a_step_with_a_reduction_is_kept_as_a_loop_naming_the_call():
    @model
    def summed(y):
        def step(x, y_t):
            with plate("parts", 2):
                x = sample("x", Normal(0.5 * x, 1.0))
            sample("y", Normal(x.sum(), 1.0), obs=y_t)
            return x, None

        scan(step, torch.zeros(2, dtype=F64), y)

    graph = summed.graph(torch.randn(3, dtype=F64))
    reason = vectorize_loops()(graph).attrs["unvectorized_loops"]["step"]
    assert reason.startswith("call Tensor.sum of node") and "not elementwise" in reason
    with pytest.warns(FastPathWarning, match="scan 'step' is unrolled"):
        assert [b.address for b in FlatModel.from_graph(graph).blocks] == ["x[0]", "x[1]", "x[2]"]
