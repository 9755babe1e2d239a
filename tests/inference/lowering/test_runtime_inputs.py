"""Run-time inputs of a flat model: the tempering beta, param values and per-chain data rows
are read from ``FlatModel.bind``'s binding at each evaluation on every backend, give what a
model freshly built with the value baked in gives, and never recompile anything."""

import pytest
import torch
from torch.distributions import constraints

from ppl import factor, model, param, plate, sample
from ppl.inference.lowering import flat as flat_module
from ppl.inference.lowering.flat import FlatModel
from ppl.inference.lowering.native import potential as native_module
from ppl.inference.lowering.native.compiler import compiler_available
from ppl.inference.lowering.tape import build as build_module
from ppl.inference.lowering.tape import build_potential
from ppl.ir import codegen
from ppl.params import clear_params, get_param
from ppl.passes import temper
from ppl.stdlib import Dirichlet, HalfNormal, Normal, Uniform

BACKENDS = ["generated", "autograd"] + (["native"] if compiler_available() else [])
X = torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.1], [1.5, 0.2]])
Y = torch.tensor([0.9, 1.7, -0.8, 1.1])


@model
def regression(x, y):
    w = param("w", torch.tensor([0.5, -0.3]))
    s = param("s", torch.tensor(1.2), constraint=constraints.positive)
    b = sample("b", Normal(0.0, 1.0))
    t = sample("t", HalfNormal(1.0))
    factor("shrink", -0.5 * b**2)
    with plate("data", len(y)):
        sample("y", Normal(x @ w + b, s * t), obs=y)


@pytest.fixture(autouse=True)
def fresh_params():
    clear_params()
    regression._graphs.clear()  # tracing puts the params' inits in the store
    yield
    clear_params()


