"""MCMC moves for particle populations: the kernel tuning every SMC method shares and the
resample-move step of the particle filter (Gilks & Berzuini 2001).

:class:`PopulationTuner` tunes an MCMC kernel from the particles themselves (the metric from
their weighted covariance, the step size from the last moves' mean acceptance) and
:func:`move_population` runs ``num_moves`` transitions with every particle a chain; tempered
and data-annealed SMC move their static-model particles with them.

:class:`ResampleMove` is the particle filter's hook (``SMC(..., move=ResampleMove(MALA()))``):
after each resampling, the particles' latents of the last ``lag`` steps (and the ``keep``
paths) are moved by the kernel targeting the current intermediate posterior
``p(x_{0:k} | y_{0:k})``. The kernel needs that density only up to a constant, as a function
of the moved latents with the rest fixed: the sum of ``score_step`` over the steps that draw
or read a moved latent. Moves rejuvenate the resampled duplicates, so early states of the
kept paths stop collapsing onto a few ancestors; weights and the evidence estimate are
unchanged (an invariant kernel keeps the particles properly weighted). Latents on a
constrained support are moved in the unconstrained space (``biject_to``, with the
Jacobian in the target).

    >>> import torch
    >>> from ppl.inference import mcmc
    >>> fn = lambda z: (-0.5 * (z * z).sum(-1), -z)
    >>> z = torch.full((500, 2), 3.0, dtype=torch.float64)
    >>> log_w = torch.full((500,), -torch.log(torch.tensor(500.0)), dtype=torch.float64)
    >>> tuner = PopulationTuner(dense=False, target_accept=0.57, step_size=1.0)
    >>> z, accept = move_population(mcmc.MALA(), tuner, z, log_w, fn, 5,
    ...                             torch.Generator().manual_seed(0))
    >>> z.shape, bool(z.mean() < 3.0), 0.0 < accept <= 1.0
    (torch.Size([500, 2]), True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.distributions import biject_to, constraints

from ppl.inference import mcmc
from ppl.inference.lowering.flat import _support_has_parameters
from ppl.inference.mcmc.base import check_count
from ppl.passes.rewriting import probe

__all__ = ["PopulationTuner", "as_kernel", "move_population", "ResampleMove"]


@dataclass
class PopulationTuner:
    """Kernel tuning from the particles: the metric from their weighted covariance (Stan's
    shrinkage toward ``1e-3`` for small effective sizes), the step size from the last
    stage's mean acceptance."""

    dense: bool
    target_accept: float | None
    step_size: float
    gain: float = 2.0

    @classmethod
    def for_kernel(cls, kernel: mcmc.Kernel, dim: int) -> PopulationTuner:
        """The kernel's metric shape and target, its step size scaled by ``dim ** -0.25``."""
        base_step = float(torch.as_tensor(kernel.step_size).reshape(-1)[0])
        return cls(kernel.metric == "dense", kernel.target_accept, base_step * dim ** -0.25)

    def metric(self, z: Tensor, log_w: Tensor) -> mcmc.Metric:
        w = torch.exp(log_w)
        n_eff = float(1.0 / (w * w).sum())
        mean = w @ z
        centred = z - mean
        shrink = n_eff / (n_eff + 5.0)
        if self.dense:
            cov = (centred * w[:, None]).T @ centred
            eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
            inverse_mass = shrink * cov + 1e-3 * (1 - shrink) * eye
        else:  # floored: a population collapsed onto one point has zero variance
            inverse_mass = (shrink * (w @ centred**2) + 1e-3 * (1 - shrink)).clamp_min(1e-10)
        return mcmc.make_metric(inverse_mass.expand(z.shape[0], *inverse_mass.shape).clone())

    def update(self, mean_accept: float) -> None:
        if self.target_accept is not None and math.isfinite(mean_accept):
            self.step_size *= math.exp(self.gain * (mean_accept - self.target_accept))


