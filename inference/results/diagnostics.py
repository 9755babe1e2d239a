"""Convergence diagnostics for MCMC draws: R-hat, effective sample size, MCSE, E-BFMI.

Every function takes a tensor of draws shaped ``(chains, draws, *shape)`` and returns a
float64 tensor shaped ``shape`` (a 0-d tensor for ``(chains, draws)``), one value per scalar
element, each computed independently.  Inputs of any real dtype (bool, int, float32) are
converted to float64 first; all arithmetic is done in float64.

The estimators follow Vehtari, Gelman, Simpson, Carpenter and Bürkner (2021),
"Rank-normalization, folding, and localization: an improved R-hat for assessing convergence
of MCMC" (Bayesian Analysis 16(2)), and the description of Stan's effective sample size in
the Stan Reference Manual ("Effective sample size", "Estimation of effective sample size").

    >>> import torch
    >>> from ppl.inference.results.diagnostics import ess_bulk, rhat
    >>> x = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0))
    >>> bool(rhat(x) < 1.01), bool(3000 < ess_bulk(x) < 5000)
    (True, True)

Definitions (S = chains * draws pooled draws, "split" = each chain cut into two halves,
dropping the middle draw when the length is odd):

* ``rank_normalize``: z = Phi^{-1}((r - 3/8) / (S + 1/4)) with r the average rank (ties get
  the mean of their ranks) of each draw among all S pooled draws.
* ``split_rhat``: classic split R-hat on the raw values, sqrt(var_plus / W) with
  var_plus = (n-1)/n W + B/n, W the mean within-half variance (ddof=1), B/n the variance
  (ddof=1) of the half means, n the half length.
* ``rhat_bulk``: ``split_rhat`` of the rank-normalized draws.
* ``rhat_tail``: ``split_rhat`` of the rank-normalized folded draws |x - median(x)|.
* ``rhat``: max(rhat_bulk, rhat_tail); the paper recommends R-hat < 1.01.
* ``ess``: Stan's multi-chain ESS of the raw values (the ESS relevant for the mean),
  computed on split chains by default.  Autocovariances come from an FFT (biased estimator,
  divided by n); rho_t = 1 - (W - mean_chains acov_t) / var_plus with W the mean within-chain
  variance (ddof=1); rho_0 = 1.  With pair sums P_k = rho_2k + rho_2k+1, K is the first
  k >= 1 with P_k <= 0, or K_max = max(1, floor((n-4)/2)) if none is (the last lags are left
  out as Stan does); the pairs are made monotone, P~_k = min(P_0, ..., P_k) (Geyer's initial
  monotone sequence), and tau = -1 + 2 sum_{k<K} P~_k + r with r = rho_2K, floored at 0
  when P_K < 0 (the truncated estimator of Stan and the paper's reference code, which
  reduces the variance for antithetic chains).  ESS = S / tau, capped at S log10(S).
* ``ess_bulk``: ``ess`` of the rank-normalized split draws.
* ``ess_tail``: min of ``ess`` of the split indicators I(x <= q_0.05) and I(x <= q_0.95),
  q the pooled empirical quantiles.
* ``ess_quantile``: ``ess`` of the split indicator I(x <= q_p).
* ``mcse_mean``: sd(x) / sqrt(ess(x)), sd the pooled standard deviation (ddof=1).
* ``mcse_quantile``: half the width of the +-1 sd interval of the quantile, found by mapping
  p +- sqrt(p (1-p) / ess_quantile) through the pooled empirical CDF (the paper maps a Beta
  interval; this is its normal approximation, which is cheap and differs negligibly once
  the ESS is above ~10).
* ``e_bfmi``: per chain, sum_n (E_n - E_{n-1})^2 / sum_n (E_n - mean(E))^2 for the
  Hamiltonian energy trace E (Betancourt 2016); about 2 for independent energies, and a
  value below 0.3 signals that momentum resampling explores the energy poorly.

Edge cases (decisions, applied per element):

* Non-finite draws (nan/inf) anywhere in an element give nan for every diagnostic.
* All pooled draws equal (a constant element): R-hat and ESS are nan, MCSE is 0.  Nothing
  can be said about mixing, and nan keeps such elements out of threshold checks.
* Each chain (or half chain) constant but chains differing: R-hat is inf (the within-chain
  variance is zero while the between-chain variance is not: maximally unmixed).
* A single chain is fine: split R-hat compares its two halves.
* Too few draws: R-hat needs at least 4 draws per chain (halves of 2 draws) and ESS at least
  4 draws per (split) chain, i.e. 8 draws with ``split=True``; otherwise nan.
  Fewer than 2 dimensions (no chain or draw axis), or zero chains or draws, is a
  ``ValueError``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "rank_normalize",
    "split_rhat",
    "rhat_bulk",
    "rhat_tail",
    "rhat",
    "ess",
    "ess_bulk",
    "ess_tail",
    "ess_quantile",
    "mcse_mean",
    "mcse_quantile",
    "e_bfmi",
    "autocovariance",
]

_MIN_DRAWS_RHAT = 4
_MIN_DRAWS_ESS = 4
_TAIL_PROBS = (0.05, 0.95)


# --------------------------------------------------------------------------- helpers


def _flatten(x: Tensor, name: str = "draws") -> tuple[Tensor, torch.Size]:
    """(chains, draws, *shape) -> float64 (chains, draws, K) and ``shape``."""
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.dim() < 2:
        raise ValueError(
            f"{name} must be shaped (chains, draws, *shape), got shape {tuple(x.shape)}; "
            "for a single chain use x.unsqueeze(0)"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} has no draws: shape {tuple(x.shape)} (chains, draws, ...)")
    shape = x.shape[2:]
    x = x.detach().to(torch.float64)
    return x.reshape(x.shape[0], x.shape[1], -1), shape


def _bad_mask(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per element of (chains, draws, K): (has non-finite values, is constant)."""
    nonfinite = ~torch.isfinite(x).all(dim=1).all(dim=0)
    flat = x.reshape(-1, x.shape[-1])
    constant = flat.amax(dim=0) == flat.amin(dim=0)
    return nonfinite, constant & ~nonfinite


