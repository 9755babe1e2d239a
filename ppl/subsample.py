"""Where a subsampled plate's indices come from, and how model and guide share them.

``plate("data", N, subsample_size=B)`` asks the handler stack for its indices: the innermost
handler with a ``subsample_indices(frame)`` method that returns a tensor decides; with none,
the plate draws ``B`` of ``0..N-1`` without replacement (:func:`draw_subsample`). Two
handlers answer: a graph tracer, which makes the indices an ``input`` node that the
reference interpreters draw afresh on every evaluation, and :class:`subsample`, which makes
every plate of one name inside its block use one set of indices (given, or drawn by the
first such plate). ``VI`` runs each step's objective inside ``subsample()``, so a guide and
a model that both subsample ``"data"`` see the same minibatch: that, with the plate's
``size / subsample_size`` scaling, is the minibatching pattern (index the data with the
indices the plate yields).

    >>> import torch
    >>> from ppl import plate
    >>> with subsample({"data": torch.tensor([4, 1])}):
    ...     with plate("data", 10, subsample_size=2) as ind:
    ...         ind.tolist()
    [4, 1]
    >>> with subsample():
    ...     with plate("data", 10, subsample_size=3) as a:
    ...         pass
    ...     with plate("data", 10, subsample_size=3) as b:
    ...         bool((a == b).all())
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .errors import ModelError
from .randomness import current_stream, drawing
from .runtime import Messenger, PlateFrame, active_handlers

__all__ = ["subsample", "subsample_indices", "draw_subsample", "SUBSAMPLE_ATTR"]

SUBSAMPLE_ATTR = "subsample"
"""The graph attribute of a plate's index input: the plate's name (its ``size`` attr is the
population size)."""


def draw_subsample(size: int, subsample_size: int) -> torch.Tensor:
    """``subsample_size`` distinct indices of ``0..size-1``, uniformly at random, from the
    current seed scope's stream."""
    with drawing(lend=False) as generator:  # the generator is passed: nothing to lend
        return torch.randperm(size, generator=generator)[:subsample_size]


def subsample_indices(frame: PlateFrame) -> torch.Tensor:
    """The indices of the subsampled plate ``frame``: from the innermost handler that gives
    them, else freshly drawn."""
    for handler in reversed(active_handlers()):
        choose = getattr(handler, "subsample_indices", None)
        if choose is not None:
            indices = choose(frame)
            if indices is not None:
                return indices
    return draw_subsample(frame.size, frame.subsample_size)


class subsample(Messenger):
    """Inside this block every subsampled plate named ``name`` uses one set of indices:
    ``indices[name]`` when given, else the draw of the first such plate. A draw made in a
    forked stream (a pilot run probing shapes) is not remembered: the minibatch comes from
    the block's own stream, so a run's draws do not depend on whether a pilot ran first."""

    def __init__(self, indices: Mapping[str, torch.Tensor] | None = None):
        self.indices = {name: torch.as_tensor(ind) for name, ind in (indices or {}).items()}
        self._stream: torch.Generator | None = None

    def __enter__(self) -> subsample:
        self._stream = current_stream()
        return super().__enter__()

    def subsample_indices(self, frame: PlateFrame) -> torch.Tensor:
        indices = self.indices.get(frame.name)
        if indices is None:
            indices = draw_subsample(frame.size, frame.subsample_size)
            if current_stream() is self._stream:
                self.indices[frame.name] = indices
        bad = indices.dim() != 1 or len(indices) != frame.subsample_size
        if bad or indices.dtype.is_floating_point:
            raise ModelError(
                f"plate {frame.name!r} subsamples {frame.subsample_size} of {frame.size}, but "
                f"its indices have shape {tuple(indices.shape)} and dtype {indices.dtype}; give "
                f"a 1-d integer tensor of length {frame.subsample_size}"
            )
        if len(indices) and not (0 <= int(indices.min()) and int(indices.max()) < frame.size):
            raise ModelError(f"plate {frame.name!r}: indices must lie in 0..{frame.size - 1}, "
                             f"got {indices.min().item()}..{indices.max().item()}")
        return indices
