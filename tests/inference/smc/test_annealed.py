"""Data-annealed (IBIS) SMC: the conjugate suite's exact posteriors (MCSE z-scores over
independent runs taken as chains) and evidence (mean of Zhat / Z within 3 SE of 1), batches of
rows and tempered-in batches, the per-unit likelihood, and bad settings."""

import math

import pytest
import torch

from ppl import infer, model, plate, sample
from ppl.errors import ModelError
from ppl.inference import mcmc
from ppl.inference.lowering.flat import FlatModel
from ppl.inference.smc import DataAnnealedSMC
from ppl.inference.smc.annealed import UnitLikelihood
from ppl.inference.testing import check_draws, conjugate_cases
from ppl.passes import enumerate_discrete
from ppl.stdlib import Normal

CASES = conjugate_cases()
KERNELS = {
    "normal_normal": mcmc.MALA(),
    "beta_binomial": mcmc.RWMH(),
    "gamma_poisson": mcmc.NUTS(),
    "mvn_correlated": mcmc.MALA(metric="dense"),
}


def run_chains(case, method, runs: int = 4):
    """``runs`` independent runs' resampled particles as chains ``(runs, N, *shape)``."""
    posts = [infer(case.model, *case.args, **case.kwargs, method=method, seed=s)
             for s in range(runs)]
    draws = [p.resample(generator=torch.Generator().manual_seed(i)) for i, p in enumerate(posts)]
    return {k: torch.stack([d[k] for d in draws]) for k in case.posterior}, posts


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.slow] if n == "mvn_correlated" else [])
    for n in sorted(KERNELS)])
def test_conjugate_suite(name):
    case = CASES[name]
    samples, posts = run_chains(case, DataAnnealedSMC(400, KERNELS[name], num_moves=4))
    check_draws(samples, case)
    log_z = torch.tensor([float(p.log_evidence) for p in posts])
    assert abs(float(log_z.mean()) - case.log_evidence) < 4 * float(log_z.std()) / 2 + 0.02


def test_the_evidence_is_unbiased_on_the_conjugate_normal():
    """Z-hat / Z over 60 seeds with few particles, one observation at a time."""
    case = CASES["normal_normal"]
    method = DataAnnealedSMC(48, mcmc.MALA(), num_moves=2)
    ratios = torch.tensor([
        math.exp(float(infer(case.model, *case.args, method=method, seed=s).log_evidence)
                 - case.log_evidence) for s in range(60)])
    se = float(ratios.std()) / math.sqrt(len(ratios))
    assert abs(float(ratios.mean()) - 1) < 3 * se and 0.003 < se < 0.2, (ratios.mean(), se)


def test_batches_of_rows_and_a_tempered_batch():
    case = CASES["normal_normal"]
    post = infer(case.model, *case.args, method=DataAnnealedSMC(400, batch_size=3), seed=0)
    assert post.extra["num_units"] == 8
    assert sorted({start for start, _ in post.extra["stages"]}) == [0, 3, 6]
    # all 8 rows in one batch: too informative for the prior's particles, so tempered in
    whole = infer(case.model, *case.args, method=DataAnnealedSMC(400, batch_size=8), seed=0)
    betas = [b for _, b in whole.extra["stages"]]
    assert len(betas) > 1 and betas[-1] == 1.0 and betas == sorted(betas)
    samples, _ = run_chains(case, DataAnnealedSMC(400, batch_size=8, num_moves=4))
    check_draws(samples, case)


def test_unit_likelihood_is_pointwise_and_differentiable():
    @model
    def m(y):
        mu = sample("mu", Normal(0.0, 1.0))
        sample("first", Normal(mu, 2.0), obs=y[0])
        with plate("rows", 2):
            sample("rest", Normal(mu, 1.0), obs=y[1:])

    y = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    units = UnitLikelihood(FlatModel.from_graph(m.graph(y)))
    z = torch.tensor([[0.0], [1.0]], dtype=torch.float64, requires_grad=True)
    ll = units(z)
    scales = torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)
    expected = torch.distributions.Normal(z.detach(), scales).log_prob(y)
    assert torch.allclose(ll, expected)
    (grad,) = torch.autograd.grad(ll[:, 1].sum(), z)
    assert torch.allclose(grad[:, 0], y[1] - z.detach()[:, 0])


def test_bad_settings_and_models_are_refused():
    with pytest.raises(ValueError, match="batch_size"):
        DataAnnealedSMC(batch_size=0)
    with pytest.raises(ValueError, match="target_cess"):
        DataAnnealedSMC(target_cess=1.0)
    with pytest.raises(TypeError, match="MCMC kernel"):
        DataAnnealedSMC(kernel=3)

    @model
    def no_data():
        sample("x", Normal(0.0, 1.0))

    with pytest.raises(ModelError, match="no observations"):
        infer(no_data, method=DataAnnealedSMC(50), seed=0)
    case = CASES["discrete_mixture"]
    with pytest.raises(ModelError, match="enumerat"):
        infer(case.model, *case.args, passes=[enumerate_discrete()],
              method=DataAnnealedSMC(50), seed=0)