def _split(x: Tensor) -> Tensor:
    """(chains, n, K) -> (2 chains, n // 2, K), dropping the middle draw when n is odd."""
    n = x.shape[1]
    half = n // 2
    if half == 0:
        return x
    return torch.cat([x[:, :half], x[:, n - half :]], dim=0)


def _quantile(x: Tensor, probs: Tensor) -> Tensor:
    """Linear-interpolation (type 7) quantiles over dim 0 of (S, K) -> (len(probs), K)."""
    s = x.shape[0]
    xs = torch.sort(x, dim=0).values
    h = probs.to(torch.float64) * (s - 1)
    lo = h.floor().long().clamp(0, s - 1)
    hi = h.ceil().long().clamp(0, s - 1)
    frac = (h - lo.to(torch.float64)).unsqueeze(-1)
    return xs[lo] + frac * (xs[hi] - xs[lo])


def _pooled(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


def _rank_normalize_flat(x: Tensor) -> Tensor:
    """Rank-normalize (chains, draws, K) over the pooled chains*draws axis."""
    m, n, k = x.shape
    s = m * n
    pooled = _pooled(x).T.contiguous()  # (K, S)
    srt, order = torch.sort(pooled, dim=-1)
    if bool((srt[:, 1:] > srt[:, :-1]).all()):  # no ties: the rank is the sorted position
        positions = torch.arange(1, s + 1, dtype=torch.float64).expand_as(pooled)
        rank = torch.empty_like(pooled).scatter_(-1, order, positions)
    else:
        left = torch.searchsorted(srt, pooled, side="left")
        right = torch.searchsorted(srt, pooled, side="right")
        rank = (left + right + 1).to(torch.float64) / 2.0  # average 1-based rank of ties
    z = torch.special.ndtri((rank - 0.375) / (s + 0.25))
    return z.T.reshape(m, n, k)


def _rhat_flat(x: Tensor) -> Tensor:
    """Basic (not split) R-hat over chains of (chains, n, K)."""
    m, n = x.shape[0], x.shape[1]
    chain_mean = x.mean(dim=1)
    within = x.var(dim=1, correction=1).mean(dim=0)
    if m > 1:
        between_over_n = chain_mean.var(dim=0, correction=1)
    else:
        between_over_n = torch.zeros_like(within)
    var_plus = within * (n - 1) / n + between_over_n
    return torch.sqrt(var_plus / within)


def _split_rhat_flat(x: Tensor) -> Tensor:
    nonfinite, constant = _bad_mask(x)
    if x.shape[1] < _MIN_DRAWS_RHAT:
        return torch.full((x.shape[-1],), math.nan, dtype=torch.float64)
    out = _rhat_flat(_split(x))
    return torch.where(nonfinite | constant, math.nan, out)


def _autocovariance_flat(x: Tensor) -> Tensor:
    """Biased autocovariance along dim 1 of (chains, n, K), lags 0..n-1, via FFT."""
    n = x.shape[1]
    centered = x - x.mean(dim=1, keepdim=True)
    size = 1 << (2 * n - 1).bit_length()  # >= 2n: no circular wrap-around
    f = torch.fft.rfft(centered, n=size, dim=1)
    acov = torch.fft.irfft(f.real.square() + f.imag.square(), n=size, dim=1)[:, :n]
    return acov / n


def _ess_flat(x: Tensor) -> Tensor:
    """Stan's multi-chain ESS of (chains, n, K) (no splitting here), see module docstring."""
    m, n, k = x.shape
    nonfinite, constant = _bad_mask(x)
    if n < _MIN_DRAWS_ESS:
        return torch.full((k,), math.nan, dtype=torch.float64)
    s = m * n
    acov = _autocovariance_flat(x)  # (m, n, K)
    chain_mean = x.mean(dim=1)
    mean_var = (acov[:, 0] * n / (n - 1)).mean(dim=0)  # W, ddof=1
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus = var_plus + chain_mean.var(dim=0, correction=1)
    rho = 1.0 - (mean_var - acov.mean(dim=0)) / var_plus  # (n, K)
    rho[0] = 1.0

    k_max = max(1, (n - 4) // 2)
    pairs = rho[0 : 2 * k_max + 1 : 2] + rho[1 : 2 * k_max + 2 : 2]  # (k_max+1, K)
    nonpos = pairs[1:] <= 0
    first = nonpos.to(torch.int64).argmax(dim=0) + 1
    big_k = torch.where(nonpos.any(dim=0), first, torch.full_like(first, k_max))
    monotone = torch.cummin(pairs, dim=0).values
    keep = torch.arange(k_max + 1).unsqueeze(-1) < big_k.unsqueeze(0)
    # The even autocorrelation after the kept pairs enters once (Geyer's truncated
    # estimator, Stan/posterior's "improved estimate"), floored at 0 if its pair is negative.
    tail = rho.gather(0, (2 * big_k).unsqueeze(0)).squeeze(0)
    tail_pair = pairs.gather(0, big_k.unsqueeze(0)).squeeze(0)
    tail = torch.where(tail_pair < 0, tail.clamp(min=0.0), tail)
    tau = -1.0 + 2.0 * torch.where(keep, monotone, 0.0).sum(dim=0) + tail
    tau = tau.clamp(min=1.0 / math.log10(s))
    out = s / tau
    return torch.where(nonfinite | constant, math.nan, out)


def _indicator_ess_flat(x: Tensor, prob: float) -> Tensor:
    nonfinite, _ = _bad_mask(x)
    q = _quantile(_pooled(x), torch.tensor([prob], dtype=torch.float64))[0]  # (K,)
    ind = (x <= q).to(torch.float64)
    out = _ess_flat(_split(ind))
    return torch.where(nonfinite, math.nan, out)


def _finish(out: Tensor, shape: torch.Size) -> Tensor:
    return out.reshape(shape)


# --------------------------------------------------------------------------- public


def rank_normalize(draws: Tensor) -> Tensor:
    """Rank-normalized draws, same shape as ``draws`` ``(chains, draws, *shape)``, float64.

    Each element is normalized over its S = chains*draws pooled draws:
    z = Phi^{-1}((r - 3/8) / (S + 1/4)), r the average 1-based rank (ties share the mean rank).
    """
    x, shape = _flatten(draws)
    return _rank_normalize_flat(x).reshape(x.shape[0], x.shape[1], *shape)


def split_rhat(draws: Tensor) -> Tensor:
    """Classic split R-hat of the raw draws (no rank normalization); shape ``draws.shape[2:]``.

    sqrt(((n-1)/n W + B/n) / W) over the 2*chains half chains of length n.
    """
    x, shape = _flatten(draws)
    return _finish(_split_rhat_flat(x), shape)


def rhat_bulk(draws: Tensor) -> Tensor:
    """Bulk R-hat: split R-hat of the rank-normalized draws; shape ``draws.shape[2:]``."""
    x, shape = _flatten(draws)
    nonfinite, constant = _bad_mask(x)
    out = _split_rhat_flat(_rank_normalize_flat(x))
    return _finish(torch.where(nonfinite | constant, math.nan, out), shape)


def rhat_tail(draws: Tensor) -> Tensor:
    """Tail (folded) R-hat: split R-hat of rank-normalized |x - median(x)|.

    The median is the pooled median of each element.  Sensitive to chains that agree in
    location but differ in scale.  Shape ``draws.shape[2:]``.
    """
    x, shape = _flatten(draws)
    return _finish(_rhat_tail_flat(x), shape)


def _rhat_tail_flat(x: Tensor) -> Tensor:
    nonfinite, constant = _bad_mask(x)
    med = _quantile(_pooled(x), torch.tensor([0.5], dtype=torch.float64))[0]
    out = _split_rhat_flat(_rank_normalize_flat((x - med).abs()))
    return torch.where(nonfinite | constant, math.nan, out)


def rhat(draws: Tensor) -> Tensor:
    """Rank-normalized split R-hat: max(rhat_bulk, rhat_tail) per element.

    Vehtari et al. (2021) recommend using draws only when this is below 1.01.
    nan for constant or non-finite elements and for fewer than 4 draws per chain.
    """
    x, shape = _flatten(draws)
    nonfinite, constant = _bad_mask(x)
    bulk = _split_rhat_flat(_rank_normalize_flat(x))
    tail = _rhat_tail_flat(x)
    out = torch.maximum(bulk, tail)
    return _finish(torch.where(nonfinite | constant, math.nan, out), shape)


def ess(draws: Tensor, *, split: bool = True) -> Tensor:
    """Effective sample size of the raw draws (the ESS of the mean); shape ``draws.shape[2:]``.

    Stan's multi-chain estimator with Geyer's initial monotone sequence (see the module
    docstring), applied to split chains when ``split`` is true (the default, as in Stan and
    the paper).  Not rank-normalized, so it assumes a finite variance.
    """
    x, shape = _flatten(draws)
    if split:
        x = _split(x)
    return _finish(_ess_flat(x), shape)


def ess_bulk(draws: Tensor) -> Tensor:
    """Bulk ESS: ``ess`` of the rank-normalized split draws; shape ``draws.shape[2:]``."""
    x, shape = _flatten(draws)
    nonfinite, constant = _bad_mask(x)
    out = _ess_flat(_split(_rank_normalize_flat(x)))
    return _finish(torch.where(nonfinite | constant, math.nan, out), shape)


def ess_quantile(draws: Tensor, prob: float) -> Tensor:
    """ESS of the ``prob`` quantile: ``ess`` of the split indicator I(x <= q_prob).

    q_prob is the pooled empirical (linear interpolation) quantile.  Shape ``draws.shape[2:]``.
    """
    x, shape = _flatten(draws)
    return _finish(_indicator_ess_flat(x, float(prob)), shape)


def ess_tail(draws: Tensor) -> Tensor:
    """Tail ESS: min of ``ess_quantile`` at 0.05 and 0.95; shape ``draws.shape[2:]``."""
    x, shape = _flatten(draws)
    lo = _indicator_ess_flat(x, _TAIL_PROBS[0])
    hi = _indicator_ess_flat(x, _TAIL_PROBS[1])
    return _finish(torch.minimum(lo, hi), shape)


def mcse_mean(draws: Tensor) -> Tensor:
    """Monte Carlo standard error of the mean: sd / sqrt(ess(draws)), sd with ddof=1.

    Uses the (split, not rank-normalized) ESS of the mean.  0 for constant elements.
    """
    x, shape = _flatten(draws)
    nonfinite, constant = _bad_mask(x)
    sd = _pooled(x).std(dim=0, correction=1)
    out = sd / torch.sqrt(_ess_flat(_split(x)))
    out = torch.where(constant, 0.0, out)
    return _finish(torch.where(nonfinite, math.nan, out), shape)


def mcse_quantile(draws: Tensor, prob: float) -> Tensor:
    """Monte Carlo standard error of the ``prob`` quantile; shape ``draws.shape[2:]``.

    With e = ess_quantile(draws, prob) and d = sqrt(prob (1 - prob) / e), returns
    (x_(ceil(S (prob + d))) - x_(floor(S (prob - d)))) / 2 over the sorted pooled draws
    (indices clamped to 1..S): the normal approximation to the Beta interval of Vehtari et
    al. (2021, sec. 4.3).  0 for constant elements.
    """
    x, shape = _flatten(draws)
    nonfinite, constant = _bad_mask(x)
    prob = float(prob)
    e = _indicator_ess_flat(x, prob)
    d = torch.sqrt(prob * (1.0 - prob) / e)
    pooled = torch.sort(_pooled(x), dim=0).values
    s = pooled.shape[0]
    lo = torch.floor(s * (prob - d)).nan_to_num(0.0).long().clamp(1, s) - 1
    hi = torch.ceil(s * (prob + d)).nan_to_num(float(s)).long().clamp(1, s) - 1
    out = (pooled.gather(0, hi.unsqueeze(0)) - pooled.gather(0, lo.unsqueeze(0))).squeeze(0) / 2
    out = torch.where(torch.isnan(e), math.nan, out)
    out = torch.where(constant, 0.0, out)
    return _finish(torch.where(nonfinite, math.nan, out), shape)


def e_bfmi(energy: Tensor) -> Tensor:
    """Energy Bayesian fraction of missing information, one value per chain.

    ``energy`` is the Hamiltonian at each draw, shaped ``(chains, draws)`` (trailing dims
    are allowed and kept: ``(chains, draws, *shape) -> (chains, *shape)``).  Returns
    sum_{n>=1} (E_n - E_{n-1})^2 / sum_n (E_n - mean(E))^2 per chain, float64.  About 2 for
    independent energies; below 0.3 is the usual warning threshold.  nan for a constant or
    non-finite energy trace or fewer than 2 draws.
    """
    if not isinstance(energy, Tensor):
        energy = torch.as_tensor(energy)
    if energy.dim() < 2:
        raise ValueError(f"energy must be shaped (chains, draws), got shape {tuple(energy.shape)}")
    e = energy.detach().to(torch.float64)
    if e.shape[1] < 2:
        return torch.full((e.shape[0], *e.shape[2:]), math.nan, dtype=torch.float64)
    num = torch.diff(e, dim=1).square().sum(dim=1)
    den = (e - e.mean(dim=1, keepdim=True)).square().sum(dim=1)
    out = num / den
    bad = (den == 0) | ~torch.isfinite(e).all(dim=1)
    return torch.where(bad, math.nan, out)


def autocovariance(draws: Tensor) -> Tensor:
    """Biased per-chain autocovariance, same shape as ``draws`` ``(chains, draws, *shape)``.

    acov[c, t] = (1/n) sum_{i=0}^{n-1-t} (x_i - xbar)(x_{i+t} - xbar), lags t = 0..n-1,
    computed with a zero-padded FFT in float64.
    """
    x, shape = _flatten(draws)
    return _autocovariance_flat(x).reshape(x.shape[0], x.shape[1], *shape)
