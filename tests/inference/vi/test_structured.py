"""AutoStructured: guide parents from the graph (moralized), and on a linear-Gaussian chain
x1 → x2 → x3 (each observed) a family that contains the exact posterior: at the exact
params every importance weight is p(y), and VI reaches the exact mean, covariance and
log p(y)."""

import pytest
import torch

from ppl import infer, model, plate, sample
from ppl.errors import ModelError
from ppl.inference import Importance
from ppl.inference.vi import ELBO, VI, AutoStructured
from ppl.params import current_store
from ppl.stdlib import Normal

Y = torch.tensor([0.9, -0.4, 1.7], dtype=torch.float64)
COEF, STEP_SD, NOISE = 0.8, 0.7, 0.5


@model
def chain(y):
    x1 = sample("x1", Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    x2 = sample("x2", Normal(COEF * x1, STEP_SD))
    x3 = sample("x3", Normal(COEF * x2, STEP_SD))
    for i, x in enumerate((x1, x2, x3)):
        sample(f"y{i + 1}", Normal(x, NOISE), obs=y[i])


def exact_chain_posterior():
    """x = A ε with the chain's lower-triangular A; y = x + noise: Gaussian conditioning."""
    a = torch.zeros(3, 3, dtype=torch.float64)
    a[0, 0] = 1.0
    for i in (1, 2):
        a[i] = COEF * a[i - 1]
        a[i, i] = STEP_SD
    prior = a @ a.T
    marginal = prior + NOISE**2 * torch.eye(3, dtype=torch.float64)
    gain = prior @ torch.linalg.inv(marginal)
    mean, cov = gain @ Y, prior - gain @ prior
    log_z = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64),
                                                   marginal).log_prob(Y)
    return mean, cov, float(log_z)


POST_MEAN, POST_COV, LOG_Z = exact_chain_posterior()


def test_parents_follow_the_chain_and_link_parents_of_a_common_child():
    guide = AutoStructured(chain)
    guide.setup(Y)
    assert guide.parents == {"x1": (), "x2": ("x1",), "x3": ("x2",)}

    @model
    def collider(y):
        a = sample("a", Normal(0.0, 1.0))
        b = sample("b", Normal(0.0, 1.0))
        c = sample("c", Normal(0.0, 1.0))
        sample("y", Normal(a + b, 1.0), obs=y)
        return c

    guide = AutoStructured(collider)
    guide.setup(torch.tensor(0.3))
    assert guide.parents == {"a": (), "b": ("a",), "c": ()}


def _set_exact_params(store) -> None:
    """u = loc + W u + s ε with s = diag(L), W = I - diag(s) L⁻¹ (L the posterior Cholesky
    factor; L⁻¹ is bidiagonal for a chain, so W only has the chain's edges)."""
    chol = torch.linalg.cholesky(POST_COV)
    s = chol.diagonal()
    w = torch.eye(3, dtype=torch.float64) - torch.diag(s) @ torch.linalg.inv(chol)
    assert torch.allclose(w.tril(-2), torch.zeros(3, 3, dtype=torch.float64), atol=1e-12)
    leaves = store.unconstrained()
    with torch.no_grad():
        leaves["auto.loc"].copy_((torch.eye(3, dtype=torch.float64) - w) @ POST_MEAN)
        leaves["auto.scale"].copy_(s.log())
        leaves["auto.x2.x1.weight"].copy_(w[1:2, 0:1])
        leaves["auto.x3.x2.weight"].copy_(w[2:3, 1:2])


def test_at_the_exact_params_every_importance_weight_is_the_evidence():
    torch.set_default_dtype(torch.float64)
    try:
        guide = AutoStructured(chain)
        guide(Y)
        store = current_store()
        assert sorted(store) == ["auto.loc", "auto.scale", "auto.x2.x1.weight",
                                 "auto.x3.x2.weight"]
        _set_exact_params(store)
        post = infer(chain, Y, method=Importance(500, guide=guide), seed=0)
    finally:
        torch.set_default_dtype(torch.float32)
    assert torch.allclose(post.log_weights, torch.full((500,), LOG_Z, dtype=torch.float64),
                          atol=1e-9)


@pytest.mark.slow
def test_vi_reaches_the_exact_posterior_and_the_evidence():
    torch.set_default_dtype(torch.float64)
    try:
        schedule = lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, 0.998)  # noqa: E731
        res = infer(chain, Y, seed=0, method=VI(
            AutoStructured(chain), objective=ELBO(16), steps=1500, lr=0.05,
            lr_schedule=schedule, num_samples=20000, evaluations=20))
    finally:
        torch.set_default_dtype(torch.float32)
    x = torch.stack([res.samples[k] for k in ("x1", "x2", "x3")], -1)
    sd = POST_COV.diagonal().sqrt()
    # 20000 draws: a mean's standard error is sd/141; the rest is optimization error
    assert torch.allclose(x.mean(0), POST_MEAN, atol=float(0.05 * sd.max()))
    assert torch.allclose(torch.cov(x.T), POST_COV, atol=0.05 * float(POST_COV.diag().max()))
    # ELBO <= log p(y), with equality at the exact posterior (then every log weight is log Z)
    gap = LOG_Z - float(res.log_evidence_bound)
    se = float(res.log_evidence_bound_se)
    assert -3 * se < gap < 0.01 + 3 * se


def test_plated_sites_get_one_weight_block_per_edge_and_run_vectorized(store):
    @model
    def hierarchical(y):
        mu = sample("mu", Normal(0.0, 5.0))
        with plate("groups", len(y)):
            theta = sample("theta", Normal(mu, 1.0))
            sample("y", Normal(theta, 0.5), obs=y)

    y = torch.tensor([1.0, 2.0, 0.5, -0.3])
    guide = AutoStructured(hierarchical)
    out = ELBO(5)(hierarchical, guide, y)
    assert out.surrogate.requires_grad
    assert guide.parents == {"mu": (), "theta": ("mu",)}
    assert store.unconstrained()["auto.theta.mu.weight"].shape == (4, 1)
    post = infer(hierarchical, y, method=Importance(7, guide=guide), seed=0)
    assert post.samples["theta"].shape == (7, 4)


def test_a_dynamic_model_is_refused_with_the_reason():
    @model
    def branching():
        z = sample("z", Normal(0.0, 1.0))
        if z > 0:
            sample("w", Normal(0.0, 1.0))

    with pytest.raises(ModelError, match="AutoStructured reads the dependencies"):
        AutoStructured(branching).setup()
