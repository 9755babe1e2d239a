"""Warmup adaptation inside native NUTS runs equals the Python adaptation on the same
transitions, and whole ``infer`` runs take the native path end to end.

``native_nuts_warmup`` returns the transitions it made (acceptance statistics, draws);
replaying them through :func:`dual_averaging_update` and :func:`welford_update` must give the
state C carried (up to rounding). The C potential's float32 storage of exactly representable
data is checked against autograd on a model large enough to use it.
"""

from __future__ import annotations

import pytest
import torch

from ppl import infer, model, plate, sample
from ppl.inference import NUTS
from ppl.inference.lowering.flat import FlatModel
from ppl.inference.lowering.native import compiler_available
from ppl.inference.mcmc import NUTS as NUTSKernel
from ppl.inference.mcmc.adaptation import (
    StepAdaptation,
    dual_averaging_init,
    dual_averaging_update,
    welford_init,
    welford_update,
)
from ppl.inference.mcmc.native_nuts import NativeNUTS
from ppl.inference.rng import chain_generators
from ppl.stdlib import Bernoulli, HalfNormal, Normal

pytestmark = pytest.mark.skipif(not compiler_available(), reason="no C compiler: no native backend")


@model
def regression(x, y):
    w = sample("w", Normal(torch.zeros(3), 1.0).to_event(1))
    s = sample("s", HalfNormal(1.0))
    with plate("N", x.shape[0]):
        sample("y", Normal(x @ w, s), obs=y)


def _flat(n: int = 40, seed: int = 0) -> FlatModel:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([0.5, -1.0, 2.0]) + 0.3 * torch.randn(n, generator=g)
    flat = FlatModel.from_graph(regression.graph(x, y))
    assert flat.backend == "native"
    return flat


@pytest.mark.parametrize("dense", [False, True])
def test_warmup_adaptation_in_c_matches_python_replay(dense):
    flat = _flat()
    kernel = NativeNUTS.of(NUTSKernel(step_size=0.3, metric="dense" if dense else "diag"),
                           flat.native)
    state = kernel.init(torch.zeros(3, flat.dim, dtype=torch.float64))
    da = dual_averaging_init(state.step_size)
    for _ in range(4):  # a few updates already made, as in mid-warmup
        da = dual_averaging_update(da, torch.tensor([0.6, 0.9, 0.7], dtype=torch.float64), 0.8)
    welford = welford_update(welford_init(3, flat.dim, dense, state.position),
                             state.position + 0.1)
    plan = StepAdaptation(da, welford, 0.8, 0.05, 10.0, 0.75)
    rng = chain_generators(0, 3)
    new_state, info, new_plan = kernel.adaptive_steps(rng, state, 30, plan)

    replay_da = da
    for t in range(30):  # each transition ran with the step size adaptation had reached
        torch.testing.assert_close(info.step_size[:, t], replay_da.log_step.exp())
        replay_da = dual_averaging_update(replay_da, info.accept_prob[:, t], 0.8)
    torch.testing.assert_close(new_plan.dual_averaging.log_step, replay_da.log_step)
    torch.testing.assert_close(new_plan.dual_averaging.log_step_avg, replay_da.log_step_avg)
    torch.testing.assert_close(new_plan.dual_averaging.h_bar, replay_da.h_bar)
    assert new_plan.dual_averaging.count == replay_da.count
    torch.testing.assert_close(new_state.step_size, replay_da.log_step.exp())
    assert new_plan.welford.count == welford.count + 30


def test_welford_in_c_matches_python_replay():
    flat = _flat(seed=1)
    kernel = NativeNUTS.of(NUTSKernel(step_size=0.2, metric="dense"), flat.native)
    state = kernel.init(torch.zeros(2, flat.dim, dtype=torch.float64))
    welford = welford_init(2, flat.dim, True, state.position)
    plan = StepAdaptation(None, welford, None, 0.05, 10.0, 0.75)
    # The same generators give the same transitions to a plain run, which returns the draws.
    _, _, draws = kernel.steps(chain_generators(5, 2), state, 25)
    _, info, new_plan = kernel.adaptive_steps(chain_generators(5, 2), state, 25, plan)
    replay = welford
    for t in range(25):
        replay = welford_update(replay, draws[:, t])
    torch.testing.assert_close(new_plan.welford.mean, replay.mean)
    torch.testing.assert_close(new_plan.welford.m2, replay.m2)
    assert torch.equal(info.step_size, state.step_size.unsqueeze(1).expand(2, 25))


def test_float32_exact_data_is_stored_single_and_gives_the_same_potential():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5000, 3, generator=g)  # float32 values: exact in float32
    y = (torch.rand(5000, generator=g) < 0.5).float()

    @model
    def logistic(x, y):
        w = sample("w", Normal(torch.zeros(3), 1.0).to_event(1))
        with plate("N", 5000):
            sample("y", Bernoulli(logits=x @ w), obs=y)

    flat = FlatModel.from_graph(logistic.graph(x, y))
    assert flat.backend == "native"
    assert any(c.dtype == torch.float32 for c in flat.native.source.constants)
    z = torch.randn(4, flat.dim, generator=g, dtype=torch.float64)
    log_p, grad = flat.log_density_and_grad(z)
    ref_log_p, ref_grad = flat.autograd_log_density_and_grad(z)
    torch.testing.assert_close(log_p, ref_log_p, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-8)


@pytest.mark.filterwarnings("ignore::ppl.inference.ConvergenceWarning")  # short runs
def test_infer_runs_natively_and_reproducibly():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(30, 3, generator=g)
    y = x @ torch.tensor([1.0, 0.0, -1.0]) + 0.5 * torch.randn(30, generator=g)
    method = NUTS(num_warmup=200, num_samples=200, chains=3)
    first = infer(regression, x, y, method=method, seed=11)
    again = infer(regression, x, y, method=method, seed=11)
    assert torch.equal(first.samples["w"], again.samples["w"])
    one = infer(regression, x, y, method=NUTS(num_warmup=200, num_samples=200, chains=1), seed=11)
    assert torch.equal(one.samples["w"][0], first.samples["w"][0])  # chain 0 in any batch
    # gradients evaluated in C reach the runner's count (plus initialization and searches)
    assert first.extra["num_grad_evals"] > int(first.info["num_grad_evals"].sum()) > 0
