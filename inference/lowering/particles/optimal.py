"""The locally optimal proposal of a linear-Gaussian step, found on the graph.

A step qualifies when it draws one latent ``x`` with a Gaussian prior ``Normal(m, s)``
(elementwise over x's shape, an ``Independent`` wrapper looked through) and each observed
site of the step that reads ``x`` is Gaussian, ``Normal(c * x + d, r)``: its mean is built
from ``x`` elementwise by ``+``, ``-``, ``*`` and ``/`` with operands free of ``x``, negation
and broadcasting; its scale and observed value do not read ``x``; it is not scaled (tempered
or subsampled). Observed sites that do not read ``x`` only weight the particles.

Then ``p(x | earlier latents, y)`` is Gaussian: precision ``1/s² + Σ c²/r²`` and mean
``(m/s² + Σ c (y - d)/r²) / precision``, each observation's terms summed over the dims it
broadcasts ``x`` along. :func:`optimal_proposal` writes the draw from it into a step's
generated code; the engine's weight ``log p(x, y | earlier) - log q(x)`` is then the
predictive ``log p(y | earlier)``, the same for every draw (zero variance up to rounding).
``c`` and ``d`` are read off the observation means evaluated at ``x = 0`` (``d``) and
``x = 1`` (``c + d``), exact because the detected means are elementwise affine in ``x``.
With ``at_mean`` the latent is put at the posterior mean instead of drawn, which turns the
same weight into the exact look-ahead of a fully adapted auxiliary particle filter.

:func:`gaussian_step` says whether a step qualifies, or why not:

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal, Poisson
    >>> from ppl.inference.lowering.particles import Schedule
    >>> @model
    ... def walk(ys):
    ...     x = sample("x_0", Normal(0.0, 1.0))
    ...     sample("y_0", Normal(2 * x + 1, 0.5), obs=ys[0])
    ...     x = sample("x_1", Normal(0.9 * x, 1.0))
    ...     sample("y_1", Poisson(torch.exp(x)), obs=ys[1])
    >>> graph = walk.graph(torch.tensor([0.3, 2.0]))
    >>> steps = Schedule.from_graph(graph).steps
    >>> gaussian_step(graph, steps[0])
    GaussianStep(latent='x_0', observations=('y_0',))
    >>> gaussian_step(graph, steps[1])
    "observation 'y_1' of 'x_1' is Poisson, not Normal"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ppl.inference.lowering.tape import prims as P
from ppl.inference.lowering.tape.tape import Tape, Value, Var, is_var, shape_of
from ppl.ir import Graph
from ppl.ir.analysis import _projection
from ppl.ir.node import DistSpec, Node, Ref, iter_refs
from ppl.registry import get_family
from ppl.shapes import broadcast_shapes

from .lowering import DistributionSource, Draw, StepLowering
from .schedule import Step

__all__ = ["GaussianStep", "gaussian_step", "optimal_proposal"]

_ADD = frozenset({"Tensor.add", "Tensor.__add__", "Tensor.__radd__", "torch.add"})
_SUB = frozenset({"Tensor.sub", "Tensor.__sub__", "torch.sub", "Tensor.__rsub__", "torch.rsub"})
_MUL = frozenset({"Tensor.mul", "Tensor.__mul__", "Tensor.__rmul__", "torch.mul"})
_DIV = frozenset({"Tensor.div", "Tensor.__truediv__", "torch.div", "torch.true_divide"})
_NEG = frozenset({"Tensor.neg", "Tensor.__neg__", "torch.neg"})
# ops whose value is their first argument's, broadcast or cast (later arguments: shapes)
_PASS = frozenset({"Tensor.expand", "Tensor.expand_as", "torch.broadcast_to",
                   "Tensor.broadcast_to", "ppl.identity", "Tensor.double", "Tensor.float"})


@dataclass(frozen=True)
class GaussianStep:
    """A step whose locally optimal proposal is Gaussian: its ``latent`` and the observed
    sites whose means are affine in it."""

    latent: str
    observations: tuple[str, ...]


def innermost(spec: DistSpec) -> DistSpec:
    """The distribution inside ``Independent`` wrappers."""
    while spec.family == "Independent":
        spec = dict(spec.params)["base_distribution"]
    return spec


def _spec(node: Node) -> DistSpec:
    return innermost(DistSpec(node.target, node.kwargs))


def _scaled(node: Node) -> bool:
    return node.meta.attr("scale") is not None or node.meta.attr("tempered") is not None


def _dependents(graph: Graph, nodes: Iterable[str], latent: str) -> set[str]:
    """The nodes of a step whose values read ``latent`` (an observation's value: its
    observed value's; a projection of ``broadcast_tensors``: its own operand's)."""
    out = {latent}
    for name in nodes:
        node = graph.node(name)
        projected = _projection(graph, node)
        refs = (iter_refs(projected) if projected is not None
                else iter_refs(node.args[:1]) if node.kind == "observe" else node.refs())
        if any(r in out for r in refs):
            out.add(name)
    return out


def _affine(graph: Graph, arg: Any, dependent: set[str]) -> bool:
    """Whether ``arg`` is elementwise affine in the latent (an argument free of it is)."""
    def free(a: Any) -> bool:
        return not any(r in dependent for r in iter_refs(a))

    if free(arg):
        return True
    if not isinstance(arg, Ref):
        return False
    node = graph.node(arg.name)
    if node.kind == "sample":
        return True  # the latent itself: only it, of the samples, is dependent
    if node.kind != "call" or node.kwargs:
        return False
    projected = _projection(graph, node)
    if projected is not None:
        return _affine(graph, projected, dependent)
    target, args = node.target, node.args
    if target in _PASS:
        return _affine(graph, args[0], dependent) and free(args[1:])
    if len(args) == 1:
        return target in _NEG and _affine(graph, args[0], dependent)
    if len(args) != 2:
        return False
    a, b = args
    if target in _ADD or target in _SUB:
        return _affine(graph, a, dependent) and _affine(graph, b, dependent)
    if target in _MUL:
        return (free(a) and _affine(graph, b, dependent)) or (
            free(b) and _affine(graph, a, dependent))
    return target in _DIV and free(b) and _affine(graph, a, dependent)


def gaussian_step(graph: Graph, step: Step) -> GaussianStep | str:
    """The step's :class:`GaussianStep`, or why its locally optimal proposal is not found
    (the string names the site)."""
    if len(step.latents) != 1:
        return f"the step draws {len(step.latents)} latents {list(step.latents)}, not one"
    x = graph.site(step.latents[0])
    prior = _spec(x)
    if prior.family != "Normal":
        return f"the prior of {x.address!r} is {prior.family}, not Normal"
    if _scaled(x):
        return f"the prior of {x.address!r} is scaled (tempered or subsampled)"
    dependent = _dependents(graph, step.nodes, x.name)
    observations = []
    for address in step.observed:
        node = graph.site(address)
        where = f"observation {address!r} of {x.address!r}"
        if not any(r in dependent for r in node.refs()):
            continue
        if node.kind != "observe":
            return f"{node.kind} {address!r} reads {x.address!r}"
        spec = _spec(node)
        if spec.family != "Normal":
            return f"{where} is {spec.family}, not Normal"
        if _scaled(node):
            return f"{where} is scaled (tempered or subsampled)"
        params = dict(spec.params)
        if any(r in dependent for r in iter_refs((node.args[:1], params["scale"]))):
            return f"the observed value or scale of {where} reads it"
        if not _affine(graph, params["loc"], dependent):
            return f"the mean of {where} is not affine in it"
        observations.append(address)
    return GaussianStep(x.address, tuple(observations))


class _Probe(StepLowering):
    """A step's sub-graph with its latent fixed to a constant: the Normal parameters of
    the latent's prior and of the observations that read it (nothing drawn or scored)."""

    def __init__(self, graph: Graph, tape: Tape, step: Step, plan: GaussianStep,
                 at: torch.Tensor, live: Mapping[str, Var], data: Mapping[str, Var],
                 params: Mapping[str, Var]):
        super().__init__(graph, tape, step.nodes, step.sites, live=live, data=data,
                         params=params)
        self.plan, self.at = plan, at
        self.normals: dict[str, tuple[Value, Value, Value]] = {}  # loc, scale, value

    def _record(self, node: Node, value: Value) -> None:
        params = self._params(_spec(node), node.address)
        self.normals[node.address] = (params["loc"], params["scale"], value)

    def sample(self, node: Node, args: tuple, kwargs: dict) -> Value:
        self._record(node, self.at)
        return self.at

    def observe(self, node: Node, args: tuple, kwargs: dict) -> Value:
        if node.address in self.plan.observations:
            self._record(node, args[0])
        return args[0]

    def factor(self, node: Node, args: tuple, kwargs: dict) -> Value:
        return args[0]


