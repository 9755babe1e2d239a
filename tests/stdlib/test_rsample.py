"""rsample gradients: the Monte Carlo gradient of E[f(x)] matches the analytic one.

Each parameter is given as a batch of N equal copies, so one rsample gives N independent
per-sample gradients; their mean must match d/dp of the closed-form moment within 5
standard errors.
"""

import math

import pytest
import torch

import ppl.stdlib as D
from ppl.registry import family_of
from ppl.stdlib.examples import example_distributions

N = 20_000
COV = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]], dtype=torch.float64)
W = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)


def square(x):
    return x * x


def second_moment(d):
    return d.variance + d.mean * d.mean


def _vec(p, *rest):
    return torch.stack([p, *[torch.full_like(p, r) for r in rest]], -1)


def _projected_square(x):
    return (x @ W) ** 2


def _projected_moment(d):
    return W @ d.covariance_matrix @ W + (d.mean @ W) ** 2


# name -> (builder from a parameter tensor, parameter value, f, E f as a function of d)
CASES = {
    "Normal.loc": (lambda p: D.Normal(p, 2.0), 0.5),
    "Normal.scale": (lambda p: D.Normal(0.5, p), 2.0),
    "LogNormal.scale": (lambda p: D.LogNormal(0.1, p), 0.4),
    "HalfNormal.scale": (lambda p: D.HalfNormal(p), 1.5),
    "StudentT.df": (lambda p: D.StudentT(p, 0.0, 1.0), 9.0),
    "StudentT.scale": (lambda p: D.StudentT(7.0, 1.0, p), 2.0),
    "Laplace.scale": (lambda p: D.Laplace(0.3, p), 1.2),
    "Gumbel.loc": (lambda p: D.Gumbel(p, 2.0), -0.5),
    "Exponential.rate": (lambda p: D.Exponential(p), 2.0),
    "Gamma.concentration": (lambda p: D.Gamma(p, 2.0), 0.8),
    "Gamma.rate": (lambda p: D.Gamma(3.0, p), 1.5),
    "InverseGamma.concentration": (lambda p: D.InverseGamma(p, 2.0), 6.0),
    "Chi2.df": (lambda p: D.Chi2(p), 3.0),
    "Beta.concentration1": (lambda p: D.Beta(p, 2.0), 1.5),
    "Beta.concentration0": (lambda p: D.Beta(2.0, p), 0.7),
    "Uniform.high": (lambda p: D.Uniform(-1.0, p), 2.0),
    "Weibull.concentration": (lambda p: D.Weibull(1.5, p), 2.0),
    "Pareto.alpha": (lambda p: D.Pareto(1.0, p), 6.0),
    "TruncatedNormal.loc": (lambda p: D.TruncatedNormal(p, 1.0, -1.0, 2.0), 0.3),
    "TruncatedNormal.scale": (lambda p: D.TruncatedNormal(0.0, p, -1.0, 2.0), 1.5),
    "TruncatedNormal.low": (lambda p: D.TruncatedNormal(0.0, 1.0, p, 2.0), -0.5),
    "TruncatedNormal.high-tail": (lambda p: D.TruncatedNormal(0.0, 1.0, -math.inf, p), -3.0),
    "Delta.v": (lambda p: D.Delta(p), 2.0),
    "Dirichlet.concentration": (
        lambda p: D.Dirichlet(_vec(p, 1.0, 2.0)), 1.5,
        lambda x: x[..., 0] ** 2, lambda d: second_moment(d)[..., 0],
    ),
    "MultivariateNormal.loc": (
        lambda p: D.MultivariateNormal(_vec(p, 0.0, 1.0), COV), 0.5,
        _projected_square, _projected_moment,
    ),
    "MultivariateNormal.scale_tril": (
        lambda p: D.MultivariateNormal(
            torch.zeros(3, dtype=torch.float64),
            scale_tril=torch.linalg.cholesky(COV) * p[..., None, None],
        ),
        1.3, _projected_square, _projected_moment,
    ),
    "LowRankMultivariateNormal.cov_diag": (
        lambda p: D.LowRankMultivariateNormal(
            torch.ones(3, dtype=torch.float64), COV[:, :2], _vec(p, 1.0, 0.5)
        ),
        0.8, _projected_square, _projected_moment,
    ),
    "Wishart.df": (
        lambda p: D.Wishart(p, covariance_matrix=COV), 5.0,
        lambda x: x[..., 0, 0] + x[..., 1, 2], lambda d: d.mean[..., 0, 0] + d.mean[..., 1, 2],
    ),
    "GaussianRandomWalk.scale": (
        lambda p: D.GaussianRandomWalk(p, 3), 0.7,
        lambda x: x[..., -1] ** 2, lambda d: d.variance[..., -1],
    ),
    "Independent.loc": (
        lambda p: D.Normal(_vec(p, 1.0), 1.0).to_event(1), 0.4,
        lambda x: x.sum(-1) ** 2, lambda d: d.variance.sum(-1) + d.mean.sum(-1) ** 2,
    ),
    "Masked.scale": (
        lambda p: D.Normal(0.0, p).mask(torch.tensor(True)), 1.7, square, second_moment,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rsample_gradient_matches_analytic(name):
    build, value, *rest = CASES[name]
    f, moment = rest if rest else (square, second_moment)
    p = torch.full((N,), value, dtype=torch.float64, requires_grad=True)
    d = build(p)
    assert d.has_rsample and family_of(d).name == name.split(".")[0]
    grads = torch.autograd.grad(f(d.rsample()).sum(), p)[0]
    mc, se = grads.mean().item(), grads.std().item() / math.sqrt(N)
    p0 = torch.tensor(value, dtype=torch.float64, requires_grad=True)
    exact = torch.autograd.grad(moment(build(p0)).sum(), p0)[0].item()
    assert abs(mc - exact) < 5 * se + 1e-9, (mc, exact, se)


def _leaf(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().clone().requires_grad_()
    return value


RSAMPLE_EXAMPLES = [
    pytest.param(d, id=f"{name}-{i}")
    for name, ds in example_distributions().items()
    for i, d in enumerate(ds)
    if d.has_rsample
]


@pytest.mark.parametrize("d", RSAMPLE_EXAMPLES)
def test_rsample_backward_is_finite(d):
    args = {k: _leaf(v) for k, v in d.ppl_args.items()}
    rebuilt = family_of(d).build(**args)
    x = rebuilt.rsample((7,))
    assert x.requires_grad or isinstance(d, (D.Independent, D.Masked))
    if not x.requires_grad:
        return  # wrappers: the base's tensors are not leaves here; covered above
    (x.sin().sum() + rebuilt.log_prob(x.detach()).sum()).backward()
    leaves = [v for v in args.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    assert leaves
    for leaf in leaves:
        assert leaf.grad is None or torch.isfinite(leaf.grad).all()
