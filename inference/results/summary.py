"""Posterior summary table: mean, sd, quantiles and convergence diagnostics per element.

``summarize`` turns a dict of draws into a ``Summary``: one row per scalar element of each
site (``mu``, ``theta[0]``, ``L[1,2]``), printed as an aligned fixed-width table.

    >>> import torch
    >>> from ppl.inference.results.summary import summarize
    >>> g = torch.Generator().manual_seed(0)
    >>> s = summarize({"mu": torch.randn(4, 500, generator=g),
    ...                "theta": torch.randn(4, 500, 2, generator=g)})
    >>> list(s.rows)
    ['mu', 'theta[0]', 'theta[1]']
    >>> s.columns
    ['mean', 'sd', '5%', '50%', '95%', 'mcse_mean', 'ess_bulk', 'ess_tail', 'r_hat']
    >>> s["theta[1]"]["r_hat"] < 1.01
    True

Two kinds of input:

* MCMC draws (``weights=None``): each tensor is ``(chains, draws, *site_shape)``.  Columns:
  mean, sd (pooled over chains and draws, ddof=1), the ``prob`` quantiles (pooled,
  linear interpolation between order statistics), mcse_mean, ess_bulk, ess_tail, r_hat
  (see ``ppl.inference.results.diagnostics`` for their exact definitions).
* Importance samples (``weights`` given): each tensor is ``(num_samples, *site_shape)`` and
  ``weights`` is ``(num_samples,)`` of non-negative weights (normalized here by their sum if
  they are not already).  Columns: weighted mean sum_i w_i x_i, weighted sd
  sqrt(sum_i w_i (x_i - mean)^2) (the self-normalized estimate of the posterior sd, no
  small-sample correction), and weighted quantiles from the weighted empirical CDF:
  q_p = min{x_i : sum_{j: x_j <= x_i} w_j >= p} (no interpolation).  The header line reports
  the Kish effective sample size (sum w)^2 / sum w^2 = 1 / sum w^2 for normalized weights.

``warnings(summary)`` returns the human-readable convergence warnings an engine should
emit: elements with non-finite draws (inf or nan, whose statistics mean nothing and which the
other checks cannot judge), r_hat > 1.01, and ess_bulk or ess_tail below 100 per chain
(Vehtari et al. 2021), or a Kish ESS below 100 for importance samples. Engines emit them as
:class:`ConvergenceWarning` (Python's ``warnings``), so they can be filtered or turned into
errors: ``warnings.simplefilter("error", ConvergenceWarning)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor

from . import diagnostics as _diag

__all__ = ["Summary", "summarize", "warnings", "convergence_warnings", "ConvergenceWarning"]

_STAT_COLUMNS = ("mean", "sd")


class ConvergenceWarning(UserWarning):
    """An inference result failed a convergence check (R-hat, ESS, divergences, E-BFMI,
    tree-depth saturation, importance-weight ESS): its estimates may be unreliable."""

_MCMC_COLUMNS = ("mcse_mean", "ess_bulk", "ess_tail", "r_hat")


def _prob_label(p: float) -> str:
    return f"{100.0 * p:g}%"


def _element_names(name: str, shape: torch.Size) -> list[str]:
    if len(shape) == 0:
        return [name]
    if math.prod(shape) == 0:
        return []
    idx = torch.cartesian_prod(*[torch.arange(s) for s in shape])
    if idx.dim() == 1:
        idx = idx.unsqueeze(-1)
    return [f"{name}[{','.join(str(int(i)) for i in row)}]" for row in idx]


# --------------------------------------------------------------------------- formatting


def _format_value(column: str, v: float) -> str:
    """Format one cell: ESS as integers, r_hat with 3 decimals, other values with about 4
    significant digits (1 to 6 decimals; scientific notation below 1e-3 or from 1e6)."""
    if not math.isfinite(v):
        return str(v)
    if column.startswith("ess"):
        return f"{v:.0f}"
    if column == "r_hat":
        return f"{v:.3f}"
    a = abs(v)
    if a == 0.0:
        return "0"
    if a < 1e-3 or a >= 1e6:
        return f"{v:.2e}"
    decimals = min(6, max(1, 3 - math.floor(math.log10(a))))
    return f"{v:.{decimals}f}"


class Summary(Mapping):
    """A table of per-element posterior statistics.

    ``rows`` maps a row name (``mu``, ``theta[0]``, ``L[1,2]``) to a dict column -> float, in
    site order.  ``columns`` lists the column names in display order.  ``header`` is a line
    printed above the table (the Kish ESS for importance samples), ``notes`` are lines
    printed below it (e.g. "Number of divergences: 3").  ``num_chains``/``num_draws`` are set
    for MCMC summaries, ``kish_ess``/``num_samples`` for weighted ones.  ``nonfinite`` maps
    the rows with inf or nan draws to how many they have.

    A Summary is a read-only mapping row name -> row dict, so ``s["mu"]["mean"]``,
    ``"mu" in s`` and ``for name in s`` work; ``str(s)`` is the table.
    """

    def __init__(
        self,
        rows: dict[str, dict[str, float]],
        columns: Sequence[str],
        *,
        header: str | None = None,
        notes: Sequence[str] | None = None,
        num_chains: int | None = None,
        num_draws: int | None = None,
        kish_ess: float | None = None,
        num_samples: int | None = None,
        nonfinite: Mapping[str, int] | None = None,
    ) -> None:
        self.rows = rows
        self.columns = list(columns)
        self.header = header
        self.notes = list(notes or [])
        self.num_chains = num_chains
        self.num_draws = num_draws
        self.kish_ess = kish_ess
        self.num_samples = num_samples
        self.nonfinite = dict(nonfinite or {})

    @property
    def weighted(self) -> bool:
        """True for an importance-sampling summary."""
        return self.kish_ess is not None

    def __getitem__(self, row_name: str) -> dict[str, float]:
        try:
            return self.rows[row_name]
        except KeyError:
            raise KeyError(
                f"no row {row_name!r} in summary; rows are {list(self.rows)[:10]}"
                + (" ..." if len(self.rows) > 10 else "")
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def to_dict(self) -> dict[str, dict[str, float]]:
        """A copy of ``rows``: {row name: {column: value}}."""
        return {name: dict(row) for name, row in self.rows.items()}

    def warnings(self, **thresholds) -> list[str]:
        """Same as ``ppl.inference.results.summary.warnings(self, **thresholds)``."""
        return warnings(self, **thresholds)

    def __str__(self) -> str:
        cells = [[_format_value(c, row[c]) for c in self.columns] for row in self.rows.values()]
        name_width = max([len(n) for n in self.rows] + [4])
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        lines = []
        if self.header:
            lines.append(self.header)
            lines.append("")
        head = " " * name_width + "".join(
            "  " + c.rjust(w) for c, w in zip(self.columns, widths, strict=True)
        )
        lines.append(head)
        for name, row_cells in zip(self.rows, cells, strict=True):
            lines.append(
                name.ljust(name_width)
                + "".join("  " + v.rjust(w) for v, w in zip(row_cells, widths, strict=True))
            )
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.__str__()


# --------------------------------------------------------------------------- summarize


def _check(name: str, value, min_dim: int, what: str) -> Tensor:
    t = value if isinstance(value, Tensor) else torch.as_tensor(value)
    if t.dim() < min_dim:
        raise ValueError(
            f"site {name!r}: expected {what}, got shape {tuple(t.shape)}"
            + ("; for a single chain use x.unsqueeze(0)" if min_dim == 2 else "")
        )
    return t.detach()


def _nonfinite(sites: Mapping[str, Tensor], lead: int) -> dict[str, int]:
    """Row name -> number of inf or nan draws, for every element that has any (``lead``:
    how many leading dims index draws)."""
    out = {}
    for name, x in sites.items():
        counts = (~torch.isfinite(x)).reshape(*x.shape[:lead], -1).flatten(0, lead - 1).sum(0)
        names = _element_names(name, x.shape[lead:])
        out.update((nm, c) for nm, c in zip(names, counts.tolist(), strict=True) if c)
    return out


def _mcmc_rows(
    sites: Mapping[str, Tensor], probs: Tensor, labels: list[str]
) -> dict[str, dict[str, float]]:
    """Rows of every element of every site's ``(chains, draws, *shape)`` draws, computed in
    one pass over chunks of elements gathered across sites (no copy of all the draws)."""
    names = [nm for name, x in sites.items() for nm in _element_names(name, x.shape[2:])]
    if not names:
        return {}
    table = _diag.summary_columns(list(sites.values()), probs)
    stats = {"mean": table["mean"], "sd": table["sd"]}
    for label, q in zip(labels, table["quantiles"], strict=True):
        stats[label] = q
    for column in _MCMC_COLUMNS:
        stats[column] = table[column]
    columns = list(stats)
    table = torch.stack([stats[c] for c in columns], dim=-1).tolist()
    return {
        nm: dict(zip(columns, vals, strict=True)) for nm, vals in zip(names, table, strict=True)
    }


def _weighted_quantiles(x: Tensor, w: Tensor, probs: Tensor) -> Tensor:
    """Inverse weighted empirical CDF of (S, K) draws with (S,) weights -> (P, K)."""
    xs, order = torch.sort(x, dim=0)
    cdf = torch.cumsum(w[order], dim=0)  # (S, K)
    # A slack of 1e-12 absorbs cumsum rounding (e.g. 0.1+0.2+0.2 < 0.5).
    target = (probs - 1e-12).clamp(min=0.0).unsqueeze(-1).expand(-1, x.shape[1])
    idx = torch.searchsorted(cdf.T.contiguous(), target.T.contiguous(), side="left").T
    idx = idx.clamp(max=x.shape[0] - 1)
    return xs.gather(0, idx)


def _weighted_rows(
    name: str, x: Tensor, w: Tensor, probs: Tensor, labels: list[str]
) -> dict[str, dict[str, float]]:
    shape = x.shape[1:]
    names = _element_names(name, shape)
    if not names:
        return {}
    flat = x.reshape(x.shape[0], -1)
    mean = (w.unsqueeze(-1) * flat).sum(dim=0)
    var = (w.unsqueeze(-1) * (flat - mean).square()).sum(dim=0)
    stats = {"mean": mean, "sd": var.sqrt()}
    qs = _weighted_quantiles(flat, w, probs)
    for label, q in zip(labels, qs, strict=True):
        stats[label] = q
    columns = list(stats)
    table = torch.stack([stats[c] for c in columns], dim=-1).tolist()
    return {
        nm: dict(zip(columns, vals, strict=True)) for nm, vals in zip(names, table, strict=True)
    }


def summarize(
    samples: Mapping[str, Tensor],
    *,
    weights: Tensor | None = None,
    prob: Sequence[float] = (0.05, 0.5, 0.95),
    notes: Sequence[str] | None = None,
) -> Summary:
    """Summarize posterior draws, one row per scalar element of each site.

    samples: site name -> ``(chains, draws, *site_shape)`` MCMC draws, or, when ``weights``
        is given, ``(num_samples, *site_shape)`` importance samples.
    weights: ``(num_samples,)`` non-negative importance weights (normalized here by their
        sum); switches to weighted statistics and reports the Kish ESS in the header.
    prob: quantile levels in (0, 1); columns are labelled like ``5%``, ``2.5%``.
    notes: footer lines printed under the table.

    See the module docstring for the exact statistics.  Raises ``ValueError`` naming the
    site for wrongly shaped input.
    """
    probs = torch.as_tensor(list(prob), dtype=torch.float64)
    if probs.dim() != 1 or ((probs <= 0) | (probs >= 1)).any():
        raise ValueError(f"prob must be a sequence of levels in (0, 1), got {tuple(prob)}")
    labels = [_prob_label(float(p)) for p in probs]
    rows: dict[str, dict[str, float]] = {}

    if weights is None:
        checked = {name: _check(name, value, 2, "MCMC draws shaped (chains, draws, *site_shape)")
                   for name, value in samples.items()}
        shapes = {tuple(x.shape[:2]) for x in checked.values()}
        if len(shapes) > 1:
            raise ValueError(
                f"sites disagree on (chains, draws): {sorted(shapes)}; pass draws from one run"
            )
        rows.update(_mcmc_rows(checked, probs, labels))
        chains, draws = next(iter(shapes)) if shapes else (0, 0)
        columns = [*_STAT_COLUMNS, *labels, *_MCMC_COLUMNS]
        return Summary(
            rows,
            columns,
            header=f"Posterior summary: {chains} chains x {draws} draws",
            notes=notes,
            num_chains=chains,
            num_draws=draws,
            nonfinite=_nonfinite(checked, 2),
        )

    w = torch.as_tensor(weights).detach().to(torch.float64)
    if w.dim() != 1:
        raise ValueError(f"weights must be shaped (num_samples,), got {tuple(w.shape)}")
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    w = w / w.sum()
    kish = float(1.0 / w.square().sum())
    checked = {}
    for name, value in samples.items():
        x = checked[name] = _check(name, value, 1,
                                   "importance samples shaped (num_samples, *site_shape)")
        x = x.to(torch.float64)
        if x.shape[0] != w.shape[0]:
            raise ValueError(
                f"site {name!r}: {x.shape[0]} samples (shape {tuple(x.shape)}) but "
                f"{w.shape[0]} weights; the leading dimension must index samples"
            )
        rows.update(_weighted_rows(name, x, w, probs, labels))
    return Summary(
        rows,
        [*_STAT_COLUMNS, *labels],
        header=(f"Importance-weighted summary: {w.shape[0]} samples, Kish ESS = {kish:.1f}"),
        notes=notes,
        kish_ess=kish,
        num_samples=int(w.shape[0]),
        nonfinite=_nonfinite(checked, 1),
    )


# --------------------------------------------------------------------------- warnings


def _worst(items: list[tuple[str, float]], reverse: bool, limit: int = 5) -> str:
    items = sorted(items, key=lambda kv: kv[1], reverse=reverse)
    text = ", ".join(f"{n} ({v:.3g})" for n, v in items[:limit])
    if len(items) > limit:
        text += f", and {len(items) - limit} more"
    return text


def warnings(
    summary: Summary,
    *,
    max_rhat: float = 1.01,
    min_ess_per_chain: float = 100.0,
    min_kish_ess: float = 100.0,
) -> list[str]:
    """Human-readable convergence warnings for a Summary (empty list when all is well).

    MCMC summaries: r_hat > ``max_rhat`` (1.01), ess_bulk or ess_tail below
    ``min_ess_per_chain`` * chains (100 per chain), the thresholds of Vehtari et al. (2021).
    Weighted summaries: Kish ESS below ``min_kish_ess``.  Both: any element with inf or nan
    draws.  nan diagnostics of finite draws (constant elements) do not warn.  Each message
    names the worst offending rows.
    """
    out = _nonfinite_warnings(summary)
    if summary.weighted:
        if summary.kish_ess is not None and summary.kish_ess < min_kish_ess:
            out.append(
                f"Kish ESS of the importance weights is {summary.kish_ess:.1f} "
                f"(< {min_kish_ess:g}) of {summary.num_samples} samples: the estimates rest "
                "on a few samples; use more samples or a proposal closer to the posterior."
            )
        return out
    chains = summary.num_chains or 1
    bad_rhat = [(n, r["r_hat"]) for n, r in summary.rows.items() if r.get("r_hat", 0) > max_rhat]
    if bad_rhat:
        out.append(
            f"r_hat > {max_rhat:g} for {len(bad_rhat)} of {len(summary)} elements: "
            f"{_worst(bad_rhat, reverse=True)}. The chains have not mixed; run longer, "
            "check for multimodality, or reparameterize."
        )
    min_ess = min_ess_per_chain * chains
    for column, what in (("ess_bulk", "posterior means and medians"), ("ess_tail", "tails")):
        low = [(n, r[column]) for n, r in summary.rows.items() if r.get(column, min_ess) < min_ess]
        if low:
            out.append(
                f"{column} < {min_ess:g} ({min_ess_per_chain:g} per chain) for {len(low)} of "
                f"{len(summary)} elements: {_worst(low, reverse=False)}. Estimates of {what} "
                "may be unreliable; run more draws."
            )
    return out


def _nonfinite_warnings(summary: Summary, limit: int = 5) -> list[str]:
    if not summary.nonfinite:
        return []
    total = summary.num_samples if summary.weighted else summary.num_chains * summary.num_draws
    sites = list(dict.fromkeys(row.split("[")[0] for row in summary.nonfinite))
    worst = sorted(summary.nonfinite.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{row} ({count} of {total})" for row, count in worst[:limit])
    if len(worst) > limit:
        text += f", and {len(worst) - limit} more"
    return [
        f"non-finite draws (inf or nan) at site(s) {', '.join(map(repr, sites))}, in "
        f"{len(worst)} of {len(summary)} elements: {text}. Their statistics and convergence "
        "checks mean nothing; the sampler left the support or a value overflowed (check the "
        "model's priors, supports and data scales)."
    ]


# Alias for re-export where the name ``warnings`` would shadow the standard library module.
convergence_warnings = warnings
