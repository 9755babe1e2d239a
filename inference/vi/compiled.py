"""The compiled VI step: guide and model traced once into graphs and run as generated
straight-line torch code, under the same objective program.

The general path runs the guide and the model through the handler stack at every step:
messages for each ``param`` (ten for a VAE's two networks), plates, traces, the
validation of each distribution. Within one ``VI`` run the arguments never change, so the
graphs of guide and model (``Model.graph``: params, data and subsample indices as inputs)
describe every step. This module emits from them a guide that draws its latent sites and
a model that scores them, each one Python function of the params, and gives the objective
program views of them (:class:`CompiledGuide`, :class:`CompiledModel`) that return the
same ``Draws`` and ``Terms`` as the handler views: the surrogate, every objective's
estimator logic and the optimizer loop are shared. ``K`` particles take a batch dim of
their own, each site broadcast along it as the general path's vectorized runs broadcast
it. A step takes the random stream as the general path does (each plate's minibatch where
the guide opens it, then each site's ``rsample``), so one seed gives both paths the same
loss and gradients.

:func:`compiled_objective` decides once per run. It refuses, naming why, a guide or model
that does not trace (a dynamic model, a ``mask`` handler, a scan loop, a distribution the
graph IR has no family for, such as ``AutoNormal``'s ``TransformedDistribution`` of a
constrained site), a guide site drawn by anything but reparameterization, an objective that
evaluates the model at other arguments, and a compiled step whose value differs from the
general path's on the same draws (the check runs once, on a fork of the stream: it also
catches a graph that specialized on a shape the particles change). Python side effects of
guide and model happen at tracing only.

    >>> import torch
    >>> from ppl import ParamStore, model, param, sample
    >>> from ppl.stdlib import Normal
    >>> from ppl.inference.vi import ELBO
    >>> @model
    ... def m():
    ...     sample("y", Normal(sample("z", Normal(0.0, 1.0)), 1.0), obs=torch.tensor(2.0))
    >>> @model
    ... def q():
    ...     sample("z", Normal(param("loc", torch.tensor(0.0)), 1.0))
    >>> with ParamStore():
    ...     _ = q()
    ...     step, path = compiled_objective(m, q, ELBO(), (), {})
    ...     out = step.surrogate()
    >>> path, out.value.shape
    ('compiled (generated guide and model code)', torch.Size([]))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints, transform_to

from ppl.errors import ModelError
from ppl.ir import Graph
from ppl.ir.codegen import CodeGen
from ppl.ir.interpreter import build_distribution
from ppl.ir.node import DistSpec, Node, Ref, iter_refs
from ppl.model import Model
from ppl.params import current_store
from ppl.primitives import _LogWeight, broadcast_to_frame
from ppl.randomness import drawing, forked
from ppl.runtime import Message, PlateFrame
from ppl.subsample import SUBSAMPLE_ATTR, draw_subsample, subsample
from ppl.trace import Site, Trace, site_log_prob
from ppl.validation import check_in_support, validation_enabled
from ppl.vectorize import PARTICLE_PLATE, batch_ndims

from .estimators import SiteEstimator
from .objectives import Draws, Expectation, Surrogate, Term, Terms

__all__ = ["CompiledObjective", "compiled_objective", "COMPILED"]

COMPILED = "compiled (generated guide and model code)"
_REPARAM = SiteEstimator("reparam")
_REPARAMETERIZABLE = (None, "auto", "reparam")


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


def _particles(dist: Distribution, particles: PlateFrame | None, name: str) -> Distribution:
    """The site's distribution broadcast along the particle plate ``particles`` (as the
    general path's plate broadcasts it), or as it is for one particle."""
    if particles is None:
        return dist
    msg = Message(kind="sample", name=name, fn=dist)
    broadcast_to_frame(msg, particles)
    return msg.fn


def _draw(name: str, dist: Distribution, estimator: Any, detach: bool) -> Tensor:
    """A guide site's draw, as ``DrawByEstimator`` makes it: ``rsample``, or with ``detach``
    a plain ``sample`` without gradient."""
    if detach:
        with drawing(), torch.no_grad():
            return dist.sample()
    if estimator not in _REPARAMETERIZABLE or not dist.has_rsample:
        raise Unsupported(f"the guide site {name!r} is not reparameterized")
    with drawing():
        return dist.rsample()


