"""Library objectives on a conjugate Gaussian model with a known evidence: the ELBO's value
matches its closed form, IWAE rises with K and stays below log p(x) (and exp(IWAE) is an
unbiased estimate of p(x)), CUBO stays above it, the Rényi family is ordered in α, VIMCO
and the plain score-function IWAE estimate the same gradient, RWS's guide gradient is the
self-normalized wake-φ one; malformed programs are refused by name."""

import math

import pytest
import torch
from torch.distributions import constraints

from ppl import model, param, plate, sample
from ppl.errors import ModelError
from ppl.handlers import seed
from ppl.inference.vi import CUBO, ELBO, IWAE, RWS, VIMCO, RenyiELBO, expectation
from ppl.inference.vi.objectives import CIWAE, MIWAE
from ppl.stdlib import Categorical, Normal

X = torch.tensor([0.8, 1.5, -0.2])
POST_VAR = 1.0 / (1.0 + len(X))
POST_MEAN = POST_VAR * float(X.sum())
LOG_Z = float(torch.distributions.MultivariateNormal(
    torch.zeros(3), torch.eye(3) + torch.ones(3, 3)).log_prob(X))


@model
def gaussian(x):
    z = sample("z", Normal(0.0, 1.0))
    with plate("data", len(x)):
        sample("x", Normal(z, 1.0), obs=x)


def gaussian_guide(loc, scale):
    @model
    def guide(x):
        sample("z", Normal(param("loc", torch.tensor(loc)),
                           param("scale", torch.tensor(scale), constraints.positive)))
    return guide


def exact_elbo(loc, scale):
    e_log_lik = sum(-0.5 * math.log(2 * math.pi) - 0.5 * ((float(x) - loc) ** 2 + scale**2)
                    for x in X)
    e_log_prior = -0.5 * math.log(2 * math.pi) - 0.5 * (loc**2 + scale**2)
    return e_log_lik + e_log_prior + 0.5 * math.log(2 * math.pi * math.e * scale**2)


captured: dict[str, torch.Tensor] = {}


@expectation
def grouped(model, guide, *args, num_particles=1, groups=1, power=1.0):
    """``groups`` independent estimates (1/p) log mean_k w_k^p, kept for the test."""
    zs = guide.sample(num_particles * groups)
    log_w = (model.log_density(zs, *args) - guide.log_density(zs)).total()
    scaled = power * log_w.reshape(groups, num_particles)
    captured["bounds"] = (torch.logsumexp(scaled, 1) - math.log(num_particles)).detach() / power
    return captured["bounds"].mean()


def test_elbo_value_matches_its_closed_form():
    loc, scale = POST_MEAN + 0.4, 0.3
    grouped.using(num_particles=1, groups=4000)(gaussian, gaussian_guide(loc, scale), X)
    values = captured["bounds"]
    se = values.std() / math.sqrt(len(values))
    assert abs(float(values.mean()) - exact_elbo(loc, scale)) < 4 * float(se)
    assert exact_elbo(loc, scale) < LOG_Z


def test_iwae_rises_with_k_and_stays_below_the_evidence():
    guide = gaussian_guide(POST_MEAN + 0.8, 0.7)  # wider than the posterior: finite Var(w)
    means, ses = [], []
    for k in (1, 4, 16):
        grouped.using(num_particles=k, groups=400)(gaussian, guide, X)
        b = captured["bounds"]
        means.append(float(b.mean()))
        ses.append(float(b.std()) / math.sqrt(len(b)))
        # E[exp(IWAE_K)] = p(x): the evidence estimate itself is unbiased
        ratio = torch.exp(b - LOG_Z)
        assert abs(float(ratio.mean()) - 1) < 3 * float(ratio.std()) / math.sqrt(len(b))
    for i in range(len(means) - 1):
        assert means[i + 1] - means[i] > 3 * math.hypot(ses[i], ses[i + 1]), means
    # E[IWAE_K] <= log p(x) (Jensen): never significantly above it
    assert all(m < LOG_Z + 3 * s for m, s in zip(means, ses, strict=True)), (means, LOG_Z)


def chi2_integral(loc, scale):
    """∫ π(z)² / q(z) dz for the exact posterior π and q = N(loc, scale²), by quadrature."""
    z = torch.linspace(-10.0, 10.0, 200_001, dtype=torch.float64)
    post = torch.distributions.Normal(POST_MEAN, math.sqrt(POST_VAR))
    q = torch.distributions.Normal(loc, scale)
    return float(torch.trapezoid(torch.exp(2 * post.log_prob(z) - q.log_prob(z)), z))


