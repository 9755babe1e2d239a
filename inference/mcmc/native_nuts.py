"""NUTS in C: the ``NativeNUTS`` kernel and the Python side of ``nuts.c``.

``NativeNUTS`` is :class:`~ppl.inference.mcmc.nuts.NUTS` with its transitions in C: the
kernel links ``nuts.c``, compiled for the model's dimension (``-DPPL_DIM=D``), into the
library of a model's compiled potential (``double ppl_potential(z, grad)`` of
:mod:`ppl.inference.lowering.native`), whose ``ppl_nuts_run`` makes whole transitions for
every chain in one call, each chain building its own tree (no lockstep padding), with the
algorithm of :mod:`ppl.inference.mcmc.nuts` (Stan's). The infer methods build it in place of
the torch kernel when the model's potential is native; nothing is probed per step.

* :func:`native_nuts_transition` (warmup, where adaptation retunes between transitions): one
  transition; Python draws the momentum ``p0 ~ N(0, M)`` and one 64-bit seed per chain, both
  from one ``randn`` call of ``D + 1`` normals per chain (the seed is the bit pattern of the
  last normal; C hashes it with splitmix64 into its xoshiro256** stream);
* :func:`native_nuts_run` (sampling): many transitions in one call, the momenta drawn in C
  from the transition's stream and the mass matrix factor, seeded by one 64-bit word per
  transition drawn from the chain's generator (so a phase cut into several calls, e.g. for a
  progress line, draws what one call draws);
* :func:`native_nuts_warmup`: a warmup stretch, with dual averaging and the window's Welford
  estimate carried in C.

Either way chain ``c`` depends only on its own generator and state, so it is bitwise the same
in any batch. The chains run on a thread pool while the calling thread waits, so Ctrl-C is
seen at once: C stops every chain before its next transition, and
:class:`~ppl.inference.mcmc.base.StretchInterrupted` carries the transitions completed by
all chains.

    >>> from ppl.inference.lowering.native.compiler import Unit, compile_library    # doctest: +SKIP
    >>> lib = compile_library(Unit(potential_c + nuts_source()))            # doctest: +SKIP
    >>> state, info = native_nuts_transition(lib, rng, state)         # doctest: +SKIP
    >>> state, infos, draws = native_nuts_run(lib, rng, state, 1000)  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import ClassVar

import torch

from ppl.inference.lowering.native import NativePotential
from ppl.inference.lowering.native.codegen import rng_source
from ppl.inference.lowering.native.compiler import Unit
from ppl.inference.mcmc.adaptation import DualAveraging, StepAdaptation, Welford
from ppl.inference.mcmc.base import Info, State, StretchInterrupted, make_info
from ppl.inference.mcmc.integrators import sample_momentum
from ppl.inference.mcmc.nuts import NUTS
from ppl.inference.rng import RNG, randn, random_words

__all__ = ["NativeNUTS", "native_nuts_run", "native_nuts_transition", "native_nuts_warmup",
           "nuts_source", "nuts_unit"]

_P = ctypes.c_void_p
_FIRST_PIECE = 16  # transitions in a chain's first call of a stretch
_PIECE_SECONDS = 0.05  # what later calls aim to take
_MAX_PIECE = 1 << 20


class _Adaptation(ctypes.Structure):
    """C's ``ppl_adaptation``: warmup adaptation carried across the transitions of a run."""

    _fields_ = [("dual_averaging", _P), ("da_count", ctypes.c_long),
                ("target", ctypes.c_double), ("gamma", ctypes.c_double),
                ("t0", ctypes.c_double), ("kappa", ctypes.c_double),
                ("welford_mean", _P), ("welford_m2", _P), ("welford_count", ctypes.c_long)]


# ppl_nuts_run(C, first_row, num_iter, z0, lp0, g0, p0, mass_sqrt, step_size, inv_mass,
#              dense, seeds, max_depth, threshold, adapt, draws, z, lp, g, accept_prob,
#              divergent, energy, num_steps, tree_depth, step_used, stop, completed) -> status
_ARGTYPES = (ctypes.c_long, ctypes.c_long, ctypes.c_long, _P, _P, _P, _P, _P, _P, _P,
             ctypes.c_int, _P, ctypes.c_int, ctypes.c_double, ctypes.POINTER(_Adaptation), _P,
             _P, _P, _P, _P, _P, _P, _P, _P, _P, ctypes.POINTER(ctypes.c_int), _P)


