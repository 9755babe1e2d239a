"""Importance sampling on the trace path, vectorized over samples (a model that does not
vectorize, e.g. one with Python control flow on a random value, runs once per sample, said
once with a ``ppl.vectorize.VectorizationWarning``).

With the prior as proposal (default) each sample's log weight is its log likelihood (the
log joint minus the log prior of the latents it drew); with a ``guide`` (a model over the
same latent sites) it is ``log p(x, z) - log q(z)``. The evidence estimate
``log mean exp(log_weights)`` is the log of an unbiased estimate of ``p(x)``.

    >>> import torch
    >>> from ppl import infer, model, sample, plate
    >>> from ppl.stdlib import Beta, Bernoulli
    >>> @model
    ... def coin(flips):
    ...     p = sample("p", Beta(2.0, 2.0))
    ...     with plate("data", len(flips)):
    ...         sample("x", Bernoulli(p), obs=flips)
    >>> post = infer(coin, torch.tensor([1., 1., 0.]), method=Importance(5000), seed=0)
    >>> post.samples["p"].shape
    torch.Size([5000])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ppl.inference.results.posterior import WeightedPosterior
from ppl.model import Model
from ppl.vectorize import batch_ndims, particle_runs, pilot_trace


@dataclass
class Importance:
    """Self-normalized importance sampling with ``num_samples`` draws from the proposal."""

    num_samples: int = 1000
    guide: Model | Callable | None = None

    def run(
        self, model: Model, args: tuple, kwargs: dict, *, passes: Sequence[Callable] = ()
    ) -> WeightedPosterior:
        if passes:
            raise ValueError(
                "Importance runs on the trace path and cannot apply graph passes; "
                "apply them to the graph and pass the resulting model instead"
            )
        with torch.no_grad():  # a guide's params need no gradient here: draws stay plain
            samples, log_weights = self._weighted_draws(model, args, kwargs)
        return WeightedPosterior(samples=samples, log_weights=log_weights)

    def _weighted_draws(self, model: Model, args: tuple, kwargs: dict
                        ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        model_pilot = pilot_trace(model, args, kwargs)
        if self.guide is None:
            run = particle_runs(model, args, kwargs, self.num_samples, pilot=model_pilot)
            log_q = run.latent_log_prob()
        else:
            guide_pilot = pilot_trace(self.guide, args, kwargs)
            missing = [s.name for s in model_pilot.latent_sites() if s.name not in guide_pilot]
            if missing:
                raise ValueError(f"the guide does not propose the latent sites {missing}")
            dim = -(max(batch_ndims(model_pilot), batch_ndims(guide_pilot)) + 1)
            guide_run = particle_runs(self.guide, args, kwargs, self.num_samples,
                                      particle_dim=dim, pilot=guide_pilot)
            run = particle_runs(model, args, kwargs, self.num_samples, particle_dim=dim,
                                pilot=model_pilot, proposal=guide_run)
            log_q = guide_run.log_joint()
        log_weights = run.log_joint() - log_q
        return run.values(observed=False), log_weights
