"""Per-site gradient estimators: each is unbiased for the exact gradient of the ELBO (closed
form, or enumeration over the discrete sites), Rao-Blackwellization lowers the score
function's variance, and a site asking for an estimator its family cannot use is refused.

The estimates are gradients of several independent evaluations, each averaging a batch of
particles; each component of their mean must lie within 4.5 Monte Carlo standard errors of
the exact gradient (several components and examples are checked, so the bound is wide
enough for the family of tests).
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch.distributions import constraints

from ppl import model, param, plate, sample
from ppl.errors import ModelError
from ppl.inference.vi import ELBO, expectation
from ppl.stdlib import Bernoulli, Beta, Binomial, Categorical, Dirichlet, Gamma, Normal, Poisson

Z_MAX = 4.5


def gradient_batches(objective, model_fn, guide, args, store, batches):
    """Gradients of ``batches`` surrogate evaluations, flattened: (batches, num_params)."""
    guide(*args)  # creates the params
    leaves = list(store.unconstrained().values())
    rows = []
    for _ in range(batches):
        grads = torch.autograd.grad(objective(model_fn, guide, *args).surrogate, leaves)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows), leaves


def exact_gradient(exact_elbo, leaves):
    grads = torch.autograd.grad(exact_elbo(), leaves)
    return torch.cat([g.reshape(-1) for g in grads])


def assert_unbiased(estimates, exact):
    """Within Z_MAX standard errors, plus float32 rounding (for components an estimator
    computes exactly, whose standard error is rounding noise)."""
    mean = estimates.mean(0)
    se = estimates.std(0) / math.sqrt(estimates.shape[0])
    rounding = 1e-5 * (1 + exact.abs())
    z = (mean - exact).abs() / (se + rounding)
    assert bool((z < Z_MAX).all()), f"mean {mean}, exact {exact}, z {z}"


# -- a mixed model: a Gaussian mean and a plate of discrete indicators -----------------------


def log_normal_expect(x, m, s):
    """E_{mu ~ N(m, s^2)} log N(x | mu, 1)."""
    return -0.5 * math.log(2 * math.pi) - 0.5 * ((x - m) ** 2 + s**2)


def mixed_problem(kind, estimator, prior, shift, data, mu_estimator="auto"):
    """Model: mu ~ N(0, 1); per point, z ~ Bernoulli(prior) (or Categorical over 3 shifts);
    x ~ N(mu + shift * z, 1). Guide: mu ~ N(m, s) by ``mu_estimator``, z ~ q(z) by
    ``estimator``."""
    n = len(data)
    x = torch.tensor(data)
    values = torch.arange(2 if kind == "bernoulli" else 3, dtype=torch.float32)
    prior_probs = (torch.tensor([1 - prior, prior]) if kind == "bernoulli"
                   else torch.tensor([prior, (1 - prior) / 2, (1 - prior) / 2]))

    def site_z(probs_or_logits, q):
        if kind == "bernoulli":
            return Bernoulli(probs=probs_or_logits[..., 1]) if not q else Bernoulli(
                logits=probs_or_logits)
        return Categorical(probs=probs_or_logits) if not q else Categorical(logits=probs_or_logits)

    @model
    def m(x):
        mu = sample("mu", Normal(0.0, 1.0))
        with plate("data", n):
            z = sample("z", site_z(prior_probs, q=False))
            sample("x", Normal(mu + shift * z, 1.0), obs=x)

    logit_init = (torch.linspace(-0.5, 0.7, n) if kind == "bernoulli"
                  else torch.linspace(-0.5, 0.7, 3 * n).reshape(n, 3))

    @model
    def guide(x):
        loc = param("m", torch.tensor(0.3))
        scale = param("s", torch.tensor(0.7), constraints.positive)
        sample("mu", Normal(loc, scale), infer={"estimator": mu_estimator})
        with plate("data", n):
            sample("z", site_z(param("logits", logit_init), q=True),
                   infer={"estimator": estimator})

    def exact():
        from ppl.params import get_param

        loc, scale, logits = get_param("m"), get_param("s"), get_param("logits")
        if kind == "bernoulli":
            q1 = torch.sigmoid(logits)
            q = torch.stack([1 - q1, q1], -1)
        else:
            q = torch.softmax(logits, -1)
        # E_q[log p(z) - log q(z) + log p(x | mu, z)] per point, enumerated over z
        per_value = torch.log(prior_probs) - torch.log(q) + log_normal_expect(
            x[:, None], loc + shift * values, scale)
        entropy_mu = 0.5 * torch.log(2 * math.pi * math.e * scale**2)
        prior_mu = -0.5 * math.log(2 * math.pi) - 0.5 * (loc**2 + scale**2)
        return (q * per_value).sum() + entropy_mu + prior_mu

    return m, guide, (x,), exact


MIXED = dict(
    kind=st.sampled_from(["bernoulli", "categorical"]),
    estimator=st.sampled_from(["score", "enumerate"]),
    prior=st.floats(0.2, 0.8),
    shift=st.floats(-2.0, 2.0),
    data=st.lists(st.floats(-2.0, 2.0), min_size=1, max_size=3),
)


def check_mixed_problem(kind, estimator, prior, shift, data, batches, mu_estimator="auto"):
    from ppl import ParamStore

    with ParamStore() as store:
        m, guide, args, exact = mixed_problem(kind, estimator, prior, shift, data, mu_estimator)
        estimates, leaves = gradient_batches(ELBO(20), m, guide, args, store, batches)
        assert_unbiased(estimates, exact_gradient(exact, leaves))


@settings(max_examples=3, deadline=None, derandomize=True, phases=(Phase.generate,),
          suppress_health_check=[HealthCheck.too_slow])
@given(**MIXED)
def test_discrete_and_continuous_estimators_are_unbiased(kind, estimator, prior, shift, data):
    check_mixed_problem(kind, estimator, prior, shift, data, batches=20)


@pytest.mark.slow
@settings(max_examples=20, deadline=None, derandomize=True, phases=(Phase.generate,),
          suppress_health_check=[HealthCheck.too_slow])
@given(**MIXED)
def test_estimators_are_unbiased_on_many_mixed_models(kind, estimator, prior, shift, data):
    check_mixed_problem(kind, estimator, prior, shift, data, batches=60)


def test_enumeration_is_exact_for_discrete_only_guides(store):
    m, guide, args = plated_indicators(5)
    estimates, leaves = gradient_batches(ELBO(), m, _enumerated(guide), args, store, 2)
    (x,) = args

    def exact():
        q1 = torch.sigmoid(leaves[0])
        q = torch.stack([1 - q1, q1], -1)
        log_lik = torch.distributions.Normal(torch.tensor([-1.0, 1.0]), 1.0).log_prob(x[:, None])
        return (q * (math.log(0.5) + log_lik - torch.log(q))).sum()

    assert torch.equal(estimates[0], estimates[1])  # no randomness left
    assert torch.allclose(estimates[0], exact_gradient(exact, leaves), atol=1e-6)


# -- reparameterized and implicitly reparameterized families ---------------------------------


def gamma_poisson(estimator):
    counts = torch.tensor([3.0, 1.0, 4.0])

    @model
    def m(counts):
        rate = sample("rate", Gamma(2.0, 1.0))
        with plate("data", 3):
            sample("n", Poisson(rate), obs=counts)

    @model
    def guide(counts):
        a = param("a", torch.tensor(3.0), constraints.positive)
        b = param("b", torch.tensor(1.5), constraints.positive)
        sample("rate", Gamma(a, b), infer={"estimator": estimator})

    def exact():
        from ppl.params import get_param

        a, b = get_param("a"), get_param("b")
        e_log, e_rate = torch.digamma(a) - torch.log(b), a / b
        log_prior = 2.0 * math.log(1.0) - math.lgamma(2.0) + (2.0 - 1) * e_log - 1.0 * e_rate
        log_lik = (counts * e_log - e_rate - torch.lgamma(counts + 1)).sum()
        return log_prior + log_lik + torch.distributions.Gamma(a, b).entropy()

    return m, guide, (counts,), exact


def beta_binomial(estimator):
    @model
    def m(k):
        p = sample("p", Beta(2.0, 2.0))
        sample("k", Binomial(10, p), obs=k)

    @model
    def guide(k):
        a = param("a", torch.tensor(2.5), constraints.positive)
        b = param("b", torch.tensor(1.5), constraints.positive)
        sample("p", Beta(a, b), infer={"estimator": estimator})

    k = torch.tensor(7.0)

    def exact():
        from ppl.params import get_param

        a, b = get_param("a"), get_param("b")
        e_log_p = torch.digamma(a) - torch.digamma(a + b)
        e_log_q = torch.digamma(b) - torch.digamma(a + b)
        log_prior = math.log(6.0) + e_log_p + e_log_q  # Beta(2, 2) density is 6 p (1 - p)
        log_lik = (math.lgamma(11) - math.lgamma(8) - math.lgamma(4)
                   + k * e_log_p + (10 - k) * e_log_q)
        return log_prior + log_lik + torch.distributions.Beta(a, b).entropy()

    return m, guide, (k,), exact


def dirichlet_categorical(estimator):
    obs = torch.tensor([0, 2, 2, 1])

    @model
    def m(obs):
        p = sample("p", Dirichlet(torch.ones(3)))
        with plate("data", 4):
            sample("c", Categorical(p), obs=obs)

    @model
    def guide(obs):
        alpha = param("alpha", torch.tensor([1.5, 2.0, 3.0]), constraints.positive)
        sample("p", Dirichlet(alpha), infer={"estimator": estimator})

    def exact():
        from ppl.params import get_param

        alpha = get_param("alpha")
        e_log = torch.digamma(alpha) - torch.digamma(alpha.sum())
        log_prior = math.lgamma(3.0)  # Dirichlet(1, 1, 1) density is 2 on the simplex
        return log_prior + e_log[obs].sum() + torch.distributions.Dirichlet(alpha).entropy()

    return m, guide, (obs,), exact


@pytest.mark.parametrize("problem", [gamma_poisson, beta_binomial, dirichlet_categorical])
@pytest.mark.parametrize("estimator", ["reparam", "score"])
def test_implicit_reparameterization_and_score_are_unbiased(problem, estimator, store):
    m, guide, args, exact = problem(estimator)
    estimates, leaves = gradient_batches(ELBO(num_particles=20), m, guide, args, store, 20)
    assert_unbiased(estimates, exact_gradient(exact, leaves))


# -- Rao-Blackwellization -----------------------------------------------------------------------


def plated_indicators(n=12):
    x = torch.linspace(-2.0, 2.0, n)

    @model
    def m(x):
        with plate("data", n):
            z = sample("z", Bernoulli(0.5))
            sample("x", Normal(2.0 * z - 1.0, 1.0), obs=x)

    @model
    def guide(x):
        with plate("data", n):
            sample("z", Bernoulli(logits=param("logits", torch.zeros(n))),
                   infer={"estimator": "score", "baseline": None})

    return m, guide, (x,)


@expectation
def whole_elbo(model, guide, *args, num_particles=1):
    """The ELBO as one scalar: every score multiplies the whole value (no Rao-Blackwellization)."""
    zs = guide.sample(num_particles)
    return (model.log_density(zs, *args) - guide.log_density(zs)).total().mean()


def test_rao_blackwellization_along_a_plate_lowers_the_variance(store):
    m, guide, args = plated_indicators()
    rb, leaves = gradient_batches(ELBO(20), m, guide, args, store, 25)
    plain, _ = gradient_batches(whole_elbo.using(num_particles=20), m, guide, args, store, 25)
    # both unbiased for the same gradient ...
    diff = rb.mean(0) - plain.mean(0)
    se = (rb.var(0) / 25 + plain.var(0) / 25).sqrt()
    assert bool((diff.abs() < Z_MAX * se).all())
    # ... but each element's score sees only its own point's cost: variance ~ n times lower
    ratio = plain.var(0).mean() / rb.var(0).mean()
    assert ratio > 4.0, ratio


def test_dependencies_come_from_the_program_not_the_order(store):
    """A cost computed before a score site, or not from it, is not its downstream."""
    data = torch.tensor(0.5)

    @model
    def m(y):
        a = sample("a", Normal(0.0, 1.0))
        sample("y", Normal(a, 1.0), obs=y)
        sample("b", Bernoulli(0.5))

    @model
    def guide(y):
        sample("a", Normal(param("loc", torch.tensor(0.0)), 1.0))
        sample("b", Bernoulli(logits=param("logit", torch.tensor(0.0))),
               infer={"estimator": "score", "baseline": None})

    estimates, _ = gradient_batches(ELBO(), m, guide, (data,), store, 30)
    # At logit 0, b's own costs log p(b) - log q(b) are 0, so b's gradient is the pathwise
    # -d log q(b) / d logit = -(b - 1/2) = ±1/2 for every draw: a's costs (drawn at random)
    # never reach b's score
    assert torch.equal(estimates[:, 1].abs(), torch.full((30,), 0.5))


def test_a_running_baseline_keeps_the_estimate_unbiased(store):
    m, guide, args = plated_indicators(4)

    @model
    def guide_with_baseline(x):
        with plate("data", 4):
            sample("z", Bernoulli(logits=param("logits", torch.zeros(4))),
                   infer={"estimator": "score", "baseline": 0.8})

    objective = ELBO(10)
    estimates, leaves = gradient_batches(objective, m, guide_with_baseline, args, store, 30)
    # the exact gradient: the guide with z enumerated (no randomness left)
    exact_estimates, _ = gradient_batches(ELBO(), m, _enumerated(guide), args, store, 1)
    assert_unbiased(estimates, exact_estimates[0])
    assert set(objective.state_dict()["baselines"]) == {"z"}


def _enumerated(guide):
    """The guide with every site enumerated (exact ELBO gradient for discrete-only guides)."""
    from ppl.handlers import Messenger

    class Enumerate(Messenger):
        def process(self, msg):
            if msg.kind == "sample":
                msg.infer = {**msg.infer, "estimator": "enumerate"}

    return Enumerate()(guide)


# -- refusals ----------------------------------------------------------------------------------


def test_reparam_of_a_discrete_site_is_refused_by_name(store):
    m, guide, args = plated_indicators(3)

    @model
    def bad(x):
        with plate("data", 3):
            sample("z", Bernoulli(logits=param("logits", torch.zeros(3))),
                   infer={"estimator": "reparam"})

    with pytest.raises(ModelError, match="'z'.*Bernoulli has no rsample"):
        ELBO()(m, bad, *args)


def test_enumeration_inside_a_nonlinear_objective_is_refused(store):
    m, guide, args = plated_indicators(3)
    with pytest.raises(ModelError, match="'z' asks for exact enumeration"):
        from ppl.inference.vi import IWAE

        IWAE(4)(m, _enumerated(guide), *args)


def test_unknown_estimator_names_the_choices(store):
    m, _, args = plated_indicators(2)

    @model
    def bad(x):
        with plate("data", 2):
            sample("z", Bernoulli(logits=param("logits", torch.zeros(2))),
                   infer={"estimator": "magic"})

    with pytest.raises(ModelError, match="'z': unknown estimator 'magic'"):
        ELBO()(m, bad, *args)
