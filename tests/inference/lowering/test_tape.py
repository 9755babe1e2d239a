"""The generated potential equals the autograd reference: log density and gradient, at random
positions, for chosen models covering every rule and for hypothesis-generated models."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppl import deterministic, factor, model, plate, sample
from ppl.inference import FastPathWarning
from ppl.inference.lowering.flat import FlatModel
from ppl.inference.lowering.native import compiler_available
from ppl.inference.lowering.tape import Unsupported
from ppl.registry import families
from ppl.stdlib import (
    Bernoulli,
    Beta,
    Binomial,
    Categorical,
    Cauchy,
    Dirichlet,
    Exponential,
    Gamma,
    HalfCauchy,
    HalfNormal,
    ImproperUniform,
    InverseGamma,
    Laplace,
    LogNormal,
    MultivariateNormal,
    Normal,
    Poisson,
    StudentT,
    Uniform,
    constraints,
)
from ppl.stdlib.examples import example_distributions, example_value, shifted

torch.manual_seed(0)
X = torch.randn(30, 4)
Y_BIN = (torch.rand(30) < 0.5).float()
GROUP = torch.randint(0, 5, (30,))
Y = torch.randn(30)
COUNTS = torch.poisson(torch.full((30,), 3.0))


@model
def eight_schools(sigma, y):
    mu = sample("mu", Normal(0.0, 5.0))
    tau = sample("tau", HalfCauchy(5.0))
    with plate("J", 8):
        z = sample("z", Normal(0.0, 1.0))
        theta = deterministic("theta", mu + tau * z)
        sample("y", Normal(theta, sigma), obs=y)


@model
def logistic(x, y):
    w = sample("w", Normal(torch.zeros(4), 1.0).to_event(1))
    b = sample("b", Normal(0.0, 1.0))
    with plate("N", 30):
        sample("y", Bernoulli(logits=x @ w + b), obs=y)


@model
def varying_intercept(group, x, y):
    mu = sample("mu", Normal(0.0, 1.0))
    sd = sample("sd", HalfNormal(1.0))
    slope = sample("slope", StudentT(3.0, 0.0, 1.0))
    with plate("G", 5):
        a = sample("a", Normal(mu, sd))
    noise = sample("noise", Exponential(1.0))
    with plate("N", 30):
        sample("y", Normal(a[group] + slope * x[:, 0], noise), obs=y)


@model
def ar2(y):
    coefs = sample("coefs", Normal(torch.zeros(2), 1.0).to_event(1))
    sigma = sample("sigma", InverseGamma(3.0, 2.0))
    mean = coefs[0] * y[1:-1] + coefs[1] * y[:-2]
    with plate("T", 28):
        sample("y", Normal(mean, sigma), obs=y[2:])


@model
def mixture_marginal(y):
    locs = sample("locs", Normal(torch.tensor([-1.0, 1.0]), 2.0).to_event(1))
    weight = sample("weight", Beta(2.0, 2.0))
    log_w = torch.log(torch.stack([weight, 1 - weight]))
    comps = Normal(locs, 1.0).log_prob(y[:, None]) + log_w
    factor("lik", torch.logsumexp(comps, -1).sum())


@model
def counts_and_shapes(counts):
    rate = sample("rate", Gamma(2.0, 1.0))
    scale = sample("scale", LogNormal(0.0, 0.5))
    p = sample("p", Uniform(0.1, 0.9))
    level = sample("level", Laplace(0.0, 2.0))
    walk = sample("walk", Cauchy(0.0, 1.0).expand([3]).to_event(1))
    path = torch.cumsum(torch.cat([walk, level.unsqueeze(0)]), 0)
    with plate("N", 30):
        sample("c", Poisson(rate * scale), obs=counts)
        sample("k", Binomial(10, probs=p), obs=torch.clamp(counts, max=10))
    factor("path", -0.5 * (path**2).sum() + torch.sigmoid(path).log().sum())


@model
def categorical_logits(y):
    logits = sample("logits", Normal(torch.zeros(3), 1.0).to_event(1))
    with plate("N", 30):
        sample("y", Categorical(logits=logits), obs=y)


@model
def mvn(y):
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    x = sample("x", MultivariateNormal(torch.zeros(2), covariance_matrix=cov))
    flat = sample("flat", ImproperUniform(constraints.positive, (), ()))
    sample("y", Normal(x.sum() * flat, 1.0), obs=y)
    sample("flat_obs", Normal(flat, 1.0), obs=torch.tensor(1.0))


@model
def random_bounds():
    low = sample("low", Normal(0.0, 1.0))
    sample("x", Uniform(low, low + 2.0))


@model
def matrix_ops(x):
    w = sample("w", Normal(torch.zeros(4, 2), 1.0).to_event(2))
    hidden = torch.tanh(x @ w)
    out = hidden.sum(-1).mean() + (w.T @ w).sum() + torch.softmax(w, -1)[0, 1]
    factor("f", -out * out)


@model
def ordered_and_simplex(y):
    cuts = sample("cuts", ImproperUniform(constraints.ordered, (2,), (3,)))
    scales = sample("scales", ImproperUniform(constraints.positive_ordered, (), (4,)))
    conc = sample("conc", Gamma(2.0, 1.0).expand([3]).to_event(1))
    probs = sample("probs", Dirichlet(torch.stack([conc, 2.0 * conc])))  # batched simplex
    weights = sample("weights", Dirichlet(torch.tensor([1.5, 2.0, 3.0, 0.5])))
    flat = sample("flat", Dirichlet(torch.ones(3)))
    sample("y", Normal(cuts[:, 1:] - cuts[:, :-1], scales[:2]), obs=y)
    mix = torch.log(probs) + torch.log(flat) + (weights[:3] * scales[1:]).sum()
    factor("f", -0.5 * (cuts**2).sum() - scales.sum() + torch.logsumexp(mix, -1).sum())


@model
def log_recursion(x):
    a = sample("a", Normal(torch.zeros(2, 5), 1.0).to_event(2))
    beta = sample("beta", Uniform(0.0, 1.0))
    # garch11's variance recursion: v[t] = c[t] + beta v[t-1] as a logcumsumexp, with terms
    # large enough that exp(x) or exp(-out) would overflow
    t_log_beta = torch.arange(5, dtype=torch.float64) * torch.log(beta) * 300.0
    log_v = t_log_beta + torch.logcumsumexp(a - t_log_beta, dim=-1)
    factor("f", (log_v * x).sum() + torch.logcumsumexp(a, 0).sum())


@model
def gp_cholesky(x, y):
    rho = sample("rho", Gamma(4.0, 2.0))
    alpha = sample("alpha", HalfNormal(1.0))
    eta = sample("eta", Normal(torch.zeros(5), 1.0).to_event(1))
    cov = alpha**2 * torch.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * rho**2))
    chol, info = torch.linalg.cholesky_ex(cov + 0.1 * torch.eye(5))
    chol = torch.where(info == 0, chol, torch.nan)
    upper = torch.linalg.cholesky(cov + torch.eye(5), upper=True)
    w = torch.linalg.solve_triangular(chol, y[:, None], upper=False)
    v = torch.linalg.solve_triangular(upper, chol, upper=True, left=False)
    sample("y", Normal(chol @ eta, 1.0), obs=y)
    log_diag = torch.log(chol[range(5), range(5)])
    factor("f", -0.5 * (w**2).sum() - log_diag.sum() + (v * v.T).sum() + eta @ upper @ eta)


CASES = {
    "eight_schools": (
        eight_schools,
        (
            torch.tensor([15.0, 10, 16, 11, 9, 11, 10, 18]),
            torch.tensor([28.0, 8, -3, 7, -1, 1, 18, 12]),
        ),
    ),
    "logistic": (logistic, (X, Y_BIN)),
    "varying_intercept": (varying_intercept, (GROUP, X, Y)),
    "ar2": (ar2, (Y,)),
    "mixture_marginal": (mixture_marginal, (Y,)),
    "counts_and_shapes": (counts_and_shapes, (COUNTS,)),
    "categorical_logits": (categorical_logits, (GROUP % 3,)),
    "mvn": (mvn, (torch.tensor(0.5),)),
    "matrix_ops": (matrix_ops, (X,)),
    "ordered_and_simplex": (ordered_and_simplex, (torch.tensor([[0.5, 1.0], [2.0, 0.3]]),)),
    "log_recursion": (log_recursion, (Y[:10].reshape(2, 5),)),
    "gp_cholesky": (gp_cholesky, (torch.linspace(-2.0, 2.0, 5), Y[:5])),
}


def assert_same_potential(flat: FlatModel, chains: int = 3, seed: int = 0) -> None:
    z = torch.randn(
        chains, flat.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    log_p, grad = flat.log_density_and_grad(z)
    ref_log_p, ref_grad = flat.autograd_log_density_and_grad(z)
    assert log_p.shape == (chains,) and grad.shape == (chains, flat.dim)
    torch.testing.assert_close(log_p, ref_log_p, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-6)


# Both emitters of the tape: straight-line torch, and C (when the machine has a compiler).
BACKENDS = ["generated", pytest.param("native", marks=pytest.mark.skipif(
    not compiler_available(), reason="no C compiler on this machine"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_generated_matches_autograd(name, backend):
    m, args = CASES[name]
    flat = FlatModel.from_graph(m.graph(*args), backend=backend)
    assert flat.backend == backend
    for chains, seed in ((1, 0), (4, 1)):
        assert_same_potential(flat, chains, seed)


def test_generated_code_is_straight_line():
    m, args = CASES["eight_schools"]
    source = FlatModel.from_graph(m.graph(*args))._generated.source
    assert "for " not in source and "backward" not in source and "log_prob" not in source


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_with_random_bounds_is_generated(backend):
    flat = FlatModel.from_graph(random_bounds.graph(), backend=backend)
    assert flat.backend == backend
    assert_same_potential(flat)


@pytest.mark.parametrize("backend", BACKENDS)
def test_failed_cholesky_is_nan_not_an_error(backend):
    @model
    def correlated():
        r = sample("r", Normal(0.0, 0.1))  # the tracer's prior draw must factorize
        cov = torch.eye(2) + r * torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        factor("f", torch.log(torch.linalg.cholesky(cov)[1, 1]))

    flat = FlatModel.from_graph(correlated.graph(), backend=backend)
    log_p, grad = flat.log_density_and_grad(torch.tensor([[0.5], [2.0]], dtype=torch.float64))
    assert log_p[0].isfinite() and grad[0].isfinite().all()
    assert log_p[1].isnan()


def test_unsupported_operation_names_itself_and_falls_back():
    @model
    def floored():
        x = sample("x", Normal(0.0, 1.0))
        factor("f", torch.floor(x))

    with pytest.warns(FastPathWarning, match="floor.*autograd path, typically 10 to 50 times"):
        flat = FlatModel.from_graph(floored.graph())
    assert flat.backend == "autograd" and "floor" in flat.fallback_reason
    with pytest.raises(Unsupported, match="floor"):
        FlatModel.from_graph(floored.graph(), backend="generated")


# -- random models ------------------------------------------------------------------------------

CONTINUOUS = ["Normal", "Gamma", "Beta", "HalfCauchy", "StudentT"]


@st.composite
def model_specs(draw):
    sites = []
    for i in range(draw(st.integers(1, 5))):
        observed = draw(st.booleans())
        family = draw(st.sampled_from(CONTINUOUS + (["Bernoulli", "Poisson"] if observed else [])))
        parents = draw(st.lists(st.sampled_from(range(i)), max_size=2, unique=True)) if i else []
        sites.append(
            {
                "name": f"s{i}",
                "family": family,
                "parents": parents,
                "observed": observed,
                "plate": draw(st.sampled_from([None, 2, 3])),
            }
        )
    return sites


RANDOM_FAMILIES = {
    "Normal": lambda signal: Normal(signal, 1.5),
    "Gamma": lambda signal: Gamma(torch.exp(0.1 * signal) + 0.5, 1.0),
    "Beta": lambda signal: Beta(torch.sigmoid(signal) + 0.5, 1.5),
    "HalfCauchy": lambda signal: HalfCauchy(torch.nn.functional.softplus(signal) + 0.1),
    "StudentT": lambda signal: StudentT(4.0, signal, 2.0),
    "Bernoulli": lambda signal: Bernoulli(logits=signal),
    "Poisson": lambda signal: Poisson(torch.exp(0.2 * signal)),
}


def spec_model(sites, data):
    """Parents enter each site's parameters through their means, by smooth maps."""

    @model
    def random_model():
        values = {}
        for site in sites:
            signal = sum(
                (values[sites[j]["name"]].mean() for j in site["parents"]), torch.tensor(0.0)
            )
            dist = RANDOM_FAMILIES[site["family"]](signal)
            obs = data.get(site["name"])
            if site["plate"] is None:
                values[site["name"]] = sample(site["name"], dist, obs=obs)
            else:
                with plate(f"p{site['name']}", site["plate"]):
                    values[site["name"]] = sample(site["name"], dist, obs=obs)

    return random_model


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_specs(), st.integers(0, 2**16))
def test_random_models_generated_matches_autograd(backend, sites, seed):
    prior = spec_model([{**s, "observed": False} for s in sites], {}).sample(seed=seed)
    data = {s["name"]: prior[s["name"]] for s in sites if s["observed"]}
    graph = spec_model(sites, data).graph()
    if not graph.latent_nodes:
        return
    flat = FlatModel.from_graph(graph, backend=backend)
    assert flat.backend == backend
    assert_same_potential(flat, chains=2, seed=seed)


