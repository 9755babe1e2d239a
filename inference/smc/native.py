"""The particle filter in C, for a particle engine whose every step the C emitter supports.

:class:`NativeFilter` runs :class:`~ppl.inference.smc.filter.ParticleFilter`'s algorithm
(adaptive resampling by any of its schemes, ``resample.c``; the evidence increments, ESS and
filtering means, in float64) as one C call per run: the engine's steps are emitted as C
(:mod:`ppl.inference.lowering.particles.native`) and linked with the driver ``filter.c``, so
a step costs no torch dispatch (about 40 small ops on the torch path). Each latent lives in a
slot, a buffer of ``N * site size`` doubles; latents that are never live at the same time
share one (:func:`slot_layout`), so memory is that of the live particles, not of every step.
The randomness is xoshiro256** (``rng.h``), seeded by one 63-bit draw from the run's torch
generator: a seed reproduces a run, with other draws than the torch path's (the same
distribution). Data and params are bound by pointer at each run, so
``engine.set_params`` never recompiles. The compiled driver (:class:`CompiledFilter`) also
runs many filters at once, one block of rows each (:mod:`.native_blocks`, for PMMH and
SMC²), from any step on, with its state (:class:`FilterState`) kept between calls, and
conditional runs that keep a reference path (:mod:`.native_conditional`, particle Gibbs).

:func:`native_refusal` names the settings the C driver does not implement (auxiliary
weights, moves, smoothing, history); ``SMC(backend=...)`` chooses between this and the
torch driver once, when it builds the engine.

    >>> from ppl.inference.smc import ParticleFilter
    >>> native_refusal(ParticleFilter(auxiliary=True))
    'auxiliary=True (the C filter is the bootstrap filter)'
    >>> native_refusal(ParticleFilter(num_particles=100, resample="residual")) is None
    True
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ppl.inference.lowering.native.codegen import prelude, rng_source
from ppl.inference.lowering.native.compiler import Unit, compile_library, compiler_available
from ppl.inference.lowering.particles import ParticleEngine
from ppl.inference.lowering.particles.native import emit_steps
from ppl.inference.lowering.tape import Unsupported

from .filter import ParticleFilter
from .resampling import DegenerateWeights
from .result import SMCPosterior
from .streams import run_generator

__all__ = ["SCHEME_CODES", "CompiledFilter", "FilterState", "NativeFilter", "SlotLayout",
           "native_refusal", "slot_layout"]

#: The resampling schemes by their code in ``resample.c``.
SCHEME_CODES = ("multinomial", "stratified", "systematic", "residual")

_P = ctypes.c_void_p
_ARGTYPES = (ctypes.c_long, ctypes.c_long, ctypes.c_uint64, ctypes.c_double, *(ctypes.c_int,) * 4,
             *(_P,) * 20)


def native_refusal(settings: ParticleFilter) -> str | None:
    """Why the C driver cannot run ``settings``, or None when it can."""
    refusals = [
        (settings.auxiliary, "auxiliary=True (the C filter is the bootstrap filter)"),
        (settings.move is not None, "a resample-move kernel"),
        (settings.additive is not None, "an additive smoother"),
        (settings.keep_history, "keep_history=True (the C filter keeps no particle history)"),
        (settings.progress_bar is True, "progress_bar=True (the C filter runs in one call)"),
    ]
    return next((why for refused, why in refusals if refused), None)


@dataclass(frozen=True)
class SlotLayout:
    """Where the latents live: ``slot_of`` each latent's slot, ``sizes`` each slot's
    doubles per particle, ``live[k]`` the slots holding latents step ``k`` or a later one
    still needs (gathered when the particles are resampled before step ``k``), ``drawn[k]``
    the latents step ``k`` draws, ``final`` the latents the run returns."""

    slot_of: dict[str, int]
    sizes: tuple[int, ...]
    live: tuple[tuple[int, ...], ...]
    drawn: tuple[tuple[str, ...], ...]
    final: tuple[str, ...]


def slot_layout(engine: ParticleEngine, keep: frozenset[str] = frozenset()) -> SlotLayout:
    """Slots for ``engine``'s latents: a latent keeps its slot from the step that draws it to
    the last step that reads it (to the end for the last step's latents and ``keep``); a
    slot of the same size that is free by then is reused."""
    steps = engine.steps
    born = {a: k for k, step in enumerate(steps) for a in step.drawn}
    shapes = _shapes(engine)
    final = tuple(dict.fromkeys([*steps[-1].drawn, *sorted(keep & set(born))]))
    live_before = [frozenset()] + [
        frozenset(engine.needed_after(k - 1)) | {a for a in keep if born.get(a, k) < k}
        for k in range(1, len(steps))]
    unknown = sorted({a for live in live_before for a in live} - set(born))
    if unknown:
        raise Unsupported(f"latents {unknown} are read but no step draws them")
    last = {a: max([k for k, live in enumerate(live_before) if a in live], default=born[a])
            for a in born}
    last.update({a: len(steps) for a in final})
    slot_of: dict[str, int] = {}
    sizes: list[int] = []
    free_after: list[int] = []  # the last step that uses each slot
    for address in sorted(born, key=born.__getitem__):
        size = math.prod(shapes[address])
        slot = next((s for s in range(len(sizes))
                     if sizes[s] == size and free_after[s] < born[address]), None)
        if slot is None:
            slot = len(sizes)
            sizes.append(size)
            free_after.append(0)
        slot_of[address], free_after[slot] = slot, last[address]
    live = tuple(tuple(sorted({slot_of[a] for a in before})) for before in live_before)
    return SlotLayout(slot_of, tuple(sizes), live, tuple(step.drawn for step in steps), final)


def c_source(name: str) -> str:
    """The text of one of this package's C files (``filter.c``, ``resample.c``)."""
    return Path(__file__).with_name(name).read_text()


class CompiledFilter:
    """``engine``'s steps from ``first`` on and the C driver compiled (or loaded from the
    cache) once, with slots for the latents (``keep`` too); ``Unsupported`` says why when
    the engine or the machine rule it out. :meth:`run` drives a :class:`FilterState`. The
    latents of the steps before ``first`` are the caller's to place (particle MCMC's static
    values: their prior need not have C rules). ``conditional``: also compile the scorers
    of the steps after ``first``, for conditional runs."""

    def __init__(self, engine: ParticleEngine, keep: frozenset[str] = frozenset(), *,
                 first: int = 0, conditional: bool = False):
        if not compiler_available():
            raise Unsupported("no C compiler on this machine (set $CC to use one)")
        self.engine = engine
        self.layout = slot_layout(engine, keep)
        scorers = ({k: engine.scorer(k) for k in range(first + 1, engine.num_steps)}
                   if conditional else None)
        steps = emit_steps(engine, self.layout.slot_of, scorers, first)
        if conditional and steps.unpinned:
            raise Unsupported(f"a reference particle cannot keep {steps.unpinned[0]} (drawn "
                              "by no draw of its own)")
        devices = {engine.input_value(*key).device.type for key in steps.inputs}
        if devices - {"cpu"}:
            raise Unsupported(f"inputs on {sorted(devices - {'cpu'})} (the C filter runs on "
                              "the CPU)")
        self._inputs, self.normals = steps.inputs, steps.normals
        self._constants = steps.constants  # kept alive: the C reads them by pointer
        tables = [(_P * max(1, len(table)))(*(t.data_ptr() for t in table))
                  for table in steps.constants]
        self._tables = tables
        self._table_of_tables = (_P * len(tables))(*(ctypes.addressof(t) for t in tables))
        text = "\n".join([prelude(), rng_source(), _tables(self.layout, steps.normals),
                          steps.text, c_source("resample.c"), c_source("filter.c")])
        self._run = compile_library(Unit(text)).ppl_filter_run
        self._run.argtypes = _ARGTYPES
        self._run.restype = ctypes.c_int
        self.shapes = _shapes(engine)
        self.dtypes = {a: v.dtype for step in engine.steps
                       for a, v in zip(step.drawn, step.outputs, strict=False)}

    def run(self, state: FilterState, first: int, stop: int, generator: torch.Generator, *,
            scheme: str, threshold: float, may_die: bool = False,
            means: torch.Tensor | None = None, ref: ctypes.Array | None = None,
            history: ctypes.Array | None = None, path: ctypes.Array | None = None) -> None:
        """Run steps ``first .. stop - 1`` of ``state``'s filters (one 63-bit seed drawn
        from ``generator``); a NaN log weight, or (unless ``may_die``) a block whose
        particles all have weight zero, raises ``DegenerateWeights`` naming the step (as
        ``step - step_offset``) and its sites. ``ref``, ``history``, ``path``: pointers per
        drawn entry (``layout.drawn`` flattened) for a conditional run, the particles'
        record, the drawn paths (see ``filter.c``)."""
        seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
        values = [self.engine.input_value(role, key).contiguous() for role, key in self._inputs]
        inputs = (_P * max(1, len(values)))(*(v.data_ptr() for v in values))
        kept = None if state.ancestors is None else state.ancestors.data_ptr()
        code = self._run(state.blocks, state.n, seed, float(threshold),
                         SCHEME_CODES.index(scheme), first, stop, int(may_die), state.slots,
                         state.spares, self._table_of_tables, inputs, state.log_w.data_ptr(),
                         state.w.data_ptr(), state.lw.data_ptr(), state.z.data_ptr(),
                         state.scratch.data_ptr(), kept, state.index.data_ptr(),
                         state.ess.data_ptr(), state.increments.data_ptr(),
                         state.resampled.data_ptr(), None if means is None else means.data_ptr(),
                         ref, state.pin.data_ptr(), state.score.data_ptr(), history, path)
        if code:
            k, kind = divmod(code - 1, 3)
            sites = sorted(self.engine.step_sites(k))
            step = k - state.step_offset
            raise DegenerateWeights([
                f"step {step}: some log weights are NaN; from the sites {sites}",
                f"step {step}: every particle has weight zero (log weight -inf) after the "
                f"sites {sites}",
                f"ancestor sampling at step {step}: no particle can lead to the reference "
                f"(or a weight is NaN); the sites {sites}"][kind])


class FilterState:
    """The buffers of ``blocks`` filters of ``n`` particles on a :class:`CompiledFilter`,
    kept between runs: each slot's current and spare buffer (``rows * size`` doubles), the
    weights, and per step and block the ESS, evidence increments and resampling flags;
    ``keep_ancestors`` records each step's ancestors. ``step_offset`` is subtracted from
    the steps that errors name."""

    def __init__(self, compiled: CompiledFilter, blocks: int, n: int, *,
                 keep_ancestors: bool = False, step_offset: int = 0):
        self.compiled, self.blocks, self.n, self.step_offset = compiled, blocks, n, step_offset
        rows, steps, f64 = blocks * n, compiled.engine.num_steps, torch.float64
        sizes = compiled.layout.sizes
        self.buffers = [torch.empty(rows * size, dtype=f64) for size in sizes for _ in (0, 1)]
        self.slots = (_P * max(1, len(sizes)))(*(b.data_ptr() for b in self.buffers[0::2]))
        self.spares = (_P * max(1, len(sizes)))(*(b.data_ptr() for b in self.buffers[1::2]))
        self.log_w, self.w, self.lw = (torch.empty(rows, dtype=f64) for _ in range(3))
        self.z = torch.empty(max(1, rows * compiled.normals), dtype=f64)
        self.scratch = torch.empty(2 * n, dtype=f64)
        self.pin, self.score = torch.zeros(rows, dtype=torch.uint8), torch.empty(rows, dtype=f64)
        self.index = torch.empty(rows, dtype=torch.int64)
        self.ancestors = (torch.empty(steps, blocks, n, dtype=torch.int64) if keep_ancestors
                          else None)
        self.ess, self.increments = (torch.zeros(steps, blocks, dtype=f64) for _ in range(2))
        self.resampled = torch.zeros(steps, blocks, dtype=torch.bool)

    def slot(self, address: str) -> torch.Tensor:
        """The current buffer of ``address``'s slot, ``(rows, *shape)`` (a view)."""
        layout = self.compiled.layout
        by_pointer = {b.data_ptr(): b for b in self.buffers}
        buffer = by_pointer[self.slots[layout.slot_of[address]]]
        return buffer.view(self.blocks * self.n, *self.compiled.shapes[address])

    def current(self) -> list[torch.Tensor]:
        """Every slot's current buffer, in slot order."""
        by_pointer = {b.data_ptr(): b for b in self.buffers}
        return [by_pointer[pointer] for pointer in self.slots]


class NativeFilter:
    """``settings`` (a :class:`ParticleFilter` that :func:`native_refusal` accepts) run in
    C on ``engine``, compiled (or loaded from the cache) when built; ``Unsupported`` says
    why when the settings, the engine or the machine rule it out."""

    def __init__(self, settings: ParticleFilter, engine: ParticleEngine):
        refusal = native_refusal(settings)
        if refusal is not None:
            raise Unsupported(refusal)
        settings.check_keep(engine)
        self.settings, self.engine = settings, engine
        self.compiled = CompiledFilter(engine, frozenset(settings.keep))
        self.layout = self.compiled.layout

    def run_program(self, program: ParticleEngine, generator: torch.Generator | None = None
                    ) -> SMCPosterior:
        """Filter the engine this was built for to its last step (``ParticleFilter``'s
        contract); one 63-bit seed is drawn from ``generator``."""
        if program is not self.engine:
            raise ValueError("a NativeFilter runs the engine it was compiled for")
        generator = run_generator() if generator is None else generator
        settings, layout, shapes = self.settings, self.layout, self.compiled.shapes
        state = FilterState(self.compiled, 1, settings.num_particles,
                            keep_ancestors=settings.keep_ancestors)
        means = torch.empty(max(1, sum(math.prod(shapes[a]) for drawn in layout.drawn
                                       for a in drawn)), dtype=torch.float64)
        self.compiled.run(state, 0, program.num_steps, generator, scheme=settings.resample,
                          threshold=settings.ess_threshold, means=means)
        increments = state.increments[:, 0]
        return SMCPosterior(
            samples={a: state.slot(a).to(self.compiled.dtypes[a]) for a in layout.final},
            log_weights=state.log_w,
            log_evidence=increments.sum(), ess_history=state.ess[:, 0],
            resampled=state.resampled[:, 0], log_evidence_increments=increments,
            ancestors=None if state.ancestors is None else state.ancestors[:, 0],
            program=program,
            extra={"scheme": settings.resample, "ess_threshold": settings.ess_threshold,
                   "filtering_means": _split_means(means, layout, shapes),
                   "auxiliary": False, "backend": "native"})


def _shapes(engine: ParticleEngine) -> dict[str, tuple[int, ...]]:
    return {a: tuple(v.shape) for step in engine.steps
            for a, v in zip(step.drawn, step.outputs, strict=False)}


def _split_means(means: torch.Tensor, layout: SlotLayout,
                 shapes: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    out, start = {}, 0
    for drawn in layout.drawn:
        for address in drawn:
            size = math.prod(shapes[address])
            out[address] = means[start:start + size].view(shapes[address])
            start += size
    return out


def _tables(layout: SlotLayout, normals: int) -> str:
    """The C tables ``filter.c`` reads (see its header)."""
    def array(ctype: str, name: str, values) -> str:
        values = list(values) or [0]
        return f"static const {ctype} {name}[{len(values)}] = {{{', '.join(map(str, values))}}};"

    def ragged(rows) -> tuple[list[int], list[int]]:
        starts, flat = [0], []
        for row in rows:
            flat.extend(row)
            starts.append(len(flat))
        return starts, flat

    live_start, live = ragged(layout.live)
    drawn_start, drawn = ragged([[layout.slot_of[a] for a in row] for row in layout.drawn])
    return "\n".join([
        f"#define PPL_STEPS {len(layout.live)}",
        f"#define PPL_SLOTS {max(1, len(layout.sizes))}",
        f"#define PPL_NORMALS {normals}",
        array("long", "ppl_slot_size", layout.sizes),
        array("int", "ppl_live_start", live_start), array("int", "ppl_live_slot", live),
        array("int", "ppl_drawn_start", drawn_start), array("int", "ppl_drawn_slot", drawn),
        "",
    ])