def as_kernel(kernel: Any, owner: str) -> mcmc.Kernel:
    """A kernel of ``ppl.inference.mcmc`` (default ``MALA()``), or the kernel of an MCMC
    method (``ppl.inference.MALA()``, ...); ``owner`` names the method in the error."""
    kernel = getattr(kernel, "kernel", kernel) if kernel is not None else mcmc.MALA()
    if not isinstance(kernel, mcmc.Kernel):
        raise TypeError(f"{owner}: kernel must be an MCMC kernel such as "
                        f"ppl.inference.mcmc.MALA(), got {kernel!r}")
    return kernel


def move_population(kernel: mcmc.Kernel, tuner: PopulationTuner, z: Tensor, log_w: Tensor,
                    potential: Callable[[Tensor], tuple[Tensor, Tensor]], num_moves: int,
                    generator: torch.Generator,
                    evaluated: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, float]:
    """``num_moves`` transitions of ``kernel`` on ``potential`` with each particle of ``z
    (N, D)`` a chain, the metric and step size from ``tuner`` (then updated from the mean
    acceptance); ``evaluated``: the potential's ``(log density, grad)`` at ``z`` when known.
    Returns the new positions and the mean acceptance."""
    lp, grad = potential(z) if evaluated is None else evaluated
    step = torch.full((z.shape[0],), tuner.step_size, dtype=z.dtype, device=z.device)
    state = mcmc.State(z.clone(), lp, grad, step, tuner.metric(z, log_w))
    bound = kernel.bind(potential)
    total = 0.0
    for _ in range(num_moves):
        state, info = bound.step(generator, state)
        total += float(info.accept_prob.mean())
    accept = total / num_moves
    tuner.update(accept)
    return state.position, accept


@dataclass(frozen=True)
class ResampleMove:
    """The particle filter's resample-move hook (see the module docstring): after each
    resampling, ``num_moves`` transitions of ``kernel`` (an MCMC kernel of
    ``ppl.inference.mcmc``, default ``MALA()``) on the latents of the last ``lag`` steps and,
    with ``move_kept``, the filter's ``keep`` paths. Needs a program with ``score_step`` and a
    ``schedule`` (the particle engine: ``SMC`` on a model)."""

    kernel: Any = None
    num_moves: int = 2
    lag: int = 1
    move_kept: bool = True

    def __post_init__(self) -> None:
        as_kernel(self.kernel, "ResampleMove")
        check_count("ResampleMove", "num_moves", self.num_moves, 1)
        check_count("ResampleMove", "lag", self.lag, 1)

    def start(self, program: Any, keep: Collection[str] = ()) -> PathMover:
        """The per-run mover of ``program`` (tuner state, the sets of latents per step)."""
        missing = [name for name in ("score_step", "schedule") if not hasattr(program, name)]
        if missing:
            raise TypeError(f"ResampleMove: {type(program).__name__} has no {missing}; moves "
                            "score the steps through the particle engine (use SMC on a model)")
        return PathMover(self, program, frozenset(keep) if self.move_kept else frozenset())


