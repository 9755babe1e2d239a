"""The ADVI fast path (``inference/vi/fast.py``): on the same seed its ELBO value and gradient
equal the general objective path's for every location-scale autoguide (constrained latents,
plates, vector sites, several particles); whole runs, bounds and draws agree; a full-rank
guide recovers an exact Gaussian posterior; refusals say why; checkpoints resume exactly;
the mean-field step in C equals its torch code."""

import io
import warnings

import pytest
import torch

from ppl import ParamStore, deterministic, infer, model, param, plate, sample
from ppl.handlers import mask
from ppl.inference.lowering.flat import FastPathWarning, FlatModel
from ppl.inference.vi import (
    ELBO,
    IWAE,
    VI,
    AutoDelta,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from ppl.inference.vi.compiled import COMPILED
from ppl.inference.vi.fast import FastELBO, _MeanField, fast_elbo
from ppl.params import current_store
from ppl.randomness import seeded
from ppl.stdlib import Beta, Dirichlet, HalfNormal, LogNormal, MultivariateNormal, Normal

Y = torch.tensor([0.4, -0.2, 1.1, 0.7, 0.3])


@model
def constrained(y):
    s = sample("s", HalfNormal(1.0))
    p = sample("p", Beta(2.0, 3.0))
    with plate("data", len(y)):
        sample("y", Normal(p, s), obs=y)


@model
def hierarchical(y):
    mu = sample("mu", Normal(0.0, 2.0))
    tau = sample("tau", LogNormal(0.0, 0.5))
    with plate("groups", len(y)):
        theta = sample("theta", Normal(mu, tau))
        sample("y", Normal(theta, 0.5), obs=y)
    deterministic("spread", tau * 2.0)


@model
def vectors(y):
    w = sample("w", Dirichlet(torch.tensor([1.0, 2.0, 3.0])))
    loc = sample("loc", MultivariateNormal(torch.zeros(2), torch.eye(2)))
    with plate("data", len(y)):
        sample("y", Normal(loc[..., 0] - loc[..., 1] + w[..., 0], 1.0), obs=y)


GUIDES = [AutoNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal, AutoDelta]
MODELS = [constrained, hierarchical, vectors]


def _perturbed(guide_type, m):
    """The guide with its params created and moved off their initial values."""
    guide = guide_type(m)
    guide(Y)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for leaf in current_store().unconstrained().values():
            leaf.add_(0.3 * torch.randn(leaf.shape, generator=generator))
    return guide


def _gradients(backward) -> tuple[float, dict[str, torch.Tensor]]:
    leaves = current_store().unconstrained()
    for leaf in leaves.values():
        leaf.grad = None
    with seeded(7):
        value = backward()
    return value, {name: leaf.grad.clone() for name, leaf in leaves.items()}


@pytest.mark.parametrize("guide_type", GUIDES, ids=lambda g: g.__name__)
@pytest.mark.parametrize("m", MODELS, ids=lambda m: m.fn.__name__)
@pytest.mark.parametrize("num_particles", [1, 3])
def test_the_fast_elbo_and_its_gradient_equal_the_general_paths(guide_type, m, num_particles):
    with ParamStore():
        guide = _perturbed(guide_type, m)
        objective = ELBO(num_particles)
        fast, path = fast_elbo(m, guide, objective, (Y,), {})
        assert path.startswith("fast (")

        def general() -> float:
            out = objective(m, guide, Y)
            (-out.surrogate).backward()
            return float(out.value)

        slow_value, slow_grads = _gradients(general)
        fast_value, fast_grads = _gradients(fast.backward)
    assert fast_value == pytest.approx(slow_value, rel=1e-5, abs=1e-4)
    assert fast_grads.keys() == slow_grads.keys()
    for name, grad in slow_grads.items():
        # the general path runs the model in float32, the fast one in float64
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-3, atol=1e-3)


def _run(guide_type, m, **options):
    method = VI(guide_type(m), objective=ELBO(2), steps=30, lr=0.05, evaluations=3,
                num_samples=400, **options)
    return infer(m, Y, seed=3, method=method)


@pytest.mark.parametrize("guide_type", GUIDES, ids=lambda g: g.__name__)
def test_a_fast_run_retraces_the_general_run_drawing_the_same_noise(guide_type):
    fast = _run(guide_type, hierarchical)
    slow = _run(guide_type, hierarchical, fast_path=False)
    assert fast.extra["path"] == "fast (native potential)"
    assert slow.extra["path"] == "slow: VI(fast_path=False)"
    torch.testing.assert_close(fast.losses, slow.losses, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(fast.log_evidence_bound, slow.log_evidence_bound,
                               rtol=1e-4, atol=1e-3)
    # the general path's draws come after its pilot runs took from the stream, so the two
    # are independent draws of the same guide: their means agree within Monte Carlo error
    assert fast.samples.keys() == slow.samples.keys() == {"mu", "tau", "theta", "spread"}
    for name, draws in slow.samples.items():
        mine = fast.samples[name]
        assert mine.shape == draws.shape == (400, *draws.shape[1:])
        se = ((mine.var(0) + draws.var(0)) / len(draws)).sqrt()
        assert ((mine.mean(0) - draws.mean(0)).abs() <= 4.5 * se + 1e-3).all(), name
    assert str(fast.summary()) and set(fast.params) == set(slow.params)


def test_a_full_rank_guide_reaches_the_exact_gaussian_posterior():
    """z ~ N(0, I₂), y_i ~ N(z₁ + z₂, 1): the posterior is Gaussian with precision
    I + n [[1, 1], [1, 1]], strongly correlated; the full-rank family contains it."""
    y = torch.tensor([1.3, 0.8, 2.1, 1.6])

    @model
    def summed(y):
        z = sample("z", Normal(torch.zeros(2), 1.0).to_event(1))
        with plate("data", len(y)):
            sample("y", Normal(z.sum(), 1.0), obs=y)

    precision = torch.eye(2) + len(y) * torch.ones(2, 2)
    covariance = torch.linalg.inv(precision)
    mean = covariance @ torch.full((2,), float(y.sum()))
    # the step size decays to 0.0007: what is left is the optimizer's noise (about 0.01 over
    # seeds), well inside the tolerances and far below the posterior sds (0.33 and 1)
    decay = lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, 0.993)  # noqa: E731
    res = infer(summed, y, seed=0, method=VI(
        AutoMultivariateNormal(summed), objective=ELBO(32), steps=600, lr=0.05,
        lr_schedule=decay, evaluations=2, num_samples=10))
    assert res.extra["path"].startswith("fast")
    store = res.params
    loc = store.get("auto.loc").detach()
    tril = store.get("auto.scale_tril").detach()
    torch.testing.assert_close(loc, mean, atol=0.03, rtol=0)
    torch.testing.assert_close(tril @ tril.T, covariance, atol=0.015, rtol=0)


