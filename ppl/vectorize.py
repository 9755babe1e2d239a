"""Run a model for many particles at once by adding one outer batch dimension.

A pilot run finds how many batch dimensions the model's sites use; the particles then live
in a plate at the next free dimension to the left, so every site gets a leading particle
axis without the model knowing. Models must keep independent dimensions in plates or
``.to_event`` (the usual rule of vectorized PPLs). A model that breaks the rule must fail,
not give a wrong answer: a particle axis that broadcast into a site's event (against a
size-1 dim) is refused by the event-shape check, and when the particle count equals a
dimension size of the model, where ``mu + x`` would broadcast without an error, the model
first runs with a particle count that equals none (a probe that draws from a copy of the
random stream), which fails where the model does not vectorize.

``particle_runs`` is what the engines call: the vectorized run, or, for a model that does
not vectorize (Python control flow on a random value, ``if p > 0.5:``, or an operation that
mixes the particle axis into its own dims), one run per particle, said once per model with a
:class:`VectorizationWarning`. Both results give the same ``values()``, ``log_joint()`` and
``latent_log_prob()``.

    >>> from ppl import sample
    >>> from ppl.stdlib import Normal
    >>> run = vectorized_trace(lambda: sample("x", Normal(0.0, 1.0)), (), {}, num_particles=5)
    >>> run.values()["x"].shape
    torch.Size([5])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .handlers import block, replay, substitute, trace
from .primitives import RANDOM_KINDS, plate
from .randomness import forked
from .trace import Trace, sum_except

PARTICLE_PLATE = "_particles"


def batch_ndims(tr: Trace) -> int:
    """How many batch dimensions the sites of a trace use."""
    dims = [len(s.fn.batch_shape) for s in tr.sites.values() if s.kind in RANDOM_KINDS]
    dims += [-f.dim for s in tr.sites.values() for f in s.plates if f.dim is not None]
    return max(dims, default=0)


@dataclass
class VectorizedRun:
    """The trace of a particle-vectorized run and where its particle axis is."""

    trace: Trace
    num_particles: int
    particle_dim: int
    shapes: dict[str, torch.Size]

    def log_joint(self) -> torch.Tensor:
        """Log joint density per particle, shape ``(num_particles,)``."""
        return self.trace.log_joint(self.particle_dim).expand(self.num_particles)

    def latent_log_prob(self) -> torch.Tensor:
        """Per particle, the log density of the latents it drew (their own, no scale/mask)."""
        total = torch.zeros(self.num_particles)
        for site in self.trace.latent_sites():
            total = total + sum_except(site.fn.log_prob(site.value), self.particle_dim)
        return total

    def values(self, observed: bool = True) -> dict[str, torch.Tensor]:
        """Sample and deterministic values with the particle axis first: ``(N, *site_shape)``.

        ``observed=False`` leaves out observed and intervened sites (the data)."""
        out = {}
        for name, site in self.trace.sites.items():
            if site.kind == "deterministic" or (
                site.kind == "sample" and (observed or site.is_latent)
            ):
                out[name] = self.unbatch(name, site.value)
        return out

    def unbatch(self, name: str, value: torch.Tensor) -> torch.Tensor:
        shape = self.shapes.get(name)
        if value.numel() == self.num_particles * (shape.numel() if shape is not None else -1):
            return value.reshape(self.num_particles, *shape)
        # Not particle-dependent (e.g. an intervened or observed value): repeat it.
        single = value.reshape(shape) if shape is not None else value
        return single.expand(self.num_particles, *single.shape)


def pilot_trace(fn: Callable, args: tuple, kwargs: dict) -> Trace:
    """One ordinary run, hidden from outer handlers, to learn site shapes."""
    with block():
        return trace().get_trace(fn, *args, **kwargs)


def vectorized_trace(
    fn: Callable,
    args: tuple,
    kwargs: dict,
    num_particles: int,
    *,
    particle_dim: int | None = None,
    pilot: Trace | None = None,
    probe: Callable | None = None,
) -> VectorizedRun:
    """Trace ``fn`` with ``num_particles`` independent runs batched along ``particle_dim``.

    Raises ``ValueError`` when the particle axis broadcast into a site's own dims (a
    dimension outside every plate met the particle axis: a model that does not vectorize),
    so that callers run it per particle instead of using a wrong vectorized result.
    ``probe`` is what the probe of an ambiguous particle count runs (default ``fn``): the
    model itself where ``fn`` replays or substitutes ``num_particles`` given values, which
    a probe with another particle count could not take."""
    pilot = pilot if pilot is not None else pilot_trace(fn, args, kwargs)
    if particle_dim is None:
        particle_dim = -(batch_ndims(pilot) + 1)
    _probe_if_ambiguous(fn if probe is None else probe, args, kwargs, num_particles,
                        particle_dim, pilot)
    with plate(PARTICLE_PLATE, num_particles, dim=particle_dim):
        tr = trace().get_trace(fn, *args, **kwargs)
    _check_event_shapes(tr, pilot, num_particles)
    shapes = {
        n: torch.as_tensor(s.value).shape for n, s in pilot.sites.items() if s.value is not None
    }
    return VectorizedRun(tr, num_particles, particle_dim, shapes)


def _check_event_shapes(tr: Trace, pilot: Trace, num_particles: int) -> None:
    """Every random site keeps its pilot event shape: a particle axis that broadcast into a
    site's event (against a size-1 dim outside a plate) would sum over the particles."""
    for name, site in tr.sites.items():
        before = pilot.sites.get(name)
        if site.kind in RANDOM_KINDS and before is not None \
                and site.fn.event_shape != before.fn.event_shape:
            raise ValueError(
                f"site {name!r}: vectorized over {num_particles} particles its event shape is "
                f"{tuple(site.fn.event_shape)}, not {tuple(before.fn.event_shape)}: the "
                "particle axis broadcast into a dimension outside every plate")


