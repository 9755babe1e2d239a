"""The C filter's resampling schemes (``resample.c``, through ``resample_native``): unbiased
offspring counts (z-tests over seeds), adversarial weights that never give an out-of-range
or zero-weight ancestor, NaN named as the torch path names it, and the same distribution of
offspring counts as the torch schemes."""

import math

import pytest
import torch
from scipy import stats

from ppl.inference.lowering.native import compiler_available
from ppl.inference.smc.native import SCHEME_CODES
from ppl.inference.smc.native_resampling import resample_native
from ppl.inference.smc.resampling import DegenerateWeights, normalize, resample

pytestmark = pytest.mark.skipif(not compiler_available(),
                                reason="no C compiler (cc/gcc/clang or $CC): no native backend")

REPEATS = 4000
WEIGHTS = {
    "spread": torch.tensor([0.0, -1.0, 1.5, -0.3, 0.7, -2.0]),
    "a dead particle": torch.tensor([0.0, -math.inf, 0.0, 1.0]),
    "one dominant": torch.tensor([0.0, 3.0, 0.0, 0.0, 0.0]),
}


def counts(log_weights: torch.Tensor, scheme: str, seeds: range) -> torch.Tensor:
    """``(len(seeds), N)`` offspring counts of the C scheme, one run per seed."""
    n = log_weights.shape[0]
    return torch.stack([torch.bincount(resample_native(log_weights, scheme, seed),
                                       minlength=n) for seed in seeds]).double()


@pytest.mark.parametrize("scheme", SCHEME_CODES)
@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_expected_offspring_is_n_times_the_weight(scheme, name):
    """E[offspring_i] = N W_i within 5 multinomial standard errors (they bound every
    scheme's), plus Z^2 / R for the skew of rare counts; a weight of zero has none."""
    log_w = WEIGHTS[name]
    n, w = log_w.shape[0], torch.exp(normalize(log_w))
    c = counts(log_w, scheme, range(REPEATS))
    assert c.sum(1).eq(n).all()
    se = torch.sqrt(n * w * (1 - w) / REPEATS)
    error = (c.mean(0) - n * w).abs()
    assert (error <= 5.0 * se + 25.0 / REPEATS).all(), (scheme, error / se)
    assert c[:, w == 0].eq(0).all()


@pytest.mark.parametrize("scheme", SCHEME_CODES)
def test_adversarial_weights_never_give_a_bad_ancestor(scheme):
    n = 1000
    huge = torch.zeros(n).index_fill_(0, torch.tensor([n - 2]), 700.0)
    one_alive = torch.full((n,), -math.inf).index_fill_(0, torch.tensor([n // 3]), 0.0)
    tiny_tail = torch.cat([torch.zeros(1), torch.full((n - 1,), -740.0)])  # denormal weights
    last_dead = torch.cat([torch.zeros(n - 1), torch.full((1,), -math.inf)])
    for seed in range(20):
        assert resample_native(huge, scheme, seed).eq(n - 2).sum() >= n - 1
        assert resample_native(one_alive, scheme, seed).eq(n // 3).all()
        index = resample_native(tiny_tail, scheme, seed)
        assert 0 <= int(index.min()) and int(index.max()) < n
        assert int(resample_native(last_dead, scheme, seed).max()) <= n - 2


def test_degenerate_weights_raise_by_name_as_on_torch():
    with pytest.raises(DegenerateWeights, match="step 4: 1 of 3 log weights are NaN"):
        resample_native(torch.tensor([0.0, math.nan, 0.0]), "stratified", 0, "step 4")
    with pytest.raises(DegenerateWeights, match="every log weight is -inf"):
        resample_native(torch.full((3,), -math.inf), "multinomial", 0)
    with pytest.raises(ValueError, match="unknown resampling scheme 'bogus'"):
        resample_native(torch.zeros(3), "bogus", 0)


@pytest.mark.parametrize("scheme", SCHEME_CODES)
def test_offspring_counts_have_the_torch_schemes_distribution(scheme):
    """Each particle's offspring count: a chi-square test of homogeneity between C and torch
    (the count tables of 4,000 resamplings each); a p-value under 1e-4 is a real difference
    at these sizes (about 1 in 10,000 by chance, per table)."""
    log_w = WEIGHTS["spread"]
    native = counts(log_w, scheme, range(REPEATS)).long()
    g = torch.Generator().manual_seed(0)
    index = resample(log_w.expand(REPEATS, -1), scheme, generator=g)
    reference = torch.zeros(REPEATS, log_w.shape[0], dtype=torch.long).scatter_add_(
        1, index, torch.ones_like(index))
    for i in range(log_w.shape[0]):
        values = sorted(set(native[:, i].tolist()) | set(reference[:, i].tolist()))
        if len(values) < 2:  # a count that never varies: equal on both
            assert native[0, i] == reference[0, i]
            continue
        table = [[int((c[:, i] == v).sum()) for v in values] for c in (native, reference)]
        assert stats.chi2_contingency(table).pvalue > 1e-4, (scheme, i, table)