class _SiteCodeGen(CodeGen):
    """A step of one graph: ``step(params, shared, ...)`` returns its sites as
    ``(address, distribution, value, elementwise scaled log density)``; params come from
    ``params``, a subsampled plate's indices from ``shared`` (:func:`_minibatch`)."""

    def __init__(self, graph: Graph, fn_name: str):
        super().__init__(graph, fn_name)
        self.namespace.update(_minibatch=_minibatch, _draw=_draw, _log_prob=site_log_prob,
                              _particles=_particles, _LogWeight=_LogWeight)

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
    """``draw(params, shared, particles, detach)``: the guide's latent sites, drawn."""

    signature = "params, shared, particles, detach"

    def sample(self, node: Node, args: tuple, kwargs: dict) -> str:
        dist = self.assign_dist(node, self.site_distribution(node, kwargs))
        value = self.assign(node, f"_draw({node.address!r}, {dist}, "
                                  f"{node.meta.attr('estimator')!r}, detach)")
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


class _Params:
    """The constrained values of the graphs' params, read from the run's store each step:
    a real param is its leaf itself, any other the constraint's transform of it."""

    def __init__(self, addresses: list[str]):
        store = current_store()
        kinds = store.constraints()
        self.leaves = [(a, store.leaf(a), None if kinds[a] is constraints.real
                        else transform_to(kinds[a])) for a in addresses]

    def values(self) -> dict[str, Tensor]:
        return {a: leaf if t is None else t(leaf) for a, leaf, t in self.leaves}


class CompiledGuide:
    """The guide view of an objective program (``GuideView``'s interface): the generated
    guide's draws."""

    def __init__(self, step: CompiledObjective, params: dict[str, Tensor],
                 shared: dict[str, Tensor], record: list[Draws]):
        self._step, self._params, self._shared, self._record = step, params, shared, record

    def sample(self, num_particles: int = 1, *, linear: bool = False,
               detach: bool = False) -> Draws:
        step = self._step
        trace = Trace()
        for address, dist, value, log_prob in step.draw(
                self._params, self._shared, step.particles(num_particles), detach):
            plates, infer = step.guide_sites[address]
            trace.add(Site(address, "sample", dist, value, log_prob, plates, infer=infer))
        estimators = {} if detach else dict.fromkeys(trace.sites, _REPARAM)
        draws = Draws(trace, num_particles, step.particle_dim, estimators, step.model_pilot)
        self._record.append(draws)
        return draws

    def log_density(self, zs: Draws) -> Terms:
        return Terms.of(zs.trace, zs, latent_only=True)


class CompiledModel:
    """The model view of an objective program (``ModelView``'s interface): the generated
    model at the run's own arguments."""

    def __init__(self, step: CompiledObjective, params: dict[str, Tensor],
                 shared: dict[str, Tensor]):
        self._step, self._params, self._shared = step, params, shared

    def frozen(self) -> CompiledModel:
        held = {a: v.detach() for a, v in self._params.items()}
        return CompiledModel(self._step, held, self._shared)

    def log_density(self, zs: Draws, *args, **kwargs) -> Terms:
        step = self._step
        if not _same(args, step.args) or kwargs.keys() != step.kwargs.keys() or not _same(
                tuple(kwargs.values()), tuple(step.kwargs[k] for k in kwargs)):
            raise Unsupported("the objective evaluates the model at other arguments")
        values = {n: s.value for n, s in zs.trace.sites.items()}
        plates = step.model_plates
        sites = step.score(self._params, self._shared, step.particles(zs.num_particles), values)
        return Terms(tuple(Term(address, log_prob, plates[address])
                           for address, _, _, log_prob in sites), zs)


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class CompiledObjective:
    """``objective`` on the compiled guide and model: :meth:`surrogate` is one step's."""

    def __init__(self, objective: Expectation, guide: Graph, model: Graph, args: tuple,
                 kwargs: dict, particle_dim: int, model_pilot: Trace):
        self.objective, self.args, self.kwargs = objective, args, kwargs
        self.particle_dim, self.model_pilot = particle_dim, model_pilot
        self.draw = _GuideCodeGen(guide, "draw").compile()
        self.score = _ModelCodeGen(model, "score").compile()
        self.guide_sites = {n.address: (n.meta.plates, {k: v for k, v in n.meta.attrs
                                                       if k != "scale"})
                            for n in guide.nodes_of("sample")}
        self.model_plates = {n.address: n.meta.plates for n in model.nodes
                             if n.kind in ("sample", "observe", "factor")}
        addresses = [n.address for g in (guide, model) for n in g.nodes_of("param")]
        self.params = _Params(list(dict.fromkeys(addresses)))

    def particles(self, num: int) -> PlateFrame | None:
        """The plate that ``num`` particles take (None for one: no dim of its own)."""
        return None if num == 1 else PlateFrame(PARTICLE_PLATE, num, self.particle_dim, num)

    def surrogate(self) -> Surrogate:
        """One evaluation of the objective: its value and surrogate."""
        params, shared, record = self.params.values(), {}, []
        return self.objective.run_views(CompiledModel(self, params, shared),
                                        CompiledGuide(self, params, shared, record),
                                        record, self.args, self.kwargs)


