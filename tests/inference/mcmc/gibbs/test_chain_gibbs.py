"""Gibbs on a scan HMM: the chain is summed out for the kernel (native where the machine
compiles C) and ``z_{0:T-1}`` is drawn jointly by FFBS, per sweep (``discrete="gibbs"``) or
per kept draw (``"enumerate"``). The continuous sites recover the simulated truth; the draws
of ``z`` have, given the continuous draws, the per-step and pairwise probabilities of the
exact conditional (z-tests: the continuous moves never read ``z``, so given them the ``z``
draws are independent); the progress line is shown."""

import pytest
import torch

from ppl import infer, model, plate, sample, scan
from ppl.inference.mcmc.gibbs import Gibbs
from ppl.inference.mcmc.gibbs.chain import ChainDraws, ChainGibbs
from ppl.inference.mcmc.gibbs.kernel_update import ConditionalFlat
from ppl.inference.results.diagnostics import mcse_mean
from ppl.ir import IRError
from ppl.passes import enumerate_discrete
from ppl.passes.chains import chain_logsumexp, chain_marginals
from ppl.stdlib import Categorical, Dirichlet, Normal

F64 = torch.float64
TRANS = torch.tensor([[0.85, 0.15], [0.25, 0.75]], dtype=F64)
MU = torch.tensor([-1.5, 1.5], dtype=F64)


@model
def hmm(y):
    with plate("states", 2):
        trans = sample("trans", Dirichlet(torch.ones(2, dtype=F64)))
        mu = sample("mu", Normal(torch.tensor([-1.0, 1.0], dtype=F64), 1.0))

    def step(z, y_t):
        z = sample("z", Categorical(trans[z]))
        sample("y", Normal(mu[z], 1.0), obs=y_t)
        return z, None

    scan(step, 0, y)


def simulate(T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z, states = 0, []
    for _ in range(T):
        z = int(torch.multinomial(TRANS[z], 1, generator=g))
        states.append(z)
    states = torch.tensor(states)
    return MU[states] + torch.randn(T, generator=g, dtype=F64), states


@pytest.fixture(scope="module")
def runs():
    y, _ = simulate(80, seed=3)
    out = {mode: infer(hmm, y, method=Gibbs(200, 400, chains=2, discrete=mode,
                                            progress_bar=False), seed=11)
           for mode in ("gibbs", "enumerate")}
    return y, out


def exact_given_continuous(y, post):
    """F at every kept draw of the continuous sites, and its pair marginals."""
    graph = enumerate_discrete()(hmm.graph(y))
    rows = {a: post.samples[a].flatten(0, 1) for a in ("trans", "mu")}
    draws = ChainDraws(graph, ("z",))
    F, start = draws.factors(rows, rows["mu"].shape[0])["z"]
    return F, chain_marginals(F, chain_logsumexp(F, start), start)


@pytest.mark.parametrize("mode", ["gibbs", "enumerate"])
def test_the_continuous_sites_recover_the_truth(runs, mode):
    _, out = runs
    mu = out[mode].samples["mu"]
    sd, mcse = mu.flatten(0, 1).std(0), mcse_mean(mu)
    assert ((mu.mean((0, 1)) - MU).abs() < 3.5 * sd + 4 * mcse).all()
    assert out[mode].samples["z"].shape == (2, 400, 80)
    assert out[mode].samples["z"].dtype == torch.int64


@pytest.mark.parametrize("mode", ["gibbs", "enumerate"])
def test_chain_draws_have_the_exact_conditionals_marginals_and_pairs(runs, mode):
    y, out = runs
    post = out[mode]
    _, pairs = exact_given_continuous(y, post)  # (draws, T, K, K)
    z = post.samples["z"].flatten(0, 1)  # (draws, T)
    n = z.shape[0]
    p1 = pairs.sum(-2)[..., 1]  # P(z_t = 1 | continuous draw)
    stat = (z.double() - p1).sum(0) / (p1 * (1 - p1)).sum(0).sqrt()
    assert stat.abs().max() < 4.5, stat
    if mode == "enumerate":
        torch.testing.assert_close(post.extra["discrete_probs"]["z"].flatten(0, 1)[..., 1], p1)
    # jointly: both states 1 at t-1 and t, which independent per-step draws get wrong
    q = pairs[:, 1:, 1, 1]
    both = (z[:, :-1] == 1) & (z[:, 1:] == 1)
    stat = (both.double() - q).sum(0) / (q * (1 - q)).sum(0).sqrt()
    assert stat.abs().max() < 4.5, stat
    independent = p1[:, :-1] * p1[:, 1:]
    assert ((q - independent).sum(0) / (q * (1 - q)).sum(0).sqrt()).abs().max() > 4.5, n


def test_the_progress_line_is_shown(capsys):
    y, _ = simulate(20, seed=1)
    infer(hmm, y, method=Gibbs(5, 5, chains=2, progress_bar=True), seed=0)
    final = capsys.readouterr().err.split("\r")[-1].split()
    assert final[:4] == ["gibbs:", "sampling", "10/10", "100%"]


def test_the_kernel_block_runs_the_summed_out_chain_natively_as_in_torch():
    y, _ = simulate(30, seed=2)
    graph = enumerate_discrete()(hmm.graph(y))
    flat = ConditionalFlat(graph, ("trans", "mu"))
    assert flat.backend != "autograd", flat.fallback_reason
    z = torch.randn(3, flat.dim, generator=torch.Generator().manual_seed(0), dtype=F64)
    got = flat.log_density_and_grad(z, {})
    flat._generated = None  # the vmapped autograd reference
    for a, b in zip(got, flat.log_density_and_grad(z, {}), strict=True):
        torch.testing.assert_close(a, b)


def test_chain_gibbs_names_a_site_that_is_no_summed_out_chain():
    graph = enumerate_discrete()(hmm.graph(torch.zeros(4, dtype=F64)))
    with pytest.raises(IRError, match=r"\['mu'\] are not chains summed out"):
        ChainGibbs().bind(graph, ("mu",))


@pytest.mark.parametrize("mode", ["gibbs", "enumerate"])
def test_a_scan_hmm_whose_only_latent_is_its_chain(mode):
    """Known parameters: nothing but the chain to sample (a Python int init)."""
    @model
    def known(y):
        def step(z, y_t):
            z = sample("z", Categorical(TRANS[z]))
            sample("y", Normal(MU[z], 0.3), obs=y_t)
            return z, None

        scan(step, 0, y)

    y = torch.tensor([-1.5, -1.4, 1.6, 1.5, -1.5], dtype=F64)
    post = infer(known, y, method=Gibbs(2, 20, chains=2, discrete=mode, progress_bar=False),
                 seed=0)
    assert torch.equal(post.samples["z"], torch.tensor([0, 0, 1, 1, 0]).expand(2, 20, 5))
