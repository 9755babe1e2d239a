"""``SMC``: the particle filter as an ``infer`` method, on the model's graph.

The model is traced once (``model.graph``), the user's ``passes`` run on it, loops of a
``scan`` are unrolled, and the particle engine (``ppl.inference.lowering.particles``) cuts it
into steps (each observation with the latents it needs; ``schedule=`` gives a partition of
the addresses instead) and generates one batched function per step. The particle filter
(:class:`~ppl.inference.smc.filter.ParticleFilter`) then runs the steps over
``num_particles`` particles, resampling adaptively. With ``proposal=`` (a model whose sites
carry the latents' addresses) the engine proposes from it instead of the prior.

    >>> import torch
    >>> from ppl import infer, model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def walk(ys):
    ...     x = sample("x_0", Normal(0.0, 1.0))
    ...     for t in range(1, len(ys)):
    ...         x = sample(f"x_{t}", Normal(0.9 * x, 0.5))
    ...         sample(f"y_{t}", Normal(x, 1.0), obs=ys[t])
    >>> res = infer(walk, torch.zeros(4), method=SMC(num_particles=500), seed=0)
    >>> res.samples["x_3"].shape, bool(res.log_evidence < 0)
    (torch.Size([500]), True)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from ppl.inference.lowering.particles import ParticleEngine
from ppl.ir.loop import loops
from ppl.model import Model
from ppl.passes import run as run_passes
from ppl.passes import unroll

from .filter import ParticleFilter
from .moves import ResampleMove
from .paris import AdditiveSmoother
from .result import SMCPosterior

__all__ = ["SMC"]


@dataclass
class SMC:
    """A particle filter over the model's graph: ``num_particles``, the resampling scheme
    ``resample`` and ``ess_threshold`` (as :class:`ParticleFilter`), an explicit
    ``schedule`` (groups of addresses, in order), a ``proposal`` model, ``keep`` (earlier
    latents to return as paths), ``keep_history`` (needed by ``smooth``), ``progress_bar``
    (a progress line on stderr; None: only when stderr is a terminal), ``move`` (a
    :class:`~ppl.inference.smc.moves.ResampleMove`: MCMC moves after each resampling) and
    ``additive`` (a :class:`~ppl.inference.smc.paris.AdditiveSmoother`: PaRIS smoothing)."""

    num_particles: int = 1000
    resample: str = "systematic"
    ess_threshold: float = 0.5
    schedule: Sequence[Sequence[str]] | None = None
    proposal: Model | Callable | None = None
    keep: Collection[str] = ()
    keep_history: bool = False
    progress_bar: bool | None = None
    move: ResampleMove | None = None
    additive: AdditiveSmoother | None = None
    filter: ParticleFilter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.filter = ParticleFilter(self.num_particles, self.resample, self.ess_threshold,
                                     keep=tuple(self.keep), keep_history=self.keep_history,
                                     progress_bar=self.progress_bar, move=self.move,
                                     additive=self.additive)

    def run(self, model: Model, args: tuple, kwargs: dict, *,
            passes: Sequence[Callable] = ()) -> SMCPosterior:
        return self.filter.run_program(self.program(model, args, kwargs, passes))

    def program(self, model: Model, args: tuple, kwargs: dict,
                passes: Sequence[Callable] = ()) -> ParticleEngine:
        """The model's particle engine (traced, passed, unrolled and lowered once): what
        :meth:`run` filters, reusable for many runs of the filter."""
        graph = _unrolled(run_passes(model.graph(*args, **kwargs), list(passes)))
        proposal = None
        if self.proposal is not None:
            guide = self.proposal if isinstance(self.proposal, Model) else Model(self.proposal)
            proposal = _unrolled(guide.graph(*args, **kwargs))
        return ParticleEngine.from_graph(graph, self.schedule, proposal=proposal)


def _unrolled(graph):
    return unroll()(graph) if loops(graph) else graph