def positions(flat, chains=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(chains, flat.dim, generator=generator, dtype=torch.float64)


def baked(graph):
    """The reference: the generated potential with beta, params and data folded in as
    constants (the lowering before run-time inputs)."""
    reference = FlatModel.from_graph(graph, backend="autograd")
    return build_potential(reference.unconstrained, reference.blocks)


@pytest.fixture
def builds(monkeypatch):
    """Counts of every code generation and compilation step a flat model can run."""
    counts = {"lower": 0, "torch": 0, "c_source": 0, "c_compile": 0, "autograd": 0}

    def counting(module, name, key):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            counts[key] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counting(flat_module, "lower_potential", "lower")
    counting(flat_module, "torch_potential", "torch")
    counting(native_module, "emit_potential", "c_source")
    counting(native_module, "compile_library", "c_compile")
    counting(codegen.CodeGen, "compile", "autograd")
    return counts


def assert_same(actual, expected):
    torch.testing.assert_close(actual[0], expected[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(actual[1], expected[1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_beta_matches_a_model_tempered_with_it_and_recompiles_nothing(backend, builds):
    graph = regression.graph(X, Y)
    flat = FlatModel.from_graph(temper(0.3, factors=True)(graph), backend=backend)
    assert flat.backend == backend and flat.beta == 0.3
    z = positions(flat)
    assert_same(flat.log_density_and_grad(z), baked(temper(0.3, factors=True)(graph))(z))
    before = dict(builds)
    for beta in (0.0, 0.8, 1.0):
        flat.bind(beta=beta)
        assert flat.beta == beta
        assert_same(flat.log_density_and_grad(z), baked(temper(beta, factors=True)(graph))(z))
        assert {k: builds[k] for k in ("c_source", "c_compile")} == {
            k: before[k] for k in ("c_source", "c_compile")}
    flat.bind(beta=0.5)
    counted = dict(builds)
    flat.log_density_and_grad(z)
    assert builds == counted  # evaluating after a new binding builds nothing


@pytest.mark.parametrize("backend", BACKENDS)
def test_new_param_values_match_a_model_built_with_them(backend, builds):
    graph = regression.graph(X, Y)
    flat = FlatModel.from_graph(graph, backend=backend)
    z = positions(flat, seed=1)
    flat.log_density_and_grad(z)
    counted = dict(builds)
    w, s = torch.tensor([-1.0, 0.25]), torch.tensor(0.4)
    flat.bind(params={"w": w, "s": s})
    bound = flat.log_density_and_grad(z)
    assert builds == counted
    torch.testing.assert_close(flat.params["w"], w.double())
    clear_params()
    get_param("w", w)
    get_param("s", s, constraints.positive)
    assert_same(bound, baked(regression.graph(X, Y))(z))


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_chain_reads_its_own_data_row(backend, builds):
    graph = regression.graph(X, Y)
    flat = FlatModel.from_graph(graph, backend=backend, rows=("y",))
    z = positions(flat, chains=3, seed=2)
    shared = flat.log_density_and_grad(z)
    assert_same(shared, baked(graph)(z))  # unbound rows: the graph's own data for every chain
    counted = dict(builds)
    rows = Y + torch.arange(3.0)[:, None] * torch.tensor([0.5, -1.0, 2.0, 0.1])
    flat.bind(rows={"y": rows})
    lp, grad = flat.log_density_and_grad(z)
    assert builds == counted
    for c in range(3):
        expected = baked(graph.replace(data={**graph.data, "y": rows[c]}))(z[c:c + 1])
        assert_same((lp[c:c + 1], grad[c:c + 1]), expected)
    values = flat.constrained_values(z)
    assert values["t"].shape == (3,)
    with pytest.raises(ValueError, match="'y' is bound with 3 rows"):
        flat.log_density_and_grad(z[:2])


def test_bad_bindings_name_what_is_wrong():
    graph = regression.graph(X, Y)
    flat = FlatModel.from_graph(graph, backend="generated", rows=("y",))
    with pytest.raises(ValueError, match="was not tempered"):
        flat.bind(beta=0.5)
    with pytest.raises(ValueError, match="no param site 'v'.*'s', 'w'"):
        flat.bind(params={"v": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"param 'w' has shape \(2,\), got \(3,\)"):
        flat.bind(params={"w": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"input 'y' takes rows \(chains, 4\)"):
        flat.bind(rows={"y": torch.zeros(2, 5)})
    with pytest.raises(ValueError, match="'x' is not a per-row input"):
        flat.bind(rows={"x": X})
    with pytest.raises(ValueError, match="not a bound input"):
        FlatModel.from_graph(graph, backend="generated", rows=("z",))
    tempered = FlatModel.from_graph(temper(0.5)(graph), backend="generated")
    with pytest.raises(ValueError, match="non-negative"):
        tempered.bind(beta=-1.0)


@model
def constrained(x):
    scale = sample("scale", HalfNormal(1.0))
    upper = sample("upper", Uniform(0.5, 3.0))
    sample("inner", Uniform(0.0, upper))  # a support that depends on another latent
    sample("weights", Dirichlet(torch.ones(3)))
    sample("y", Normal(0.0, scale), obs=x)


@pytest.mark.parametrize("backend", ["generated", "autograd"])
def test_unconstrain_batch_inverts_constrained_values_row_for_row(backend):
    flat = FlatModel.from_graph(constrained.graph(torch.tensor(0.3)), backend=backend)
    z = positions(flat, chains=6, seed=4)
    values = {b.address: flat.constrained_values(z)[b.address] for b in flat.blocks}
    batch = flat.unconstrain_batch(values)
    assert batch.shape == (6, flat.dim)
    torch.testing.assert_close(batch, z, rtol=1e-6, atol=1e-6)
    for n in range(6):
        row = flat.unconstrain({a: v[n] for a, v in values.items()})
        torch.testing.assert_close(batch[n], row.to(batch.dtype), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="missing \\['weights'\\]"):
        flat.unconstrain_batch({a: v for a, v in values.items() if a != "weights"})
    with pytest.raises(ValueError, match="site 'weights' has shape \\(3,\\)"):
        flat.unconstrain_batch({**values, "weights": values["weights"][:, :2]})


def test_a_cpu_batch_in_chunks_gives_what_the_whole_batch_gives(monkeypatch):
    monkeypatch.setattr(build_module, "CHUNK_VALUES", 8)  # widest value 4: two chains a chunk
    graph = regression.graph(X, Y)
    chunked = FlatModel.from_graph(graph, backend="generated", rows=("y",))
    assert build_module.rows_per_chunk(chunked._lowered.tape) == 2
    monkeypatch.setattr(build_module, "CHUNK_VALUES", 1 << 18)
    whole = FlatModel.from_graph(graph, backend="generated", rows=("y",))
    rows = Y + torch.arange(5.0)[:, None] * torch.tensor([0.5, -1.0, 2.0, 0.1])
    z = positions(chunked, chains=5, seed=3)
    for flat in (chunked, whole):
        flat.bind(rows={"y": rows})
    assert_same(chunked.log_density_and_grad(z), whole.log_density_and_grad(z))
