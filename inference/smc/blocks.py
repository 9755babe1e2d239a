"""Many particle filters at once: ``B`` blocks of ``N`` particles over the path of a
:class:`~ppl.inference.smc.static.StaticModel`, block ``b`` with its own static values, all
blocks in one engine call per step (rows ``b * N .. b * N + N - 1``).

Each block is resampled on its own: before step ``k > 0``, when its ESS falls below
``ess_threshold * N``. Its evidence estimate grows by ``log sum_i W_i exp(w_{k,i})`` per step,
as in :class:`~ppl.inference.smc.filter.ParticleFilter`; a block whose particles all have
weight zero keeps ``log_z = -inf`` (an impossible ``theta``, which an MH step then rejects)
instead of stopping the others.

With a ``reference`` path (one per block) the filter is *conditional* (Andrieu, Doucet &
Holenstein 2010): particle ``N - 1`` of each block is the reference, every step resamples,
and the reference's ancestor is drawn by ancestor sampling (Lindsten, Jordan & Schön 2014),
from ``W_{k-1,i} p(x_ref_k, y_k | x_{k-1,i})``. :meth:`draw_paths` then draws one path per
block from the final weights through the ancestry: a particle Gibbs update of the path.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal, Uniform
    >>> from ppl.inference.smc.static import StaticModel
    >>> @model
    ... def ssm(ys):
    ...     a = sample("a", Uniform(-1.0, 1.0))
    ...     x = 0.0
    ...     for t in range(len(ys)):
    ...         x = sample(f"x_{t}", Normal(a * x, 1.0))
    ...         sample(f"y_{t}", Normal(x, 1.0), obs=ys[t])
    >>> split = StaticModel(ssm.graph(torch.zeros(4)), ["a"], "example")
    >>> theta = {"a": torch.tensor([0.0, 0.5], dtype=torch.float64)}
    >>> blocks = BlockFilter(split, theta, 100, torch.Generator().manual_seed(0))
    >>> blocks.run().shape
    torch.Size([2])
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor

from ppl.inference.mcmc.base import check_count

from .filter import check_step_output
from .resampling import SCHEMES, resample
from .static import StaticModel

__all__ = ["BlockFilter", "check_filter_settings", "check_fraction", "one_thread"]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run with one torch thread, restored after: a filter's many small operations slow
    down about 10x with two threads when the other core is busy (an SMC2 run of the tests:
    3.9 s against 0.39 s), as the MCMC runner found for its kernels."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_filter_settings(owner: str, num_particles: int, resample: str,
                          ess_threshold: float) -> None:
    """Raise a ``ValueError`` naming ``owner`` for a particle count below 2, an unknown
    resampling scheme or an ESS threshold outside ``[0, 1]``."""
    check_count(owner, "num_particles", num_particles, 2)
    if resample not in SCHEMES:
        raise ValueError(f"{owner}: resample must be one of {sorted(SCHEMES)}, got {resample!r}")
    check_fraction(owner, "ess_threshold", ess_threshold)


def check_fraction(owner: str, name: str, value: float) -> None:
    """Raise a ``ValueError`` naming ``owner`` unless ``value`` lies in ``[0, 1]``."""
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{owner}: {name} must lie in [0, 1], got {value!r}")


class BlockFilter:
    """The filters of the blocks of ``theta`` (values ``(B, *shape)``), ``num_particles``
    each; ``keep_paths`` keeps every step's particles and ancestors for :meth:`draw_paths`
    (implied by ``reference``)."""

    def __init__(self, split: StaticModel, theta: Mapping[str, Tensor], num_particles: int,
                 generator: torch.Generator, *, resample: str = "systematic",
                 ess_threshold: float = 0.5, reference: Mapping[str, Tensor] | None = None,
                 keep_paths: bool = False):
        self.split, self.generator = split, generator
        self.num_blocks = next(iter(theta.values())).shape[0]
        self.num_particles = num_particles
        self.scheme, self.ess_threshold = resample, ess_threshold
        self.reference = reference
        self.theta = split.rows(theta, num_particles)
        self.step = 0
        self.live: dict[str, Tensor] = {}
        self.log_w = torch.full((self.num_blocks, num_particles), -math.log(num_particles),
                                dtype=torch.float64)
        self.log_z = torch.zeros(self.num_blocks, dtype=torch.float64)
        self.history: list[tuple[dict[str, Tensor], Tensor]] | None = (
            [] if keep_paths or reference is not None else None)
        offsets = torch.arange(self.num_blocks) * num_particles
        self._offsets = offsets[:, None]
        self._last_rows = offsets + num_particles - 1

    @property
    def done(self) -> bool:
        return self.step == self.split.num_steps

    def run(self, until: int | None = None) -> Tensor:
        """Filter through step ``until - 1`` (default: the last); the blocks' ``log_z``."""
        stop = self.split.num_steps if until is None else until
        while self.step < stop:
            self.advance()
        return self.log_z

    def advance(self) -> Tensor:
        """Run the next step: resample, propagate, weight; the blocks' evidence increments."""
        k, n, rows = self.step, self.num_particles, self.num_blocks * self.num_particles
        ancestors = self._resample() if k > 0 else None
        engine = self.split.engine
        out = engine.run_step(k + 1, {**self.live, **self.theta}, rows, self.generator)
        check_step_output(out, k, rows)
        values, log_weight = out.values, out.log_weight
        if self.reference is not None:
            values, log_weight = self._with_reference(k, values, log_weight)
        unnormalized = self.log_w + log_weight.view(self.num_blocks, n)
        increment = torch.logsumexp(unnormalized, 1)
        dead = torch.isneginf(increment)
        self.log_w = torch.where(dead[:, None], -math.log(n),
                                 unnormalized - torch.where(dead, 0.0, increment)[:, None])
        self.log_z = self.log_z + increment
        self.live.update(values)
        if self.history is not None:
            self.history.append((dict(values), ancestors))
        carried = self.split.carried(k)
        self.live = {a: v for a, v in self.live.items() if a in carried}
        self.step += 1
        return increment

    def ess(self) -> Tensor:
        """Each block's ESS ``(B,)``."""
        return torch.exp(-torch.logsumexp(2 * self.log_w, 1))

    def _resample(self) -> Tensor:
        """Resample the blocks that need it (every block of a conditional filter); returns
        each particle's ancestor within its block, ``(B, N)``."""
        n = self.num_particles
        weights = torch.exp(self.log_w)
        identity = torch.arange(n).expand(self.num_blocks, n)
        if self.reference is None:
            due = self.ess() < self.ess_threshold * n
            if not due.any():
                return identity
            index = torch.where(due[:, None], SCHEMES[self.scheme](weights, n, self.generator),
                                identity)
            self.log_w = torch.where(due[:, None], -math.log(n), self.log_w)
        else:
            free = SCHEMES[self.scheme](weights, n - 1, self.generator)
            index = torch.cat([free, self._reference_ancestor()], 1)
            self.log_w = torch.full_like(self.log_w, -math.log(n))
        flat = (index + self._offsets).reshape(-1)
        self.live = {a: v[flat] for a, v in self.live.items()}
        return index

    def _reference_ancestor(self) -> Tensor:
        """Ancestor sampling: ``(B, 1)`` indices from ``W_i p(x_ref_k, y_k | x_{k-1,i})``."""
        k, n = self.step, self.num_particles
        ref = {a: self.reference[a].repeat_interleave(n, 0) for a in self.split.step_latents(k)}
        log_p = self.split.engine.score_step(k + 1, {**self.live, **self.theta}, ref,
                                             self.num_blocks * n).log_weight
        return resample(self.log_w + log_p.view(self.num_blocks, n), "multinomial", 1,
                        self.generator, f"ancestor sampling at step {k}")

    def _with_reference(self, k: int, values: dict[str, Tensor], log_weight: Tensor
                        ) -> tuple[dict[str, Tensor], Tensor]:
        """The step's output with each block's last particle set to the reference path and
        its weight (the step's observations) scored there."""
        last = self._last_rows
        ref = {a: self.reference[a] for a in self.split.step_latents(k)}
        live = {a: v[last] for a, v in {**self.live, **self.theta}.items()}
        scored = self.split.engine.score_step(k + 1, live, ref, self.num_blocks)
        observed = [scored.site_log_weights[a] for a in self.split.step_observed(k)
                    if a in scored.site_log_weights]
        values = {a: v.index_put((last,), ref[a].to(v.dtype)) for a, v in values.items()}
        weight = torch.stack(observed).sum(0) if observed else torch.zeros(self.num_blocks,
                                                                           dtype=torch.float64)
        return values, log_weight.index_put((last,), weight)

    def select(self, index: Tensor) -> None:
        """Keep the blocks ``index`` (``(B,)``, with repeats): the blocks' resampling."""
        self._update(lambda mine: mine[index])

    def merge(self, take: Tensor, other: BlockFilter) -> None:
        """Replace the blocks where ``take (B,)`` holds by those of ``other`` (a filter at the
        same step): the accepted proposals of an MH move."""
        if other.step != self.step or set(other.live) != set(self.live):
            raise ValueError(f"cannot merge a filter at step {other.step} into one at step "
                             f"{self.step}")

        def where(mine: Tensor, theirs: Tensor) -> Tensor:
            return torch.where(take.reshape(-1, *([1] * (mine.dim() - 1))), theirs, mine)

        self._update(where, other)

    def _update(self, change, other: BlockFilter | None = None) -> None:
        """Apply ``change`` to every per-block tensor (and to ``other``'s, as its second
        argument): live particles and static rows viewed as ``(B, N, ...)``, the weights and
        the evidence."""
        b, n = self.num_blocks, self.num_particles

        def rows(mine: Tensor, theirs: Tensor | None) -> Tensor:
            given = [t.view(b, n, *mine.shape[1:]) for t in (mine, theirs) if t is not None]
            return change(*given).reshape(mine.shape)

        def whole(mine: Tensor, theirs: Tensor | None) -> Tensor:
            return change(*[t for t in (mine, theirs) if t is not None])

        self.live = {a: rows(v, other and other.live[a]) for a, v in self.live.items()}
        self.theta = {a: rows(v, other and other.theta[a]) for a, v in self.theta.items()}
        self.log_w = whole(self.log_w, other and other.log_w)
        self.log_z = whole(self.log_z, other and other.log_z)

    def draw_paths(self) -> dict[str, Tensor]:
        """One path per block, ``{site: (B, *shape)}``: a final particle drawn from the
        final weights, and its ancestors back to step 0."""
        if self.history is None or not self.done:
            raise ValueError("draw_paths needs a finished filter that kept its paths")
        index = resample(self.log_w, "multinomial", 1, self.generator, "the final weights")[:, 0]
        blocks = torch.arange(self.num_blocks)
        path: dict[str, Tensor] = {}
        for values, ancestors in reversed(self.history):
            flat = blocks * self.num_particles + index
            path.update({a: v[flat] for a, v in values.items()})
            if ancestors is not None:
                index = ancestors[blocks, index]
        return path