def test_cubo_stays_above_the_evidence_and_its_moment_is_unbiased():
    loc, scale = POST_MEAN - 0.3, 0.7  # wider than the posterior, so E_q[w^2] is finite
    exact_cubo = LOG_Z + 0.5 * math.log(chi2_integral(loc, scale))
    assert exact_cubo > LOG_Z
    guide = gaussian_guide(loc, scale)
    grouped.using(num_particles=1, groups=20000, power=2.0)(gaussian, guide, X)
    moment = torch.exp(2 * (captured["bounds"] - exact_cubo))  # w^2 / E_q[w^2]
    assert abs(float(moment.mean()) - 1) < 3 * float(moment.std()) / math.sqrt(len(moment))
    estimate = float(CUBO(num_particles=20000)(gaussian, guide, X).value)
    assert estimate > LOG_Z
    assert not CUBO().maximize


def test_renyi_bounds_are_ordered_in_alpha_on_the_same_draws():
    guide = gaussian_guide(POST_MEAN + 0.5, 0.4)
    values = {}
    for name, objective in [("iwae", IWAE(32)), ("renyi", RenyiELBO(32, alpha=0.5)),
                            ("miwae", MIWAE(32, 1)), ("ciwae", CIWAE(32, beta=0.5)),
                            ("elbo", grouped.using(num_particles=1, groups=32))]:
        with seed(7):
            values[name] = float(objective(gaussian, guide, X).value)
    assert values["iwae"] >= values["renyi"] >= values["elbo"]
    assert values["miwae"] == pytest.approx(values["iwae"])
    assert values["ciwae"] == pytest.approx((values["iwae"] + values["elbo"]) / 2, rel=1e-5)


# -- score-function objectives: VIMCO and RWS --------------------------------------------------


@model
def cluster(x):
    c = sample("c", Categorical(torch.tensor([0.2, 0.5, 0.3])))
    sample("x", Normal(torch.tensor([-2.0, 0.0, 2.0])[c], 1.0), obs=x)


@model
def cluster_guide(x):
    sample("c", Categorical(logits=param("logits", torch.tensor([0.3, -0.2, 0.1]))))


def gradients(objective, calls):
    cluster_guide(torch.tensor(1.0))
    from ppl.params import unconstrained_params

    (leaf,) = unconstrained_params().values()
    return torch.stack([torch.autograd.grad(objective(cluster, cluster_guide,
                                                      torch.tensor(1.0)).surrogate, leaf)[0]
                        for _ in range(calls)])


def test_vimco_and_plain_score_iwae_estimate_the_same_gradient_vimco_with_less_noise():
    vimco = gradients(VIMCO(6), 60)
    plain = gradients(IWAE(6), 60)
    se = (vimco.var(0) / 60 + plain.var(0) / 60).sqrt()
    assert bool(((vimco.mean(0) - plain.mean(0)).abs() < 4.5 * se).all())
    assert float(vimco.var(0).sum()) < float(plain.var(0).sum())


def test_rws_reports_iwae_and_moves_the_guide_towards_the_posterior(store):
    loc, scale = POST_MEAN + 0.5, 0.6
    guide = gaussian_guide(loc, scale)
    with seed(3):
        rws = RWS(16)(gaussian, guide, X)
    with seed(3):
        iwae = IWAE(16)(gaussian, guide, X)
    assert float(rws.value) == pytest.approx(float(iwae.value), rel=1e-6)
    leaf = store.unconstrained()["loc"]
    # wake-φ: Σ w̄_k ∇ log q(z_k) -> E_posterior[(z - loc) / scale²] as K grows
    grads = torch.stack([torch.autograd.grad(RWS(2000)(gaussian, guide, X).surrogate, leaf)[0]
                         for _ in range(10)])
    expected = (POST_MEAN - loc) / scale**2
    assert abs(float(grads.mean()) - expected) < 4 * float(grads.std()) / math.sqrt(10) + 0.02


# -- malformed programs -------------------------------------------------------------------------


def test_a_program_returning_per_particle_values_is_refused():
    @expectation
    def per_particle(model, guide, *args, num_particles=4):
        zs = guide.sample(num_particles)
        return (model.log_density(zs, *args) - guide.log_density(zs)).total()

    with pytest.raises(ModelError, match=r"per_particle: the program's value has shape \(4,\)"):
        per_particle(gaussian, gaussian_guide(0.0, 1.0), X)


def test_options_are_checked_by_name():
    with pytest.raises(TypeError, match="elbo has no options \\['particles'\\]"):
        ELBO().using(particles=3)


def test_terms_of_different_draws_do_not_combine_termwise():
    @expectation
    def mixed(model, guide, *args):
        a, b = guide.sample(2), guide.sample(2)
        return (model.log_density(a, *args) - guide.log_density(b)).mean()

    with pytest.raises(ModelError, match="different guide draws"):
        mixed(gaussian, gaussian_guide(0.0, 1.0), X)


def test_a_guide_missing_a_latent_site_is_named():
    @model
    def empty(x):
        param("unused", torch.tensor(0.0))

    with pytest.raises(ModelError, match=r"does not propose the model's latent sites \['z'\]"):
        ELBO()(gaussian, empty, X)