@dataclass
class PathMover:
    """One filter run's resample-move state: which latents each step's move changes, which
    steps' densities it sums, the tuner, and the acceptance per move."""

    settings: ResampleMove
    program: Any
    kept: frozenset[str]
    tuner: PopulationTuner | None = None
    accepts: list[float] = field(default_factory=list)
    step_sizes: list[float] = field(default_factory=list)
    _transforms: dict[str, Any] = field(default_factory=dict)

    def moved(self, k: int) -> tuple[str, ...]:
        """The latents the move after step ``k`` changes: the last ``lag`` steps' and the kept
        ones drawn by then, in step order."""
        steps = self.program.schedule.steps
        first = max(0, k - self.settings.lag + 1)
        return tuple(a for j in range(k + 1) for a in steps[j].latents
                     if j >= first or a in self.kept)

    def scored(self, k: int) -> tuple[int, ...]:
        """The steps ``<= k`` whose density involves a moved latent (draws or reads one)."""
        moved = set(self.moved(k))
        steps = self.program.schedule.steps
        return tuple(j for j in range(k + 1)
                     if moved & (set(steps[j].latents) | set(steps[j].reads)))

    def retain(self, k: int) -> frozenset[str]:
        """What the filter must keep after step ``k`` for the move targeting step ``k``."""
        steps = self.program.schedule.steps
        return frozenset(a for j in self.scored(k) for a in (*steps[j].latents, *steps[j].reads))

    def move(self, k: int, live: Mapping[str, Tensor], log_w: Tensor,
             generator: torch.Generator) -> dict[str, Tensor]:
        """``live`` with the latents of :meth:`moved` moved by the kernel, targeting
        ``p(x_{0:k} | y_{0:k})``."""
        names = self.moved(k)
        absent = sorted(set(self.retain(k)) - set(live))
        if absent:
            raise ValueError(f"ResampleMove after step {k}: the latents {absent} are no longer "
                             "live; the program is not Markov in its steps' latents")
        n = log_w.shape[0]
        transforms = [self._transform(a) for a in names]
        unconstrained = [t.inv(live[a].to(torch.float64)).reshape(n, -1)
                         for a, t in zip(names, transforms, strict=True)]
        sizes = [u.shape[1] for u in unconstrained]
        shapes = [tuple(live[a].shape[1:]) for a in names]
        z = torch.cat(unconstrained, 1)
        fixed = {a: v for a, v in live.items() if a not in names}

        def potential(position: Tensor) -> tuple[Tensor, Tensor]:
            with torch.enable_grad():
                position = position.detach().requires_grad_(True)
                values, log_jac = dict(fixed), torch.zeros(n, dtype=torch.float64)
                for a, t, u, shape in zip(names, transforms, position.split(sizes, 1), shapes,
                                          strict=True):
                    x = t(u.reshape(n, *shape))
                    log_jac = log_jac + t.log_abs_det_jacobian(u.reshape(n, *shape), x
                                                               ).reshape(n, -1).sum(1)
                    values[a] = x
                lp = log_jac + sum(self._step_density(j, values, n) for j in self.scored(k))
                (grad,) = torch.autograd.grad(lp.sum(), position)
            bad = ~torch.isfinite(lp)
            return lp.detach().masked_fill(bad, -math.inf), grad.masked_fill(bad[:, None], 0.0)

        kernel = as_kernel(self.settings.kernel, "ResampleMove")
        if self.tuner is None:
            self.tuner = PopulationTuner.for_kernel(kernel, z.shape[1])
        self.step_sizes.append(self.tuner.step_size)
        z, accept = move_population(kernel, self.tuner, z, log_w, potential,
                                    self.settings.num_moves, generator)
        self.accepts.append(accept)
        moved = {}
        for a, t, u, shape in zip(names, transforms, z.split(sizes, 1), shapes, strict=True):
            moved[a] = t(u.reshape(n, *shape)).to(live[a].dtype)
        return {**live, **moved}

    def report(self) -> dict[str, Any]:
        """The run facts for the result's ``extra``."""
        kernel = as_kernel(self.settings.kernel, "ResampleMove")
        return {"move_kernel": type(kernel).__name__, "move_accept_prob": self.accepts,
                "move_step_size": self.step_sizes}

    def _step_density(self, j: int, values: Mapping[str, Tensor], n: int) -> Tensor:
        steps = self.program.schedule.steps
        live = {a: values[a] for a in steps[j].reads}
        own = {a: values[a] for a in steps[j].latents}
        return self.program.score_step(j, live, own, n).log_weight

    def _transform(self, address: str) -> Any:
        """``biject_to`` of the site's support (probed once): real-valued latents move as
        they are, constrained ones through the bijection; discrete ones cannot move."""
        if address not in self._transforms:
            graph = self.program.graph
            node = graph.site(address)
            support = probe(graph).dists[node.name].support
            if support.is_discrete:
                raise ValueError(f"ResampleMove: latent {address!r} is discrete ({support}); "
                                 "gradient and random-walk kernels move continuous latents "
                                 "only (lower lag or drop it from keep)")
            if support is not constraints.real and _support_has_parameters(node):
                raise ValueError(f"ResampleMove: latent {address!r} has a support built from "
                                 f"its distribution's parameters ({support}), which may differ "
                                 "between particles; only fixed supports can be moved")
            self._transforms[address] = biject_to(support)
        return self._transforms[address]
