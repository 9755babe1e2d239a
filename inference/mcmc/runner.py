"""Run a kernel for warmup and sampling: ``sample(kernel, log_density_fn, init_positions, ...)``.

Chains run batched in one process (``chain_method="batched"``, the default: one log density
call serves all chains), one after another (``"sequential"``: each chain alone, so no chain
waits for another's longer trajectory) or in separate processes (``"processes"``: groups of
chains in ``torch.multiprocessing`` workers, ``fork`` by default so closures work). Chain ``c``
draws from its own generator seeded from ``(seed, c)``, so the three methods and any number of
chains give chain ``c`` the same draws whenever the log density is row-wise deterministic.

While sampling the torch thread count is set to ``num_threads`` (default 1: the kernels'
tensors are small, and with two threads small operations slow down 10-35x whenever the other
core is busy; measured in ``bench/mcmc_kernels.py``) and restored afterwards. (Native NUTS
runs chains on threads of its own, one per core: each runs a chain's long stretch of
transitions, not small operations.) The phases go through ``kernel.steps`` and
``WindowAdaptation.run``, so a kernel can run many transitions in one call.

>>> import torch
>>> from ppl.inference.mcmc import NUTS
>>> fn = lambda z: (-0.5 * (z * z).sum(-1), -z)
>>> run = sample(NUTS(), fn, torch.zeros(2, 3, dtype=torch.float64), 50, 20, seed=0)
>>> run.draws.shape, run.info.tree_depth.shape
(torch.Size([2, 20, 3]), torch.Size([2, 20]))
"""

from __future__ import annotations

import numbers
import os
import pickle
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from ppl.inference.rng import chain_generators

from .adaptation import AdaptationState, WindowAdaptation
from .base import Info, State, StretchInterrupted, step_by_step
from .integrators import LogDensityFn, Metric
from .progress import ProgressLine, progress_enabled

__all__ = ["MCMCRun", "sample"]


@dataclass
class MCMCRun:
    """Result of :func:`sample`.

    ``draws`` ``(C, S, D)``; ``info`` and ``warmup_info``: :class:`Info` with fields of shape
    ``(C, S)`` / ``(C, num_warmup)`` (per kept draw); ``step_size`` ``(C,)`` and
    ``inverse_mass_matrix`` ``(C, D)`` or ``(C, D, D)``: the adapted parameters;
    ``num_grad_evals``: rows passed to the log density function over the whole run (what the
    run paid, including initialization, step-size searches and lockstep padding);
    ``num_fn_calls``: calls of the function; ``warmup_time`` / ``sampling_time``: wall seconds
    (for ``"processes"`` the slowest worker's); ``final_state``: to continue sampling.
    """

    draws: Tensor
    info: Info
    warmup_info: Info
    step_size: Tensor
    inverse_mass_matrix: Tensor
    num_grad_evals: int
    num_fn_calls: int
    warmup_time: float
    sampling_time: float
    final_state: State
    chain_method: str = "batched"

    @property
    def num_chains(self) -> int:
        return self.draws.shape[0]

    @property
    def num_divergent(self) -> int:
        """Divergent transitions among the kept draws."""
        return int(self.info.divergent.sum())


class SamplingInterrupted(KeyboardInterrupt):
    """Ctrl-C (``KeyboardInterrupt``) during :func:`sample`, with what was done before it:
    ``draws`` ``(C, n, D)`` and ``info`` of the ``n`` kept iterations every chain completed
    (``n = 0`` when it came during warmup), and the ``checkpoint`` of the last completed
    stretch, from which ``sample(..., resume=checkpoint)`` continues the run exactly. Infer
    methods attach the ``posterior`` of the draws."""

    def __init__(self, draws: Tensor, info: Info | None, num_samples: int):
        super().__init__(f"sampling interrupted after {draws.shape[1]} of {num_samples} kept "
                         "draws; .checkpoint resumes the run")
        self.draws, self.info, self.num_samples = draws, info, num_samples
        self.checkpoint: Checkpoint | None = None
        self.posterior: Any = None


class _CountingFn:
    """Wraps a log density function, counting calls and rows."""

    def __init__(self, fn: LogDensityFn) -> None:
        self.fn, self.calls, self.rows = fn, 0, 0

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        self.calls += 1
        self.rows += z.shape[0]
        return self.fn(z)