def _dim_sizes(pilot: Trace, args: tuple, kwargs: dict) -> set[int]:
    """Every dimension size of the pilot's site values and distributions and of the tensor
    arguments: the sizes a particle axis could silently line up with."""
    shapes = [torch.as_tensor(a).shape for a in (*args, *kwargs.values())
              if isinstance(a, torch.Tensor)]
    for site in pilot.sites.values():
        if site.value is not None:
            shapes.append(torch.as_tensor(site.value).shape)
        if site.kind in RANDOM_KINDS:
            shapes += [site.fn.batch_shape, site.fn.event_shape]
    return {size for shape in shapes for size in shape}


def _model_key(fn: Callable) -> object:
    """What identifies a model across its calls: its code (a ``@model``'s function's)."""
    return getattr(fn, "__code__", None) or getattr(getattr(fn, "fn", None), "__code__", fn)


_PROBED: dict[tuple, None] = {}
"""Models and structures (site shapes, particle count and dim) whose probe passed, so that
repeated runs (VI's steps) probe once."""


def _probe_if_ambiguous(fn: Callable, args: tuple, kwargs: dict, num_particles: int,
                        particle_dim: int, pilot: Trace) -> None:
    """When ``num_particles`` equals a dimension size of the model, a particle axis that
    meets that dimension outside a plate broadcasts without an error (``mu + x`` with a latent
    scalar ``mu`` and data ``x`` of that length) and the result is silently wrong. Run the
    model once, unseen by the random stream, with a particle count that equals no size: a
    model that does not vectorize fails there instead."""
    if num_particles == 1:
        return
    sizes = _dim_sizes(pilot, args, kwargs)
    if num_particles not in sizes:
        return
    key = (_model_key(fn), num_particles, particle_dim, tuple(
        (name, tuple(torch.as_tensor(s.value).shape) if s.value is not None else None)
        for name, s in pilot.sites.items()))
    if key in _PROBED:
        return
    probe = next(n for n in range(2, len(sizes) + 3) if n not in sizes)
    with forked(), block(), plate(PARTICLE_PLATE, probe, dim=particle_dim):
        _check_event_shapes(trace().get_trace(fn, *args, **kwargs), pilot, probe)
    _PROBED[key] = None


class VectorizationWarning(UserWarning):
    """A model did not vectorize over particles and runs once per particle instead (slower,
    the same distribution)."""


@dataclass
class SequentialRun:
    """One trace per particle: the fallback for models that do not vectorize."""

    traces: list[Trace]

    @property
    def num_particles(self) -> int:
        return len(self.traces)

    def log_joint(self) -> torch.Tensor:
        return torch.stack([torch.as_tensor(tr.log_joint()) for tr in self.traces])

    def latent_log_prob(self) -> torch.Tensor:
        return torch.stack([
            sum((s.fn.log_prob(s.value).sum() for s in tr.latent_sites()), torch.zeros(()))
            for tr in self.traces
        ])

    def values(self, observed: bool = True) -> dict[str, torch.Tensor]:
        """As :meth:`VectorizedRun.values`: ``(N, *site_shape)`` per site (a site that a
        particle's run did not reach is left out: its structure varied)."""
        rows = [{n: torch.as_tensor(s.value) for n, s in tr.sites.items()
                 if s.kind == "deterministic" or (s.kind == "sample" and (observed or s.is_latent))}
                for tr in self.traces]
        common = [n for n in rows[0] if all(n in row for row in rows)]
        return {n: torch.stack([row[n] for row in rows]) for n in common}


_WARNED: set[object] = set()


def warn_once(fn: Callable, error: Exception) -> None:
    """Say, once per model, that ``fn`` did not vectorize (``error``) and runs per particle."""
    key = _model_key(fn)
    if key in _WARNED:
        return
    _WARNED.add(key)
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "fn", None), "__name__", "model")
    warnings.warn(
        f"model {name!r} does not vectorize over particles ({type(error).__name__}: {reason}); "
        "it runs once per particle instead, about as many times slower as there are "
        "particles. Python control flow on a random value (if p > 0.5:) is the usual cause: "
        "torch.where or masking vectorizes", VectorizationWarning, stacklevel=3)


def particle_runs(
    fn: Callable,
    args: tuple,
    kwargs: dict,
    num_particles: int,
    *,
    particle_dim: int | None = None,
    pilot: Trace | None = None,
    proposal: VectorizedRun | SequentialRun | None = None,
) -> VectorizedRun | SequentialRun:
    """``num_particles`` runs of ``fn``: vectorized, or one per particle when vectorizing
    fails (said once per model, :class:`VectorizationWarning`); an error of the per-particle
    runs is the model's own and propagates. ``proposal``: the runs of a guide, whose draws
    each particle takes (replayed)."""
    error = None
    if not isinstance(proposal, SequentialRun):
        model = fn if proposal is None else replay(proposal.trace)(fn)
        try:
            return vectorized_trace(model, args, kwargs, num_particles,
                                    particle_dim=particle_dim, pilot=pilot, probe=fn)
        except Exception as failure:  # noqa: BLE001 - any failure to vectorize: see below
            error = failure
    given = proposal.values(observed=False) if proposal is not None else {}
    traces = [
        trace().get_trace(substitute({k: v[i] for k, v in given.items()})(fn), *args, **kwargs)
        for i in range(num_particles)
    ]
    if error is not None:
        warn_once(fn, error)
    return SequentialRun(traces)
