"""The VI infer method: checkpoint and resume continue the same loss curve exactly (also
after Ctrl-C and through torch.save), convergence stops early, gradient clipping bounds a
step, the result's draws, summary and bound, and bad settings are refused by name."""

import io

import pytest
import torch
from torch.distributions import constraints

from ppl import infer, model, param, plate, sample
from ppl.errors import ModelError
from ppl.inference import Importance
from ppl.inference.vi import (
    ELBO,
    VI,
    AutoNormal,
    TrainingInterrupted,
)
from ppl.params import current_store
from ppl.stdlib import Bernoulli, Normal

X = torch.tensor([0.9, -0.3, 1.7, 0.4])


@model
def mixture(x):
    mu = sample("mu", Normal(0.0, 2.0))
    with plate("data", len(x)):
        z = sample("z", Bernoulli(0.5))
        sample("x", Normal(mu + z, 1.0), obs=x)


@model
def mixture_guide(x):
    sample("mu", Normal(param("loc", torch.tensor(0.0)),
                        param("scale", torch.tensor(1.0), constraints.positive)))
    with plate("data", len(x)):
        # a score-function site: its running baseline is part of the state to restore
        sample("z", Bernoulli(logits=param("logits", torch.zeros(len(x)))),
               infer={"estimator": "score"})


def method(**options):
    schedule = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)  # noqa: E731
    return VI(mixture_guide, objective=ELBO(4), steps=24, lr=0.05, lr_schedule=schedule,
              evaluations=2, num_samples=50, **options)


def test_resuming_from_a_checkpoint_continues_the_same_loss_curve():
    checkpoints = []
    full = infer(mixture, X, seed=3, method=method(checkpoint_every=8,
                                                   on_checkpoint=checkpoints.append))
    assert [c.step for c in checkpoints] == [8, 16, 24]
    buffer = io.BytesIO()
    torch.save(checkpoints[0], buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    resumed = infer(mixture, X, seed=99, method=method(resume=restored))
    assert torch.equal(resumed.losses, full.losses)
    for name, leaf in full.params.unconstrained().items():
        assert torch.equal(resumed.params.unconstrained()[name], leaf)


def test_ctrl_c_leaves_a_checkpoint_that_resumes_exactly():
    full = infer(mixture, X, seed=3, method=method())

    def interrupt(checkpoint):
        raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as caught:
        infer(mixture, X, seed=3, method=method(checkpoint_every=10, on_checkpoint=interrupt))
    assert caught.value.checkpoint.step == 10
    resumed = infer(mixture, X, seed=3, method=method(resume=caught.value.checkpoint))
    assert torch.equal(resumed.losses, full.losses)


def test_the_result_has_draws_summary_bound_and_a_usable_guide():
    res = infer(mixture, X, seed=0, method=method())
    assert res.samples["mu"].shape == (50,) and res.samples["z"].shape == (50, 4)
    assert "mu" in str(res.summary())
    assert res.losses.shape == (24,)
    # a lower bound: below the exact evidence (by enumerating z and integrating mu)
    assert float(res.log_evidence_bound) < exact_log_evidence()
    post = infer(mixture, X, method=Importance(4000, guide=res.guide), seed=1)
    log_z, se = post.log_evidence.detach(), post.log_evidence_se.detach()  # params carry grads
    assert abs(float(log_z) - exact_log_evidence()) < 4 * float(se)
    assert len(current_store()) == 0  # the run kept its params in its own store


def exact_log_evidence() -> float:
    """log p(x) = log Σ_z p(z) N(x; z, I + 4 11ᵀ)."""
    n = len(X)
    grid = torch.cartesian_prod(*[torch.tensor([0.0, 1.0])] * n)
    cov = torch.eye(n) + 4.0 * torch.ones(n, n)
    lp = torch.distributions.MultivariateNormal(grid, cov).log_prob(X) + n * torch.log(
        torch.tensor(0.5))
    return float(torch.logsumexp(lp, 0))


def test_convergence_stops_a_run_early():
    @model
    def normal(y):
        sample("y", Normal(sample("m", Normal(0.0, 1.0)), 1.0), obs=y)

    res = infer(normal, torch.tensor(1.0), seed=0, method=VI(
        AutoNormal(normal), objective=ELBO(16), steps=5000, lr=0.1, tolerance=0.05, window=20,
        evaluations=2, num_samples=10))
    assert res.converged and len(res.losses) < 5000


def test_gradient_clipping_bounds_the_step():
    res = infer(mixture, X, seed=0, method=VI(
        mixture_guide, steps=1, optimizer=torch.optim.SGD, lr=1.0, clip_norm=1e-3,
        evaluations=1, num_samples=5))
    moved = torch.cat([(res.params.unconstrained()[n].detach() - start).reshape(-1)
                       for n, start in [("loc", torch.tensor(0.0)),
                                        ("scale", torch.tensor(0.0)),
                                        ("logits", torch.zeros(4))]])
    assert float(moved.norm()) <= 1e-3 * (1 + 1e-5)


@pytest.mark.parametrize("options, message", [
    (dict(steps=0), "steps must be at least 1"),
    (dict(lr=-1.0), "lr must be positive"),
    (dict(clip_norm=0.0), "clip_norm must be positive"),
    (dict(checkpoint_every=5), "checkpoint_every needs on_checkpoint"),
])
def test_bad_settings_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        VI(mixture_guide, **options)


def test_an_objective_must_be_an_expectation_program():
    with pytest.raises(TypeError, match="@expectation program"):
        VI(mixture_guide, objective=lambda *a: 0.0)


def test_graph_passes_are_refused_and_a_paramless_run_is_named():
    with pytest.raises(ValueError, match="trace path"):
        infer(mixture, X, method=VI(mixture_guide), passes=[lambda g: g])

    @model
    def fixed(x):
        sample("mu", Normal(0.0, 1.0))
        with plate("data", len(x)):
            sample("z", Bernoulli(0.5))

    with pytest.raises(ModelError, match="no params to fit"):
        infer(mixture, X, method=VI(fixed, steps=2))