def compiled_objective(model: Callable, guide: Callable, objective: Expectation, args: tuple,
                       kwargs: dict) -> tuple[CompiledObjective | None, str]:
    """The compiled step of this run, or ``None``; and ``COMPILED`` or why not. Call it
    inside the run's param store once guide and model have created their params; it leaves
    the random stream where it was."""
    try:
        with forked():
            graphs = [_as_model(f).graph(*args, **kwargs) for f in (guide, model)]
    except Exception as error:  # noqa: BLE001 - any model that does not trace runs on handlers
        return None, f"it does not trace to a graph ({type(error).__name__}: {error})"
    guide_graph, model_graph = graphs
    why = _mismatch(guide_graph, model_graph)
    if why:
        return None, why
    model_pilot, guide_pilot = objective._pilot_traces(model, guide, args, kwargs)
    particle_dim = -(max(batch_ndims(model_pilot), batch_ndims(guide_pilot)) + 1)
    try:
        step = CompiledObjective(objective, guide_graph, model_graph, args, kwargs,
                                 particle_dim, model_pilot)
        why = _disagreement(step, model, guide)
    except Unsupported as refusal:
        return None, str(refusal)
    except Exception as error:  # noqa: BLE001 - the handler path reports the model's errors
        return None, f"its compiled step failed ({type(error).__name__}: {error})"
    return (None, why) if why else (step, COMPILED)


def _as_model(fn: Callable) -> Model:
    return fn if isinstance(fn, Model) else Model(fn)


def _mismatch(guide: Graph, model: Graph) -> str:
    """Why the graphs cannot make one step (the general path then reports it), or ''."""
    proposed = {n.address for n in guide.nodes_of("sample")}
    missing = sorted(n.address for n in model.nodes_of("sample") if n.address not in proposed)
    if missing:
        return f"the guide does not propose the model's latent sites {missing}"
    plates: dict[str, tuple] = {}
    for node in (*guide.nodes_of("input"), *model.nodes_of("input")):
        name = node.meta.attr(SUBSAMPLE_ATTR)
        if name is not None and plates.setdefault(
                name, (node.meta.attr("size"), node.meta.shape)) != (node.meta.attr("size"),
                                                                      node.meta.shape):
            return f"the guide and model subsample plate {name!r} differently"
    return ""


def _disagreement(step: CompiledObjective, model: Callable, guide: Callable) -> str:
    """'' when one compiled evaluation equals the general path's on the same stream (both on
    a fork, the objective's running state put back); else why not. The compiled one's
    errors propagate (the caller names them); the general one's are the refusal."""
    objective = step.objective
    state = objective.state_dict()
    try:
        with torch.no_grad():
            with forked():
                compiled = step.surrogate().value
            try:
                with forked(), subsample():
                    general = objective(model, guide, *step.args, **step.kwargs).value
            except Exception as error:  # noqa: BLE001 - the general path will say it again
                return f"the general path fails on it ({type(error).__name__}: {error})"
    finally:
        objective.load_state_dict(state)
    if not torch.allclose(compiled, general, rtol=1e-5, atol=1e-6, equal_nan=True):
        return (f"its compiled step gives {float(compiled):.6g} where the general path gives "
                f"{float(general):.6g}")
    return ""
