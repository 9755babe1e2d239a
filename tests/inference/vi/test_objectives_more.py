"""PIWAE and the forward-χ² objective. PIWAE's gradient reaches the model's params exactly as
IWAE(M·K)'s and the guide's exactly as MIWAE(K, M)'s on the same draws (also through a score
site), and training raises both bounds. The χ² objective's gradient is the documented
expectation ½ ∇ log E_q[w²] (closed form for Gaussians), and on a correlated Gaussian
posterior its mean-field fit covers the marginals (variance ≥ the exact marginal variance,
at the exact χ² optimum), where the ELBO's would be narrower. A learned baseline lowers the
score function's variance (more than a running average) and stays unbiased; its weights
live in the param store and resume from a checkpoint."""

import math

import pytest
import torch
from torch.distributions import constraints

from ppl import ParamStore, infer, model, param, plate, sample
from ppl.errors import ModelError
from ppl.handlers import seed
from ppl.inference.vi import ELBO, IWAE, MIWAE, PIWAE, VI, ForwardChi2
from ppl.params import get_param
from ppl.stdlib import Bernoulli, Categorical, Normal

from .test_estimators import _enumerated, assert_unbiased, exact_gradient, gradient_batches
from .test_objectives import POST_MEAN, POST_VAR, X, chi2_integral, gaussian, gaussian_guide

# -- PIWAE ----------------------------------------------------------------------------------


@model
def shifted(x):
    z = sample("z", Normal(param("theta", torch.tensor(-1.0)), 1.0))
    with plate("data", len(x)):
        sample("x", Normal(z, 1.0), obs=x)


@model
def cluster(x):
    c = sample("c", Categorical(logits=param("prior_logits", torch.tensor([0.5, 0.0, -0.5]))))
    sample("x", Normal(torch.tensor([-2.0, 0.0, 2.0])[c], 1.0), obs=x)


@model
def cluster_guide(x):
    sample("c", Categorical(logits=param("logits", torch.tensor([0.3, -0.2, 0.1]))))


def gradients(objective, m, guide, args, store, rng_seed):
    guide(*args), m(*args)  # creates the params
    with seed(rng_seed):
        out = objective(m, guide, *args)
    leaves = store.unconstrained()
    grads = torch.autograd.grad(out.surrogate, list(leaves.values()), allow_unused=True)
    return out, {n: torch.zeros_like(leaves[n]) if g is None else g
                 for n, g in zip(leaves, grads, strict=True)}


def test_piwae_routes_iwae_to_the_model_and_miwae_to_the_guide():
    problems = [(shifted, gaussian_guide(0.2, 0.8), (X,), ["theta"], ["loc", "scale"]),
                (cluster, cluster_guide, (torch.tensor(1.0),), ["prior_logits"], ["logits"])]
    for m, guide, args, model_params, guide_params in problems:
        for rng_seed in (0, 1):
            with ParamStore() as store:
                piwae, routed = gradients(PIWAE(4, 3), m, guide, args, store, rng_seed)
                iwae, whole = gradients(IWAE(12), m, guide, args, store, rng_seed)
                _, averaged = gradients(MIWAE(4, 3), m, guide, args, store, rng_seed)
            assert float(piwae.value) == float(iwae.value)
            for name in model_params:
                assert torch.allclose(routed[name], whole[name], atol=1e-6), name
            for name in guide_params:
                assert torch.allclose(routed[name], averaged[name], atol=1e-6), name
                assert not torch.allclose(routed[name], whole[name], atol=1e-6), name


def bounds(store, m, guide, args, evaluations=60):
    """Mean IWAE(12) and MIWAE(4, 3) over many evaluations, with their standard errors."""
    with store:
        out = {}
        for name, objective in (("iwae", IWAE(12)), ("miwae", MIWAE(4, 3))):
            values = torch.stack([objective(m, guide, *args).value for _ in range(evaluations)])
            out[name] = (float(values.mean()), float(values.std()) / math.sqrt(evaluations))
    return out