def _no_infos(like: Info) -> Info:
    """Infos of zero iterations, with the dtypes of ``like`` ``(C, n)``."""
    return Info(*(field[:, :0] for field in like))


def _concat_infos(blocks: list[Info]) -> Info | None:
    if not blocks:
        return None
    return Info(*(torch.cat(fields, dim=1) for fields in zip(*blocks, strict=True)))


def _report(line: ProgressLine | None, info: Info, tally: list[int] | None = None) -> None:
    """Count a stretch's iterations ``(C, n)`` on the progress line, if there is one, and
    its gradient evaluations in ``tally`` (for kernels that evaluate outside the function
    the runner wraps)."""
    if tally is not None:
        tally[0] += int(info.num_grad_evals.sum())
    if line is not None:
        for divergent in info.divergent.sum(0):
            line.update(divergent)


_FIRST_STRETCH = 16  # iterations in a phase's first stretch
_STRETCH_SECONDS = 1.0  # what later stretches aim to take: the checkpoints' spacing


@dataclass
class Checkpoint:
    """Where a batched run stood between two stretches of iterations: everything needed to
    continue it exactly (``sample(..., resume=checkpoint)`` with the same kernel and
    settings gives the draws of the uninterrupted run). ``iteration`` counts warmup first;
    ``generators`` are the chains' generator states; ``warmup_info``, ``info`` and ``draws``
    hold what was kept so far. It pickles (``torch.save``)."""

    iteration: int
    num_warmup: int
    num_samples: int
    thin: int
    state: State
    adaptation: AdaptationState | None
    generators: list[Tensor]
    warmup_info: list[Info]
    info: list[Info]
    draws: list[Tensor]
    num_grad_evals: int
    num_fn_calls: int


class _Pacer:
    """Stretch lengths: ``_FIRST_STRETCH`` iterations, then as many as take about
    ``_STRETCH_SECONDS`` (at most ``cap``). Stretches change nothing drawn, only how often
    the run can be checkpointed and the progress line redrawn."""

    def __init__(self, cap: int | None):
        self.cap, self.size = cap, _FIRST_STRETCH

    def next(self, remaining: int) -> int:
        return max(1, min(remaining, self.size, self.cap or remaining))

    def record(self, n: int, seconds: float) -> None:
        self.size = max(1, int(n * _STRETCH_SECONDS / max(seconds, 1e-6)))


