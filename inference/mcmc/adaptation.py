"""Stan's windowed warmup: dual-averaging step size and a windowed metric estimate, per chain.

Schedule for ``num_warmup`` iterations (Stan Reference Manual, "HMC algorithm parameters"):
an initial fast interval (``init_buffer`` = 75) adapts only the step size; then slow windows of
25, 50, 100, ... iterations each estimate the posterior (co)variance with Welford's algorithm
and, at their end, set the inverse mass matrix to the regularized estimate
``(n / (n + 5)) * var + 1e-3 * (5 / (n + 5))`` (times the identity when dense), re-run the
step-size search and restart dual averaging at ``mu = log(10 * eps)``; the last slow window
stretches to the terminal fast interval (``term_buffer`` = 50), which again adapts only the step
size. If the three do not fit (``75 + 25 + 50 > num_warmup``) they become 15% / 75% / 10% of
the warmup; below 20 iterations only the step size adapts. At the end the step size is the
dual-averaging average ``exp(x_bar)``.

Dual averaging (Hoffman & Gelman 2014, Algorithm 5) with ``gamma = 0.05``, ``t0 = 10``,
``kappa = 0.75`` drives the kernel's acceptance statistic to ``target_accept`` (the kernel's
default: 0.8 for HMC/NUTS, 0.574 for MALA, 0.234 for random-walk MH). Every chain has its own
step size, metric and estimator; all chains share the iteration schedule.

>>> warmup_windows(1000)
[(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ppl.inference.rng import RNG, randn

from .base import Info, State, check_probability, stack_infos
from .integrators import (
    LogDensityFn,
    kinetic_energy,
    leapfrog_,
    make_metric,
    sample_momentum,
    sharp,
)

__all__ = [
    "DualAveraging",
    "dual_averaging_init",
    "dual_averaging_update",
    "Welford",
    "welford_init",
    "welford_update",
    "regularized_covariance",
    "warmup_windows",
    "find_reasonable_step_size",
    "WindowAdaptation",
    "AdaptationState",
    "StepAdaptation",
]


class DualAveraging(NamedTuple):
    """Per-chain dual-averaging state: ``log_step`` (current ``x``), ``log_step_avg``
    (``x_bar``), ``h_bar`` (running mean of ``target - accept``), ``mu`` (shrinkage point)."""

    log_step: Tensor
    log_step_avg: Tensor
    h_bar: Tensor
    mu: Tensor
    count: int


def dual_averaging_init(step_size: Tensor) -> DualAveraging:
    """Start dual averaging from ``step_size`` ``(C,)`` with ``mu = log(10 * step_size)``."""
    log_step = step_size.log()
    zeros = torch.zeros_like(log_step)
    return DualAveraging(log_step, zeros, zeros, log_step + math.log(10.0), 0)


def dual_averaging_update(
    da: DualAveraging,
    accept_prob: Tensor,
    target: float,
    gamma: float = 0.05,
    t0: float = 10.0,
    kappa: float = 0.75,
) -> DualAveraging:
    """One step: ``h_bar <- (1 - 1/(m + t0)) h_bar + (target - a) / (m + t0)``,
    ``x = mu - sqrt(m) / gamma * h_bar``, ``x_bar <- m^-kappa x + (1 - m^-kappa) x_bar``.
    A non-finite acceptance statistic counts as 0."""
    m = da.count + 1
    accept = torch.nan_to_num(accept_prob, nan=0.0, posinf=1.0, neginf=0.0).clamp(max=1.0)
    eta = 1.0 / (m + t0)
    h_bar = (1.0 - eta) * da.h_bar + eta * (target - accept)
    log_step = da.mu - (math.sqrt(m) / gamma) * h_bar
    weight = m ** (-kappa)
    log_step_avg = weight * log_step + (1.0 - weight) * da.log_step_avg
    return DualAveraging(log_step, log_step_avg, h_bar, da.mu, m)


class Welford(NamedTuple):
    """Running mean and sum of squared deviations (``(C, D)`` or ``(C, D, D)``)."""

    count: int
    mean: Tensor
    m2: Tensor


def welford_init(num_chains: int, dim: int, dense: bool, like: Tensor) -> Welford:
    shape = (num_chains, dim, dim) if dense else (num_chains, dim)
    return Welford(0, like.new_zeros(num_chains, dim), like.new_zeros(shape))


def welford_update(w: Welford, x: Tensor) -> Welford:
    """Add one draw per chain ``x`` ``(C, D)`` (numerically stable; Welford 1962)."""
    count = w.count + 1
    delta = x - w.mean
    mean = w.mean + delta / count
    if w.m2.dim() == 3:
        m2 = w.m2 + (x - mean).unsqueeze(-1) * delta.unsqueeze(-2)
    else:
        m2 = w.m2 + delta * (x - mean)
    return Welford(count, mean, m2)


def regularized_covariance(w: Welford) -> Tensor:
    """Stan's shrunk sample (co)variance ``(n/(n+5)) S + 1e-3 (5/(n+5)) I`` (``S`` with the
    ``n - 1`` denominator): keeps the metric well conditioned for short windows."""
    n = w.count
    cov = w.m2 / max(n - 1, 1)
    shrink = 1e-3 * 5.0 / (n + 5.0)
    if cov.dim() == 3:
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        return (n / (n + 5.0)) * cov + shrink * eye
    return (n / (n + 5.0)) * cov + shrink


def warmup_windows(
    num_warmup: int, init_buffer: int = 75, term_buffer: int = 50, base_window: int = 25
) -> list[tuple[int, int]]:
    """The slow windows ``[start, end)`` of Stan's schedule for ``num_warmup`` iterations."""
    if num_warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - init_buffer - term_buffer
    end_slow = num_warmup - term_buffer
    windows: list[tuple[int, int]] = []
    start, size = init_buffer, base_window
    end = min(start + size, end_slow)  # Stan never stretches the first window
    while start < end_slow:
        windows.append((start, end))
        start, size = end, 2 * size
        end = min(start + size, end_slow)
        if end + 2 * size >= end_slow:  # the next one would not fit: stretch this one
            end = end_slow
    return windows


