"""The tutorial gallery (``ppl.inference.gallery``) on the fast path, issue 14's table.

Exact first: each model's generated and native potentials equal the autograd reference
(log density and gradient at random positions). Then inference: NUTS through ``infer`` runs
on a tape backend without a ``FastPathWarning``, the chains agree (R-hat of the truth sites),
and the posterior covers the simulated truth (``truth_z_scores`` below 4: mean minus truth
over ``sqrt(sd^2 + mcse^2)``).
"""

import warnings

import pytest
import torch

from ppl import factor, infer, model, plate, sample
from ppl.inference import NUTS, FastPathWarning
from ppl.inference.gallery import gallery, truth_z_scores
from ppl.inference.lowering.flat import FlatModel
from ppl.inference.lowering.native import compiler_available
from ppl.inference.lowering.tape import Unsupported
from ppl.inference.results.diagnostics import split_rhat
from ppl.stdlib import GaussianRandomWalk, HalfNormal, LKJCholesky, MultivariateNormal, Normal

CASES = gallery()
BACKENDS = ["generated", pytest.param("native", marks=pytest.mark.skipif(
    not compiler_available(), reason="no C compiler on this machine"))]


def assert_same_potential(flat: FlatModel, chains: int, seed: int) -> None:
    z = torch.randn(chains, flat.dim, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    log_p, grad = flat.log_density_and_grad(z)
    ref_log_p, ref_grad = flat.autograd_log_density_and_grad(z)
    torch.testing.assert_close(log_p, ref_log_p, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_gallery_potential_matches_autograd(name, backend):
    case = CASES[name]
    flat = FlatModel.from_graph(case.model.graph(*case.args, **case.kwargs), backend=backend)
    assert flat.backend == backend
    for chains, seed in ((1, 0), (4, 1)):
        assert_same_potential(flat, chains, seed)


@pytest.mark.filterwarnings("ignore::ppl.inference.ConvergenceWarning")
@pytest.mark.parametrize("name", sorted(CASES))
def test_gallery_recovers_the_truth_on_the_fast_path(name):
    case = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPathWarning)
        post = infer(case.model, *case.args, method=NUTS(300, 300, 2, init=case.init), seed=0,
                     **case.kwargs)
    assert post.extra["backend"] in ("native", "generated")
    for site, z in truth_z_scores(post.samples, case.truth).items():
        assert z.abs().max() < 4.0, (site, z)
        assert split_rhat(post.samples[site].to(torch.float64)).max() < 1.05, site


# -- the rules the gallery needed, on their own -------------------------------------------------

@model
def mvn_latent_matrices(y):
    """One latent covariance and one latent precision, each shared by the rows of ``y``."""
    sd = sample("sd", HalfNormal(torch.ones(3)).to_event(1))
    chol = sample("L", LKJCholesky(3, 1.5))
    scale = torch.diag_embed(sd) @ chol
    mu = sample("mu", Normal(torch.zeros(3), 1.0).to_event(1))
    with plate("rows", y.shape[0]):
        sample("y", MultivariateNormal(mu, covariance_matrix=scale @ scale.T), obs=y)
        sample("y2", MultivariateNormal(torch.zeros(3), precision_matrix=scale @ scale.T), obs=y)
    sample("v", MultivariateNormal(mu, scale_tril=scale), obs=y[0])


@model
def branch_on_latent(x):
    """``torch.where`` on a condition computed from a latent."""
    a = sample("a", Normal(0.0, 1.0))
    factor("f", torch.where(a * x > 0.5, -(a * x) ** 2, torch.log1p((a * x).abs())).sum())


@model
def centered_volatility(y):
    """The centered stochastic volatility model: a random walk with a latent scale."""
    sigma = sample("sigma", HalfNormal(1.0))
    h = sample("h", GaussianRandomWalk(sigma, len(y)))
    sample("y", Normal(0.0, torch.exp(0.5 * h)).to_event(1), obs=y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m, args", [(mvn_latent_matrices, (torch.randn(5, 3),)),
                                     (branch_on_latent, (torch.linspace(-2.0, 2.0, 7),)),
                                     (centered_volatility, (torch.randn(12),))],
                         ids=["mvn_latent_matrices", "branch_on_latent", "centered_volatility"])
def test_latent_matrix_branch_and_walk_rules_match_autograd(m, args, backend):
    flat = FlatModel.from_graph(m.graph(*args), backend=backend)
    assert flat.backend == backend
    assert_same_potential(flat, 4, 2)


def test_per_row_latent_covariances_are_refused_by_name():
    @model
    def per_row(y):
        sd = sample("sd", HalfNormal(torch.ones(4, 2)).to_event(2))
        with plate("rows", 4):
            sample("y", MultivariateNormal(torch.zeros(2), scale_tril=torch.diag_embed(sd)),
                   obs=y)

    with pytest.raises(Unsupported, match=r"MultivariateNormal with a batch of latent matrices "
                                          r"\(per-chain shape \(4, 2, 2\)\)"):
        FlatModel.from_graph(per_row.graph(torch.zeros(4, 2)), backend="generated")


def test_leaving_the_fast_path_warns_once_and_the_posterior_records_the_backend():
    @model
    def floored(y):
        mu = sample("mu", Normal(0.0, 1.0))
        factor("f", -torch.floor(mu).abs())
        sample("y", Normal(mu, 1.0), obs=y)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = infer(floored, torch.tensor(0.3), method=NUTS(50, 50, 1), seed=0)
    fast_path = [w for w in caught if issubclass(w.category, FastPathWarning)]
    assert len(fast_path) == 1, [str(w.message) for w in fast_path]
    assert "torch.floor" in str(fast_path[0].message)
    assert "slower" in str(fast_path[0].message)
    assert post.extra["backend"] == "autograd"