@model
def with_param(y):
    shift = param("shift", torch.tensor(0.0))
    mu = sample("mu", Normal(0.0, 1.0))
    with plate("data", len(y)):
        sample("y", Normal(mu + shift, 1.0), obs=y)


@model
def minibatched(y):
    mu = sample("mu", Normal(0.0, 1.0))
    with plate("data", len(y), subsample_size=2) as rows:
        sample("y", Normal(mu, 1.0), obs=y[rows])


@model
def masked(y):  # the graph IR has no mask handler
    mu = sample("mu", Normal(0.0, 1.0))
    with plate("data", len(y)), mask(y > 0):
        sample("y", Normal(mu, 1.0), obs=y)


@model
def guide_of_mu(y):
    sample("mu", Normal(param("loc", torch.tensor(0.0)), 1.0))


def test_refusals_name_why_and_only_a_run_left_on_the_general_path_warns():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPathWarning)  # the fast path's refusals, compiled
        user = infer(with_param, Y, seed=0, method=VI(guide_of_mu, steps=2, evaluations=1))
        params = infer(with_param, Y, seed=0, method=VI(AutoNormal(with_param), steps=2))
        batches = infer(minibatched, Y, seed=0, method=VI(AutoNormal(minibatched), steps=2))
        iwae = infer(constrained, Y, seed=0, method=VI(AutoNormal(constrained),
                                                       objective=IWAE(4), steps=2))
        asked = infer(constrained, Y, seed=0, method=VI(AutoNormal(constrained), steps=2,
                                                        objective=IWAE(4), fast_path=False))
    assert user.extra["path"] == COMPILED  # a user's guide: the compiled step, not ADVI's
    assert params.extra["path"] == COMPILED  # the model's params: compiled, not ADVI's
    assert "shift" in params.params
    assert batches.extra["path"] == COMPILED
    assert iwae.extra["path"] == COMPILED  # not the ELBO: no ADVI, but the compiled step
    assert asked.extra["path"] == "slow: VI(fast_path=False)"
    with pytest.warns(FastPathWarning, match="general \\(handler\\) path") as caught:
        masked_run = infer(masked, Y, seed=0, method=VI(guide_of_mu, steps=2))
    assert "; not compiled: it does not trace to a graph" in masked_run.extra["path"]
    assert [str(w.message).split("path; ", 1)[1] for w in caught] == [masked_run.extra["path"]]


def test_a_fast_run_resumes_from_a_checkpoint_to_the_same_losses():
    def method(**options):
        decay = lambda opt: torch.optim.lr_scheduler.StepLR(opt, 7, 0.5)  # noqa: E731
        return VI(AutoNormal(constrained), objective=ELBO(3), steps=24, lr=0.05,
                  lr_schedule=decay, evaluations=2, num_samples=20, **options)

    checkpoints = []
    full = infer(constrained, Y, seed=3, method=method(checkpoint_every=8,
                                                       on_checkpoint=checkpoints.append))
    assert full.extra["path"].startswith("fast")
    buffer = io.BytesIO()
    torch.save(checkpoints[1], buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    for checkpoint in (checkpoints[0], saved):
        resumed = infer(constrained, Y, seed=99, method=method(resume=checkpoint))
        assert resumed.extra["path"].startswith("fast")
        torch.testing.assert_close(resumed.losses, full.losses, rtol=0, atol=0)
        for name, value in full.params.unconstrained().items():
            torch.testing.assert_close(resumed.params.unconstrained()[name], value)


@pytest.mark.parametrize("num_particles", [1, 3])
def test_the_mean_field_step_in_c_equals_its_torch_code(num_particles):
    results = []
    with ParamStore():
        guide = _perturbed(AutoNormal, hierarchical)
        for backend in ("native", "generated"):
            flat = FlatModel.from_graph(hierarchical.graph(Y), backend=backend)
            family = _MeanField(guide, guide.sites)  # packs the params anew: use it now
            fast = FastELBO(flat, family, num_particles)
            assert (family._native_step is not None) == (backend == "native")
            results.append(_gradients(fast.backward))
    (c_value, c_grads), (torch_value, torch_grads) = results
    # C computes the draws in float64, torch in the params' float32
    assert c_value == pytest.approx(torch_value, rel=1e-6)
    for name, grad in torch_grads.items():
        torch.testing.assert_close(c_grads[name], grad, rtol=1e-5, atol=1e-5)
