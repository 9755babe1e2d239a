"""``ppl.module``: a torch module's weights as params. The trace and graph paths give the same
log density and the same gradients w.r.t. the weights, a cached graph sees an optimizer's
step, state_dict round-trips the module, the tracer refuses an unregistered module, and
``freeze_params`` holds a module's weights fixed for its extent only."""

import io

import pytest
import torch

from ppl import ParamStore, model, module, plate, sample
from ppl.errors import ModelError
from ppl.handlers import freeze_params, substitute
from ppl.inference import VI, AutoNormal
from ppl.ir import IRError, LogDensity, log_density
from ppl.stdlib import Gamma, Normal


class Regressor(torch.nn.Module):
    """A small MLP: large weights (bound as graph inputs if captured) and a one-element bias
    (inlined as a literal if captured), so both ways of freezing would show."""

    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(3, 8)
        self.out = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x))).squeeze(-1)


def make_regression(net):
    @model
    def regression(x, y):
        module("net", net)
        s = sample("s", Gamma(2.0, 2.0))
        with plate("data", len(x)):
            sample("y", Normal(net(x), s), obs=y)

    return regression


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(12, 3, generator=g), torch.randn(12, generator=g)


def test_trace_and_graph_paths_agree_on_log_density_and_weight_gradients(data):
    torch.manual_seed(0)
    net = Regressor()
    regression = make_regression(net)
    values = {"s": torch.tensor(0.7)}
    with ParamStore():
        trace_lp = regression.log_density(values, *data)
        graph = regression.graph(*data)
        graph_lp = LogDensity(graph, values).run()
        compiled_lp = log_density(graph)(values)
        weights = list(net.parameters())
        trace_grads = torch.autograd.grad(trace_lp, weights)
        graph_grads = torch.autograd.grad(graph_lp, weights)
    assert [n.address for n in graph.nodes_of("param")] == [
        "net.hidden.weight", "net.hidden.bias", "net.out.weight", "net.out.bias"]
    assert torch.allclose(trace_lp, graph_lp) and torch.allclose(trace_lp, compiled_lp)
    for a, b in zip(trace_grads, graph_grads, strict=True):
        assert a.abs().sum() > 0 and torch.allclose(a, b, atol=1e-6)


def test_a_cached_graph_sees_the_weights_after_an_optimizer_step(data):
    torch.manual_seed(0)
    net = Regressor()
    regression = make_regression(net)
    values = {"s": torch.tensor(0.7)}
    with ParamStore() as store:
        before = LogDensity(regression.graph(*data), values).run()
        optimizer = torch.optim.SGD(list(store.unconstrained().values()), lr=1e-3)
        (-before).backward()
        optimizer.step()
        after = LogDensity(regression.graph(*data), values).run()  # served from the cache
        expected = regression.log_density(values, *data)
    assert len(regression._graphs) == 1
    assert float(after.detach()) > float(before.detach())
    assert torch.allclose(after, expected)


def test_state_dict_round_trips_the_module(data):
    x, _ = data
    torch.manual_seed(0)
    net = Regressor()
    with ParamStore() as store:
        module("net", net)
        buffer = io.BytesIO()
        torch.save(store.state_dict(), buffer)
        saved = net(x).detach()
        with torch.no_grad():
            for weight in net.parameters():
                weight.add_(1.0)  # training moves the module in place
        assert not torch.allclose(net(x), saved)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=False)
        store.load_state_dict(state)
        assert torch.allclose(net(x), saved)
    torch.manual_seed(5)
    other = Regressor()
    fresh = ParamStore()
    fresh.load_state_dict(state)  # a new store: the restored values win over other's init
    with fresh:
        module("net", other)
    assert torch.allclose(other(x), saved)
    assert all(fresh.leaf(f"net.{p}") is w for p, w in other.named_parameters())


def test_two_modules_under_one_name_share_the_stores_weights():
    first, second = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with ParamStore():
        module("shared", first)
        module("shared", second)
    assert second.weight is first.weight and second.bias is first.bias


def test_vi_trains_the_registered_weights_in_place(data):
    torch.manual_seed(0)
    net = Regressor()
    regression = make_regression(net)
    start = net.out.weight.detach().clone()
    result = VI(AutoNormal(regression), steps=30, lr=0.05).run(regression, data, {})
    assert "net.out.weight" in result.params
    assert result.params.leaf("net.out.weight") is net.out.weight
    assert not torch.allclose(net.out.weight, start)
    assert float(result.losses[-5:].mean()) < float(result.losses[:5].mean())


def test_the_tracer_refuses_an_unregistered_module(data):
    net = Regressor()

    @model
    def unregistered(x, y):
        s = sample("s", Gamma(2.0, 2.0))
        with plate("data", len(x)):
            sample("y", Normal(net(x), s), obs=y)

    with pytest.raises(IRError, match=r"parameter 'hidden.weight' of module Regressor .*"
                                      r"ppl.module\('name', net\)"):
        unregistered.graph(*data)


def test_the_tracer_refuses_an_unregistered_module_on_untracked_inputs():
    decoder = torch.nn.Linear(2, 3)

    @model
    def fixed_input():
        loc = decoder(torch.ones(2))  # nothing tracked flows in: would be folded as a constant
        sample("z", Normal(loc, 1.0).to_event(1))

    with pytest.raises(IRError, match="parameter 'weight' of module Linear"):
        fixed_input.graph()


def test_a_substituted_weight_is_refused_by_name():
    net = torch.nn.Linear(2, 1)
    with ParamStore(), substitute({"net.weight": torch.zeros(1, 2)}):
        with pytest.raises(ModelError, match="'net.weight'"):
            module("net", net)


def test_frozen_weights_compute_without_a_gradient_path_and_come_back(data):
    net = Regressor()
    regression = make_regression(net)
    weights = dict(net.named_parameters())
    with ParamStore():
        with freeze_params():  # two runs, the second registering the module again
            frozen = [regression.log_density({"s": torch.tensor(1.0)}, *data) for _ in "ab"]
        live = regression.log_density({"s": torch.tensor(1.0)}, *data)
    assert not any(f.requires_grad for f in frozen) and live.requires_grad
    torch.testing.assert_close(frozen[1], live.detach())
    assert dict(net.named_parameters()) == weights  # the module's own Parameters again


def test_a_clashing_shape_names_the_param():
    with ParamStore():
        module("net", torch.nn.Linear(2, 1))
        with pytest.raises(ModelError, match=r"'net.weight'.*\(1, 2\).*\(3, 2\)"):
            module("net", torch.nn.Linear(2, 3))