@cache
def nuts_source() -> str:
    """The C text of the NUTS transition (after the shared RNG), to append to a generated
    potential."""
    return rng_source() + (Path(__file__).with_name("nuts.c")).read_text()


def nuts_unit(dim: int) -> Unit:
    """``nuts.c`` as a translation unit for a model of dimension ``dim`` (at ``-O1``: its
    control flow gains nothing from ``-O3``, and it compiles faster)."""
    return Unit(nuts_source(), ("-O1", f"-DPPL_DIM={dim}"))


def _entry(library: ctypes.CDLL):
    """``library.ppl_nuts_run`` with its argument types set (once per library)."""
    fn = library.ppl_nuts_run
    if fn.argtypes is None:
        fn.restype = ctypes.c_int
        fn.argtypes = _ARGTYPES
    return fn


def _f64(t: torch.Tensor, name: str) -> torch.Tensor:
    """``t`` as the contiguous float64 CPU tensor C reads (a copy only when it is not)."""
    if t.dtype is not torch.float64 or not t.is_cpu:
        raise TypeError(f"native NUTS needs float64 CPU tensors; {name} is {t.dtype} on "
                        f"{t.device}")
    return t if t.is_contiguous() else t.contiguous()


@dataclass
class _Adapting:
    """Warmup adaptation for :func:`_run`: the settings of ``ppl_adaptation`` and its
    per-chain tables (rows of chains; C updates them in place; None: not adapted)."""

    target: float
    gamma: float
    t0: float
    kappa: float
    dual_averaging: torch.Tensor | None  # (C, 4)
    da_count: int
    welford_mean: torch.Tensor | None  # (C, D)
    welford_m2: torch.Tensor | None  # (C, D) or (C, D, D)
    welford_count: int

    def for_chain(self, c: int, done: int) -> _Adaptation:
        """Chain ``c``'s tables, for a call that starts after its ``done``-th transition."""
        def row(t: torch.Tensor | None) -> int | None:
            return None if t is None else t[c].data_ptr()

        return _Adaptation(row(self.dual_averaging), self.da_count + done, self.target,
                           self.gamma, self.t0, self.kappa, row(self.welford_mean),
                           row(self.welford_m2), self.welford_count + done)


