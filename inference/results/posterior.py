"""Inference results: posterior draws with summaries and evidence.

``WeightedPosterior`` holds importance-weighted draws (each value ``(num_samples, *shape)``);
``Posterior`` holds MCMC draws (each value ``(chains, draws, *shape)``) with sampler
diagnostics, convergence warnings and export to ArviZ.

    >>> import torch
    >>> post = WeightedPosterior({"x": torch.randn(100)}, log_weights=torch.zeros(100))
    >>> round(float(post.ess), 3)
    100.0
"""

from __future__ import annotations

import math
import warnings as _warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ppl.randomness import drawing

from .export import observed_values, to_arviz
from .log_likelihood import pointwise_log_likelihood
from .sampler_diagnostics import SamplerDiagnostics
from .summary import ConvergenceWarning, Summary, summarize


@dataclass
class WeightedPosterior:
    """Weighted draws. ``log_evidence`` = log mean exp(log_weights), the log of an unbiased
    estimate of the marginal likelihood; ``weights`` are the normalized weights."""

    samples: dict[str, torch.Tensor]
    log_weights: torch.Tensor

    @property
    def num_samples(self) -> int:
        return self.log_weights.shape[0]

    @property
    def weights(self) -> torch.Tensor:
        return torch.softmax(self.log_weights, dim=0)

    @property
    def log_evidence(self) -> torch.Tensor:
        return torch.logsumexp(self.log_weights, 0) - math.log(self.num_samples)

    @property
    def log_evidence_se(self) -> torch.Tensor:
        """Delta-method standard error of ``log_evidence``: sd(w) / (sqrt(N) mean(w))."""
        w = torch.exp(self.log_weights - self.log_weights.max())
        return w.std() / (w.mean() * math.sqrt(self.num_samples))

    @property
    def ess(self) -> torch.Tensor:
        """Kish effective sample size of the weights, 1 / sum(w_i^2)."""
        return 1.0 / (self.weights**2).sum()

    def mean(self, name: str) -> torch.Tensor:
        w = self.weights.reshape(-1, *([1] * (self.samples[name].dim() - 1)))
        return (w * self.samples[name]).sum(0)

    def resample(self, num_samples: int | None = None,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Unweighted draws by multinomial resampling."""
        n = num_samples or self.num_samples
        with drawing() as current:  # the seed scope's stream unless a generator is given
            idx = torch.multinomial(self.weights, n, replacement=True,
                                    generator=current if generator is None else generator)
        return {k: v[idx] for k, v in self.samples.items()}

    def summary(self) -> Summary:
        return summarize(self.samples, weights=self.weights)


@dataclass
class Posterior:
    """MCMC draws: each value ``(chains, draws, *site_shape)``, with per-draw sampler info.

    ``info``: ``{field: (chains, draws)}`` as recorded by the kernel (see
    ``ppl.inference.mcmc.Info``); ``extra``: run facts (adapted ``step_size`` and
    ``inverse_mass_matrix``, ``num_grad_evals``, times, ``kernel`` name, ``max_tree_depth``,
    the lowered ``graph``). Convergence checks are reported once per result as
    :class:`ConvergenceWarning` (``warn()``, which ``MCMC`` calls at the end of the run and
    ``summary()`` calls again to no effect). The draws are treated as immutable: the default
    summary is computed once and cached.
    """

    samples: dict[str, torch.Tensor]
    info: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    _summary: Summary | None = field(default=None, init=False, repr=False, compare=False)
    _warned: bool = field(default=False, init=False, repr=False, compare=False)

    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.samples.values())).shape[1]

    def flat_samples(self) -> dict[str, torch.Tensor]:
        """Chains merged: each value ``(chains * draws, *site_shape)``."""
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in self.samples.items()}

    def diagnostics(self) -> SamplerDiagnostics:
        """Per-chain divergences, tree depths, step sizes, acceptance, E-BFMI, cost, time."""
        return SamplerDiagnostics.from_run(self.info, self.extra)

    def convergence_warnings(self) -> list[str]:
        """Every failed check, as text (empty when all pass): sites with inf or nan draws,
        r_hat > 1.01 and ess_bulk / ess_tail below 100 per chain (Vehtari et al. 2021) from
        the summary, and the sampler's divergences, E-BFMI < 0.3 and tree-depth saturation."""
        return self._default_summary().warnings() + self.diagnostics().warnings()

    def warn(self, stacklevel: int = 1) -> None:
        """Emit each convergence warning as a :class:`ConvergenceWarning`, once per result;
        ``stacklevel`` as in ``warnings.warn``, counted from the caller of ``warn``."""
        if self._warned:
            return
        self._warned = True
        for message in self.convergence_warnings():
            _warnings.warn(message, ConvergenceWarning, stacklevel=stacklevel + 1)

    def summary(self, prob: Sequence[float] = (0.05, 0.5, 0.95)) -> Summary:
        """Per element: mean, sd, ``prob`` quantiles, mcse_mean, ess_bulk, ess_tail, r_hat;
        below the table the divergence count and any convergence warnings."""
        self.warn(stacklevel=2)
        notes = []
        diag = self.diagnostics()
        if diag.divergences is not None:
            total = diag.num_chains * diag.num_draws
            notes.append(f"Number of divergences: {diag.num_divergent} of {total} transitions")
        notes += [f"Warning: {w}" for w in self.convergence_warnings()]
        if tuple(prob) == (0.05, 0.5, 0.95):
            table = self._default_summary()
            return Summary(table.rows, table.columns, header=table.header, notes=notes,
                           num_chains=table.num_chains, num_draws=table.num_draws,
                           nonfinite=table.nonfinite)
        return summarize(self.samples, prob=prob, notes=notes)

    def _default_summary(self) -> Summary:
        if self._summary is None:
            self._summary = summarize(self.samples)
        return self._summary

    def log_likelihood(self) -> dict[str, torch.Tensor]:
        """Pointwise log likelihood of each observed site at each draw, ``{site: (chains,
        draws, *batch_shape)}`` (what ``az.loo`` and ``az.waic`` read; see
        ``ppl.inference.results.log_likelihood``), computed once and kept."""
        if "log_likelihood" not in self.extra:
            graph = self.extra.get("graph")
            if graph is None:
                raise ValueError("this posterior has no graph to evaluate its likelihood on")
            self.extra["log_likelihood"] = pointwise_log_likelihood(graph, self.samples)
        return self.extra["log_likelihood"]

    def to_arviz(self, posterior_predictive: dict[str, torch.Tensor] | None = None):
        """An ``arviz.InferenceData`` with posterior, sample_stats, log_likelihood and
        observed_data groups (and posterior_predictive when given, e.g. from
        ``ppl.predictive``); needs ArviZ (see ``ppl.inference.results.export``)."""
        graph = self.extra.get("graph")
        observed = observed_values(graph) if graph is not None else None
        log_likelihood = self.log_likelihood() if graph is not None else None
        return to_arviz(self.samples, self.info, observed, posterior_predictive, log_likelihood)
