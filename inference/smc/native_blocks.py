"""Many particle filters at once in C: :class:`~.blocks.BlockFilter`'s blocks (one static
value each, ``N`` particles) on the C driver, for PMMH and SMC².

:class:`NativeBlocks` compiles the :class:`~.static.StaticModel`'s engine once;
:meth:`NativeBlocks.start` gives a :class:`NativeBlockRun` for any number of blocks and any
static values: they are written into the static sites' slot (a run-time input, one row per
particle), never into the code, so a new ``theta`` recompiles nothing. A run has
``BlockFilter``'s interface (``run``, ``advance``, ``select``, ``merge``, ``log_z``,
``step``) and semantics: each block resampled on its own below ``ess_threshold * N``, a
block whose particles all have weight zero keeps ``log_z = -inf`` while the others go on.
:func:`block_filters` picks C or torch once, when a method starts, with the reason.

    >>> from ppl.inference.smc.static import StaticModel
    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Exponential, Normal
    >>> @model
    ... def noisy_level(ys):
    ...     level = sample("level", Normal(0.0, 3.0))
    ...     for t, y in enumerate(ys):
    ...         shock = sample(f"e_{t}", Exponential(1.0))
    ...         sample(f"y_{t}", Normal(level + shock, 0.5), obs=y)
    >>> split = StaticModel(noisy_level.graph(torch.ones(3)), ["level"], "example")
    >>> start, reason = block_filters(split, 100, backend="torch")
    >>> theta = {"level": torch.tensor([0.0, 1.0], dtype=torch.float64)}
    >>> start(theta, torch.Generator().manual_seed(0)).run().shape, reason
    (torch.Size([2]), None)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from .backends import choose_backend
from .blocks import BlockFilter
from .native import CompiledFilter, FilterState
from .static import StaticModel

__all__ = ["NativeBlockRun", "NativeBlocks", "block_filters", "place_static"]

BlockStart = Callable[[Mapping[str, Tensor], torch.Generator], "BlockFilter | NativeBlockRun"]


def block_filters(split: StaticModel, num_particles: int, *, resample: str = "systematic",
                  ess_threshold: float = 0.5, backend: str = "auto", owner: str = "blocks"
                  ) -> tuple[BlockStart, str | None]:
    """``start(theta, generator)`` making the block filters of ``theta`` (C under
    ``backend`` "native", or "auto" when the engine allows; else torch), and why torch
    runs under "auto" (None otherwise)."""
    def torch_start(theta: Mapping[str, Tensor], generator: torch.Generator) -> BlockFilter:
        return BlockFilter(split, theta, num_particles, generator, resample=resample,
                           ess_threshold=ess_threshold)

    def native_start() -> BlockStart:
        return NativeBlocks(split, num_particles, resample, ess_threshold).start

    return choose_backend(backend, native_start, torch_start,
                          f"{owner}(backend='native') cannot filter graph {split.graph.name!r}")


def place_static(state: FilterState, split: StaticModel, theta: Mapping[str, Tensor]) -> None:
    """Start ``state``'s blocks after the engine's step 0 with the static values ``theta``
    (``(B, *shape)``) in their slots, every block's weights flat."""
    n = state.n
    for address, value in split.rows(theta, n).items():
        state.slot(address).copy_(value)
    state.log_w.fill_(-math.log(n))
    state.w.fill_(1.0 / n)
    state.ess[0] = n  # no resampling before the first step of the path


class NativeBlocks:
    """The C filter of ``split``'s engine for blocks of ``num_particles`` particles;
    ``Unsupported`` when a step (or the machine) rules C out."""

    def __init__(self, split: StaticModel, num_particles: int, resample: str,
                 ess_threshold: float):
        self.split, self.num_particles = split, num_particles
        self.resample, self.ess_threshold = resample, ess_threshold
        self.compiled = CompiledFilter(split.engine, first=1)  # step 0: the static values

    def start(self, theta: Mapping[str, Tensor], generator: torch.Generator) -> NativeBlockRun:
        """The filters of ``theta`` (values ``(B, *shape)``), before their first step."""
        return NativeBlockRun(self, theta, generator)


class NativeBlockRun:
    """One batch of block filters on the C driver (see the module docstring)."""

    def __init__(self, blocks: NativeBlocks, theta: Mapping[str, Tensor],
                 generator: torch.Generator):
        self.blocks, self.generator = blocks, generator
        self.num_blocks = next(iter(theta.values())).shape[0]
        n = self.num_particles = blocks.num_particles
        self.state = FilterState(blocks.compiled, self.num_blocks, n, step_offset=1)
        place_static(self.state, blocks.split, theta)
        self.step = 0
        self.log_z = torch.zeros(self.num_blocks, dtype=torch.float64)

    @property
    def done(self) -> bool:
        return self.step == self.blocks.split.num_steps

    def run(self, until: int | None = None) -> Tensor:
        """Filter through step ``until - 1`` (default: the last); the blocks' ``log_z``."""
        stop = self.blocks.split.num_steps if until is None else until
        if stop > self.step:
            blocks = self.blocks
            blocks.compiled.run(self.state, self.step + 1, stop + 1, self.generator,
                                scheme=blocks.resample, threshold=blocks.ess_threshold,
                                may_die=True)
            self.log_z = self.log_z + self.state.increments[self.step + 1:stop + 1].sum(0)
            self.step = stop
        return self.log_z

    def advance(self) -> Tensor:
        """Run the next step; the blocks' evidence increments."""
        self.run(self.step + 1)
        return self.state.increments[self.step].clone()

    def ess(self) -> Tensor:
        """Each block's ESS ``(B,)``."""
        return self.state.ess[self.step].clone()

    def select(self, index: Tensor) -> None:
        """Keep the blocks ``index`` (``(B,)``, with repeats): the blocks' resampling."""
        self._update(lambda mine: mine[index])

    def merge(self, take: Tensor, other: NativeBlockRun) -> None:
        """Replace the blocks where ``take (B,)`` holds by those of ``other`` (a run at the
        same step): the accepted proposals of an MH move."""
        if other.step != self.step or other.blocks is not self.blocks:
            raise ValueError(f"cannot merge a filter at step {other.step} into one at step "
                             f"{self.step}")
        self._update(lambda mine, theirs: torch.where(
            take.reshape(-1, *([1] * (mine.dim() - 1))), theirs, mine), other)

    def _update(self, change, other: NativeBlockRun | None = None) -> None:
        """Apply ``change`` to every per-block tensor, viewed block-first (and to
        ``other``'s, its second argument): the slots' current buffers, the weights, each
        step's ESS, increments and flags, and the evidence."""
        b = self.num_blocks

        def apply(mine: Tensor, theirs: Tensor | None, blocks_first: bool = True) -> None:
            given = [t if blocks_first else t.transpose(0, 1) for t in (mine, theirs)
                     if t is not None]
            changed = change(*[t.reshape(b, -1) for t in given])
            target = mine if blocks_first else mine.transpose(0, 1)
            target.copy_(changed.reshape(target.shape))

        mine, theirs = self.state, None if other is None else other.state
        buffers = mine.current()
        their_buffers = [None] * len(buffers) if theirs is None else theirs.current()
        for buffer, their in zip(buffers, their_buffers, strict=True):
            apply(buffer, their)
        for name in ("log_w", "w"):
            apply(getattr(mine, name), theirs and getattr(theirs, name))
        for name in ("ess", "increments", "resampled"):  # (steps, B)
            apply(getattr(mine, name), theirs and getattr(theirs, name), False)
        self.log_z = change(*[t for t in (self.log_z, other and other.log_z) if t is not None])
