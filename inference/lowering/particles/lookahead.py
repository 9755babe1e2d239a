"""Look-ahead weights ``log p̂(y_k | x_{k-1})`` of a step, for the auxiliary particle filter.

Where the engine proposes a step from its locally optimal proposal (:mod:`.optimal`), the
look-ahead is the exact predictive ``log p(y_k | x_{k-1})`` (the fully adapted filter: its
second-stage weights are all equal). Elsewhere it is the step's observation densities with
each new latent put at its prior mean given the earlier ones (Pitt & Shephard 1999):
:class:`PriorMeanStep` lowers a step that way. A step with a discrete latent has no such
point (its prior mean is not a value it takes): its look-ahead is none, a weight of 0.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Categorical, Normal
    >>> from ppl.inference.lowering.particles import Schedule
    >>> @model
    ... def m(ys):
    ...     x = sample("x", Normal(0.0, 1.0))
    ...     sample("y", Normal(x, 1.0), obs=ys[0])
    ...     z = sample("z", Categorical(torch.tensor([0.5, 0.5])))
    ...     sample("w", Normal(z * 1.0, 1.0), obs=ys[1])
    >>> g = m.graph(torch.zeros(2))
    >>> [lookahead_kind(g, step, "prior") for step in Schedule.from_graph(g).steps]
    ['prior mean', 'none']
"""

from __future__ import annotations

from typing import Any

import torch

from ppl.inference.lowering.tape import prims as P
from ppl.inference.lowering.tape.tape import Tape, Value, Var
from ppl.ir import Graph
from ppl.ir.node import DistSpec, Node
from ppl.registry import get_family

from .lowering import DistributionSource, StepLowering
from .optimal import innermost
from .schedule import Step

__all__ = ["PriorMeanStep", "lookahead_kind"]


def lookahead_kind(graph: Graph, step: Step, proposal_kind: str) -> str:
    """``"predictive"`` (a locally optimal step), ``"prior mean"`` or ``"none"`` (a latent
    of the step is discrete)."""
    if proposal_kind == "optimal":
        return "predictive"
    discrete = any(get_family(innermost(DistSpec(n.target, n.kwargs)).family).discrete
                   for n in map(graph.site, step.latents))
    return "none" if discrete else "prior mean"


class PriorMean(P.Prim):
    """A site's prior mean for every particle, ``(C, *shape)``, by its torch class."""

    def __init__(self, dist: DistributionSource, shape: tuple[int, ...], address: str):
        self.dist, self.shape = dist, shape
        self.name = f"mean {address}"

    def infer(self, *args: Value, **attrs: Any) -> tuple[tuple[int, ...], torch.dtype]:
        return self.shape, torch.float64

    def emit(self, tape: Tape, out: Var, *args: Value, **attrs: Any) -> str:
        shape = "(C, " + "".join(f"{d}, " for d in self.shape) + ")"
        return f"{self.dist.expression(tape)}.mean.to(torch.float64).expand({shape})"


class PriorMeanStep(StepLowering):
    """A step lowered with each new latent at its prior mean instead of drawn: the scored
    sites' weights are the observation densities there (the latents are not scored)."""

    def sample(self, node: Node, args: tuple, kwargs: dict) -> Value:
        if node.address in self.given:
            return super().sample(node, args, kwargs)
        dist = DistributionSource.of(get_family(node.target),
                                     self._params(DistSpec(node.target, node.kwargs),
                                                  node.address))
        mean = PriorMean(dist, tuple(node.meta.shape or ()), node.address)
        return self.tape.record(mean, *dist.leaves())