# -- every registered family with a tape rule, with its parameters depending on a latent --------

# parameters a rule accepts only as constants (a batched covariance is refused), or whose
# random value could leave the observed value outside the support
CONSTANT_PARAMETERS = {
    "MultivariateNormal": ("covariance_matrix", "precision_matrix", "scale_tril"),
    "Delta": ("v",),  # the observed value is ``v`` itself: a finite log density
    "Pareto": ("scale",),
    "Uniform": ("low", "high"),
    "TruncatedNormal": ("low", "high"),
}
# families whose constructors cannot be traced with random parameters (torch validates an
# inner distribution, adds in place, or the logits need a batched ``where``): a latent site
# with constant parameters exercises their rule
UNTRACEABLE_WITH_RANDOM_PARAMETERS = {
    "LKJCholesky", "LowRankMultivariateNormal", "RelaxedBernoulli", "RelaxedOneHotCategorical",
    "Wishart",  # its constructor checks ``df > dim - 1``
}
# ... and those that cannot be a latent either (discrete, or without a sampler): their rules
# are checked on constants only (tests/inference/lowering/test_rule_coverage.py)
CHECKED_ON_CONSTANTS = {"ImproperUniform", "Multinomial", "OneHotCategorical", "OrderedLogistic"}
RULED_EXAMPLES = [
    pytest.param(name, i, id=f"{name}-{i}")
    for name, family in sorted(families().items())
    if family.log_density is not None and name not in CHECKED_ON_CONSTANTS
    for i in range(len(example_distributions()[name]))
]


