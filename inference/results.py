"""Inference results: posterior draws with summaries and evidence.

``WeightedPosterior`` holds importance-weighted draws (each value ``(num_samples, *shape)``);
``Posterior`` holds MCMC draws (each value ``(chains, draws, *shape)``).

    >>> import torch
    >>> post = WeightedPosterior({"x": torch.randn(100)}, log_weights=torch.zeros(100))
    >>> float(post.ess)
    100.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .summary import Summary, summarize


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

    def resample(self, num_samples: int | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Unweighted draws by multinomial resampling."""
        n = num_samples or self.num_samples
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return {k: v[idx] for k, v in self.samples.items()}

    def summary(self) -> Summary:
        return summarize(self.samples, weights=self.weights)


@dataclass
class Posterior:
    """MCMC draws: each value ``(chains, draws, *site_shape)``, with per-draw sampler info."""

    samples: dict[str, torch.Tensor]
    info: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0]

    def flat_samples(self) -> dict[str, torch.Tensor]:
        """Chains merged: each value ``(chains * draws, *site_shape)``."""
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in self.samples.items()}

    def summary(self) -> Summary:
        notes = []
        if "divergent" in self.info:
            notes.append(f"Number of divergences: {int(self.info['divergent'].sum())}")
        return summarize(self.samples, notes=notes)
