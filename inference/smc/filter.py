"""The particle filter: run any :class:`~ppl.inference.lowering.particles.ParticleProgram`
step by step over a population of particles.

Before step ``k > 0`` the particles are resampled (every tensor of ``live`` indexed by the
same ancestor indices) when the ESS of their normalized weights ``W`` falls below
``ess_threshold * N`` (``1.0``: every step, ``0.0``: never); then the step draws its latents
and returns incremental log weights ``w_k``. The evidence estimate grows by
``log sum_i W_i exp(w_{k,i})`` per step, so ``log_evidence`` is the log of an unbiased
estimate of ``p(y_{0:K})`` whatever the resampling pattern (Del Moral 2004). Latents no later
step reads (``needed_after``) are dropped from ``live`` unless ``keep`` names them, so memory
is linear in the number of particles, not in steps times particles. The ancestor indices of
every step are kept (``keep_ancestors``) for genealogies; with ``keep_history`` every step's
particles and weights too, for backward-simulation smoothing (``SMCPosterior.smooth``).
With ``auxiliary`` the filter is the auxiliary particle filter (:mod:`.auxiliary`): the
program's look-ahead weights twist the weights before each resampling decision.

    >>> import torch
    >>> from ppl.inference.lowering.particles import StepOutput
    >>> class RandomWalk:  # x_k = x_{k-1} + N(0, 1), y_k ~ N(x_k, 1), y_k = 0
    ...     num_steps = 3
    ...     def step_sites(self, k): return (f"x{k}", f"y{k}")
    ...     def needed_after(self, k): return frozenset({f"x{k}"} if k < 2 else ())
    ...     def run_step(self, k, live, n, generator=None):
    ...         prev = live.get(f"x{k - 1}", torch.zeros(n, dtype=torch.float64))
    ...         x = prev + torch.randn(n, generator=generator, dtype=torch.float64)
    ...         lw = torch.distributions.Normal(x, 1.0).log_prob(torch.tensor(0.0))
    ...         return StepOutput({f"x{k}": x}, lw, {f"y{k}": lw})
    >>> g = torch.Generator().manual_seed(0)
    >>> post = ParticleFilter(num_particles=500).run_program(RandomWalk(), g)
    >>> sorted(post.samples), post.ess_history.shape
    (['x2'], torch.Size([3]))
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from ppl.inference.lowering.particles import ParticleProgram, StepOutput
from ppl.inference.mcmc.progress import ProgressLine, progress_enabled

from .auxiliary import first_stage, lookahead_of
from .moves import ResampleMove
from .paris import AdditiveSmoother
from .resampling import SCHEMES, DegenerateWeights
from .result import SMCPosterior
from .smoothing import StepHistory
from .streams import run_generator

__all__ = ["ParticleFilter", "check_step_output"]


def check_step_output(out: StepOutput, k: int, num_particles: int) -> None:
    """Raise naming step ``k`` (and the site) when a step's output breaks the protocol:
    values not ``(N, ...)``, a log weight not ``(N,)`` float64, or NaN log weights."""
    for address, value in out.values.items():
        if value.dim() == 0 or value.shape[0] != num_particles:
            raise ValueError(f"step {k}: site {address!r} has shape {tuple(value.shape)}; "
                             f"expected ({num_particles}, *site_shape) for {num_particles} "
                             "particles")
    weight = out.log_weight
    if tuple(weight.shape) != (num_particles,) or weight.dtype != torch.float64:
        raise TypeError(f"step {k}: the log weight is {weight.dtype} of shape "
                        f"{tuple(weight.shape)}; the particle protocol needs float64 "
                        f"({num_particles},)")
    if torch.isnan(weight).any():
        where = ", ".join(f"{a!r} ({int(torch.isnan(v).sum())} NaN)"
                          for a, v in out.site_log_weights.items() if torch.isnan(v).any())
        raise DegenerateWeights(f"step {k}: {int(torch.isnan(weight).sum())} of "
                                f"{num_particles} log weights are NaN; from the sites "
                                f"{where or '(no site term is NaN: their sum is)'}")


def _weighted_mean(log_w: Tensor, value: Tensor) -> Tensor:
    w = torch.exp(log_w).to(value.device).reshape(-1, *([1] * (value.dim() - 1)))
    return (w * value.to(torch.float64)).sum(0)


@dataclass(frozen=True)
class ParticleFilter:
    """Settings of a particle filter: ``num_particles``, the resampling scheme ``resample``
    (one of ``ppl.inference.smc.resampling.SCHEMES``), ``ess_threshold`` (resample when the
    ESS is below this fraction of ``num_particles``), ``keep`` (latent addresses returned in
    ``samples`` besides the last step's, carried through resampling: their paths, not their
    filtering marginals), ``keep_ancestors`` (record ``(steps, N)`` ancestor indices) and
    ``keep_history`` (every step's particles and weights, for ``SMCPosterior.smooth``:
    memory steps times particles), ``progress_bar`` (a line on stderr with the steps done
    and the resamplings so far; None: only when stderr is a terminal), ``auxiliary``
    (the auxiliary particle filter: the program needs ``lookahead_log_weight``), ``move``
    (a :class:`~ppl.inference.smc.moves.ResampleMove`: MCMC moves after each resampling)
    and ``additive`` (a :class:`~ppl.inference.smc.paris.AdditiveSmoother`: PaRIS
    smoothing of an additive functional, online)."""

    num_particles: int = 1000
    resample: str = "systematic"
    ess_threshold: float = 0.5
    keep: Collection[str] = ()
    keep_ancestors: bool = True
    keep_history: bool = False
    progress_bar: bool | None = None
    auxiliary: bool = False
    move: ResampleMove | None = None
    additive: AdditiveSmoother | None = None

    def __post_init__(self) -> None:
        if isinstance(self.num_particles, bool) or not isinstance(self.num_particles, int) \
                or self.num_particles < 1:
            raise ValueError(f"num_particles must be an integer >= 1, got {self.num_particles!r}")
        if self.resample not in SCHEMES:
            raise ValueError(f"resample must be one of {sorted(SCHEMES)}, got {self.resample!r}")
        if self.auxiliary and self.move is not None:
            raise ValueError("auxiliary=True with a move: the second-stage weights divide by "
                             "the look-ahead of each particle's unmoved ancestor; use one of them")
        if not 0.0 <= float(self.ess_threshold) <= 1.0:
            raise ValueError(f"ess_threshold must lie in [0, 1], got {self.ess_threshold!r}")

    def run_program(self, program: ParticleProgram, generator: torch.Generator | None = None
                    ) -> SMCPosterior:
        """Filter ``program`` to its last step; draws come from ``generator`` (default: one
        seeded from the current seed scope)."""
        generator = run_generator() if generator is None else generator
        n, steps = self.num_particles, program.num_steps
        if steps < 1:
            raise ValueError("the particle program has no steps")
        self.check_keep(program)
        keep = frozenset(self.keep)
        log_w = torch.full((n,), -math.log(n), dtype=torch.float64)  # normalized
        live: dict[str, Tensor] = {}
        increments, ess_history = [], torch.empty(steps, dtype=torch.float64)
        resampled = torch.zeros(steps, dtype=torch.bool)
        ancestors = [] if self.keep_ancestors else None
        means: dict[str, Tensor] = {}
        history = [] if self.keep_history else None
        lookahead = lookahead_of(program) if self.auxiliary else None
        mover = None if self.move is None else self.move.start(program, keep)
        smoother = None if self.additive is None else self.additive.start(program)
        line = (ProgressLine(steps, phase="filtering", counter="resampled")
                if progress_enabled(self.progress_bar) else None)
        for k in range(steps):
            index, ahead, log_first = None, None, 0.0
            ess = ess_history[k - 1] if k > 0 else n
            if lookahead is not None and k > 0:  # the first stage: W_{k-1} times p̂(y_k | .)
                ahead = lookahead(k, _Live(live), n)
                log_w, log_first = first_stage(log_w, ahead, k)
                ess = torch.exp(-torch.logsumexp(2 * log_w, 0))
            if k > 0 and float(ess) < self.ess_threshold * n:
                # log_w is normalized, finite-total and NaN-free (checked at the last step)
                index = SCHEMES[self.resample](torch.exp(log_w), n, generator)
                live = {a: v[index.to(v.device)] for a, v in live.items()}
                log_w = torch.full_like(log_w, -math.log(n))
                resampled[k] = True
                ahead = None if ahead is None else ahead[index.to(ahead.device)]
                if mover is not None:
                    live = mover.move(k - 1, live, log_w, generator)
            if ancestors is not None:
                ancestors.append(torch.arange(n, device=log_w.device) if index is None
                                 else index)
            out = program.run_step(k, _Live(live), n, generator)
            check_step_output(out, k, n)
            unnormalized = log_w.to(out.log_weight.device) + out.log_weight  # on its device
            if ahead is not None:  # the second stage: divide by the ancestor's p̂
                unnormalized = torch.where(torch.isneginf(log_w), log_w,
                                           unnormalized - ahead.to(unnormalized.device))
            second = torch.logsumexp(unnormalized, 0)
            if torch.isneginf(second):
                raise DegenerateWeights(f"step {k}: every particle has weight zero (log weight "
                                        f"-inf) after the sites {sorted(out.site_log_weights)}")
            increments.append(second + log_first)
            log_w = unnormalized - second
            ess_history[k] = torch.exp(-torch.logsumexp(2 * log_w, 0))  # log_w is normalized
            live.update(out.values)
            means.update({a: _weighted_mean(log_w, v) for a, v in out.values.items()})
            if history is not None:
                history.append(StepHistory(dict(out.values), log_w))
            if smoother is not None:
                smoother.update(k, out.values, log_w, generator)
            wanted = keep | (set(out.values) if k == steps - 1 else program.needed_after(k))
            if mover is not None and k < steps - 1:
                wanted |= mover.retain(k)
            live = {a: v for a, v in live.items() if a in wanted}
            if line is not None:
                line.update(int(index is not None))
        if line is not None:
            line.close()
        return SMCPosterior(
            samples=live, log_weights=log_w, log_evidence=torch.stack(increments).sum(),
            ess_history=ess_history, resampled=resampled,
            log_evidence_increments=torch.stack(increments),
            ancestors=None if ancestors is None else torch.stack(ancestors),
            history=history, program=program,
            extra={"scheme": self.resample, "ess_threshold": self.ess_threshold,
                   "filtering_means": means, "auxiliary": self.auxiliary,
                   **({} if mover is None else mover.report()),
                   **({} if smoother is None else smoother.report())},
        )

    def check_keep(self, program: ParticleProgram) -> None:
        """Raise when ``keep`` names an address no step of ``program`` has."""
        sites = {a for k in range(program.num_steps) for a in program.step_sites(k)}
        unknown = sorted(set(self.keep) - sites)
        if unknown:
            raise ValueError(f"keep names {unknown}, which no step of the program has; its "
                             f"sites are {sorted(sites)[:20]}")


class _Live(Mapping):
    """A read-only view of the live particles, naming the missing address on a bad read."""

    def __init__(self, values: dict[str, Tensor]):
        self._values = values

    def __getitem__(self, address: str) -> Tensor:
        try:
            return self._values[address]
        except KeyError:
            raise KeyError(f"the step read {address!r}, which is not live: the program's "
                           "needed_after() of an earlier step must list it") from None

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)
