"""``SMC``: the particle filter as an ``infer`` method, on the model's graph.

The model is traced once (``model.graph``), the user's ``passes`` run on it, loops of a
``scan`` are unrolled, and the particle engine (``ppl.inference.lowering.particles``) cuts it
into steps (each observation with the latents it needs; ``schedule=`` gives a partition of
the addresses instead) and generates one batched function per step. The particle filter
(:class:`~ppl.inference.smc.filter.ParticleFilter`) then runs the steps over
``num_particles`` particles, resampling adaptively. With ``proposal=`` (a model whose sites
carry the latents' addresses) the engine proposes from it instead of the prior; with
``proposal="optimal"`` each step whose locally optimal proposal has a closed form (a Normal
latent observed through Normal sites with means affine in it) draws from it, the other steps
from the prior (``res.extra["proposal_kinds"]`` says which). ``auxiliary=True`` runs the
auxiliary particle filter: first-stage weights from each step's look-ahead (the exact
predictive at optimal steps, which makes the filter fully adapted; the observation density
at the prior mean elsewhere; ``res.extra["lookahead_kinds"]``). It is a flag, not a kind of
proposal, since it combines with each of them.

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
    >>> method = SMC(num_particles=50, proposal="optimal", auxiliary=True)
    >>> res = infer(walk, torch.zeros(4), method=method, seed=0)
    >>> res.extra["proposal_kinds"]
    ('prior', 'optimal', 'optimal')
    >>> res.extra["lookahead_kinds"]
    ('prior mean', 'predictive', 'predictive')
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from ppl.inference.lowering.particles import ParticleEngine
from ppl.ir.loop import loops
from ppl.model import Model
from ppl.passes import run as run_passes
from ppl.passes import unroll

from .backends import check_backend, choose_backend
from .filter import ParticleFilter
from .moves import ResampleMove
from .native import NativeFilter
from .paris import AdditiveSmoother
from .result import SMCPosterior

__all__ = ["SMC"]


@dataclass
class SMC:
    """A particle filter over the model's graph: ``num_particles``, the resampling scheme
    ``resample`` and ``ess_threshold`` (as :class:`ParticleFilter`), an explicit
    ``schedule`` (groups of addresses, in order), a ``proposal`` model or ``"optimal"``,
    ``keep`` (earlier latents to return as paths), ``keep_history`` (needed by ``smooth``),
    ``keep_ancestors`` (each step's ancestor indices, ``res.ancestors``, for genealogies:
    ``(T, N)`` int64, 800 MB at a million particles and 100 steps; False keeps none),
    ``progress_bar`` (a progress line on stderr; None: only when stderr is a terminal),
    ``auxiliary`` (the auxiliary particle filter), ``move`` (a
    :class:`~ppl.inference.smc.moves.ResampleMove`: MCMC moves after each resampling) and
    ``additive`` (a :class:`~ppl.inference.smc.paris.AdditiveSmoother`: PaRIS smoothing).
    ``backend``: ``"native"`` runs the whole filter in C (:mod:`.native`; an error says why
    when the model or the settings rule it out), ``"torch"`` the torch driver, ``"auto"``
    (default) the C filter when it can, else torch; ``res.extra["backend"]`` says which ran
    and ``res.extra["backend_reason"]`` why torch did under ``"auto"``."""

    num_particles: int = 1000
    resample: str = "systematic"
    ess_threshold: float = 0.5
    schedule: Sequence[Sequence[str]] | None = None
    proposal: Model | Callable | str | None = None
    keep: Collection[str] = ()
    keep_history: bool = False
    keep_ancestors: bool = True
    progress_bar: bool | None = None
    auxiliary: bool = False
    move: ResampleMove | None = None
    additive: AdditiveSmoother | None = None
    backend: str = "auto"
    filter: ParticleFilter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.proposal, str) and self.proposal != "optimal":
            raise ValueError(f"proposal is a model or 'optimal', got {self.proposal!r}")
        check_backend("SMC", self.backend)
        self.filter = ParticleFilter(self.num_particles, self.resample, self.ess_threshold,
                                     keep=tuple(self.keep), keep_history=self.keep_history,
                                     keep_ancestors=self.keep_ancestors,
                                     progress_bar=self.progress_bar, auxiliary=self.auxiliary,
                                     move=self.move, additive=self.additive)

    def engine(self, model: Model, args: tuple = (), kwargs: dict | None = None, *,
               passes: Sequence[Callable] = ()) -> ParticleEngine:
        """The particle engine this method filters for ``model(*args, **kwargs)`` (built
        once, it can be filtered many times: ``self.driver(engine)[0].run_program(engine,
        gen)``)."""
        kwargs = kwargs or {}
        graph = _unrolled(run_passes(model.graph(*args, **kwargs), list(passes)))
        proposal, optimal = None, self.proposal == "optimal"
        if self.proposal is not None and not optimal:
            guide = self.proposal if isinstance(self.proposal, Model) else Model(self.proposal)
            proposal = _unrolled(guide.graph(*args, **kwargs))
        return ParticleEngine.from_graph(graph, self.schedule, proposal=proposal,
                                         optimal=optimal)

    def driver(self, engine: ParticleEngine) -> tuple[ParticleFilter | NativeFilter, str | None]:
        """The filter that runs ``engine`` under ``backend`` (chosen once: both have
        ``run_program(engine, generator)``), and why it is the torch one under ``"auto"``."""
        return choose_backend(self.backend, lambda: NativeFilter(self.filter, engine),
                              self.filter, f"SMC(backend='native') cannot run graph "
                              f"{engine.graph.name!r}")

    def run(self, model: Model, args: tuple, kwargs: dict, *,
            passes: Sequence[Callable] = ()) -> SMCPosterior:
        engine = self.engine(model, args, kwargs, passes=passes)
        driver, reason = self.driver(engine)
        result = driver.run_program(engine)
        result.extra.update(proposal_kinds=engine.proposal_kinds,
                            lookahead_kinds=engine.lookahead_kinds,
                            backend="native" if isinstance(driver, NativeFilter) else "torch")
        if reason is not None:
            result.extra["backend_reason"] = reason
        return result


def _unrolled(graph):
    return unroll()(graph) if loops(graph) else graph
