"""Measure-valued derivatives: unbiased for the exact ELBO gradient (closed form over the
Gaussian site, enumeration over the discrete ones) on generated mixed models, less noisy
than the score function on the same problem, leaving the objective's value alone, and
refused by name where they cannot apply."""

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ppl import ParamStore, model, param, sample
from ppl.errors import ModelError
from ppl.handlers import seed
from ppl.inference.vi import ELBO, IWAE
from ppl.stdlib import Normal, Poisson

from .test_estimators import (
    MIXED,
    assert_unbiased,
    check_mixed_problem,
    exact_gradient,
    gradient_batches,
    mixed_problem,
)

# the discrete sites by MVD; the Gaussian one by MVD or reparameterized
MIXED_MVD = {**{k: v for k, v in MIXED.items() if k != "estimator"},
             "mu_estimator": st.sampled_from(["mvd", "reparam"])}


@settings(max_examples=3, deadline=None, derandomize=True, phases=(Phase.generate,),
          suppress_health_check=[HealthCheck.too_slow])
@given(**MIXED_MVD)
def test_mvd_is_unbiased_on_mixed_models(kind, mu_estimator, prior, shift, data):
    check_mixed_problem(kind, "mvd", prior, shift, data, 20, mu_estimator)


@pytest.mark.slow
@settings(max_examples=20, deadline=None, derandomize=True, phases=(Phase.generate,),
          suppress_health_check=[HealthCheck.too_slow])
@given(**MIXED_MVD)
def test_mvd_is_unbiased_on_many_mixed_models(kind, mu_estimator, prior, shift, data):
    check_mixed_problem(kind, "mvd", prior, shift, data, 60, mu_estimator)


def gradient_variance(kind, estimator, batches=20):
    """Per-component variance of the gradient with every site by ``estimator`` (no baseline:
    the plain score function)."""
    with ParamStore() as store, seed(1):
        m, guide, args, exact = mixed_problem(kind, estimator, 0.3, 1.5, [0.4, -1.2, 1.0],
                                              mu_estimator=estimator)
        estimates, leaves = gradient_batches(ELBO(4), m, _no_baseline(guide), args, store,
                                             batches)
        assert_unbiased(estimates, exact_gradient(exact, leaves))
        return estimates.var(0)


def _no_baseline(guide):
    from ppl.handlers import Messenger

    class NoBaseline(Messenger):
        def process(self, msg):
            if msg.kind == "sample":
                msg.infer = {**msg.infer, "baseline": None}

    return NoBaseline()(guide)


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_mvd_is_less_noisy_than_the_score_function(kind):
    mvd, score = gradient_variance(kind, "mvd"), gradient_variance(kind, "score")
    ratios = score / mvd  # measured 4-70 per component
    # the Gaussian site (loc, scale) and the discrete logits, each summed
    assert float(score[:2].sum() / mvd[:2].sum()) > 3.0, ratios
    assert float(score[2:].sum() / mvd[2:].sum()) > 3.0, ratios


def test_the_value_is_the_objectives_and_only_the_gradient_changes(store):
    m, guide, args, _ = mixed_problem("categorical", "mvd", 0.4, 1.0, [0.3, 1.1], "mvd")
    with seed(5):
        mvd = ELBO(6)(m, guide, *args)
    m, guide, args, _ = mixed_problem("categorical", "score", 0.4, 1.0, [0.3, 1.1], "score")
    with seed(5):
        score = ELBO(6)(m, guide, *args)
    # the same draws (re-runs use a fork of the stream), so the same value
    assert float(mvd.value) == pytest.approx(float(score.value), rel=1e-6)
    assert float(mvd.surrogate.detach()) == pytest.approx(float(mvd.value), rel=1e-6)


def test_a_family_without_a_rule_is_refused_by_name(store):
    @model
    def m():
        sample("n", Poisson(3.0))

    @model
    def guide():
        sample("n", Poisson(param("rate", torch.tensor(2.0))), infer={"estimator": "mvd"})

    with pytest.raises(ModelError, match="'n': no measure-valued derivative for Poisson"):
        ELBO()(m, guide)


def test_mvd_inside_a_nonlinear_objective_is_refused(store):
    m, guide, args, _ = mixed_problem("bernoulli", "mvd", 0.5, 1.0, [0.2])
    with pytest.raises(ModelError, match="'z' asks for a measure-valued derivative"):
        IWAE(4)(m, guide, *args)


def test_a_site_varying_outside_the_plates_of_its_cost_is_refused(store):
    @model
    def m():
        z = sample("z", Normal(torch.zeros(3), 1.0))
        sample("y", Normal(z.sum(), 1.0), obs=torch.tensor(0.5))

    @model
    def guide():
        sample("z", Normal(param("loc", torch.zeros(3)), 1.0), infer={"estimator": "mvd"})

    with pytest.raises(ModelError, match=r"MVD site 'z' varies along dim -1 \(size 3\)"):
        ELBO()(m, guide)
