"""Tests for ppl.inference.results.diagnostics: R-hat, ESS, MCSE, E-BFMI.

Statistical tolerances are stated next to each check; they were set from the spread of the
estimator over 200-300 independent replications (sd quoted in the comments), at about
4 sd, and every test uses a fixed seed.
"""

import math

import numpy as np
import pytest
import scipy.signal
import scipy.stats
import torch

from ppl.inference.results import diagnostics as diag


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def iid(chains: int, draws: int, seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(chains, draws, *shape, generator=gen(seed), dtype=torch.float64)


def ar1(rho: float, chains: int, draws: int, seed: int) -> torch.Tensor:
    """Stationary AR(1) chains x_t = rho x_{t-1} + e_t with unit innovations."""
    e = np.random.default_rng(seed).standard_normal((chains, draws))
    e[:, 0] /= math.sqrt(1.0 - rho**2)
    return torch.from_numpy(scipy.signal.lfilter([1.0], [1.0, -rho], e, axis=1))


# --------------------------------------------------------------------------- references


def reference_ess(x: np.ndarray) -> float:
    """Stan's multi-chain ESS written as a sequential loop (the form of the Stan manual and
    the paper's reference code), with a direct O(n^2) autocovariance instead of an FFT.
    x: (chains, n) with n >= 6, no splitting."""
    m, n = x.shape
    acov = np.empty((m, n))
    for c in range(m):
        y = x[c] - x[c].mean()
        acov[c] = np.array([np.dot(y[: n - t], y[t:]) / n for t in range(n)])
    chain_mean = x.mean(axis=1)
    mean_var = np.mean(acov[:, 0] * n / (n - 1))
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus += np.var(chain_mean, ddof=1)
    rho = np.zeros(n)
    t = 0
    rho_even = 1.0
    rho[0] = rho_even
    rho_odd = 1 - (mean_var - acov[:, 1].mean()) / var_plus
    rho[1] = rho_odd
    while t < n - 5 and rho_even + rho_odd > 0:
        t += 2
        rho_even = 1 - (mean_var - acov[:, t].mean()) / var_plus
        rho_odd = 1 - (mean_var - acov[:, t + 1].mean()) / var_plus
        if rho_even + rho_odd >= 0:
            rho[t] = rho_even
            rho[t + 1] = rho_odd
    max_t = t
    if rho_even > 0:
        rho[max_t] = rho_even
    t = 0
    while t <= max_t - 4:  # initial monotone sequence
        t += 2
        if rho[t] + rho[t + 1] > rho[t - 2] + rho[t - 1]:
            rho[t] = rho[t + 1] = (rho[t - 2] + rho[t - 1]) / 2
    total = m * n
    tau = -1 + 2 * rho[:max_t].sum() + rho[max_t]
    return total / max(tau, 1 / math.log10(total))


def split_np(x: np.ndarray) -> np.ndarray:
    n = x.shape[1]
    h = n // 2
    return np.concatenate([x[:, :h], x[:, n - h :]], axis=0)


def reference_rhat(x: np.ndarray) -> float:
    """Textbook split R-hat (Gelman et al., BDA3 eq. 11.4) on (chains, n)."""
    y = split_np(x)
    n = y.shape[1]
    w = y.var(axis=1, ddof=1).mean()
    b = n * y.mean(axis=1).var(ddof=1)
    return math.sqrt(((n - 1) / n * w + b / n) / w)


def reference_rank_normalize(x: np.ndarray) -> np.ndarray:
    s = x.size
    r = scipy.stats.rankdata(x.ravel(), method="average").reshape(x.shape)
    return scipy.stats.norm.ppf((r - 0.375) / (s + 0.25))


# --------------------------------------------------------------------------- exactness


def test_rank_normalize_matches_scipy_with_ties():
    x = iid(3, 50, 0)
    x[0, :10] = 0.5  # ties
    x[2, 5:8] = x[1, 3]
    got = diag.rank_normalize(x).numpy()
    np.testing.assert_allclose(got, reference_rank_normalize(x.numpy()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "name, x",
    [
        ("iid", iid(4, 101, 1)),
        ("ar0.9", ar1(0.9, 3, 400, 2)),
        ("antithetic", ar1(-0.7, 2, 300, 3)),
        ("one chain", ar1(0.5, 1, 200, 4)),
        ("short", iid(2, 12, 5)),
    ],
)
def test_ess_and_split_rhat_match_sequential_reference(name, x):
    xn = x.numpy()
    assert diag.ess(x, split=False).item() == pytest.approx(reference_ess(xn), rel=1e-9)
    assert diag.ess(x).item() == pytest.approx(reference_ess(split_np(xn)), rel=1e-9)
    assert diag.split_rhat(x).item() == pytest.approx(reference_rhat(xn), rel=1e-12)
    z = reference_rank_normalize(xn)
    assert diag.ess_bulk(x).item() == pytest.approx(reference_ess(split_np(z)), rel=1e-9)
    assert diag.rhat_bulk(x).item() == pytest.approx(reference_rhat(z), rel=1e-12)
    folded = reference_rank_normalize(np.abs(xn - np.median(xn)))
    assert diag.rhat_tail(x).item() == pytest.approx(reference_rhat(folded), rel=1e-12)
    q05, q95 = np.quantile(xn, [0.05, 0.95])
    tail = min(
        reference_ess(split_np((xn <= q05).astype(float))),
        reference_ess(split_np((xn <= q95).astype(float))),
    )
    assert diag.ess_tail(x).item() == pytest.approx(tail, rel=1e-9)


def test_autocovariance_matches_direct_sum():
    x = ar1(0.6, 2, 37, 6)
    got = diag.autocovariance(x).numpy()
    xn = x.numpy()
    for c in range(2):
        y = xn[c] - xn[c].mean()
        want = [np.dot(y[: 37 - t], y[t:]) / 37 for t in range(37)]
        np.testing.assert_allclose(got[c], want, atol=1e-12)


def test_antithetic_ess_is_capped():
    x = torch.tensor([[1.0, -1.0] * 50, [-1.0, 1.0] * 50], dtype=torch.float64)
    s = 200
    assert diag.ess(x, split=False).item() == pytest.approx(s * math.log10(s))


# --------------------------------------------------------------------------- statistics


def test_iid_normal_ess_near_draws_and_rhat_near_one():
    x = iid(4, 1000, 7)
    n = 4000
    # Over 300 seeds: ess/N mean 0.98 sd 0.045, tail ESS mean 0.96 sd 0.041 -> band 0.8..1.2.
    for f in (diag.ess, diag.ess_bulk, diag.ess_tail):
        assert 0.8 < f(x).item() / n < 1.2, f.__name__
    # Over 300 seeds: rhat mean 1.0003 sd 0.0005, max 1.0021.
    assert diag.rhat(x).item() < 1.01
    assert abs(diag.split_rhat(x).item() - 1) < 0.005


@pytest.mark.parametrize("rho, rel_sd", [(0.5, 0.038), (0.9, 0.091)])
def test_ar1_ess_ratio(rho, rel_sd):
    """ESS/N of AR(1) tends to (1 - rho) / (1 + rho).  rel_sd is the relative sd of one
    4 x 5000 estimate over 200 replications; the mean of 6 replicates must be within
    4 sd / sqrt(6) and each replicate within 4 sd."""
    target = (1 - rho) / (1 + rho)
    ratios = []
    for seed in range(6):
        x = ar1(rho, 4, 5000, 100 + seed)
        ratio = diag.ess(x).item() / 20000
        assert abs(ratio / target - 1) < 4 * rel_sd
        ratios.append(ratio)
        # Rank normalization is monotone, so the Gaussian chain's bulk ESS is close.
        assert diag.ess_bulk(x).item() / 20000 == pytest.approx(ratio, rel=0.05)
    assert abs(np.mean(ratios) / target - 1) < 4 * rel_sd / math.sqrt(6)


def test_shifted_chain_means_raise_rhat():
    x = iid(4, 1000, 8)
    x[0] += 1.0
    assert diag.rhat(x).item() > 1.05
    assert diag.rhat_bulk(x).item() > 1.05
    assert diag.split_rhat(x).item() > 1.05


def test_different_scales_caught_by_tail_rhat_only():
    x = iid(4, 1000, 9)
    x[3] *= 3.0
    # Same location: bulk R-hat and classic split R-hat stay near 1 (over 5 seeds <= 1.002).
    assert diag.rhat_bulk(x).item() < 1.01
    assert diag.split_rhat(x).item() < 1.01
    # Folded R-hat sees the scale difference (over 5 seeds 1.12-1.16).
    assert diag.rhat_tail(x).item() > 1.05
    assert diag.rhat(x).item() == diag.rhat_tail(x).item()


def test_single_chain_split_rhat():
    x = iid(1, 1000, 10)
    assert abs(diag.rhat(x).item() - 1) < 0.01
    assert 800 < diag.ess_bulk(x).item() < 1200
    x[0, 500:] += 1.0  # second half drifts: only visible by splitting
    assert diag.rhat(x).item() > 1.1


def test_mcse():
    x = iid(4, 1000, 11)
    n = 4000
    # MCSE of the mean is sd/sqrt(ESS): ~1/sqrt(N) for iid draws (ESS within 20%).
    assert diag.mcse_mean(x).item() == pytest.approx(1 / math.sqrt(n), rel=0.12)
    expected = x.std() / diag.ess(x).sqrt()
    assert diag.mcse_mean(x).item() == pytest.approx(expected.item(), rel=1e-12)
    # Median: sqrt(p(1-p)/N) / phi(0); over 300 seeds the estimate has relative sd 13%.
    theory = math.sqrt(0.25 / n) * math.sqrt(2 * math.pi)
    assert diag.mcse_quantile(x, 0.5).item() == pytest.approx(theory, rel=0.4)
    # Autocorrelated draws have a larger MCSE.
    y = ar1(0.9, 4, 1000, 12)
    assert diag.mcse_mean(y).item() > 2 * diag.mcse_mean(x).item()


def test_mcse_sd_matches_the_spread_of_the_sd_over_replications():
    # For iid normal draws the sd's standard error is sd / sqrt(2 N); for AR(1) draws it is
    # larger, and the estimate must follow the replications' own spread in both cases.
    for draws, seed in ((iid, 21), (lambda c, n, s: ar1(0.7, c, n, s), 22)):
        reps = torch.stack([draws(4, 250, seed * 1000 + r) for r in range(100)])
        spread = reps.flatten(1).std(dim=1).std().item()  # 100 replications: 7% noise
        estimate = torch.stack([diag.mcse_sd(x) for x in reps]).mean().item()
        assert estimate == pytest.approx(spread, rel=0.25)
    assert diag.mcse_sd(iid(4, 1000, 23)).item() == pytest.approx(1 / math.sqrt(8000), rel=0.1)
    assert diag.mcse_sd(iid(4, 1000, 24, 3)).shape == (3,)


def test_e_bfmi():
    e = iid(4, 2000, 13)
    b = diag.e_bfmi(e)
    assert b.shape == (4,) and b.dtype == torch.float64
    # iid: E[(E_n - E_n-1)^2] / Var(E) = 2; over 300 seeds (1000 draws) sd 0.03 per mean.
    assert torch.all((b - 2).abs() < 0.2)
    walk = e.cumsum(dim=1)
    assert torch.all(diag.e_bfmi(walk) < 0.05)
    assert torch.isnan(diag.e_bfmi(torch.ones(2, 10))).all()
    assert diag.e_bfmi(iid(3, 50, 14, 2)).shape == (3, 2)


# --------------------------------------------------------------------------- shapes


ALL = {
    "rhat": diag.rhat,
    "rhat_bulk": diag.rhat_bulk,
    "rhat_tail": diag.rhat_tail,
    "split_rhat": diag.split_rhat,
    "ess": diag.ess,
    "ess_nosplit": lambda x: diag.ess(x, split=False),
    "ess_bulk": diag.ess_bulk,
    "ess_tail": diag.ess_tail,
    "ess_q25": lambda x: diag.ess_quantile(x, 0.25),
    "mcse_mean": diag.mcse_mean,
    "mcse_q90": lambda x: diag.mcse_quantile(x, 0.9),
}


@pytest.mark.parametrize("name", list(ALL))
def test_vectorized_equals_elementwise(name):
    f = ALL[name]
    x = ar1(0.7, 3, 6 * 150, 15).reshape(3, 6, 150).transpose(1, 2).reshape(3, 150, 2, 3)
    x[:, :, 1, 2] *= 5.0
    got = f(x)
    assert got.shape == (2, 3) and got.dtype == torch.float64
    for i in range(2):
        for j in range(3):
            want = f(x[:, :, i, j].contiguous())
            assert want.shape == ()
            torch.testing.assert_close(got[i, j], want, rtol=1e-10, atol=0)


def test_float32_input_gives_float64():
    x = iid(2, 100, 16).float()
    for f in ALL.values():
        assert f(x).dtype == torch.float64


# --------------------------------------------------------------------------- edge cases


def test_constant_draws_give_nan():
    x = torch.full((4, 100), 3.0)
    for name, f in ALL.items():
        if name.startswith("mcse"):
            assert f(x).item() == 0.0
        else:
            assert math.isnan(f(x).item()), name


def test_constant_element_does_not_contaminate_others():
    x = iid(4, 200, 17, 2)
    x[:, :, 0] = 1.0
    r = diag.rhat(x)
    assert math.isnan(r[0].item()) and math.isfinite(r[1].item())
    e = diag.ess_bulk(x)
    assert math.isnan(e[0].item()) and e[1].item() > 100


def test_chains_constant_but_different_give_infinite_rhat():
    x = torch.arange(4.0).unsqueeze(1).expand(4, 100)
    assert diag.rhat(x).item() == math.inf
    assert diag.split_rhat(x).item() == math.inf


def test_non_finite_draws_give_nan():
    x = iid(2, 100, 18, 2)
    x[0, 5, 0] = math.nan
    x[1, 7, 1] = math.inf
    for name, f in ALL.items():
        assert torch.isnan(f(x)).all(), name


def test_tiny_draw_counts():
    # R-hat needs 4 draws per chain; ESS 4 per (split) chain.
    assert math.isnan(diag.rhat(iid(4, 3, 19)).item())
    assert math.isfinite(diag.rhat(iid(4, 4, 19)).item())
    assert math.isnan(diag.ess(iid(4, 7, 19)).item())
    assert math.isfinite(diag.ess(iid(4, 8, 19)).item())
    assert math.isfinite(diag.ess(iid(4, 4, 19), split=False).item())
    assert math.isnan(diag.ess_bulk(iid(1, 1, 19)).item())


def test_too_few_dimensions_is_an_error():
    with pytest.raises(ValueError, match="chains, draws"):
        diag.rhat(torch.randn(100))
    with pytest.raises(ValueError, match="chains, draws"):
        diag.e_bfmi(torch.randn(100))
    with pytest.raises(ValueError, match="no draws"):
        diag.ess(torch.randn(4, 0))
