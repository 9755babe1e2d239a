"""Run a model for many particles at once by adding one outer batch dimension.

A pilot run finds how many batch dimensions the model's sites use; the particles then live
in a plate at the next free dimension to the left, so every site gets a leading particle
axis without the model knowing. Models must keep independent dimensions in plates or
``.to_event`` (the usual rule of vectorized PPLs).

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
) -> VectorizedRun:
    """Trace ``fn`` with ``num_particles`` independent runs batched along ``particle_dim``."""
    pilot = pilot if pilot is not None else pilot_trace(fn, args, kwargs)
    if particle_dim is None:
        particle_dim = -(batch_ndims(pilot) + 1)
    with plate(PARTICLE_PLATE, num_particles, dim=particle_dim):
        tr = trace().get_trace(fn, *args, **kwargs)
    shapes = {
        n: torch.as_tensor(s.value).shape for n, s in pilot.sites.items() if s.value is not None
    }
    return VectorizedRun(tr, num_particles, particle_dim, shapes)


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
    key = getattr(fn, "__code__", None) or getattr(getattr(fn, "fn", None), "__code__", fn)
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
                                    particle_dim=particle_dim, pilot=pilot)
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