def test_a_short_piwae_run_raises_both_bounds():
    guide = gaussian_guide(1.5, 0.3)
    with ParamStore() as initial:
        guide(X), shifted(X)
    before = bounds(initial, shifted, guide, (X,))
    fit = infer(shifted, X, seed=0,
                method=VI(guide, objective=PIWAE(4, 3), steps=150, lr=0.05, evaluations=2,
                          num_samples=10))
    after = bounds(fit.params, shifted, guide, (X,))
    for name in ("iwae", "miwae"):
        (b, b_se), (a, a_se) = before[name], after[name]
        assert a - b > 4 * math.hypot(a_se, b_se), (name, before, after)


# -- forward χ² -------------------------------------------------------------------------------


def log_chi2_integral(mean, cov, loc, scale):
    """log ∫ N(z; mean, cov)² / N(z; loc, diag(scale²)) dz in closed form (finite while
    2 cov⁻¹ - diag(scale⁻²) is positive definite)."""
    precision = torch.linalg.inv(cov)
    inner = torch.diag(scale**-2.0)
    a = 2 * precision - inner
    b = 2 * precision @ mean - inner @ loc
    return (-torch.logdet(cov) + torch.log(scale).sum() - 0.5 * torch.logdet(a)
            + 0.5 * b @ torch.linalg.solve(a, b) - mean @ precision @ mean
            + 0.5 * loc @ inner @ loc)


def test_the_closed_form_matches_quadrature():
    loc, scale = POST_MEAN - 0.3, 0.7
    exact = log_chi2_integral(torch.tensor([POST_MEAN]), torch.tensor([[POST_VAR]]),
                              torch.tensor([loc]), torch.tensor([scale]))
    assert float(exact) == pytest.approx(math.log(chi2_integral(loc, scale)), rel=1e-5)


def test_the_chi2_gradient_is_half_the_gradient_of_log_e_w_squared(store):
    guide = gaussian_guide(POST_MEAN + 0.3, 0.75)

    def half_log_moment():
        loc, scale = get_param("loc"), get_param("scale")
        return 0.5 * log_chi2_integral(torch.tensor([POST_MEAN]), torch.tensor([[POST_VAR]]),
                                       loc.reshape(1), scale.reshape(1))

    estimates, leaves = gradient_batches(ForwardChi2(4000), gaussian, guide, (X,), store, 20)
    assert_unbiased(estimates, exact_gradient(half_log_moment, leaves))


X2 = torch.tensor(1.0)
COV2 = torch.linalg.inv(torch.tensor([[3.0, 2.0], [2.0, 3.0]]))  # posterior of `correlated`
MEAN2 = COV2 @ torch.tensor([2.0, 2.0]) * X2


@model
def correlated(x):
    a, b = sample("a", Normal(0.0, 1.0)), sample("b", Normal(0.0, 1.0))
    sample("x", Normal(a + b, math.sqrt(0.5)), obs=x)


@model
def mean_field(x):
    loc = param("loc", torch.zeros(2))
    scale = param("scale", torch.full((2,), 1.2), constraints.positive)
    sample("a", Normal(loc[0], scale[0]))
    sample("b", Normal(loc[1], scale[1]))


def chi2_optimum():
    """The mean-field Gaussian minimizing D_χ²(p‖q), by LBFGS on the closed form."""
    loc = torch.zeros(2, requires_grad=True)
    log_scale = torch.zeros(2, requires_grad=True)
    opt = torch.optim.LBFGS([loc, log_scale], max_iter=200)

    def closure():
        opt.zero_grad()
        value = log_chi2_integral(MEAN2, COV2, loc, log_scale.exp())
        value.backward()
        return value

    opt.step(closure)
    return loc.detach(), (2 * log_scale).exp().detach()