class _BatchedRun:
    """One batched run of warmup and sampling, stretch by stretch, with a checkpoint after
    each stretch (kept for an interrupt, and given to ``on_checkpoint``)."""

    def __init__(self, kernel, generators: list[torch.Generator], num_warmup: int,
                 num_samples: int, adaptation: WindowAdaptation | None, thin: int,
                 line: ProgressLine | None):
        self.counter = _CountingFn(kernel.log_density_fn)
        self.kernel = kernel.bind(self.counter)
        # rows evaluated outside ``counter`` (in C), as the kernel's infos report them
        self.tally = [0] if getattr(kernel, "counts_own_evaluations", False) else None
        self.generators, self.adaptation, self.line = generators, adaptation, line
        self.num_warmup, self.num_samples, self.thin = num_warmup, num_samples, thin
        self.iteration, self.astate = 0, None
        self.warmup_info: list[Info] = []
        self.info: list[Info] = []
        self.draws: list[Tensor] = []
        self.checkpoint: Checkpoint | None = None

    def start(self, z0: Tensor) -> None:
        self.state = self.kernel.init(z0)
        bad = (~torch.isfinite(self.state.log_density)).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"log density is not finite at the initial positions of chains {bad} "
                f"(values {self.state.log_density[bad].tolist()}); choose initial positions "
                "inside the support, e.g. uniform(-2, 2) on the unconstrained space"
            )

    def restore(self, saved: Checkpoint) -> None:
        got = (saved.num_warmup, saved.num_samples, saved.thin, len(saved.generators))
        want = (self.num_warmup, self.num_samples, self.thin, len(self.generators))
        if got != want:
            raise ValueError(f"the checkpoint is of a run with (num_warmup, num_samples, thin, "
                             f"chains) = {got}, not {want}")
        for generator, generator_state in zip(self.generators, saved.generators, strict=True):
            generator.set_state(generator_state)
        self.iteration, self.state, self.astate = saved.iteration, saved.state, saved.adaptation
        self.warmup_info, self.info = list(saved.warmup_info), list(saved.info)
        self.draws = list(saved.draws)
        self.counter.rows, self.counter.calls = saved.num_grad_evals, saved.num_fn_calls

    def save(self) -> Checkpoint:
        rows = self.counter.rows + (self.tally[0] if self.tally is not None else 0)
        self.checkpoint = Checkpoint(
            self.iteration, self.num_warmup, self.num_samples, self.thin, self.state,
            self.astate, [g.get_state() for g in self.generators], list(self.warmup_info),
            list(self.info), list(self.draws), rows, self.counter.calls)
        return self.checkpoint

    def _stretch(self, n: int, run) -> Info:
        """``run(n)`` -> infos of ``n`` iterations; counts, reports, then checkpoints."""
        begin = time.perf_counter()
        info = run(n)
        self.pacer.record(n, time.perf_counter() - begin)
        _report(self.line, info, self.tally)
        self.iteration += n
        self.save()
        return info

    def warmup(self) -> None:
        """The warmup iterations: with adaptation, stretches that end at its events (see
        ``WindowAdaptation.run``); without, plain transitions (nothing kept)."""
        self.pacer = _Pacer(None if self.line is None else max(1, self.num_warmup // 50))
        if self.adaptation is None:
            self._transitions(self.num_warmup, keep=False)
            return
        if self.num_warmup == 0:
            return
        if self.astate is None:
            self.state, self.astate = self.adaptation.init(self.kernel, self.generators,
                                                           self.state, self.num_warmup)
        for start, stop in self.adaptation.stretches(self.astate):
            while max(start, self.iteration) < stop:
                at = max(start, self.iteration)
                self.warmup_info.append(self._stretch(
                    self.pacer.next(stop - at), lambda n, at=at: self._adapt(at, at + n)))

    def _adapt(self, start: int, stop: int) -> Info:
        self.state, info, self.astate = self.adaptation.run(
            self.kernel, self.generators, start, stop, self.state, self.astate)
        return info

    def sampling(self) -> None:
        self.pacer = _Pacer(None if self.line is None else max(1, self.num_samples // 50))
        self._transitions(self.num_samples, keep=True)

    def _transitions(self, total: int, keep: bool) -> None:
        """Plain transitions through ``kernel.steps`` (a kernel may run many in one call),
        up to ``total`` in this phase; with ``keep`` every ``thin``-th is kept as a draw."""
        steps = getattr(self.kernel, "steps", None) or partial(step_by_step, self.kernel)
        offset = self.num_warmup if keep else 0
        while self.iteration - offset < total:
            done = self.iteration - offset
            # global iterations i % thin == 0 of the sampling phase are kept
            thin = self.thin if keep else 1
            keep_slice = slice((thin - done % thin) % thin, None, thin)

            def run(n: int, keep_slice=keep_slice) -> Info:
                try:
                    self.state, info, drawn = steps(self.generators, self.state, n)
                except StretchInterrupted as interrupt:
                    if keep:
                        self._keep(interrupt.info, interrupt.draws, keep_slice)
                    raise
                if keep:
                    self._keep(info, drawn, keep_slice)
                return info

            info = self._stretch(self.pacer.next(total - done), run)
            if not keep:
                self.warmup_info.append(info)

    def _keep(self, info: Info, drawn: Tensor, keep: slice) -> None:
        self.info.append(Info(*(f[:, keep] for f in info)))
        self.draws.append(drawn[:, keep])

    def kept(self) -> tuple[Tensor, Info | None]:
        position = self.state.position
        empty = position.new_empty((position.shape[0], 0, position.shape[1]))
        return torch.cat([empty, *self.draws], dim=1), _concat_infos(self.info)


def _run_batched(
    kernel,
    z0: Tensor,
    num_warmup: int,
    num_samples: int,
    generators: list[torch.Generator],
    adaptation: WindowAdaptation | None,
    thin: int,
    progress: bool,
    label: str = "",
    resume: Checkpoint | None = None,
) -> MCMCRun:
    line = ProgressLine(num_warmup + num_samples, num_warmup, label=label) if progress else None
    run = _BatchedRun(kernel, generators, num_warmup, num_samples, adaptation, thin, line)
    with torch.no_grad():
        start = time.perf_counter()
        try:
            if resume is None:
                run.start(z0)
            else:
                run.restore(resume)
            if run.iteration < num_warmup or resume is None:
                run.warmup()
            warm_end = time.perf_counter()
            run.sampling()
        except KeyboardInterrupt:
            draws, info = run.kept()
            interrupted = SamplingInterrupted(draws, info, num_samples // thin)
            interrupted.checkpoint = run.checkpoint
            raise interrupted from None
        finally:
            if line is not None:
                line.close()
        end = time.perf_counter()
    state = run.state
    draws, info = run.kept()
    warm_info = _concat_infos(run.warmup_info)
    template = next((i for i in (warm_info, info) if i is not None), None)
    if template is None:  # dtypes for the empty infos of a run without iterations
        _, step_info = run.kernel.step(generators, state)
        template = Info(*(field.unsqueeze(1) for field in step_info))
    return MCMCRun(
        draws=draws,
        info=info if info is not None else _no_infos(template),
        warmup_info=warm_info if warm_info is not None else _no_infos(template),
        step_size=state.step_size,
        inverse_mass_matrix=state.metric.inverse_mass,
        num_grad_evals=run.counter.rows + (run.tally[0] if run.tally is not None else 0),
        num_fn_calls=run.counter.calls,
        warmup_time=warm_end - start,
        sampling_time=end - warm_end,
        final_state=state,
    )


def _concat_runs(runs: list[MCMCRun], method: str, parallel: bool) -> MCMCRun:
    def cat(tensors):
        return torch.cat(list(tensors), dim=0)

    states = [r.final_state for r in runs]
    metric = Metric(*(cat(fields) for fields in zip(*(s.metric for s in states), strict=True)))
    final = State(*(cat(f) for f in zip(*(s[:4] for s in states), strict=True)), metric)
    combine = max if parallel else sum
    return MCMCRun(
        draws=cat(r.draws for r in runs),
        info=Info(*(cat(f) for f in zip(*(r.info for r in runs), strict=True))),
        warmup_info=Info(*(cat(f) for f in zip(*(r.warmup_info for r in runs), strict=True))),
        step_size=cat(r.step_size for r in runs),
        inverse_mass_matrix=cat(r.inverse_mass_matrix for r in runs),
        num_grad_evals=sum(r.num_grad_evals for r in runs),
        num_fn_calls=sum(r.num_fn_calls for r in runs),
        warmup_time=combine(r.warmup_time for r in runs),
        sampling_time=combine(r.sampling_time for r in runs),
        final_state=final,
        chain_method=method,
    )


def _worker(queue, rank, kernel, z0, num_warmup, num_samples, gen_states, adaptation, thin):
    try:
        torch.set_num_threads(1)
        generators = [torch.Generator() for _ in gen_states]
        for g, s in zip(generators, gen_states, strict=True):
            g.set_state(s)
        run = _run_batched(kernel, z0, num_warmup, num_samples, generators, adaptation, thin, False)
        # Plain pickle bytes: torch's shared-memory tensor handles would die with this process.
        queue.put((rank, pickle.dumps(run), None))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        queue.put((rank, None, traceback.format_exc()))


def _run_processes(kernel, z0, num_warmup, num_samples, generators, adaptation, thin,
                   num_processes, start_method) -> MCMCRun:
    import torch.multiprocessing as mp

    num_chains = z0.shape[0]
    num_processes = max(1, min(num_processes or os.cpu_count() or 1, num_chains))
    bounds = [round(r * num_chains / num_processes) for r in range(num_processes + 1)]
    ctx = mp.get_context(start_method)
    queue = ctx.Queue()
    procs = []
    for rank in range(num_processes):
        lo, hi = bounds[rank], bounds[rank + 1]
        states = [g.get_state() for g in generators[lo:hi]]
        args = (queue, rank, kernel, z0[lo:hi].clone(), num_warmup, num_samples, states,
                adaptation, thin)
        proc = ctx.Process(target=_worker, args=args, daemon=True)
        proc.start()
        procs.append(proc)
    results: dict[int, MCMCRun] = {}
    errors = []
    for _ in procs:
        rank, run, err = queue.get()
        if err is not None:
            errors.append(f"worker {rank} (chains {bounds[rank]}..{bounds[rank + 1] - 1}):\n{err}")
        else:
            results[rank] = pickle.loads(run)
    for proc in procs:
        proc.join()
    if errors:
        raise RuntimeError("chain_method='processes' failed:\n" + "\n".join(errors))
    return _concat_runs([results[r] for r in range(num_processes)], "processes", parallel=True)


def sample(
    kernel,
    log_density_fn: LogDensityFn | None,
    init_positions: Tensor,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    seed: int | torch.Generator | Sequence[torch.Generator] = 0,
    *,
    adapt: bool | WindowAdaptation = True,
    thin: int = 1,
    progress_bar: bool | None = None,
    chain_method: str = "batched",
    num_threads: int | None = 1,
    num_processes: int | None = None,
    start_method: str | None = None,
    resume: Checkpoint | None = None,
) -> MCMCRun:
    """Warm up and sample ``init_positions.shape[0]`` chains with ``kernel``.

    ``kernel``: a kernel instance (``NUTS()``, ``HMC(num_steps=20)``, ...) or class; it is bound
    to ``log_density_fn`` (``None`` keeps the kernel's own). ``init_positions``: ``(C, D)``
    unconstrained starting points. ``seed``: an int, a generator (chain ``c`` is seeded by its
    ``c``-th draw) or one generator per chain. ``adapt``: ``True`` for Stan's windowed warmup
    (:class:`WindowAdaptation` with its defaults), ``False`` to keep the kernel's step size and
    metric, or a configured :class:`WindowAdaptation`. ``thin``: keep every ``thin``-th of the
    ``num_samples`` iterations. ``progress_bar``: a progress line on stderr (iterations,
    phase, divergences, it/s; see :mod:`.progress`; one per chain for ``"sequential"``, none
    for ``"processes"``), ``None`` showing it only when stderr is a terminal.
    ``chain_method``: ``"batched"``, ``"sequential"`` or ``"processes"`` (``num_processes``
    workers, default one per core; ``start_method`` default ``"fork"`` where available).
    ``num_threads``: torch threads while sampling (``None`` leaves the setting alone).
    ``resume``: a :class:`Checkpoint` (from :class:`SamplingInterrupted`) of a batched run with
    the same kernel and settings, to continue where it stood (``init_positions`` and ``seed``
    are then not used).
    """
    if isinstance(kernel, type):
        kernel = kernel()
    if log_density_fn is not None:
        kernel = kernel.bind(log_density_fn)
    if kernel.log_density_fn is None:
        raise ValueError("no log density function: pass log_density_fn or a bound kernel")
    if init_positions.dim() != 2:
        raise ValueError(
            f"init_positions must be (chains, dim), got shape {tuple(init_positions.shape)}"
        )
    if thin < 1 or num_warmup < 0 or num_samples < 0:
        raise ValueError(f"need thin >= 1 and non-negative iteration counts, got thin={thin}, "
                         f"num_warmup={num_warmup}, num_samples={num_samples}")
    num_chains = init_positions.shape[0]
    if isinstance(seed, numbers.Integral | torch.Generator):
        generators = chain_generators(seed if isinstance(seed, torch.Generator) else int(seed),
                                      num_chains)
    else:
        generators = list(seed)
        if len(generators) != num_chains:
            raise ValueError(f"got {len(generators)} generators for {num_chains} chains")
    adaptation = WindowAdaptation() if adapt is True else (adapt or None)
    z0 = init_positions.detach()

    progress = progress_enabled(progress_bar)
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        if resume is not None and chain_method != "batched":
            raise ValueError("resume= continues batched runs only (chain_method='batched')")
        if chain_method == "batched":
            return _run_batched(kernel, z0, num_warmup, num_samples, generators, adaptation,
                                thin, progress, resume=resume)
        if chain_method == "sequential":
            runs = [
                _run_batched(kernel, z0[c : c + 1], num_warmup, num_samples, generators[c : c + 1],
                             adaptation, thin, progress, f"chain {c + 1}/{num_chains}")
                for c in range(num_chains)
            ]
            return _concat_runs(runs, "sequential", parallel=False)
        if chain_method == "processes":
            if start_method is None:
                start_method = "fork" if sys.platform.startswith("linux") else "spawn"
            return _run_processes(kernel, z0, num_warmup, num_samples, generators, adaptation,
                                  thin, num_processes, start_method)
        raise ValueError(
            f"chain_method must be 'batched', 'sequential' or 'processes', got {chain_method!r}"
        )
    finally:
        torch.set_num_threads(previous_threads)
