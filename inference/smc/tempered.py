"""Adaptive tempered SMC for static models: particles move from the prior to the posterior
through ``pi_beta(z) ∝ p(z) p(y | z)^beta``, ``0 = beta_0 < ... < beta_T = 1``.

The model is lowered twice with ``FlatModel``: the full graph and its prior (the
``drop_likelihood`` pass), with identical layouts, so the tempered log density
``(1 - beta) log p(z) + beta log p(z, y)`` and its gradient cost two batched potential
evaluations and a new ``beta`` recompiles nothing. Each stage:

1. the next ``beta`` by bisection, so that the conditional ESS of the incremental weights
   ``exp((beta' - beta) log p(y | z))`` is ``target_cess`` (Zhou, Johansen & Aston 2016);
2. reweight, and add ``log sum_i W_i exp((beta' - beta) l_i)`` to the evidence estimate;
3. resample (``resample`` scheme) when the ESS falls below ``ess_threshold * N``;
4. ``num_moves`` transitions of the chosen MCMC kernel (``ppl.inference.mcmc``: RWMH, MALA,
   HMC, NUTS, Slice), each particle a chain, targeting ``pi_beta'``. The population tunes the
   kernel: the metric is the weighted particle covariance (diagonal, or dense for a kernel
   built with ``metric="dense"``), the step size is multiplied by
   ``exp(2 (mean acceptance - target))`` after each stage's moves (no windowed warmup).

Initial particles are prior draws (``Simulate`` on the prior graph) mapped to the
unconstrained space. The result is an :class:`~ppl.inference.smc.result.SMCPosterior` of
constrained draws with the accumulated ``log_evidence`` and ``extra["betas"]``.

    >>> import torch
    >>> from ppl import infer, model, sample
    >>> from ppl.stdlib import Normal
    >>> from ppl.inference.mcmc import MALA
    >>> @model
    ... def m(y):
    ...     x = sample("x", Normal(0.0, 1.0))
    ...     sample("y", Normal(x, 0.5), obs=y)
    >>> post = infer(m, torch.tensor(1.0), method=TemperedSMC(200, MALA(), num_moves=3), seed=0)
    >>> post.samples["x"].shape, post.extra["betas"][-1]
    (torch.Size([200]), 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ppl.errors import ModelError
from ppl.inference.lowering.flat import BACKENDS, FlatModel
from ppl.inference.mcmc.base import check_count, check_probability
from ppl.ir import Graph
from ppl.ir.loop import loops
from ppl.model import Model
from ppl.passes import drop_likelihood, unroll
from ppl.passes import run as run_passes

from .initial import prior_particles
from .moves import PopulationTuner, as_kernel, move_population
from .resampling import SCHEMES, DegenerateWeights, resample
from .result import SMCPosterior
from .streams import run_generator

__all__ = ["TemperedSMC", "TemperedPotential", "next_beta", "PopulationTuner", "static_particles"]


@dataclass(frozen=True)
class TemperedPotential:
    """``z -> ((1 - beta) log p(z) + beta log p(z, y), its gradient)`` from the prior's and
    the full model's potentials; a kernel is rebound to a new one per stage."""

    prior: Callable[[Tensor], tuple[Tensor, Tensor]]
    full: Callable[[Tensor], tuple[Tensor, Tensor]]
    beta: float

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.combine(*self.prior(z), *self.full(z))

    def combine(self, lp0: Tensor, g0: Tensor, lp1: Tensor, g1: Tensor) -> tuple[Tensor, Tensor]:
        b = self.beta
        return (1 - b) * lp0 + b * lp1, (1 - b) * g0 + b * g1


def _log_likelihood(lp_prior: Tensor, lp_full: Tensor) -> Tensor:
    """``log p(y | z) = log p(z, y) - log p(z)``; ``-inf`` wherever the full density is."""
    return torch.where(torch.isneginf(lp_full), -math.inf, lp_full - lp_prior)


def increment(delta: float, log_lik: Tensor) -> Tensor:
    """``delta * log_lik`` with ``-inf`` kept (``0 * -inf`` would be NaN)."""
    return torch.where(torch.isneginf(log_lik), -math.inf, delta * log_lik)


def conditional_ess(log_w: Tensor, increment: Tensor) -> float:
    """Conditional ESS fraction ``(sum W w)^2 / sum W w^2`` of normalized ``log_w`` and
    incremental log weights (1 when the increment is constant)."""
    a, b = torch.logsumexp(torch.stack([log_w + increment, log_w + 2 * increment]), 1)
    return float(torch.exp(2 * a - b)) if torch.isfinite(a) else 0.0


