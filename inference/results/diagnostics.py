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

Cost: elements are processed in chunks of about ``CHUNK_VALUES`` draws, so the working memory
stays a few times one chunk whatever the number of elements.  Per element the pooled draws
are sorted once (quantiles, ranks) and the folded draws once more (tail R-hat); ties get their
average rank in one linear pass over the sorted draws.  Each ESS takes one FFT per chain and
one inverse FFT of the chains' summed power spectra.  ``summary_columns`` computes every
column of the posterior summary in one such pass.  Results are float64 CPU tensors.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property

import numpy as np
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
    "summary_columns",
]

_MIN_DRAWS_RHAT = 4
_MIN_DRAWS_ESS = 4
_TAIL_PROBS = (0.05, 0.95)

CHUNK_VALUES = 1 << 20
"""Draws (float64 values, 8 MiB) per chunk of elements: bounds the diagnostics' memory (the
working set is about 8 chunks); smaller chunks cost time in per-chunk overhead."""

_F64 = torch.float64


# --------------------------------------------------------------------------- helpers


def _checked(x, name: str = "draws") -> Tensor:
    """``x`` as a detached tensor shaped (chains, draws, *shape) with some draws."""
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.dim() < 2:
        raise ValueError(
            f"{name} must be shaped (chains, draws, *shape), got shape {tuple(x.shape)}; "
            "for a single chain use x.unsqueeze(0)"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} has no draws: shape {tuple(x.shape)} (chains, draws, ...)")
    return x.detach()