def _shaped(tape: Tape, value: Value, shape: tuple[int, ...]) -> Value:
    if shape_of(value) == shape:
        return value
    if is_var(value):
        return tape.apply(P.EXPAND, value, shape=shape)
    return torch.broadcast_to(torch.as_tensor(value, dtype=torch.float64), shape)


def _posterior(tape: Tape, at_zero: _Probe, at_one: _Probe, shape: tuple[int, ...]
               ) -> tuple[Value, Value]:
    """The mean and scale of ``p(x | earlier latents, y)``, each of the latent's shape."""
    m, s, _ = at_zero.normals[at_zero.plan.latent]
    precision, information = 1.0 / (s * s), m / (s * s)
    for address in at_zero.plan.observations:
        d, r, y = at_zero.normals[address]
        c = at_one.normals[address][0] - d
        logical = broadcast_shapes(shape, *(shape_of(v) for v in (c, d, r, y)))
        precision = precision + P.sum_to(tape, c * c / (r * r), logical, shape)
        information = information + P.sum_to(tape, c * (y - d) / (r * r), logical, shape)
    return _shaped(tape, information / precision, shape), _shaped(tape, precision ** -0.5,
                                                                   shape)


def optimal_proposal(graph: Graph, tape: Tape, step: Step, plan: GaussianStep,
                     live: Mapping[str, Var], data: Mapping[str, Var],
                     params: Mapping[str, Var], at_mean: bool = False
                     ) -> tuple[dict[str, Value], dict[str, Value]]:
    """Record on ``tape`` the draw of ``plan.latent`` from its locally optimal proposal (or,
    ``at_mean``, its posterior mean) and ``log q`` of that value: ``({latent: value},
    {latent: log q})``, as a proposal graph's lowering gives its drawn values and weights."""
    x = graph.site(plan.latent)
    shape = tuple(x.meta.shape or ())
    probes = [_Probe(graph, tape, step, plan, torch.full(shape, v, dtype=torch.float64), live,
                     data, params) for v in (0.0, 1.0)]
    for probe in probes:
        probe.run()
    mean, scale = _posterior(tape, *probes, shape)
    normal = DistributionSource.of(get_family("Normal"), {"loc": mean, "scale": scale})
    value = mean if at_mean else tape.record(Draw(normal, shape, torch.float64, x.address),
                                             *normal.leaves())
    scorer = probes[0]
    terms = scorer.family_terms(normal.family, {"loc": mean, "scale": scale}, value, x.address)
    scorer._score(x.address, lambda: [scorer.add_term(t, shape) for t in terms])
    return {x.address: value}, {x.address: scorer.site_weights[x.address]}
