"""A state-space model split into its static parameters and its dynamic latent path, for
particle MCMC (``ParticleGibbs``, ``PMMH``, ``SMC2``).

The static sites are moved into a step of their own, step 0 of the particle engine's
schedule; the other steps are the default ones without them. The engine's later steps read
the static values as live latents, so a batch of rows can carry a different ``theta`` per
row (``B`` filters of ``N`` particles in one engine call) and a new ``theta`` regenerates no
code. The prior of the static sites is a separate :class:`~ppl.inference.lowering.flat.FlatModel`
(the graph with the path fixed by ``do`` and the observations dropped): positions are
unconstrained, with the log-Jacobian of each constraint in its density.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import HalfNormal, Normal
    >>> @model
    ... def ssm(ys):
    ...     q = sample("q", HalfNormal(1.0))
    ...     x = 0.0
    ...     for t in range(len(ys)):
    ...         x = sample(f"x_{t}", Normal(x, q))
    ...         sample(f"y_{t}", Normal(x, 1.0), obs=ys[t])
    >>> split = StaticModel(ssm.graph(torch.zeros(3)), ["q"], "PMMH")
    >>> split.num_steps, split.dim, split.path_sites
    (3, 1, ('x_0', 'x_1', 'x_2'))
    >>> split.constrained(torch.zeros(2, 1))["q"]
    tensor([1., 1.], dtype=torch.float64)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from ppl.errors import ModelError
from ppl.inference.lowering.flat import FlatModel
from ppl.inference.lowering.particles import ParticleEngine, Schedule, ScheduleError
from ppl.ir import Graph
from ppl.ir.loop import loops
from ppl.passes import do, drop_likelihood, unroll

__all__ = ["StaticModel"]


class StaticModel:
    """The particle engine of ``graph`` with the sites ``static`` in step 0 and the prior of
    those sites over unconstrained positions ``(B, dim)``; ``owner`` names the method in
    errors."""

    def __init__(self, graph: Graph, static: Sequence[str], owner: str):
        if loops(graph):
            graph = unroll()(graph)
        self.graph = graph
        self.static = _checked_static(graph, static, owner)
        default = Schedule.from_graph(graph)
        groups = [[a for a in step.sites if a not in self.static] for step in default.steps]
        try:
            self.engine = ParticleEngine.from_graph(
                graph, [list(self.static), *(g for g in groups if g)])
        except ScheduleError as error:
            raise ModelError(f"{owner}: the static sites {list(self.static)} must not depend on "
                             f"the latent path: {error}") from None
        self.num_steps = self.engine.num_steps - 1
        if self.num_steps < 1:
            raise ModelError(f"{owner}: graph {graph.name!r} has no observation besides the "
                             f"static sites {list(self.static)}; nothing to filter")
        self.path_sites = tuple(a for k in range(self.num_steps)
                                for a in self.engine.schedule.steps[k + 1].latents)
        fixed = {a: torch.zeros(graph.site(a).meta.shape or ()) for a in self.path_sites}
        self.prior = FlatModel.from_graph(drop_likelihood(factors=True)(do(fixed)(graph)))
        self.dim = self.prior.dim

    # -- static parameters ---------------------------------------------------------------
    def constrained(self, z: Tensor) -> dict[str, Tensor]:
        """The static sites' values ``(B, *shape)`` at unconstrained positions ``z (B, dim)``."""
        values = self.prior.constrained_values(z)
        return {a: values[a] for a in self.static}

    def log_prior(self, z: Tensor) -> Tensor:
        """``log p(theta(z)) + log |d theta / d z|``, ``(B,)``."""
        return self.prior.log_density(z)

    def draw_prior(self, num: int, generator: torch.Generator) -> Tensor:
        """``num`` unconstrained positions of prior draws (the engine's step 0)."""
        drawn = self.engine.run_step(0, {}, num, generator).values
        return self.prior.unconstrain_batch({a: drawn[a] for a in self.static})

    def rows(self, theta: Mapping[str, Tensor], n: int) -> dict[str, Tensor]:
        """Each block's static values repeated for its ``n`` particle rows: ``(B * n, ...)``."""
        return {a: v.repeat_interleave(n, dim=0) for a, v in theta.items()}

    # -- the path --------------------------------------------------------------------------
    def step_latents(self, k: int) -> tuple[str, ...]:
        """The path sites that dynamic step ``k`` draws."""
        return self.engine.schedule.steps[k + 1].latents

    def step_observed(self, k: int) -> tuple[str, ...]:
        return self.engine.schedule.steps[k + 1].observed

    def carried(self, k: int) -> frozenset[str]:
        """The path sites of steps ``<= k`` that later steps read."""
        return self.engine.needed_after(k + 1) - set(self.static)

    def check_markov(self, owner: str) -> None:
        """Raise unless each step reads only the path sites of the step before (ancestor
        sampling scores one step's transition per particle)."""
        for k in range(self.num_steps - 1):
            older = sorted(self.carried(k) - set(self.step_latents(k)))
            if older:
                sites = list(self.engine.step_sites(k + 2))
                raise ModelError(f"{owner}: the path's step {k + 1} (sites {sites}) reads "
                                 f"{older}, drawn before the step just before it; ancestor "
                                 "sampling needs a path that is Markov in its steps")


def _checked_static(graph: Graph, static: Sequence[str], owner: str) -> tuple[str, ...]:
    """The static addresses, once each, or a ``ModelError`` naming the bad one."""
    if isinstance(static, str):
        static = [static]
    static = tuple(dict.fromkeys(static))
    latents = [n.address for n in graph.latent_nodes]
    if not static:
        raise ModelError(f"{owner}: static= names no site; give the static parameters among "
                         f"the latent sites {latents[:12]}")
    for address in static:
        if not graph.has_site(address):
            raise ModelError(f"{owner}: static site {address!r} is not a site of graph "
                             f"{graph.name!r}; its latent sites are {latents[:12]}")
        kind = graph.site(address).kind
        if kind != "sample":
            what = "observed" if kind == "observe" else f"a {kind} site"
            raise ModelError(f"{owner}: static site {address!r} is {what}; static parameters "
                             "must be latent sample sites")
    return static
