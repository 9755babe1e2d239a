"""Generated straight-line torch code for one VI step of a guide's or a model's graph.

:func:`compile_guide` and :func:`compile_model` emit, from a graph traced with the run's
arguments, one Python function each (``ppl.ir.codegen``: a line per node, ops bound as
globals) that returns the graph's random sites as ``(address, distribution, value,
elementwise scaled log density)``: the guide's latent sites drawn as ``DrawByEstimator``
draws them (:class:`SiteDrawer`), the model's scored at given latent values. They are
what a handler run of guide or model computes for a step, without the messages: params
come from a dict of their constrained values, a subsampled plate's indices from a dict
the step shares between guide and model, and ``particles`` (a plate frame, or None for
one particle) broadcasts every site along a batch dim of its own, as the general path's
particle plate does.

    >>> import torch
    >>> from ppl import ParamStore, model, param, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def q():
    ...     sample("z", Normal(param("loc", torch.tensor(0.5)), 1.0))
    >>> drawer = SiteDrawer(DrawByEstimator(-1, allow_enumerate=False), {})
    >>> with ParamStore() as store:
    ...     draw = compile_guide(q.graph())
    ...     sites = draw({"loc": store.leaf("loc")}, {}, None, drawer)
    >>> [(address, value.shape, log_prob.requires_grad) for address, _, value, log_prob in sites]
    [('z', torch.Size([]), True)]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.distributions import Distribution, constraints

from ppl.errors import ModelError
from ppl.ir import Graph
from ppl.ir.codegen import CodeGen
from ppl.ir.interpreter import build_distribution
from ppl.ir.node import DistSpec, Node, Ref, iter_refs
from ppl.primitives import LogWeight, broadcast_to_frame
from ppl.runtime import Message, PlateFrame
from ppl.subsample import SUBSAMPLE_ATTR, draw_subsample
from ppl.trace import site_log_prob
from ppl.validation import check_in_support, validation_enabled

from .estimators import DrawByEstimator
from .mvd import Redraw

__all__ = ["Unsupported", "SiteDrawer", "compile_guide", "compile_model"]


class Unsupported(ModelError):
    """What the compiled views cannot do for this program: the refusal's reason when the
    check finds it, an error if a later step does (a program that changed what it asks)."""


def _minibatch(shared: dict[str, Tensor], plate: str, size: int, subsample_size: int) -> Tensor:
    """The step's indices of ``plate``: drawn by its first use, then shared by guide and
    model (as the general path's ``subsample()`` shares them)."""
    indices = shared.get(plate)
    if indices is None:
        indices = shared[plate] = draw_subsample(size, subsample_size)
    return indices


def _batched_expand(tensor: Tensor, *sizes: Any) -> Tensor:
    """``tensor.expand(*sizes)``, with ``-1`` for the leading dims that ``sizes`` do not name
    (where the plain one fails): the particles' dims, left of every traced one."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    extra = tensor.dim() - len(sizes)
    return tensor.expand(*(-1,) * extra, *sizes) if extra > 0 else tensor.expand(*sizes)


def _particles(dist: Distribution, particles: PlateFrame | None, name: str) -> Distribution:
    """The site's distribution broadcast along the particle plate ``particles`` (as the
    general path's plate broadcasts it), or as it is for one particle."""
    if particles is None:
        return dist
    msg = Message(kind="sample", name=name, fn=dist)
    broadcast_to_frame(msg, particles)
    return msg.fn


class SiteDrawer:
    """Draws the guide's latent sites as the general path's ``DrawByEstimator`` does
    (``drawer``: reparameterized, by the score function with a running baseline,
    enumerated, by a measure-valued derivative, or detached; its ``estimators`` record how),
    or replays them as a ``Redraw`` does in an MVD re-run; each site with the infer options
    it was given (``infers``, by address, from the guide's pilot trace). A learned baseline
    (a network of the site's handler-path shape) is :class:`Unsupported`."""

    def __init__(self, drawer: DrawByEstimator | Redraw, infers: dict[str, dict]):
        self.drawer, self.infers = drawer, infers

    def __call__(self, name: str, dist: Distribution) -> Tensor:
        msg = Message(kind="sample", name=name, fn=dist, infer=self.infers.get(name, {}))
        self.drawer.process(msg)
        how = self.drawer.estimators.get(name)
        if how is not None and not isinstance(how.baseline, (float, type(None))):
            raise Unsupported(f"the guide site {name!r} has a learned baseline")
        return msg.value


class _SiteCodeGen(CodeGen):
    """A step of one graph: ``step(params, shared, ...)`` returns its sites as
    ``(address, distribution, value, elementwise scaled log density)``; params come from
    ``params``, a subsampled plate's indices from ``shared`` (:func:`_minibatch`)."""

    def __init__(self, graph: Graph, fn_name: str):
        super().__init__(graph, fn_name)
        self.namespace.update(_minibatch=_minibatch, _log_prob=site_log_prob,
                              _particles=_particles, _LogWeight=LogWeight,
                              _batched_expand=_batched_expand)

    def prologue(self) -> None:
        self.emit("_data = _graph_data")
        self.emit("_sites = []")

    def input(self, node: Node, args: tuple, kwargs: dict) -> str:
        plate = node.meta.attr(SUBSAMPLE_ATTR)
        if plate is None:
            return super().input(node, args, kwargs)
        return self.assign(node, f"_minibatch(shared, {plate!r}, {node.meta.attr('size')}, "
                                 f"{node.meta.shape[0]})")

    def param(self, node: Node, args: tuple, kwargs: dict) -> str:
        return self.assign(node, f"params[{node.address!r}]")

    def call(self, node: Node, args: tuple, kwargs: dict) -> str:
        """As traced, but an ``expand`` (a plate's broadcast of a site's parameters, traced
        with one particle) keeps the particles' leading dims: :func:`_batched_expand`."""
        if node.target == "Tensor.expand" and not kwargs:
            return self.assign(node, f"_batched_expand({', '.join(args)})")
        return super().call(node, args, kwargs)

    def distribution(self, spec: DistSpec, params: dict[str, str]) -> str:
        """A distribution of the run's data alone (a prior's constant parameters, which a
        plate expanded into inputs) is built once, here: the data do not change in a run."""
        names = set(iter_refs(spec))
        if names and all(self._is_data(name) for name in names):
            data = self.graph.data
            return self.const(build_distribution(spec, lambda ref: data[ref.name]), "d")
        return super().distribution(spec, params)

    def _is_data(self, name: str) -> bool:
        node = self.graph.node(name)
        return (node.kind == "input" and node.meta.attr(SUBSAMPLE_ATTR) is None
                and name in self.graph.data)

    def record(self, node: Node, dist: str, value: str, log_prob: str) -> None:
        self.emit(f"_sites.append(({node.address!r}, {dist}, {value}, {log_prob}))")

    def scored(self, node: Node, dist: str, value: str) -> None:
        """Record the site with its log density, scaled as the trace scales it."""
        scale = node.meta.attr("scale")
        self.record(node, dist, value, f"_log_prob({dist}, {value}, {scale!r})")

    def assign_dist(self, node: Node, dist: str) -> str:
        """Emit the site's distribution, broadcast along the particles: its name."""
        name = f"d_{node.name}"
        self.emit(f"{name} = _particles({dist}, particles, {node.address!r})")
        return name

    def output(self, node: Node, args: tuple, kwargs: dict) -> None:
        self.emit("return _sites")


class _GuideCodeGen(_SiteCodeGen):
    """``draw(params, shared, particles, drawer)``: the guide's latent sites, drawn."""

    signature = "params, shared, particles, drawer"

    def sample(self, node: Node, args: tuple, kwargs: dict) -> str:
        dist = self.assign_dist(node, self.site_distribution(node, kwargs))
        value = self.assign(node, f"drawer({node.address!r}, {dist})")
        self.scored(node, dist, value)
        return value


class _ModelCodeGen(_SiteCodeGen):
    """``score(params, shared, particles, values)``: every random site of the model, its
    latents read from ``values``."""

    signature = "params, shared, particles, values"

    def __init__(self, graph: Graph, fn_name: str):
        super().__init__(graph, fn_name)
        self.namespace["_check_observed"] = _check_observed
        self.minibatched = _minibatched(graph)

    def sample(self, node: Node, args: tuple, kwargs: dict) -> str:
        dist = self.assign_dist(node, self.site_distribution(node, kwargs))
        value = self.assign(node, f"values[{node.address!r}]")
        self.scored(node, dist, value)
        return value

    def observe(self, node: Node, args: tuple, kwargs: dict) -> str:
        """An observation taken from a minibatch is checked against its support, as the
        general path checks it at each step (the tracing saw one minibatch only):
        :func:`_check_observed`."""
        dist = self.assign_dist(node, self.site_distribution(node, kwargs))
        value = self.assign(node, args[0])
        if any(name in self.minibatched for name in iter_refs(node.args)):
            whole = self.const(self._indexed_data(node.args[0]), "whole")
            checked = self.const(set(), "checked")
            self.emit(f"_check_observed({node.address!r}, {dist}, {value}, {whole}, {checked})")
        self.scored(node, dist, value)
        return value

    def _indexed_data(self, ref: Ref) -> Tensor | None:
        """The data tensor ``ref`` indexes with a plate's indices (``y[rows]``), or None."""
        node = self.graph.node(ref.name)
        if node.kind != "call" or node.target != "Tensor.__getitem__" or node.kwargs:
            return None
        data, index = node.args if len(node.args) == 2 else (None, None)
        if not (isinstance(data, Ref) and isinstance(index, Ref) and self._is_data(data.name)):
            return None
        return self.graph.data[data.name] if index.name in self.minibatched and \
            self.graph.node(index.name).kind == "input" else None

    def factor(self, node: Node, args: tuple, kwargs: dict) -> str:
        value = self.assign(node, args[0])
        self.scored(node, self.assign_dist(node, f"_LogWeight({value})"), value)
        return value


def _check_observed(name: str, dist: Distribution, value: Tensor, whole: Tensor | None,
                    checked: set[str]) -> None:
    """``value``, a minibatch's observation, lies in ``dist``'s support. When it indexes a
    data tensor ``whole`` and the support is fixed (no tensor parameters: Bernoulli's,
    Poisson's, not a Uniform's), the whole data is checked once instead, which covers
    every minibatch (``checked`` remembers it); else the minibatch at every step."""
    if name in checked:
        return
    support = dist.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    fixed = not any(isinstance(v, Tensor) for v in getattr(support, "__dict__", {}).values())
    if whole is None or not fixed:
        check_in_support(name, dist, value)
    elif validation_enabled():
        check_in_support(name, dist, whole)
        checked.add(name)


def _minibatched(graph: Graph) -> set[str]:
    """The nodes computed from a subsampled plate's indices: new values at every step."""
    found: set[str] = set()
    for node in graph.nodes:
        if (node.kind == "input" and node.meta.attr(SUBSAMPLE_ATTR) is not None) or any(
                name in found for name in iter_refs((node.args, node.kwargs))):
            found.add(node.name)
    return found


def compile_guide(graph: Graph) -> Callable[..., list[tuple]]:
    """``draw(params, shared, particles, drawer)``: the guide's latent sites, drawn by
    ``drawer`` (a :class:`SiteDrawer`)."""
    return _GuideCodeGen(graph, "draw").compile()


def compile_model(graph: Graph) -> Callable[..., list[tuple]]:
    """``score(params, shared, particles, values)``: the model's random sites, its latents
    read from ``values``."""
    return _ModelCodeGen(graph, "score").compile()
