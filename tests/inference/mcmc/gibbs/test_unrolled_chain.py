"""Chains of discrete sites written out one by one (an HMM as a Python loop): found in the
graph, drawn jointly by FFBS with the exact joint conditional (brute force over the paths),
and used by ``Gibbs(discrete="gibbs")`` instead of site-by-site updates."""

import itertools
import math

import torch
from torch.distributions import Normal as TorchNormal

from ppl import infer, model, sample
from ppl.inference import NUTS
from ppl.inference.mcmc.gibbs import DiscreteGibbs, Gibbs
from ppl.inference.mcmc.gibbs.method import assign_blocks
from ppl.inference.mcmc.gibbs.unrolled_chain import UnrolledChainGibbs, find_chains
from ppl.inference.results.diagnostics import mcse_mean
from ppl.passes import enumerate_discrete
from ppl.stdlib import Bernoulli, Categorical, Normal


def test_the_hmm_is_one_chain_and_a_mixture_none(models):
    graph = models.hmm.graph(models.hmm_data)
    sites = [f"z_{t}" for t in range(4)]
    assert find_chains(graph, sites) == [tuple(sites)]
    sampled, blocks = assign_blocks(graph)  # summed out for the kernel, drawn last
    assert [n.address for n in sampled.latent_nodes] == ["locs"]
    assert [(s, type(u)) for s, u in blocks][-1] == (tuple(sites), UnrolledChainGibbs)
    assert find_chains(models.mixture.graph(models.mixture_data), ["z"]) == []


@model
def second_order(y):
    a = sample("a", Bernoulli(0.5))
    b = sample("b", Bernoulli(0.3 + 0.4 * a))
    c = sample("c", Bernoulli(0.2 + 0.3 * b))
    sample("y", Normal(a + c, 1.0), obs=y)  # reads a and c: not a chain's step


def test_a_term_reading_sites_two_steps_apart_is_no_chain():
    graph = second_order.graph(torch.tensor(1.0))
    assert find_chains(graph, ["a", "b", "c"]) == []
    _, blocks = assign_blocks(graph)
    assert [type(u) for _, u in blocks] == [DiscreteGibbs]


def assert_exact_paths(models, values: dict[str, torch.Tensor]) -> None:
    """Path frequencies of the known-parameter HMM's draws (``values[z_t]``, any shape)
    against its brute-force posterior (z-tests at 5 standard errors)."""
    init, trans, locs, scale = models.hmm_known_parameters
    y = models.hmm_data
    paths = list(itertools.product((0, 1), repeat=4))
    log_p = []
    for path in paths:
        lp = math.log(init[path[0]])
        for t, k in enumerate(path):
            lp += math.log(trans[path[t - 1], k]) if t else 0.0
            lp += float(TorchNormal(locs[k], scale).log_prob(y[t]))
        log_p.append(lp)
    probs = torch.tensor(log_p, dtype=torch.float64).softmax(0)
    code = sum(values[f"z_{t}"].flatten() * 2 ** (3 - t) for t in range(4))
    n = code.numel()
    freq = torch.bincount(code, minlength=16).double() / n
    assert ((freq - probs).abs() <= 5 * (probs * (1 - probs) / n).sqrt() + 1e-12).all()


def test_one_step_draws_paths_with_the_exact_joint_conditional(models):
    """20,000 chains, one FFBS step each, on the known-parameter HMM."""
    graph = models.hmm_known.graph(models.hmm_data)
    sites = tuple(f"z_{t}" for t in range(4))
    update = UnrolledChainGibbs().bind(graph, sites)
    values = {a: torch.zeros(20_000, dtype=torch.int64) for a in sites}
    values, _, _ = update.step(torch.Generator().manual_seed(0), values, None)
    assert_exact_paths(models, values)


def test_enumerate_draws_the_chain_jointly_per_kept_draw(models):
    """``discrete="enumerate"``: every kept draw a path of the exact joint, not each ``z_t``
    from its own marginal."""
    post = infer(models.hmm_known, models.hmm_data,
                 method=Gibbs(0, 2500, chains=4, discrete="enumerate", progress_bar=False),
                 seed=2)
    assert_exact_paths(models, post.samples)
    assert post.extra["discrete_probs"]["z_1"].shape == (4, 2500, 2)


def test_gibbs_on_a_three_state_loop_hmm_matches_the_summed_out_posterior():
    """Gibbs with the chain block against NUTS on the enumerated model (same posterior of
    the emission means; MCSE-based tolerance)."""
    trans = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])

    @model
    def loop_hmm(y):
        mu = sample("mu", Normal(torch.tensor([-2.0, 0.0, 2.0]), 0.5).to_event(1))
        z = 0
        for t in range(len(y)):
            z = sample(f"z_{t}", Categorical(trans[z]))
            sample(f"y_{t}", Normal(mu[z], 0.7), obs=y[t])

    y = torch.tensor([-2.1, -1.8, 0.2, 0.1, 2.3, 1.9, 2.2, -0.1])
    post = infer(loop_hmm, y, method=Gibbs(200, 400, chains=2, progress_bar=False), seed=3)
    assert any(isinstance(u, UnrolledChainGibbs) for _, u in post.extra["blocks"])
    ref = infer(loop_hmm, y, method=NUTS(300, 600, chains=2), seed=4,
                passes=[enumerate_discrete()])
    a, b = post.samples["mu"], ref.samples["mu"]
    se = (mcse_mean(a) ** 2 + mcse_mean(b) ** 2).sqrt()
    assert ((a.mean((0, 1)) - b.mean((0, 1))).abs() < 4.5 * se).all()
