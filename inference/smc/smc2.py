"""``SMC2``: sequential Monte Carlo over the static parameters of a state-space model, each
parameter particle with a particle filter of its own (SMC²; Chopin, Jacob &
Papaspiliopoulos 2013).

``num_theta`` parameter particles start from the prior; all their filters (``num_theta *
num_particles`` rows) advance together, one engine call per step. At step ``k`` each
parameter particle is reweighted by its filter's evidence increment ``Ẑ_k / Ẑ_{k-1}``, and
the log evidence of the model grows by ``log sum_m W_m Ẑ_{k,m} / Ẑ_{k-1,m}``: an unbiased
estimate of ``p(y)`` at the end. When the ESS of the parameter weights falls below
``ess_threshold * num_theta`` the parameter particles are resampled (each with its filter)
and moved by ``num_moves`` PMMH steps: a Gaussian random walk on the unconstrained
parameters with covariance ``2.38² / dim`` times the particles' covariance, scored by a
fresh filter run up to step ``k``, accepted with probability ``min(1, p(z') Ẑ_k(z') / (p(z)
Ẑ_k(z)))``; an accepted particle takes the new filter along. The filters run in C when the
engine allows (``backend``, chosen once per run: :func:`~.native_blocks.block_filters`; the
parameter particles' values are run-time inputs of the compiled filter, which keeps its
state between steps), else on torch (``extra["backend"]``, ``extra["backend_reason"]``).
The result is an
:class:`~ppl.inference.smc.result.SMCPosterior` of the static sites with the run's
``log_evidence`` and each move's acceptance rate in ``extra["accept_rate"]``.

    >>> import torch
    >>> from ppl import infer, model, sample
    >>> from ppl.stdlib import HalfNormal, Normal, Uniform
    >>> @model
    ... def ar1(ys):
    ...     a, r = sample("a", Uniform(-1.0, 1.0)), sample("r", HalfNormal(1.0))
    ...     x = sample("x_0", Normal(0.0, 1.0))
    ...     for t in range(len(ys)):
    ...         x = sample(f"x_{t + 1}", Normal(a * x, 1.0))
    ...         sample(f"y_{t}", Normal(x, r), obs=ys[t])
    >>> method = SMC2(static=["a", "r"], num_theta=50, num_particles=20)
    >>> post = infer(ar1, torch.zeros(4), method=method, seed=0)
    >>> post.samples["r"].shape, bool(post.log_evidence < 0)
    (torch.Size([50]), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ppl.inference.mcmc.base import check_count
from ppl.inference.mcmc.progress import ProgressLine, progress_enabled
from ppl.model import Model
from ppl.passes import run as run_passes

from .backends import backend_report, check_backend
from .blocks import BlockFilter, check_filter_settings, check_fraction, one_thread
from .native_blocks import BlockStart, NativeBlockRun, block_filters
from .resampling import DegenerateWeights, resample
from .result import SMCPosterior
from .static import StaticModel
from .streams import run_generator

__all__ = ["SMC2"]


@dataclass(frozen=True)
class SMC2:
    """SMC² on the sites ``static`` (see the module docstring): ``num_theta`` parameter
    particles, each with a filter of ``num_particles`` particles (``resample`` scheme,
    resampling below ``filter_ess_threshold * num_particles``); the parameter particles are
    resampled and moved (``num_moves`` PMMH steps) when their ESS falls below
    ``ess_threshold * num_theta``; ``backend``: the filters' ("auto": C when it can,
    "native": C or an error, "torch")."""

    static: Sequence[str] = ()
    num_theta: int = 200
    num_particles: int = 100
    ess_threshold: float = 0.5
    num_moves: int = 2
    resample: str = "systematic"
    filter_ess_threshold: float = 0.5
    progress_bar: bool | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_backend("SMC2", self.backend)
        check_filter_settings("SMC2", self.num_particles, self.resample,
                              self.filter_ess_threshold)
        check_count("SMC2", "num_theta", self.num_theta, 2)
        check_count("SMC2", "num_moves", self.num_moves, 1)
        check_fraction("SMC2", "ess_threshold", self.ess_threshold)

    def run(self, model: Model, args: tuple, kwargs: dict, *,
            passes: Sequence[Callable] = ()) -> SMCPosterior:
        split = StaticModel(run_passes(model.graph(*args, **kwargs), list(passes)),
                            self.static, "SMC2")
        with one_thread():
            return self._run(split)

    def _run(self, split: StaticModel) -> SMCPosterior:
        generator = run_generator()
        m, steps = self.num_theta, split.num_steps
        z = split.draw_prior(m, generator)
        start, reason = block_filters(split, self.num_particles, resample=self.resample,
                                      ess_threshold=self.filter_ess_threshold,
                                      backend=self.backend, owner="SMC2")
        filters = start(split.constrained(z), generator)
        log_w = torch.full((m,), -math.log(m), dtype=torch.float64)
        increments, ess_history = [], torch.empty(steps, dtype=torch.float64)
        resampled = torch.zeros(steps, dtype=torch.bool)
        accept_rates: list[float] = []
        line = (ProgressLine(steps, phase="steps", counter="moves")
                if progress_enabled(self.progress_bar) else None)
        for k in range(steps):
            unnormalized = log_w + filters.advance()
            total = torch.logsumexp(unnormalized, 0)
            if torch.isneginf(total):
                raise DegenerateWeights(f"SMC2 step {k}: every parameter particle's filter "
                                        "has evidence zero")
            increments.append(total)
            log_w = unnormalized - total
            ess_history[k] = torch.exp(-torch.logsumexp(2 * log_w, 0))
            if ess_history[k] < self.ess_threshold * m:
                resampled[k] = True
                index = resample(log_w, self.resample, generator=generator,
                                 where=f"SMC2 step {k}")
                z = z[index]
                filters.select(index)
                log_w = torch.full_like(log_w, -math.log(m))
                for _ in range(self.num_moves):
                    z, rate = self._move(split, start, z, filters, generator)
                    accept_rates.append(rate)
            if line is not None:
                line.update(int(resampled[k]))
        if line is not None:
            line.close()
        return SMCPosterior(
            samples=split.constrained(z), log_weights=log_w,
            log_evidence=torch.stack(increments).sum(), ess_history=ess_history,
            resampled=resampled, log_evidence_increments=torch.stack(increments),
            extra={"method": "SMC2", "accept_rate": accept_rates, "scheme": self.resample,
                   "num_particles": self.num_particles, "graph": split.graph,
                   **backend_report(self.backend, reason)})

    def _move(self, split: StaticModel, start: BlockStart, z: Tensor,
              filters: BlockFilter | NativeBlockRun, generator: torch.Generator
              ) -> tuple[Tensor, float]:
        """One PMMH step for every (equally weighted) parameter particle, with new filters
        run to the current step; returns the positions and the acceptance rate."""
        m, dim = z.shape
        centred = z - z.mean(0)
        cov = centred.T @ centred / max(m - 1, 1)
        cov = cov + 1e-8 * torch.eye(dim, dtype=z.dtype)
        chol = torch.linalg.cholesky(cov * 2.38**2 / dim)
        noise = torch.randn(m, dim, generator=generator, dtype=z.dtype)
        proposal = z + noise @ chol.T
        fresh = start(split.constrained(proposal), generator)
        fresh.run(until=filters.step)
        log_ratio = (split.log_prior(proposal) + fresh.log_z
                     - split.log_prior(z) - filters.log_z)
        log_u = torch.log(torch.rand(m, generator=generator, dtype=torch.float64))
        accept = log_u < torch.nan_to_num(log_ratio, nan=-math.inf)
        filters.merge(accept, fresh)
        return torch.where(accept[:, None], proposal, z), float(accept.double().mean())