def _per_element(
    draws: Tensor | Sequence[Tensor], compute: Callable[[_Elements], np.ndarray]
) -> tuple[Tensor, torch.Size]:
    """``compute`` over chunks of elements of ``draws`` (chains, draws, *shape), results
    concatenated element-first: (K, ...) with K = prod(shape), and ``shape``.  A sequence of
    draws sharing (chains, draws) counts as the elements of all of them in turn, shape (K,)."""
    one = isinstance(draws, Tensor)
    parts = [_checked(x) for x in ([draws] if one else draws)]
    m, n = parts[0].shape[:2]
    flats = [x.reshape(m, n, -1) for x in parts]
    shape = parts[0].shape[2:] if one else torch.Size([sum(f.shape[-1] for f in flats)])
    step = max(1, CHUNK_VALUES // (m * n))
    with np.errstate(invalid="ignore", divide="ignore"):  # non-finite elements give nan
        results = [compute(_Elements(chunk)) for chunk in _chunks(flats, step)]
    return torch.from_numpy(np.concatenate(results, axis=0)), shape


def _chunks(flats: list[Tensor], step: int) -> Iterator[Tensor]:
    """(chains, draws, k) slices of ``step`` elements (fewer in the last), gathered across
    the (chains, draws, K_i) tensors in order; one empty slice when there are no elements."""
    pending: list[Tensor] = []
    count = 0
    yielded = False
    for flat in flats:
        start = 0
        while start < flat.shape[-1]:
            take = min(step - count, flat.shape[-1] - start)
            pending.append(flat[:, :, start : start + take])
            count += take
            start += take
            if count == step:
                yield pending[0] if len(pending) == 1 else torch.cat(pending, dim=-1)
                pending, count, yielded = [], 0, True
    if pending:
        yield pending[0] if len(pending) == 1 else torch.cat(pending, dim=-1)
    elif not yielded:
        yield flats[0][:, :, :0]


# The arithmetic on a chunk is numpy's: one thread, no per-operation thread-pool overhead
# (torch's intra-op threads cost more than they save on a loaded machine), and numpy's sort
# and FFT are several times faster than torch's on CPU.


def _ndtri(p: np.ndarray) -> np.ndarray:
    return torch.special.ndtri(torch.from_numpy(p)).numpy()


@functools.lru_cache(maxsize=8)
def _untied_scores(s: int) -> np.ndarray:
    """Normal scores of the ranks 1..s (no ties), shared by every element with s draws."""
    return _ndtri((np.arange(1, s + 1, dtype=np.float64) - 0.375) / (s + 0.25))


def _type7(srt: np.ndarray, probs: Sequence[float]) -> np.ndarray:
    """Linear-interpolation (type 7) quantiles of sorted (k, S) rows -> (len(probs), k)."""
    s = srt.shape[-1]
    h = np.asarray(probs, dtype=np.float64) * (s - 1)
    lo = np.clip(np.floor(h).astype(np.int64), 0, s - 1)
    hi = np.clip(np.ceil(h).astype(np.int64), 0, s - 1)
    frac = (h - lo)[:, None]
    below, above = srt[:, lo].T, srt[:, hi].T
    return below + frac * (above - below)


def _normal_scores(values: np.ndarray, srt: np.ndarray | None = None) -> np.ndarray:
    """Phi^{-1}((r - 3/8) / (S + 1/4)) of the average ranks r along the last dim of (k, S)
    (``srt``: the rows sorted, when known). Linear after the sort: without ties the rank is
    the sorted position, and each run of ties gets the mean of its 1-based ranks."""
    k, s = values.shape
    order = np.argsort(values, axis=-1)
    srt = np.sort(values, axis=-1) if srt is None else srt  # cheaper than gathering by order
    scores = np.broadcast_to(_untied_scores(s), (k, s)).copy()
    row, j = np.nonzero(srt[:, 1:] == srt[:, :-1])  # row-major: sorted j, j+1 tie
    if row.size:
        starts = np.ones(j.shape, dtype=bool)
        starts[1:] = (row[1:] != row[:-1]) | (j[1:] != j[:-1] + 1)
        ends = np.ones_like(starts)
        ends[:-1] = starts[1:]
        run = np.cumsum(starts) - 1
        rank = (j[starts] + j[ends] + 3) / 2.0  # the run covers positions j_first .. j_last + 1
        tied = _ndtri((rank - 0.375) / (s + 0.25))[run]
        scores[row, j] = tied
        scores[row, j + 1] = tied
    out = np.empty_like(scores)
    np.put_along_axis(out, order, scores, axis=-1)
    return out


def _split(x: np.ndarray) -> np.ndarray:
    """(k, chains, n) -> (k, 2 chains, n // 2), dropping the middle draw when n is odd (a
    view for even n: the halves of each chain are adjacent; the estimators ignore chain
    order)."""
    k, c, n = x.shape
    half = n // 2
    if half == 0:
        return x
    if n % 2 == 0:
        return x.reshape(k, 2 * c, half)
    return np.concatenate([x[..., :half], x[..., n - half :]], axis=1)


def _bad(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (k, S): (has a non-finite value, is constant but finite), from one min and
    one max pass (both are nan if a nan is present, +-inf if an inf is)."""
    if flat.shape[-1] == 0 or flat.shape[0] == 0:
        empty = np.zeros(flat.shape[0], dtype=bool)
        return empty, empty
    lo, hi = flat.min(axis=-1), flat.max(axis=-1)
    nonfinite = ~(np.isfinite(lo) & np.isfinite(hi))
    return nonfinite, (lo == hi) & ~nonfinite


def _split_rhat(x: np.ndarray) -> np.ndarray:
    """Split R-hat of (k, chains, n) -> (k,); nan below 4 draws per chain."""
    if x.shape[-1] < _MIN_DRAWS_RHAT:
        return np.full(x.shape[0], math.nan)
    y = _split(x)
    c, n = y.shape[1], y.shape[2]
    # torch's (Welford) variance is exactly 0 for a constant chain, where numpy's is ~1e-33:
    # R-hat must be inf for chains constant but different.
    chain_var = torch.from_numpy(np.ascontiguousarray(y)).var(dim=-1, correction=1).numpy()
    within = chain_var.mean(axis=-1)
    between_over_n = y.mean(axis=-1).var(axis=-1, ddof=1) if c > 1 else 0.0
    var_plus = within * (n - 1) / n + between_over_n
    return np.sqrt(var_plus / within)


def _autocovariance(x: np.ndarray, *, mean_over_chains: bool) -> np.ndarray:
    """Biased autocovariance along the last dim of (k, chains, n), lags 0..n-1, via a
    zero-padded FFT: per chain (k, chains, n), or its mean over chains (k, n), which takes
    one inverse FFT of the summed power spectra."""
    k, c, n = x.shape
    size = 1 << (2 * n - 1).bit_length()  # >= 2n: no circular wrap-around
    padded = np.zeros((k, size))
    per_chain = np.empty((k, c, n))
    total = np.zeros((k, size // 2 + 1))
    for chain in range(c):
        y = x[:, chain]
        padded[:, :n] = y - y.mean(axis=-1, keepdims=True)
        f = np.fft.rfft(padded, axis=-1)
        power = np.square(f.real)
        power += np.square(f.imag)
        if mean_over_chains:
            total += power
        else:
            per_chain[:, chain] = np.fft.irfft(power, n=size, axis=-1)[:, :n] / n
    if mean_over_chains:
        return np.fft.irfft(total, n=size, axis=-1)[:, :n] / (n * c)
    return per_chain


def _ess(x: np.ndarray) -> np.ndarray:
    """Stan's multi-chain ESS of (k, chains, n) (no splitting here) -> (k,), see the module
    docstring; nan for non-finite or constant elements and below 4 draws per chain."""
    k, m, n = x.shape
    if n < _MIN_DRAWS_ESS:
        return np.full(k, math.nan)
    nonfinite, constant = _bad(x.reshape(k, -1))
    s = m * n
    acov = _autocovariance(x, mean_over_chains=True)  # rows are independent: nan stays put
    mean_var = acov[:, 0] * n / (n - 1)  # W, ddof=1
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus = var_plus + x.mean(axis=-1).var(axis=-1, ddof=1)
    k_max = max(1, (n - 4) // 2)
    rho = 1.0 - (mean_var[:, None] - acov[:, : 2 * k_max + 2]) / var_plus[:, None]
    rho[:, 0] = 1.0
    pairs = rho[:, 0::2] + rho[:, 1::2]  # (k, k_max+1)
    nonpos = pairs[:, 1:] <= 0
    big_k = np.where(nonpos.any(axis=-1), nonpos.argmax(axis=-1) + 1, k_max)
    monotone = np.minimum.accumulate(pairs, axis=-1)
    keep = np.arange(k_max + 1) < big_k[:, None]
    # The even autocorrelation after the kept pairs enters once (Geyer's truncated
    # estimator, Stan/posterior's "improved estimate"), floored at 0 if its pair is < 0.
    tail = np.take_along_axis(rho, (2 * big_k)[:, None], axis=-1)[:, 0]
    tail_pair = np.take_along_axis(pairs, big_k[:, None], axis=-1)[:, 0]
    tail = np.where(tail_pair < 0, np.maximum(tail, 0.0), tail)
    tau = -1.0 + 2.0 * np.where(keep, monotone, 0.0).sum(axis=-1) + tail
    tau = np.maximum(tau, 1.0 / math.log10(s))
    return np.where(nonfinite | constant, math.nan, s / tau)


class _Elements:
    """One chunk of elements, element-major (k, chains, draws) float64, with the pieces
    several diagnostics share (sorted pooled draws, rank-normalized draws) computed once."""

    def __init__(self, x: Tensor) -> None:
        m, n, k = x.shape
        self.x = torch.empty((k, m, n), dtype=_F64).copy_(x.permute(2, 0, 1)).numpy()
        self.pooled = self.x.reshape(self.x.shape[0], -1)  # (k, S)
        self.nonfinite, self.constant = _bad(self.pooled)

    def masked(self, out: np.ndarray) -> np.ndarray:
        """nan where the element is non-finite or constant."""
        return np.where(self.nonfinite | self.constant, math.nan, out)

    @cached_property
    def sorted(self) -> np.ndarray:
        return np.sort(self.pooled, axis=-1)

    def quantiles(self, probs: Sequence[float]) -> np.ndarray:
        """Pooled type-7 quantiles, (len(probs), k)."""
        return _type7(self.sorted, probs)

    @cached_property
    def mean(self) -> np.ndarray:
        return self.pooled.mean(axis=-1)

    @cached_property
    def sd(self) -> np.ndarray:
        if self.pooled.shape[-1] < 2:
            return np.full_like(self.mean, math.nan)
        return self.pooled.std(axis=-1, ddof=1)

    @cached_property
    def bulk_scores(self) -> np.ndarray:
        return _normal_scores(self.pooled, self.sorted).reshape(self.x.shape)

    @cached_property
    def tail_scores(self) -> np.ndarray:
        folded = np.abs(self.pooled - self.quantiles([0.5])[0][:, None])
        return _normal_scores(folded).reshape(self.x.shape)

    def split_rhat(self) -> np.ndarray:
        return self.masked(_split_rhat(self.x))

    def rhat_bulk(self) -> np.ndarray:
        return self.masked(_split_rhat(self.bulk_scores))

    def rhat_tail(self) -> np.ndarray:
        return self.masked(_split_rhat(self.tail_scores))

    def rhat(self) -> np.ndarray:
        return self.masked(np.maximum(self.rhat_bulk(), self.rhat_tail()))

    def ess(self, split: bool = True) -> np.ndarray:
        return _ess(_split(self.x) if split else self.x)

    def ess_bulk(self) -> np.ndarray:
        return self.masked(_ess(_split(self.bulk_scores)))

    def ess_quantile(self, prob: float) -> np.ndarray:
        q = self.quantiles([prob])[0]
        indicator = (self.x <= q[:, None, None]).astype(np.float64)
        return np.where(self.nonfinite, math.nan, _ess(_split(indicator)))

    def ess_tail(self) -> np.ndarray:
        return np.minimum(*(self.ess_quantile(p) for p in _TAIL_PROBS))

    def mcse_mean(self) -> np.ndarray:
        out = self.sd / np.sqrt(self.ess())
        out = np.where(self.constant, 0.0, out)
        return np.where(self.nonfinite, math.nan, out)

    def mcse_quantile(self, prob: float) -> np.ndarray:
        e = self.ess_quantile(prob)
        d = np.sqrt(prob * (1.0 - prob) / e)
        s = self.sorted.shape[-1]
        lo = np.clip(np.nan_to_num(np.floor(s * (prob - d)), nan=0.0), 1, s).astype(np.int64)
        hi = np.nan_to_num(np.ceil(s * (prob + d)), nan=float(s))
        hi = np.clip(hi, 1, s).astype(np.int64)
        pick = lambda i: np.take_along_axis(self.sorted, (i - 1)[:, None], axis=-1)[:, 0]
        out = (pick(hi) - pick(lo)) / 2
        out = np.where(np.isnan(e), math.nan, out)
        out = np.where(self.constant, 0.0, out)
        return np.where(self.nonfinite, math.nan, out)


def _scalar_per_element(draws, compute: Callable[[_Elements], np.ndarray]) -> Tensor:
    out, shape = _per_element(draws, compute)
    return out.reshape(shape)


# --------------------------------------------------------------------------- public


def rank_normalize(draws: Tensor) -> Tensor:
    """Rank-normalized draws, same shape as ``draws`` ``(chains, draws, *shape)``, float64.

    Each element is normalized over its S = chains*draws pooled draws:
    z = Phi^{-1}((r - 3/8) / (S + 1/4)), r the average 1-based rank (ties share the mean rank).
    """
    out, shape = _per_element(draws, lambda e: e.bulk_scores)
    return out.permute(1, 2, 0).reshape(*out.shape[1:], *shape)


def split_rhat(draws: Tensor) -> Tensor:
    """Classic split R-hat of the raw draws (no rank normalization); shape ``draws.shape[2:]``.

    sqrt(((n-1)/n W + B/n) / W) over the 2*chains half chains of length n.
    """
    return _scalar_per_element(draws, _Elements.split_rhat)


def rhat_bulk(draws: Tensor) -> Tensor:
    """Bulk R-hat: split R-hat of the rank-normalized draws; shape ``draws.shape[2:]``."""
    return _scalar_per_element(draws, _Elements.rhat_bulk)


def rhat_tail(draws: Tensor) -> Tensor:
    """Tail (folded) R-hat: split R-hat of rank-normalized |x - median(x)|.

    The median is the pooled median of each element.  Sensitive to chains that agree in
    location but differ in scale.  Shape ``draws.shape[2:]``.
    """
    return _scalar_per_element(draws, _Elements.rhat_tail)


def rhat(draws: Tensor) -> Tensor:
    """Rank-normalized split R-hat: max(rhat_bulk, rhat_tail) per element.

    Vehtari et al. (2021) recommend using draws only when this is below 1.01.
    nan for constant or non-finite elements and for fewer than 4 draws per chain.
    """
    return _scalar_per_element(draws, _Elements.rhat)


def ess(draws: Tensor, *, split: bool = True) -> Tensor:
    """Effective sample size of the raw draws (the ESS of the mean); shape ``draws.shape[2:]``.

    Stan's multi-chain estimator with Geyer's initial monotone sequence (see the module
    docstring), applied to split chains when ``split`` is true (the default, as in Stan and
    the paper).  Not rank-normalized, so it assumes a finite variance.
    """
    return _scalar_per_element(draws, lambda e: e.ess(split))


def ess_bulk(draws: Tensor) -> Tensor:
    """Bulk ESS: ``ess`` of the rank-normalized split draws; shape ``draws.shape[2:]``."""
    return _scalar_per_element(draws, _Elements.ess_bulk)


def ess_quantile(draws: Tensor, prob: float) -> Tensor:
    """ESS of the ``prob`` quantile: ``ess`` of the split indicator I(x <= q_prob).

    q_prob is the pooled empirical (linear interpolation) quantile.  Shape ``draws.shape[2:]``.
    """
    return _scalar_per_element(draws, lambda e: e.ess_quantile(float(prob)))


def ess_tail(draws: Tensor) -> Tensor:
    """Tail ESS: min of ``ess_quantile`` at 0.05 and 0.95; shape ``draws.shape[2:]``."""
    return _scalar_per_element(draws, _Elements.ess_tail)


def mcse_mean(draws: Tensor) -> Tensor:
    """Monte Carlo standard error of the mean: sd / sqrt(ess(draws)), sd with ddof=1.

    Uses the (split, not rank-normalized) ESS of the mean.  0 for constant elements.
    """
    return _scalar_per_element(draws, _Elements.mcse_mean)


def mcse_sd(draws: Tensor) -> Tensor:
    """Monte Carlo standard error of the sd, by the delta method on the variance.

    With d = (x - mean)^2, the variance estimate mean(d) has MCSE sd(d) / sqrt(ess(d)), and
    the sd = sqrt(variance) has MCSE that divided by 2 sd. Heavy tails make d's variance (and
    so this error) large, as they should: a fixed bound on the sd's ratio would not.
    nan for constant elements.
    """
    x = _checked(draws).to(torch.float64)
    d = (x - x.mean(dim=(0, 1))) ** 2
    variance = d.mean(dim=(0, 1))
    return d.std(dim=(0, 1)) / ess(d).sqrt() / (2 * variance.sqrt())


def mcse_quantile(draws: Tensor, prob: float) -> Tensor:
    """Monte Carlo standard error of the ``prob`` quantile; shape ``draws.shape[2:]``.

    With e = ess_quantile(draws, prob) and d = sqrt(prob (1 - prob) / e), returns
    (x_(ceil(S (prob + d))) - x_(floor(S (prob - d)))) / 2 over the sorted pooled draws
    (indices clamped to 1..S): the normal approximation to the Beta interval of Vehtari et
    al. (2021, sec. 4.3).  0 for constant elements.
    """
    return _scalar_per_element(draws, lambda e: e.mcse_quantile(float(prob)))


def summary_columns(
    draws: Tensor | Sequence[Tensor], probs: Sequence[float]
) -> dict[str, Tensor]:
    """Every column of an MCMC summary in one pass over the elements of ``draws`` (a tensor,
    or a sequence of tensors sharing (chains, draws), whose elements count in turn):
    ``mean``, ``sd`` (pooled, ddof=1), ``mcse_mean``, ``ess_bulk``, ``ess_tail``, ``r_hat``,
    each shaped ``draws.shape[2:]``, and ``quantiles`` (pooled type-7) shaped
    ``(len(probs), *draws.shape[2:])``.  Values equal the functions above; each element's
    draws are sorted once for all of them."""
    probs = [float(p) for p in probs]

    names = ["mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]

    def columns(e: _Elements) -> Tensor:
        stats = [e.mean, e.sd, e.mcse_mean(), e.ess_bulk(), e.ess_tail(), e.rhat()]
        return np.stack([*stats, *e.quantiles(probs)], axis=-1)

    out, shape = _per_element(draws, columns)
    table = {name: out[:, i].reshape(shape) for i, name in enumerate(names)}
    table["quantiles"] = out[:, len(names) :].T.reshape(len(probs), *shape)
    return table


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
    out, shape = _per_element(draws, lambda e: _autocovariance(e.x, mean_over_chains=False))
    return out.permute(1, 2, 0).reshape(*out.shape[1:], *shape)
