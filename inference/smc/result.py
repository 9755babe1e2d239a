"""The result of a sequential Monte Carlo run: final weighted particles and the run's history.

``log_evidence`` is the estimate accumulated over the steps, ``sum_k log sum_i W_{k-1,i}
w_{k,i}`` (the normalized weights before step ``k`` times its incremental weights): the log
of an unbiased estimate of the evidence, with or without resampling. The final weights alone
(``WeightedPosterior.log_evidence``) would forget every step before the last resampling.
Weighted statistics (``mean``, ``resample``, ``summary``) are those of the final particles,
``particles`` as a :class:`~ppl.inference.results.posterior.WeightedPosterior`.

    >>> import torch
    >>> post = SMCPosterior(samples={"x": torch.zeros(4)}, log_weights=torch.zeros(4),
    ...                     log_evidence=torch.tensor(-1.5), ess_history=torch.tensor([4.0]),
    ...                     resampled=torch.tensor([False]))
    >>> float(post.ess), float(post.log_evidence)
    (4.0, -1.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ppl.inference.results.export import observed_values, to_arviz
from ppl.inference.results.posterior import WeightedPosterior
from ppl.inference.results.summary import Summary, summarize

from .resampling import resample
from .smoothing import StepHistory, backward_simulation
from .streams import run_generator

__all__ = ["SMCPosterior"]


@dataclass
class SMCPosterior:
    """Final particles ``samples`` (each ``(N, *site_shape)``) with ``log_weights (N,)``;
    per step ``ess_history`` (the ESS after the step's weighting), ``resampled`` (whether the
    particles were resampled before the step), ``log_evidence_increments`` (their sum is
    ``log_evidence``) and, when kept, ``ancestors (steps, N)`` (particle ``i`` of step ``k``
    descends from particle ``ancestors[k, i]`` of step ``k - 1``; row 0 is the identity).
    ``extra``: run facts (the resampling ``scheme``, ``filtering_means`` per site at its own
    step, tempered SMC's ``betas`` and kernel tuning, the lowered ``graph``). A filter run
    with ``keep_history`` keeps its ``history`` and ``program`` for :meth:`smooth`."""

    samples: dict[str, Tensor]
    log_weights: Tensor
    log_evidence: Tensor
    ess_history: Tensor
    resampled: Tensor
    log_evidence_increments: Tensor | None = None
    ancestors: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    history: list[StepHistory] | None = field(default=None, repr=False)
    program: Any = field(default=None, repr=False)

    @property
    def num_particles(self) -> int:
        return self.log_weights.shape[0]

    @property
    def num_steps(self) -> int:
        return self.ess_history.shape[0]

    @property
    def particles(self) -> WeightedPosterior:
        """The final particles as weighted draws."""
        return WeightedPosterior(samples=self.samples, log_weights=self.log_weights)

    @property
    def weights(self) -> Tensor:
        return self.particles.weights

    @property
    def ess(self) -> Tensor:
        """Kish effective sample size of the final weights."""
        return self.particles.ess

    @property
    def num_resampled(self) -> int:
        return int(self.resampled.sum())

    def lineage(self) -> Tensor:
        """``(steps, N)``: the index, among step ``k``'s particles, of the ancestor of each
        final particle (its genealogy; few distinct early ancestors is path degeneracy)."""
        if self.ancestors is None:
            raise ValueError("the run did not keep its ancestor indices (keep_ancestors=False)")
        index = torch.arange(self.num_particles)
        rows = []
        for parents in reversed(self.ancestors):
            rows.append(index)
            index = parents[index]
        return torch.stack(rows[::-1])

    def smooth(self, num_paths: int = 100, generator: torch.Generator | None = None
               ) -> dict[str, Tensor]:
        """``num_paths`` draws of whole latent paths from the smoothing distribution, by
        forward filtering, backward simulation (``ppl.inference.smc.smoothing``); each value
        ``(num_paths, *site_shape)``."""
        if self.history is None or self.program is None:
            raise ValueError("smoothing needs the filter's history: run the filter with "
                             "keep_history=True")
        generator = run_generator() if generator is None else generator
        return backward_simulation(self.program, self.history, num_paths, generator)

    def mean(self, name: str) -> Tensor:
        return self.particles.mean(name)

    def resample(self, num_samples: int | None = None, scheme: str = "systematic",
                 generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Equally weighted draws of the final particles by ``scheme``."""
        index = resample(self.log_weights, scheme, num_samples, generator, "the final weights")
        return {k: v[index] for k, v in self.samples.items()}

    def summary(self, prob: Sequence[float] = (0.05, 0.5, 0.95)) -> Summary:
        """Weighted statistics of the final particles; the run's evidence, resampling count
        and final ESS below the table."""
        notes = [f"log evidence {float(self.log_evidence):.4f} over {self.num_steps} steps, "
                 f"resampled {self.num_resampled} times; final ESS {float(self.ess):.1f} of "
                 f"{self.num_particles} particles"]
        if "betas" in self.extra:
            notes.append(f"{len(self.extra['betas']) - 1} tempering stages")
        return summarize(self.samples, weights=self.weights, prob=prob, notes=notes)

    def to_arviz(self, posterior_predictive: dict[str, Tensor] | None = None,
                 generator: torch.Generator | None = None):
        """An ``arviz.InferenceData`` whose posterior is one chain of ``N`` equally weighted
        draws (the final particles, systematically resampled: ArviZ has no weighted draws);
        needs ArviZ (see ``ppl.inference.results.export``)."""
        draws = {k: v[None] for k, v in self.resample(generator=generator).items()}
        graph = self.extra.get("graph")
        observed = observed_values(graph) if graph is not None else None
        return to_arviz(draws, None, observed, posterior_predictive)