def chain_workers(num_chains: int) -> int:
    """Threads to spread chains over: one per core this process may use, at most one per
    chain (each chain's transitions are independent and long, unlike torch's small ops)."""
    return max(1, min(num_chains, len(os.sched_getaffinity(0))
                      if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ppl-native")


def _run(library: ctypes.CDLL, state: State, num_iter: int, seeds: torch.Tensor,
         p0: torch.Tensor | None, max_tree_depth: int, divergence_threshold: float,
         adapting: _Adapting | None = None) -> tuple[State, Info, torch.Tensor]:
    """``ppl_nuts_run``: the final state, the infos ``(C, num_iter)`` and the draws
    ``(C, num_iter, D)``. Chains run in parallel threads (ctypes releases the GIL). With
    ``adapting`` the step size changes between transitions."""
    z0, lp0, g0, step_size, metric = state
    num_chains, dim = z0.shape
    z0, lp0, g0 = _f64(z0, "position"), _f64(lp0, "log_density"), _f64(g0, "grad")
    step_size = _f64(step_size, "step_size")
    draws = z0.new_empty(num_chains, num_iter, dim)
    g, lp = torch.empty_like(z0), torch.empty_like(lp0)
    accept, energy, used = (lp0.new_empty(num_chains, num_iter) for _ in range(3))
    divergent = torch.empty(num_chains, num_iter, dtype=torch.bool)  # one byte: C's uint8_t
    num_steps, depth = (torch.empty(num_chains, num_iter, dtype=torch.int64) for _ in range(2))
    mass_sqrt = None if p0 is not None else _f64(metric.mass_sqrt, "the mass matrix factor")
    inv_mass = _f64(metric.inverse_mass, "the inverse mass matrix")
    entry = _entry(library)
    stop, completed = ctypes.c_int(0), torch.zeros(num_chains, dtype=torch.int64)
    done = [0] * num_chains  # transitions made by each chain
    size = [_FIRST_PIECE] * num_chains  # transitions in its next call

    def piece(c: int) -> tuple[int, float]:
        """Chain ``c``'s next transitions in one C call, from its last draw on; returns the
        chain and the call's duration."""
        start, n = done[c], min(size[c], num_iter - done[c])
        begin = time.perf_counter()
        at = (lambda x: x[c, start:].data_ptr()) if start else (lambda x: x[c].data_ptr())
        status = entry(
            1, c, n, (draws[c, start - 1] if start else z0[c]).data_ptr(),
            (lp if start else lp0)[c:].data_ptr(), (g if start else g0)[c].data_ptr(),
            None if p0 is None else p0[c].data_ptr(),
            None if mass_sqrt is None else mass_sqrt[c].data_ptr(), step_size[c:].data_ptr(),
            inv_mass[c].data_ptr(), int(metric.dense), at(seeds), int(max_tree_depth),
            float(divergence_threshold),
            None if adapting is None else ctypes.byref(adapting.for_chain(c, start)),
            at(draws), None, lp[c:].data_ptr(), g[c].data_ptr(), at(accept), at(divergent),
            at(energy), at(num_steps), at(depth), at(used), ctypes.byref(stop),
            completed[c:].data_ptr())
        if status:
            raise MemoryError("native NUTS could not allocate its workspace")
        done[c] += int(completed[c])
        return c, time.perf_counter() - begin

    # Each chain runs in pieces of about _PIECE_SECONDS, queued round-robin on the pool: a
    # free thread takes the next piece whatever the trees' depths, every chain advances (so
    # an interrupt finds them all about as far), and this thread only waits, so Ctrl-C
    # reaches it; C then stops every chain before its next transition. The pieces' sizes
    # change nothing drawn: each transition has its own seed.
    pool = _pool(chain_workers(num_chains))
    pending = {pool.submit(piece, c) for c in range(num_chains)}
    try:
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for task in finished:
                c, seconds = task.result()
                if done[c] < num_iter:
                    size[c] = max(1, min(_MAX_PIECE, int(size[c] * _PIECE_SECONDS
                                                         / max(seconds, 1e-6))))
                    pending.add(pool.submit(piece, c))
    except KeyboardInterrupt:
        stop.value = 1
        wait(pending)
        made = min(done)
        info = make_info(accept, divergent, energy, num_steps, used, depth)
        raise StretchInterrupted(Info(*(f[:, :made] for f in info)), draws[:, :made]) from None
    info = make_info(accept, divergent, energy, num_steps, used, depth)
    return State(draws[:, -1].clone(), lp, g, step_size, metric), info, draws


def native_nuts_transition(
    library: ctypes.CDLL,
    rng: RNG,
    state: State,
    max_tree_depth: int = 10,
    divergence_threshold: float = 1000.0,
) -> tuple[State, Info]:
    """One NUTS transition of all chains in C; the contract of
    :func:`ppl.inference.mcmc.nuts.nuts_transition` (same ``State``/``Info`` fields and
    dtypes), with the potential compiled into ``library``."""
    num_chains, dim = state.position.shape
    xi = randn(rng, num_chains, (dim + 1,), dtype=torch.float64)
    p0 = sample_momentum(state.metric, xi[:, :dim]).contiguous()
    seeds = xi[:, dim].contiguous()  # its bits, read as uint64 by C
    new, info, _ = _run(library, state, 1, seeds, p0, max_tree_depth, divergence_threshold)
    return new, Info(*(field[:, 0] for field in info))


def native_nuts_run(
    library: ctypes.CDLL,
    rng: RNG,
    state: State,
    num_iter: int,
    max_tree_depth: int = 10,
    divergence_threshold: float = 1000.0,
) -> tuple[State, Info, torch.Tensor]:
    """``num_iter`` NUTS transitions of all chains in one C call, with the state's step size
    and metric fixed (the sampling phase): the final state, the infos ``(C, num_iter)`` and
    the positions ``(C, num_iter, D)``. The momenta are drawn in C, from each transition's
    stream, seeded by one word of the chain's generator per transition."""
    seeds = random_words(rng, state.position.shape[0], num_iter)
    return _run(library, state, num_iter, seeds, None, max_tree_depth, divergence_threshold)


def native_nuts_warmup(
    library: ctypes.CDLL,
    rng: RNG,
    state: State,
    num_iter: int,
    plan: StepAdaptation,
    max_tree_depth: int = 10,
    divergence_threshold: float = 1000.0,
) -> tuple[State, Info, StepAdaptation]:
    """:func:`native_nuts_run` with the warmup's per-transition adaptation in C: dual
    averaging of the step size and the window's Welford estimate, as ``plan`` describes
    (:class:`~ppl.inference.mcmc.adaptation.StepAdaptation`); returns the plan updated."""
    da, welford = plan.dual_averaging, plan.welford
    adapting = _Adapting(plan.target or 0.0, plan.gamma, plan.t0, plan.kappa, None, 0, None,
                         None, 0)
    if da is not None:
        adapting.dual_averaging = torch.stack([da.log_step, da.log_step_avg, da.h_bar, da.mu],
                                              1).contiguous()
        adapting.da_count = da.count  # C starts from the table's step: exp(log_step)
    if welford is not None:  # copies: C adds to them in place
        adapting.welford_mean, adapting.welford_m2 = welford.mean.clone(), welford.m2.clone()
        adapting.welford_count = welford.count
    seeds = random_words(rng, state.position.shape[0], num_iter)
    state, info, _ = _run(library, state, num_iter, seeds, None, max_tree_depth,
                          divergence_threshold, adapting)
    if da is not None:
        da = DualAveraging(*adapting.dual_averaging.T.clone(), da.count + num_iter)
        state = state._replace(step_size=da.log_step.exp())
    if welford is not None:
        welford = Welford(welford.count + num_iter, adapting.welford_mean, adapting.welford_m2)
    return state, info, plan._replace(dual_averaging=da, welford=welford)


@dataclass(frozen=True)
class NativeNUTS(NUTS):
    """:class:`~ppl.inference.mcmc.nuts.NUTS` whose transitions run in C, in the library of
    ``potential`` (a model's :class:`~ppl.inference.lowering.native.NativePotential`).

    The settings, the distribution of the draws and the ``Info`` fields are the torch
    kernel's; ``log_density_fn`` (the potential itself, or the runner's counting wrapper of
    it) serves ``init`` and the step-size search. Positions must be float64 on the CPU. The
    gradients C evaluates are reported in ``Info.num_grad_evals`` (the runner adds them to
    its count: ``counts_own_evaluations``).
    """

    potential: NativePotential | None = None

    counts_own_evaluations: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.potential is None:
            raise TypeError("NativeNUTS needs the model's compiled potential: "
                            "NativeNUTS.of(kernel, flat.native)")
        self.potential.link(nuts_unit(self.potential.dim))

    @classmethod
    def of(cls, kernel: NUTS, potential: NativePotential) -> NativeNUTS:
        """``kernel``'s settings, on the C transitions of ``potential``."""
        settings = {f.name: getattr(kernel, f.name) for f in fields(NUTS)}
        return cls(**{**settings, "log_density_fn": potential}, potential=potential)

    def step(self, rng: RNG, state: State) -> tuple[State, Info]:
        with self.potential.bound() as library:
            return native_nuts_transition(library, rng, state, self.max_tree_depth,
                                          self.divergence_threshold)

    def steps(self, rng: RNG, state: State, num_steps: int) -> tuple[State, Info, torch.Tensor]:
        with self.potential.bound() as library:
            return native_nuts_run(library, rng, state, num_steps, self.max_tree_depth,
                                   self.divergence_threshold)

    def adaptive_steps(self, rng: RNG, state: State, num_steps: int, plan: StepAdaptation
                       ) -> tuple[State, Info, StepAdaptation]:
        with self.potential.bound() as library:
            return native_nuts_warmup(library, rng, state, num_steps, plan, self.max_tree_depth,
                                      self.divergence_threshold)