def test_the_chi2_fit_covers_the_posterior():
    best_loc, best_var = chi2_optimum()
    marginal_var = COV2.diagonal()
    elbo_var = 1 / torch.linalg.inv(COV2).diagonal()  # the mean-field ELBO optimum
    assert bool((best_var > marginal_var).all()) and bool((elbo_var < marginal_var).all())
    fit = infer(correlated, X2, seed=0,
                method=VI(mean_field, objective=ForwardChi2(100), steps=300, lr=0.05,
                          evaluations=2, num_samples=10))
    loc = fit.params.get("loc")
    var = fit.params.get("scale").detach() ** 2
    assert bool((var >= marginal_var).all()), (var, marginal_var)
    assert torch.allclose(var, best_var, rtol=0.15), (var, best_var)
    assert torch.allclose(loc.detach(), best_loc, atol=0.1), (loc, best_loc)
    assert torch.allclose(best_loc, MEAN2, atol=1e-4)


# -- learned baselines --------------------------------------------------------------------------

N_POINTS = 8
POINTS = torch.linspace(-3.0, 4.0, N_POINTS)


@model
def indicators(x):
    with plate("data", N_POINTS):
        z = sample("z", Bernoulli(0.5))
        sample("x", Normal(2.0 * z - 1.0, 0.7), obs=x)


def indicator_guide(baseline):
    @model
    def guide(x):
        with plate("data", N_POINTS):
            sample("z", Bernoulli(logits=param("logits", torch.linspace(-1.0, 1.0, N_POINTS))),
                   infer={"estimator": "score", "baseline": baseline})
    return guide


def train_baseline_only(objective, guide, store, steps):
    """Fit the baseline network at fixed guide params (the gradient it must estimate stays
    put)."""
    objective.create_params(indicators, guide, POINTS)
    weights = [t for n, t in store.unconstrained().items() if n.startswith("baseline/")]
    optimizer = torch.optim.Adam(weights, lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        (-objective(indicators, guide, POINTS).surrogate).backward()
        optimizer.step()


def test_a_learned_baseline_lowers_the_score_variance_and_stays_unbiased(store):
    learned, plain = indicator_guide("learned"), indicator_guide(None)
    objective = ELBO(4)
    train_baseline_only(objective, learned, store, 150)
    assert any(n.startswith("baseline/z/") for n in store)
    with_baseline, leaves = gradient_batches(objective, indicators, learned, (POINTS,), store, 30)
    with_baseline = with_baseline[:, :N_POINTS]  # the guide's logits (then the network's)
    with ParamStore() as alone:
        without, _ = gradient_batches(ELBO(4), indicators, plain, (POINTS,), alone, 30)
        exact, _ = gradient_batches(ELBO(), indicators, _enumerated(plain), (POINTS,), alone, 1)
    assert_unbiased(with_baseline, exact[0])
    assert_unbiased(without, exact[0])
    ratio = without.var(0).sum() / with_baseline.var(0).sum()  # measured 4.2 (a running
    assert float(ratio) > 2.5, ratio  # average alone: 2.2, one value for unlike elements)


def test_a_module_baseline_trains_in_vi_and_resumes_from_its_checkpoint():
    network = torch.nn.Linear(2, 1)  # features: the logits and the probs
    guide = indicator_guide(network)
    checkpoints = []

    def fit(**options):
        return infer(indicators, POINTS, seed=4,
                     method=VI(guide, objective=ELBO(2), steps=12, lr=0.05, evaluations=1,
                               num_samples=5, **options))

    full = fit(checkpoint_every=6, on_checkpoint=checkpoints.append)
    assert sorted(full.params) == ["baseline/z/bias", "baseline/z/weight", "logits"]
    resumed = fit(resume=checkpoints[0])
    assert torch.equal(resumed.losses, full.losses)
    trained = full.params.get("baseline/z/weight")
    assert torch.equal(resumed.params.get("baseline/z/weight"), trained)
    assert not torch.equal(trained, network.weight.detach())  # the store's copy is trained


def test_baselines_that_cannot_apply_are_refused_by_name(store):
    with pytest.raises(ModelError, match="'z': a learned baseline needs per-element costs"):
        IWAE(4)(indicators, indicator_guide("learned"), POINTS)
    with pytest.raises(ModelError, match="'z': baseline 'mean' is not a decay"):
        ELBO()(indicators, indicator_guide("mean"), POINTS)
