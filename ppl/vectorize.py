"""Run a model for many particles at once by adding one outer batch dimension.

A pilot run finds how many batch dimensions the model's sites use; the particles then live
in a plate at the next free dimension to the left, so every site gets a leading particle
axis without the model knowing. Models must keep independent dimensions in plates or
``.to_event`` (the usual rule of vectorized PPLs).

    >>> from ppl import sample
    >>> from ppl.stdlib import Normal
    >>> run = vectorized_trace(lambda: sample("x", Normal(0.0, 1.0)), (), {}, num_particles=5)
    >>> run.values()["x"].shape
    torch.Size([5])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .handlers import block, trace
from .primitives import RANDOM_KINDS, plate
from .trace import Trace

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
