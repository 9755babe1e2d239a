"""Resampling schemes: unbiased offspring counts (hypothesis), exact structural properties,
adversarial weights that must never give an out-of-range or zero-weight ancestor, and the
variance ordering against multinomial resampling."""

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ppl.inference.smc.resampling import (
    SCHEMES,
    DegenerateWeights,
    _invert_cdf,
    ess,
    normalize,
    resample,
)

REPEATS = 4000
Z_MAX = 5.0  # about 800 z-scores per run of the property test: a false alarm ~ once in 2,000 runs

log_weight_lists = st.lists(
    st.one_of(st.floats(-30.0, 5.0), st.just(-math.inf)), min_size=1, max_size=8
).filter(lambda ws: any(math.isfinite(w) for w in ws))


def offspring_counts(log_weights: torch.Tensor, scheme: str, repeats: int, seed: int = 0
                     ) -> torch.Tensor:
    """``(repeats, N)`` offspring counts of ``repeats`` independent resamplings (one batch)."""
    g = torch.Generator().manual_seed(seed)
    batch = log_weights.expand(repeats, -1)
    index = resample(batch, scheme, generator=g)
    n = log_weights.shape[-1]
    return torch.zeros(repeats, n, dtype=torch.float64).scatter_add_(
        1, index, torch.ones_like(index, dtype=torch.float64))


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(values=log_weight_lists)
def test_every_scheme_is_unbiased(scheme, values):
    """E[offspring_i] = N W_i. The standard error is the multinomial one, sqrt(N W (1-W) / R),
    which bounds every scheme's (so counts that never vary are tested too); Z^2 / R allows for
    the skew of rare counts (a Poisson tail). Weights below 1e-3 (too rare to count in R
    runs) are left to the adversarial tests."""
    log_w = torch.tensor(values, dtype=torch.float64)
    n = log_w.shape[0]
    w = torch.exp(normalize(log_w))
    assume(bool(((w == 0) | (w >= 1e-3)).all()))
    counts = offspring_counts(log_w, scheme, REPEATS)
    assert counts.sum(1).eq(n).all()
    se = torch.sqrt(n * w * (1 - w) / REPEATS)
    error = (counts.mean(0) - n * w).abs()
    assert (error <= Z_MAX * se + Z_MAX**2 / REPEATS).all(), (scheme, error / se)
    assert counts[:, w == 0].eq(0).all(), "a particle of weight zero was resampled"


@settings(max_examples=40, deadline=None)
@given(values=log_weight_lists, seed=st.integers(0, 2**31))
def test_systematic_counts_are_floor_or_ceil_and_residual_keeps_the_floor(values, seed):
    log_w = torch.tensor(values, dtype=torch.float64)
    n = log_w.shape[0]
    expected = n * torch.exp(normalize(log_w))
    systematic = offspring_counts(log_w, "systematic", 1, seed)[0]
    assert ((systematic >= torch.floor(expected - 1e-9)) &
            (systematic <= torch.ceil(expected + 1e-9))).all()
    residual = offspring_counts(log_w, "residual", 1, seed)[0]
    assert (residual >= torch.floor(expected - 1e-9)).all()


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_adversarial_weights(scheme):
    g = torch.Generator().manual_seed(1)
    huge = torch.tensor([0.0, 700.0, 0.0, -5.0])
    assert resample(huge, scheme, generator=g).tolist() == [1, 1, 1, 1]
    one_finite = torch.full((1000,), -math.inf)
    one_finite[637] = -3.0
    assert resample(one_finite, scheme, generator=g).eq(637).all()
    assert resample(torch.tensor([12.5]), scheme, generator=g).tolist() == [0]
    # float32 log weights whose exp underflows in float32: normalized in float64 they are fine
    tiny = torch.tensor([-200.0, -200.0 - math.log(3.0), -1e4, -math.inf], dtype=torch.float32)
    counts = offspring_counts(tiny, scheme, 2000)
    assert counts[:, 2:].eq(0).all()
    assert abs(counts[:, 0].mean().item() / 4 - 0.75) < 0.05


def test_a_uniform_past_the_last_cumulative_sum_picks_the_last_positive_particle():
    """Rounding can put u * total beyond cdf[-1]; the index must stay in range and avoid the
    zero-weight tail (the failure of a float32 resampler: an index N, or a dead particle)."""
    w = torch.tensor([0.3, 0.7, 0.0, 0.0], dtype=torch.float64)
    almost_one = torch.tensor([math.nextafter(1.0, 0.0), 1.0])
    assert _invert_cdf(w, almost_one).tolist() == [1, 1]
    big = torch.rand(100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    big[-10:] = 0.0
    index = _invert_cdf(big / big.sum(), torch.tensor([math.nextafter(1.0, 0.0)] * 3))
    assert index.tolist() == [99_989] * 3


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_degenerate_weights_name_the_problem(scheme):
    with pytest.raises(DegenerateWeights, match=r"step 3: 2 of 4 log weights are NaN"):
        resample(torch.tensor([0.0, math.nan, 1.0, math.nan]), scheme, where="step 3")
    with pytest.raises(DegenerateWeights, match="every log weight is -inf"):
        resample(torch.full((5,), -math.inf), scheme, where="step 0")
    with pytest.raises(ValueError, match="unknown resampling scheme"):
        resample(torch.zeros(3), "stratifed")


@pytest.mark.parametrize("scheme", ["residual", "stratified", "systematic"])
def test_lower_offspring_variance_than_multinomial(scheme):
    log_w = 1.5 * torch.randn(20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w = torch.exp(normalize(log_w))
    multinomial_variance = float((20 * w * (1 - w)).sum())  # exact
    empirical = offspring_counts(log_w, "multinomial", REPEATS).var(0).sum().item()
    assert abs(empirical / multinomial_variance - 1) < 0.1
    variance = offspring_counts(log_w, scheme, REPEATS).var(0).sum().item()
    assert variance < 0.7 * multinomial_variance, (variance, multinomial_variance)


def test_ess():
    assert float(ess(torch.zeros(10))) == pytest.approx(10.0)
    assert float(ess(torch.tensor([0.0, -math.inf, -math.inf]))) == pytest.approx(1.0)
    assert float(ess(torch.tensor([0.0, math.log(3.0)], dtype=torch.float32))) == pytest.approx(
        1 / (0.25**2 + 0.75**2))