def next_beta(log_w: Tensor, log_lik: Tensor, beta: float, target_cess: float,
              tolerance: float = 1e-4, iterations: int = 60) -> float:
    """The next ``beta' <= 1``, always above ``beta``: 1 if its conditional ESS fraction is
    at least ``target_cess``, else where the CESS (falling as ``beta'`` grows) is within
    ``tolerance`` of it, by bisection. Impossible particles (``log_lik = -inf``) have zero
    weight at any ``beta' > beta``."""
    alive = ~torch.isneginf(log_lik)
    log_w, log_lik = log_w[alive], log_lik[alive]

    def cess(delta: float) -> float:
        return conditional_ess(log_w, delta * log_lik)

    if cess(1.0 - beta) >= target_cess:
        return 1.0
    lo, hi = 0.0, 1.0 - beta
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        value = cess(mid)
        if abs(value - target_cess) <= tolerance:
            return beta + mid
        lo, hi = (mid, hi) if value > target_cess else (lo, mid)
    return beta + (lo if lo > 0 else hi)


def _prior_graph(graph: Graph, passes: Sequence[Callable], owner: str) -> tuple[Graph, Graph]:
    """The model graph and its prior graph, both after ``passes`` (a scan's loops unrolled
    first, as MCMC's lowering does)."""
    if loops(graph):
        graph = unroll()(graph)
    if not passes:
        return graph, drop_likelihood()(graph)
    full, prior = run_passes(graph, passes), run_passes(graph, [drop_likelihood(), *passes])
    added = [n.address for n in prior.nodes_of("observe") if n.meta.attr("role") is None]
    if added:
        raise ModelError(f"{owner}: the passes add the observations {added}; the method "
                         "needs them in the model (observe them with obs= instead)")
    return full, prior


def static_particles(model: Model, args: tuple, kwargs: dict, passes: Sequence[Callable],
                     backend: str, num_particles: int, generator: torch.Generator, owner: str
                     ) -> tuple[FlatModel, FlatModel, Tensor]:
    """The flat full and prior models of a static model (after ``passes``) and
    ``num_particles`` unconstrained prior draws ``(N, dim)``: where every static-model SMC
    method starts; ``owner`` names the method in errors."""
    full_graph, prior_graph = _prior_graph(model.graph(*args, **kwargs), passes, owner)
    full = FlatModel.from_graph(full_graph, backend)
    prior = FlatModel.from_graph(prior_graph, backend)
    if full.dim == 0:
        raise ModelError(f"graph {full_graph.name!r} has no continuous latent for "
                         f"{owner} to move; use Importance or enumerate the model")
    if prior.blocks != full.blocks:  # drop_likelihood keeps every latent and its shape
        raise ModelError(f"{owner}: the prior and full graphs lay out their latents "
                         f"differently: {prior.blocks} vs {full.blocks}")
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    z = prior_particles(model, args, kwargs, full, prior_graph, num_particles, seed)
    return full, prior, z