def _has_tensor_bounds(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return any(isinstance(getattr(support, a, None), torch.Tensor)
               for a in ("lower_bound", "upper_bound"))


@pytest.fixture
def float64_examples():
    """Examples built in float64, so that both paths compute the parameters alike."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)


def autograd_chain_by_chain(flat: FlatModel, z: torch.Tensor):
    """The autograd path's log density and gradient, one chain at a time (torch's Geometric
    indexes with a mask, which ``vmap`` refuses)."""
    log_ps, grads = [], []
    for row in z:
        row = row.detach().requires_grad_(True)
        log_p = flat.log_density_fn(row)
        log_ps.append(log_p.detach())
        grads.append(torch.autograd.grad(log_p, row)[0])
    return torch.stack(log_ps), torch.stack(grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, index", RULED_EXAMPLES)
def test_every_family_rule_matches_autograd(name, index, backend, float64_examples):
    """A latent and an observed site of the family, its parameters shifted by another latent:
    the generated log density and gradient are the autograd path's."""
    torch.manual_seed(index)
    dist = example_distributions()[name][index]
    fixed = CONSTANT_PARAMETERS.get(name, ())
    random = name not in UNTRACEABLE_WITH_RANDOM_PARAMETERS
    observed = example_value(dist)
    latent = not dist.support.is_discrete and name != "Delta"  # without rsample too
    # a latent whose support is bounded by its parameters keeps them constant
    latent_shifts = random and not _has_tensor_bounds(dist.support)

    @model
    def m():
        shift = sample("shift", Normal(0.0, 0.5))
        if latent:
            sample("latent", shifted(dist, shift, fixed) if latent_shifts else dist)
        sample("observed", shifted(dist, shift, fixed) if random else dist, obs=observed)

    flat = FlatModel.from_graph(m.graph(), backend=backend)
    assert flat.backend == backend
    z = torch.randn(3, flat.dim, generator=torch.Generator().manual_seed(index),
                    dtype=torch.float64)
    log_p, grad = flat.log_density_and_grad(z)
    ref_log_p, ref_grad = autograd_chain_by_chain(flat, z)
    torch.testing.assert_close(log_p, ref_log_p, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-6)