def find_reasonable_step_size(
    fn: LogDensityFn, rng: RNG, state: State, max_iterations: int = 100
) -> tuple[State, Tensor]:
    """Stan's step-size initialization, per chain.

    From the current step size take one leapfrog step with a fresh momentum; if the
    acceptance ratio ``exp(H0 - H)`` exceeds 0.8 keep doubling the step size, else keep
    halving it, until the ratio crosses 0.8 (each try with a new momentum). Returns the state
    with the new step sizes and the number of gradient evaluations per chain.
    """
    with torch.no_grad():
        z0, lp0, g0, eps, metric = state
        num_chains, dim = z0.shape
        eps = eps.clone()
        searching = torch.ones(num_chains, dtype=torch.bool, device=z0.device)
        direction = torch.zeros_like(eps)
        evals = torch.zeros(num_chains, dtype=torch.int64, device=z0.device)
        scratch = torch.empty_like(z0)
        log_threshold = math.log(0.8)
        for it in range(max_iterations + 1):
            rows = None if it == 0 else searching.nonzero().flatten().tolist()
            xi = randn(rng, num_chains, (dim,), dtype=z0.dtype, device=z0.device, rows=rows)
            p = sample_momentum(metric, xi)
            h0 = kinetic_energy(p, sharp(metric, p)) - lp0
            z = z0.clone()
            lp, _ = leapfrog_(fn, z, p, g0, eps.unsqueeze(-1), metric, scratch)
            h = kinetic_energy(p, sharp(metric, p)) - lp
            log_ratio = torch.nan_to_num(h0 - h, nan=-math.inf, posinf=-math.inf)
            evals += searching
            up = log_ratio > log_threshold
            if it == 0:
                direction = torch.where(up, 1.0, -1.0).to(eps.dtype)
            else:
                crossed = torch.where(direction > 0, ~up, log_ratio >= log_threshold)
                searching = searching & ~crossed
            if it == max_iterations or not bool(searching.any()):
                break
            eps = torch.where(searching, eps * torch.exp2(direction), eps)
        return state._replace(step_size=eps), evals


class AdaptationState(NamedTuple):
    """Where warmup is: dual averaging, the current window's estimator, the schedule."""

    dual_averaging: DualAveraging | None
    welford: Welford | None
    windows: tuple[tuple[int, int], ...]
    num_warmup: int
    target_accept: float | None
    search_evals: Tensor