@dataclass(frozen=True)
class TemperedSMC:
    """Adaptive tempered SMC with resample-move (see the module docstring).

    ``num_particles`` particles; ``kernel``: an MCMC kernel (default ``MALA()``; its
    ``metric`` field picks a diagonal or dense population metric, its step size scales the
    first stage's ``dim ** -0.25``); ``num_moves`` kernel transitions per stage;
    ``ess_threshold``: resample when the ESS fraction falls below it; ``target_cess``: the
    conditional ESS fraction each new ``beta`` keeps; ``betas``: a fixed schedule instead
    (increasing, ending at 1); ``resample``: the scheme; ``max_stages`` bounds the adaptive
    schedule; ``backend`` pins the potentials' backend (see ``FlatModel``).
    """

    num_particles: int = 1000
    kernel: Any = None
    num_moves: int = 5
    ess_threshold: float = 0.5
    target_cess: float = 0.9
    betas: Sequence[float] | None = None
    resample: str = "systematic"
    max_stages: int = 500
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_count("TemperedSMC", "num_particles", self.num_particles, 2)
        check_count("TemperedSMC", "num_moves", self.num_moves, 0)
        check_count("TemperedSMC", "max_stages", self.max_stages, 1)
        check_probability("TemperedSMC", "target_cess", self.target_cess)
        if not 0.0 <= float(self.ess_threshold) <= 1.0:
            raise ValueError(f"TemperedSMC: ess_threshold must lie in [0, 1], got "
                             f"{self.ess_threshold!r}")
        if self.resample not in SCHEMES:
            raise ValueError(f"TemperedSMC: resample must be one of {sorted(SCHEMES)}, got "
                             f"{self.resample!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"TemperedSMC: backend must be one of {BACKENDS}, got "
                             f"{self.backend!r}")
        if self.betas is not None:
            b = [float(x) for x in self.betas]
            if not b or b[-1] != 1.0 or any(y <= x for x, y in zip([0.0, *b], b, strict=False)):
                raise ValueError(f"TemperedSMC: betas must increase strictly from above 0 "
                                 f"to 1.0, got {list(self.betas)}")
        as_kernel(self.kernel, "TemperedSMC")

    def run(self, model: Model, args: tuple, kwargs: dict, *,
            passes: Sequence[Callable] = ()) -> SMCPosterior:
        generator = run_generator()
        full, prior, z = static_particles(model, args, kwargs, passes, self.backend,
                                          self.num_particles, generator, "TemperedSMC")
        return self._run(z, prior.log_density_and_grad, full.log_density_and_grad,
                         full, generator)

    def _run(self, z: Tensor, prior_fn: Callable, full_fn: Callable, flat: FlatModel,
             generator: torch.Generator) -> SMCPosterior:
        n, dim = z.shape
        kernel = as_kernel(self.kernel, "TemperedSMC")
        tuner = PopulationTuner.for_kernel(kernel, dim)
        lp0, g0 = prior_fn(z)
        lp1, g1 = full_fn(z)
        log_w = torch.full((n,), -math.log(n), dtype=torch.float64)
        beta, betas, increments, ess_history, resampled = 0.0, [0.0], [], [], []
        step_sizes, accepts = [], []
        schedule = iter(self.betas) if self.betas is not None else None
        while beta < 1.0:
            if len(betas) > self.max_stages:
                raise ModelError(f"TemperedSMC: {self.max_stages} stages reached beta = "
                                 f"{beta:.3g} only; lower target_cess or raise max_stages")
            log_lik = _log_likelihood(lp0, lp1)
            if torch.isnan(log_lik).any():
                raise DegenerateWeights(f"stage {len(betas)}: {int(torch.isnan(log_lik).sum())}"
                                        f" particles have a NaN log likelihood")
            new_beta = (float(next(schedule)) if schedule is not None
                        else next_beta(log_w, log_lik, beta, self.target_cess))
            unnormalized = log_w + increment(new_beta - beta, log_lik)
            total = torch.logsumexp(unnormalized, 0)
            if not torch.isfinite(total):
                raise DegenerateWeights(f"stage {len(betas)}: every particle has zero weight "
                                        f"at beta = {new_beta:.3g}")
            increments.append(total)
            log_w, beta = unnormalized - total, new_beta
            betas.append(beta)
            ess = float(torch.exp(-torch.logsumexp(2 * log_w, 0)))
            ess_history.append(ess)
            resampled.append(ess < self.ess_threshold * n)
            if resampled[-1]:
                index = resample(log_w, self.resample, generator=generator,
                                 where=f"stage {len(betas) - 1} (beta = {beta:.3g})")
                z, lp0, g0, lp1, g1 = (t[index] for t in (z, lp0, g0, lp1, g1))
                log_w = torch.full_like(log_w, -math.log(n))
            if self.num_moves:
                potential = TemperedPotential(prior_fn, full_fn, beta)
                step_sizes.append(tuner.step_size)
                z, accept = move_population(kernel, tuner, z, log_w, potential, self.num_moves,
                                            generator, potential.combine(lp0, g0, lp1, g1))
                accepts.append(accept)
                lp0, g0 = prior_fn(z)
                lp1, g1 = full_fn(z)
        samples = flat.constrained_values(z)
        return SMCPosterior(
            samples=samples, log_weights=log_w, log_evidence=torch.stack(increments).sum(),
            ess_history=torch.tensor(ess_history, dtype=torch.float64),
            resampled=torch.tensor(resampled), log_evidence_increments=torch.stack(increments),
            extra={"betas": betas, "step_size": step_sizes, "accept_prob": accepts,
                   "kernel": type(kernel).__name__, "backend": flat.backend,
                   "scheme": self.resample, "graph": flat.graph},
        )
