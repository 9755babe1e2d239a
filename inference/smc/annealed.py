"""Data-annealed SMC for static models (Chopin 2002, "IBIS"): the particles see the data one
observation (or batch of observations) at a time, through ``pi_t(z) ∝ p(z) prod_{u < t}
p(y_u | z)``.

An observation *unit* is one entry of an observed site's pointwise log likelihood: a scalar
site is one unit, a site in a plate of ``n`` rows is ``n`` units, in graph order; ``batch_size``
units are added per stage. Each stage:

1. reweight by the new units' likelihood ``p(y_t | z)`` (the particles target ``pi_{t-1}``)
   and add ``log sum_i W_i p(y_t | z_i)`` to the evidence estimate;
2. when the ESS falls below ``ess_threshold * N``, resample and make ``num_moves``
   transitions of the kernel targeting ``pi_t``, tuned from the population as tempered SMC's
   (``ppl.inference.smc.moves``).

A batch too informative for one reweighting (its conditional ESS below ``target_cess``, as a
single multivariate observation can be) is tempered in: ``p(y_t | z)^beta`` with ``beta``
chosen as tempered SMC chooses it, so the target is a tempering with one ``beta`` per unit
(1 for the units seen, 0 for those to come) and every stage is one ``(start, beta)`` of
``extra["stages"]``.

The potentials are tempered SMC's: the model's prior as a ``FlatModel``, plus the units'
log likelihoods with their gradient, from one vectorized interpretation of the unconstrained
graph (the bijections are nodes there, so the gradient is in the unconstrained space). The
evidence estimate is unbiased whatever the resampling pattern; between resamplings the run is
importance sampling from an earlier posterior (Chopin's point: moves cost one likelihood
pass over the data seen so far, and they become rare as the posterior settles).

    >>> import torch
    >>> from ppl import infer, model, plate, sample
    >>> from ppl.stdlib import Normal
    >>> from ppl.inference.mcmc import MALA
    >>> @model
    ... def m(y):
    ...     mu = sample("mu", Normal(0.0, 1.0))
    ...     with plate("rows", len(y)):
    ...         sample("y", Normal(mu, 1.0), obs=y)
    >>> post = infer(m, torch.tensor([0.5, 1.0, 1.5]), method=DataAnnealedSMC(200, MALA()),
    ...              seed=0)
    >>> post.samples["mu"].shape, post.num_steps
    (torch.Size([200]), 3)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ppl.errors import ModelError
from ppl.inference.lowering.flat import BACKENDS, FlatModel
from ppl.inference.mcmc.base import check_count, check_probability
from ppl.ir import Graph, Interpreter
from ppl.model import Model
from ppl.trace import site_log_prob

from .moves import PopulationTuner, as_kernel, move_population
from .resampling import SCHEMES, DegenerateWeights, resample
from .result import SMCPosterior
from .streams import run_generator
from .tempered import increment, next_beta, static_particles

__all__ = ["DataAnnealedSMC", "UnitLikelihood"]


class _Pointwise(Interpreter):
    """The unconstrained latents at ``values``; each observation's elementwise log density
    (the prior-role observe nodes of the ``unconstrain`` pass are skipped)."""

    def __init__(self, graph: Graph, values: Mapping[str, Tensor]):
        super().__init__(graph)
        self.values = values
        self.pointwise: list[Tensor] = []

    def sample(self, node, args, kwargs):
        return self.values[node.address]

    def observe(self, node, args, kwargs):
        if node.meta.attr("role") is None:
            dist = self.site_distribution(node, kwargs)
            self.pointwise.append(site_log_prob(dist, args[0]).reshape(-1))
        return args[0]


class UnitLikelihood:
    """``z (N, dim) -> (N, units)``: every observation unit's log likelihood at the flat
    unconstrained positions of ``flat`` (see the module docstring), differentiable in ``z``."""

    def __init__(self, flat: FlatModel):
        self.flat = flat
        observed = [n.address for n in flat.unconstrained.nodes_of("observe")
                    if n.meta.attr("role") is None]
        enumerated = [n.address for n in flat.unconstrained.nodes
                      if n.meta.attr("role") == "enumerated_log_marginal"]
        if enumerated:
            raise ModelError(f"graph {flat.graph.name!r}: the enumerated discrete sites' log "
                             f"marginal {enumerated} holds the likelihood of their "
                             "observations as one term; data annealing needs each "
                             "observation's own term (use TemperedSMC)")
        if not observed:
            raise ModelError(f"graph {flat.graph.name!r} has no observations to anneal over")
        self.sites = tuple(observed)

    def __call__(self, z: Tensor) -> Tensor:
        blocks = self.flat.blocks

        def one(position: Tensor) -> Tensor:
            values = {b.latent: position[b.offset:b.offset + b.size]
                      .reshape(b.unconstrained_shape) for b in blocks}
            interpreter = _Pointwise(self.flat.unconstrained, values)
            interpreter.run()
            return torch.cat(interpreter.pointwise).to(torch.float64)

        return torch.func.vmap(one)(z)

    def masked_potential(self, prior: Callable[[Tensor], tuple[Tensor, Tensor]], mask: Tensor
                         ) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """``z -> log p(z) + sum_u mask_u log p(y_u | z)`` and its gradient."""

        def potential(z: Tensor) -> tuple[Tensor, Tensor]:
            lp0, g0 = prior(z)
            with torch.enable_grad():
                position = z.detach().requires_grad_(True)
                log_lik = (self(position) * mask).sum(1)
                (grad,) = torch.autograd.grad(log_lik.sum(), position)
            return lp0 + log_lik.detach(), g0 + grad

        return potential


@dataclass(frozen=True)
class DataAnnealedSMC:
    """Data-annealed (IBIS) SMC with resample-move (see the module docstring).

    ``num_particles``; ``kernel``: an MCMC kernel (default ``MALA()``, tuned as in
    ``TemperedSMC``); ``num_moves`` transitions after each resampling; ``batch_size``:
    observation units added per stage; ``target_cess``: a batch so informative that adding
    it whole would leave a conditional ESS fraction below this is tempered in, its
    likelihood raised to increasing powers ``beta`` (``next_beta`` of ``TemperedSMC``;
    None: always whole, as IBIS); ``ess_threshold``: resample (and move) when the ESS
    fraction falls below it; ``resample``: the scheme; ``backend``: the prior potential's
    (see ``FlatModel``)."""

    num_particles: int = 1000
    kernel: Any = None
    num_moves: int = 5
    batch_size: int = 1
    target_cess: float | None = 0.5
    ess_threshold: float = 0.5
    resample: str = "systematic"
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_count("DataAnnealedSMC", "num_particles", self.num_particles, 2)
        check_count("DataAnnealedSMC", "num_moves", self.num_moves, 0)
        check_count("DataAnnealedSMC", "batch_size", self.batch_size, 1)
        check_probability("DataAnnealedSMC", "target_cess", self.target_cess)
        if not 0.0 <= float(self.ess_threshold) <= 1.0:
            raise ValueError(f"DataAnnealedSMC: ess_threshold must lie in [0, 1], got "
                             f"{self.ess_threshold!r}")
        if self.resample not in SCHEMES:
            raise ValueError(f"DataAnnealedSMC: resample must be one of {sorted(SCHEMES)}, "
                             f"got {self.resample!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"DataAnnealedSMC: backend must be one of {BACKENDS}, got "
                             f"{self.backend!r}")
        as_kernel(self.kernel, "DataAnnealedSMC")

    def run(self, model: Model, args: tuple, kwargs: dict, *,
            passes: Sequence[Callable] = ()) -> SMCPosterior:
        generator = run_generator()
        full, prior, z = static_particles(model, args, kwargs, passes, self.backend,
                                          self.num_particles, generator, "DataAnnealedSMC")
        units = UnitLikelihood(full)
        kernel = as_kernel(self.kernel, "DataAnnealedSMC")
        tuner = PopulationTuner.for_kernel(kernel, full.dim)
        n = self.num_particles
        with torch.no_grad():
            log_lik = units(z)
        num_units = log_lik.shape[1]
        mask = torch.zeros(num_units, dtype=torch.float64)
        log_w = torch.full((n,), -math.log(n), dtype=torch.float64)
        increments, ess_history, resampled, accepts, step_sizes, stages = [], [], [], [], [], []
        for start in range(0, num_units, self.batch_size):
            batch, beta = slice(start, start + self.batch_size), 0.0
            while beta < 1.0:
                where = f"stage {len(stages)} (units {start} to {min(batch.stop, num_units) - 1})"
                batch_lik = log_lik[:, batch].sum(1)
                if torch.isnan(batch_lik).any():
                    raise DegenerateWeights(f"{where}: {int(torch.isnan(batch_lik).sum())} "
                                            "particles have a NaN log likelihood at the sites "
                                            f"{list(units.sites)}")
                new_beta = (1.0 if self.target_cess is None
                            else next_beta(log_w, batch_lik, beta, self.target_cess))
                unnormalized = log_w + increment(new_beta - beta, batch_lik)
                total = torch.logsumexp(unnormalized, 0)
                if not torch.isfinite(total):
                    raise DegenerateWeights(f"{where}: every particle has zero likelihood")
                increments.append(total)
                log_w, beta = unnormalized - total, new_beta
                mask[batch] = beta
                stages.append((start, beta))
                ess = float(torch.exp(-torch.logsumexp(2 * log_w, 0)))
                ess_history.append(ess)
                resampled.append(ess < self.ess_threshold * n)
                if not resampled[-1]:
                    continue
                index = resample(log_w, self.resample, generator=generator, where=where)
                z, log_lik = z[index], log_lik[index]
                log_w = torch.full_like(log_w, -math.log(n))
                if self.num_moves:
                    potential = (full.log_density_and_grad if bool((mask == 1.0).all())
                                 else units.masked_potential(prior.log_density_and_grad, mask))
                    step_sizes.append(tuner.step_size)
                    z, accept = move_population(kernel, tuner, z, log_w, potential,
                                                self.num_moves, generator)
                    accepts.append(accept)
                    with torch.no_grad():
                        log_lik = units(z)
        return SMCPosterior(
            samples=full.constrained_values(z), log_weights=log_w,
            log_evidence=torch.stack(increments).sum(),
            ess_history=torch.tensor(ess_history, dtype=torch.float64),
            resampled=torch.tensor(resampled), log_evidence_increments=torch.stack(increments),
            extra={"num_units": num_units, "stages": stages, "batch_size": self.batch_size,
                   "observed_sites": list(units.sites), "step_size": step_sizes,
                   "accept_prob": accepts, "kernel": type(kernel).__name__,
                   "backend": full.backend, "scheme": self.resample, "graph": full.graph},
        )
