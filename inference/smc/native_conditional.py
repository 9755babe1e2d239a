"""Particle Gibbs' path update on either filter: ``sweep(theta, reference, generator)``
returns one path per block, drawn from a conditional filter kept on ``reference`` (or, with
no reference, from an ordinary filter that resamples at every step).

:class:`NativePaths` runs the whole sweep as one C call (``filter.c``'s conditional run):
each block's last particle is pinned to the reference path, its ancestor drawn by ancestor
sampling from ``W_i p(x_ref_k, y_k | x_{k-1,i})`` with the engine's scorers compiled to C
(:meth:`~ppl.inference.lowering.particles.ParticleEngine.scorer`), every step's particles
recorded, and the new path drawn back through the ancestry, as
:class:`~.blocks.BlockFilter` does on torch (:class:`TorchPaths`). :func:`path_sweeps` picks
one once per run, with the reason torch runs.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import HalfNormal, Normal
    >>> @model
    ... def drift(ys):
    ...     q, x = sample("q", HalfNormal(1.0)), 0.0
    ...     for t, y in enumerate(ys):
    ...         x = sample(f"x_{t}", Normal(x + 0.1, q))
    ...         sample(f"y_{t}", Normal(x, 1.0), obs=y)
    >>> from ppl.inference.smc.static import StaticModel
    >>> split = StaticModel(drift.graph(torch.zeros(3)), ["q"], "example")
    >>> sweep, reason = path_sweeps(split, 10, backend="torch")
    >>> theta, gen = {"q": torch.ones(2, dtype=torch.float64)}, torch.Generator().manual_seed(0)
    >>> path = sweep(theta, sweep(theta, None, gen), gen)
    >>> sorted(path), path["x_2"].shape, reason
    (['x_0', 'x_1', 'x_2'], torch.Size([2]), None)
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from .backends import choose_backend
from .blocks import BlockFilter
from .native import CompiledFilter, FilterState
from .native_blocks import place_static
from .static import StaticModel

__all__ = ["NativePaths", "TorchPaths", "path_sweeps"]

Sweep = Callable[[Mapping[str, Tensor], "Mapping[str, Tensor] | None", torch.Generator],
                 dict[str, Tensor]]


def path_sweeps(split: StaticModel, num_particles: int, *, resample: str = "systematic",
                backend: str = "auto", owner: str = "ParticleGibbs"
                ) -> tuple[Sweep, str | None]:
    """The path update on C (``backend`` "native", or "auto" when the engine allows) or
    torch, and why torch runs under "auto" (None otherwise)."""
    return choose_backend(backend, lambda: NativePaths(split, num_particles, resample),
                          TorchPaths(split, num_particles, resample),
                          f"{owner}(filter_backend='native') cannot filter graph "
                          f"{split.graph.name!r}")


class TorchPaths:
    """The path update by :class:`~.blocks.BlockFilter` (see the module docstring)."""

    def __init__(self, split: StaticModel, num_particles: int, resample: str):
        self.split, self.num_particles, self.resample = split, num_particles, resample

    def __call__(self, theta: Mapping[str, Tensor], reference: Mapping[str, Tensor] | None,
                 generator: torch.Generator) -> dict[str, Tensor]:
        filters = BlockFilter(self.split, theta, self.num_particles, generator,
                              resample=self.resample, ess_threshold=1.0, keep_paths=True,
                              reference=reference)
        filters.run()
        return filters.draw_paths()


class NativePaths:
    """The path update in C (see the module docstring); ``Unsupported`` when a step, its
    scorer or the machine rules C out."""

    def __init__(self, split: StaticModel, num_particles: int, resample: str):
        self.split, self.num_particles, self.resample = split, num_particles, resample
        self.compiled = CompiledFilter(split.engine, first=1, conditional=True)
        layout, shapes = self.compiled.layout, self.compiled.shapes
        self.entries = [(k, a) for k, drawn in enumerate(layout.drawn) for a in drawn]
        # the path sites, each a run of one flat buffer (site-major): (site, start, size)
        self.runs, start = [], 0
        for k, address in self.entries:
            if k > 0:
                self.runs.append((address, start, math.prod(shapes[address])))
                start += self.runs[-1][2]
        self.size = start
        self._last: dict[str, Tensor] = {}  # the last path returned, a view of _last_flat
        self._last_flat: Tensor | None = None

    def __call__(self, theta: Mapping[str, Tensor], reference: Mapping[str, Tensor] | None,
                 generator: torch.Generator) -> dict[str, Tensor]:
        compiled, n = self.compiled, self.num_particles
        blocks = next(iter(theta.values())).shape[0]
        state = FilterState(compiled, blocks, n, keep_ancestors=True, step_offset=1)
        place_static(state, self.split, theta)
        history = torch.empty(blocks * n * self.size, dtype=torch.float64)
        paths = torch.empty(blocks * self.size, dtype=torch.float64)
        given = None if reference is None else self._flat(reference)
        compiled.run(state, 1, compiled.engine.num_steps, generator, scheme=self.resample,
                     threshold=1.0, may_die=True,
                     ref=None if given is None else self._pointers(given, blocks),
                     history=self._pointers(history, blocks * n),
                     path=self._pointers(paths, blocks))
        chunks = paths.split([blocks * size for _, _, size in self.runs])
        shapes, dtypes = compiled.shapes, compiled.dtypes
        self._last = {a: chunk.view(blocks, *shapes[a]) if dtypes[a] == torch.float64
                      else chunk.view(blocks, *shapes[a]).to(dtypes[a])
                      for (a, _, _), chunk in zip(self.runs, chunks, strict=True)}
        self._last_flat = paths
        return self._last

    def _flat(self, reference: Mapping[str, Tensor]) -> Tensor:
        """The reference path as one site-major float64 buffer: the last path's own when
        ``reference`` is it, unchanged (particle Gibbs passes it back each sweep)."""
        if all(reference.get(a) is v for a, v in self._last.items()) and self._last:
            return self._last_flat
        return torch.cat([reference[a].to(torch.float64).reshape(-1) for a, _, _ in self.runs])

    def _pointers(self, flat: Tensor, rows: int) -> ctypes.Array:
        """One pointer per drawn entry into ``flat`` (``rows`` per site element, site-major),
        NULL for the static step's."""
        base, starts = flat.data_ptr(), {a: start for a, start, _ in self.runs}
        return (ctypes.c_void_p * len(self.entries))(
            *(base + 8 * rows * starts[a] if k > 0 else None for k, a in self.entries))
