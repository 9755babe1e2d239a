"""``chain_sample``: forward filtering, backward sampling draws whole paths of a chain from
its posterior; path frequencies match brute-force enumeration at small ``T``, pair
frequencies match ``chain_marginals`` at larger ``T``, and impossible states are never
drawn (fixed seeds, z-tests at 5 standard errors)."""

import itertools

import pytest
import torch

from ppl.passes.chains import chain_logsumexp, chain_marginals, chain_sample

F64 = torch.float64


def log_factors(T: int, K: int, seed: int, dtype=F64) -> torch.Tensor:
    return (torch.randn(T, K, K, generator=torch.Generator().manual_seed(seed), dtype=F64)
            * 1.5).to(dtype)


def assert_frequencies(counts: torch.Tensor, probs: torch.Tensor, n: int) -> None:
    """Each frequency within 5 standard errors of its probability (and zero where it is)."""
    freq = counts.double() / n
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= 5 * se + 1e-12).all(), (freq - probs).abs().max()


@pytest.mark.parametrize(("T", "K", "start"), [(1, 3, 2), (3, 2, 0), (4, 3, 1)])
def test_paths_are_drawn_with_their_brute_force_probabilities(T, K, start):
    F = log_factors(T, K, seed=T * K)
    F[-1, :, 0] = -torch.inf  # the last state is never 0
    n = 40_000
    draws = chain_sample(F.expand(n, T, K, K), start, torch.Generator().manual_seed(1))
    assert draws.shape == (n, T) and draws.dtype == torch.int64
    paths = list(itertools.product(range(K), repeat=T))
    log_p = torch.stack([sum(F[t, ([start, *p])[t], p[t]] for t in range(T)) for p in paths])
    probs = (log_p - chain_logsumexp(F, start)).exp()
    code = (draws * K ** torch.arange(T - 1, -1, -1)).sum(-1)
    counts = torch.bincount(code, minlength=K ** T)
    assert_frequencies(counts, probs, n)
    assert (draws[:, -1] != 0).all()


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_pair_frequencies_are_the_pairwise_marginals(dtype):
    T, K, start, n = 40, 3, 1, 10_000
    F = log_factors(T, K, seed=7, dtype=dtype)
    F[:, 0, 2] = -torch.inf  # state 0 never moves to 2
    draws = chain_sample(F.expand(n, T, K, K), start, torch.Generator().manual_seed(2))
    previous = torch.cat([torch.full((n, 1), start), draws[:, :-1]], 1)
    counts = torch.zeros(T, K, K, dtype=F64)
    counts.index_put_((torch.arange(T).expand(n, T), previous, draws),
                      torch.ones(n, T, dtype=F64), accumulate=True)
    marginals = chain_marginals(F.double(), chain_logsumexp(F.double(), start), start)
    assert_frequencies(counts, marginals, n)
    assert counts[:, 0, 2].sum() == 0


def test_batched_chains_each_follow_their_own_factors_and_uniforms():
    """Leading dims are independent chains: a batch of two draws as each chain drawn alone,
    given the same uniforms."""
    F = torch.stack([log_factors(9, 2, seed=3), log_factors(9, 2, seed=4)])
    u = torch.rand(2, 9, generator=torch.Generator().manual_seed(5), dtype=F64)
    together = chain_sample(F, 0, u)
    assert torch.equal(together, torch.stack([chain_sample(F[i], 0, u[i]) for i in range(2)]))