@dataclass(frozen=True)
class WindowAdaptation:
    """Stan-style windowed warmup (see the module docstring); every field is Stan's default.

    ``target_accept``: None uses the kernel's. ``adapt_step_size`` / ``adapt_metric`` switch
    the two halves off. ``max_step_size_search``: iterations of the doubling/halving search.
    """

    target_accept: float | None = None
    adapt_step_size: bool = True
    adapt_metric: bool = True
    init_buffer: int = 75
    term_buffer: int = 50
    base_window: int = 25
    gamma: float = 0.05
    t0: float = 10.0
    kappa: float = 0.75
    max_step_size_search: int = 100

    def __post_init__(self) -> None:
        check_probability("WindowAdaptation", "target_accept", self.target_accept)

    def init(
        self, kernel, rng: RNG, state: State, num_warmup: int
    ) -> tuple[State, AdaptationState]:
        """Run the initial step-size search and set up the schedule."""
        target = self.target_accept if self.target_accept is not None else kernel.target_accept
        adapt_step = self.adapt_step_size and target is not None
        position = state.position
        evals = torch.zeros(position.shape[0], dtype=torch.int64, device=position.device)
        if adapt_step and num_warmup > 0 and getattr(kernel, "step_size_search", False):
            state, evals = find_reasonable_step_size(
                kernel.log_density_fn, rng, state, self.max_step_size_search
            )
        windows = (
            tuple(warmup_windows(num_warmup, self.init_buffer, self.term_buffer, self.base_window))
            if self.adapt_metric
            else ()
        )
        da = dual_averaging_init(state.step_size) if adapt_step else None
        return state, AdaptationState(da, None, windows, num_warmup, target, evals)

    def update(
        self,
        kernel,
        rng: RNG,
        iteration: int,
        state: State,
        info: Info,
        astate: AdaptationState,
    ) -> tuple[State, AdaptationState]:
        """Adapt after warmup iteration ``iteration`` (0-based) produced ``state``/``info``."""
        da, welford = astate.dual_averaging, astate.welford
        if da is not None:
            assert astate.target_accept is not None
            da = dual_averaging_update(
                da, info.accept_prob, astate.target_accept, self.gamma, self.t0, self.kappa
            )
            state = state._replace(step_size=da.log_step.exp())
        if _window_at(astate, iteration) is not None:
            if welford is None:
                welford = _new_welford(state)
            welford = welford_update(welford, state.position)
        astate = astate._replace(dual_averaging=da, welford=welford)
        return self._after(kernel, rng, iteration, state, astate)

    def _after(self, kernel, rng: RNG, iteration: int, state: State,
               astate: AdaptationState) -> tuple[State, AdaptationState]:
        """The end of iteration ``iteration``: at a window's end the regularized estimate
        becomes the metric, the step size is searched anew and dual averaging restarts; at
        the end of warmup the step size becomes the dual-averaging average."""
        da, welford, evals = astate.dual_averaging, astate.welford, astate.search_evals
        window = _window_at(astate, iteration)
        if window is not None and iteration == window[1] - 1:
            state = state._replace(metric=make_metric(regularized_covariance(welford)))
            welford = None
            if da is not None:
                if getattr(kernel, "step_size_search", False):
                    state, more = find_reasonable_step_size(
                        kernel.log_density_fn, rng, state, self.max_step_size_search
                    )
                    evals = evals + more
                da = dual_averaging_init(state.step_size)
        if da is not None and iteration == astate.num_warmup - 1:
            state = state._replace(step_size=da.log_step_avg.exp())
        return state, astate._replace(dual_averaging=da, welford=welford, search_evals=evals)

    def stretches(self, astate: AdaptationState, longest: int | None = None
                  ) -> list[tuple[int, int]]:
        """Warmup iterations ``[start, stop)`` cut at every window's start and end (so that
        within one the same adaptation applies throughout, see :meth:`run`), and into pieces
        of at most ``longest`` iterations."""
        cuts = {0, astate.num_warmup}
        for start, end in astate.windows:
            cuts.update((start, end))
        edges = sorted(c for c in cuts if 0 <= c <= astate.num_warmup)
        pieces = []
        for start, stop in zip(edges, edges[1:], strict=False):
            step = longest or stop - start
            pieces += [(a, min(a + step, stop)) for a in range(start, stop, step)]
        return pieces

    def run(self, kernel, rng: RNG, start: int, stop: int, state: State,
            astate: AdaptationState) -> tuple[State, Info, AdaptationState]:
        """Warmup iterations ``start .. stop - 1`` (one of :meth:`stretches`): transitions,
        each followed by :meth:`update`. A kernel with ``adaptive_steps`` (NUTS in C) runs
        them with the per-iteration adaptation in one call; the infos come back as
        ``(C, stop - start)``."""
        adaptive = getattr(kernel, "adaptive_steps", None)
        if adaptive is not None:
            welford = astate.welford
            if welford is None and _window_at(astate, start) is not None:
                welford = _new_welford(state)
            plan = StepAdaptation(astate.dual_averaging, welford, astate.target_accept,
                                  self.gamma, self.t0, self.kappa)
            done = adaptive(rng, state, stop - start, plan)
            if done is not None:
                state, info, plan = done
                astate = astate._replace(dual_averaging=plan.dual_averaging,
                                         welford=plan.welford)
                state, astate = self._after(kernel, rng, stop - 1, state, astate)
                return state, info, astate
        infos = []
        for iteration in range(start, stop):
            state, info = kernel.step(rng, state)
            state, astate = self.update(kernel, rng, iteration, state, info, astate)
            infos.append(info)
        return state, stack_infos(infos), astate


class StepAdaptation(NamedTuple):
    """What adapts from one warmup transition to the next, for kernels that run several at
    once (``adaptive_steps``): dual averaging (None: the step size stays) towards
    ``target`` with its constants, and the current window's estimator (None: outside)."""

    dual_averaging: DualAveraging | None
    welford: Welford | None
    target: float | None
    gamma: float
    t0: float
    kappa: float


def _window_at(astate: AdaptationState, iteration: int) -> tuple[int, int] | None:
    return next(((a, b) for a, b in astate.windows if a <= iteration < b), None)


def _new_welford(state: State) -> Welford:
    num_chains, dim = state.position.shape
    return welford_init(num_chains, dim, state.metric.dense, state.position)
