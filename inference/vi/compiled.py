"""The compiled VI step: guide and model traced once into graphs and run as generated
straight-line torch code, under the same objective program.

The general path runs the guide and the model through the handler stack at every step:
messages for each ``param`` (ten for a VAE's two networks), plates, traces, the
validation of each distribution. Within one ``VI`` run the arguments never change, so the
graphs of guide and model (``Model.graph``: params, data and subsample indices as inputs)
describe every step. From them :mod:`.step_code` emits a guide that draws its latent sites
and a model that scores them, each one Python function of the params; this module gives
the objective program views of them (:class:`CompiledGuide`, :class:`CompiledModel`) that
return the same ``Draws`` and ``Terms`` as the handler views: the surrogate, every
objective's estimator logic (the score and enumerated sites' dependencies are tracked
through the generated code as through the model) and the optimizer loop are shared.
``K`` particles take a batch dim of their own, each site broadcast along it as the general
path's vectorized runs broadcast it. A step takes the random stream as the general path
does (each plate's minibatch where the guide opens it, then each site's draw), so one seed
gives both paths the same loss and gradients. ``AutoNormal``'s constrained sites draw a
``TransformedDistribution``, which the graph IR has no family for: its graph is traced with
every site left on the reals (``AutoNormal.unconstrained``), and :class:`CompiledGuide`
maps those draws by their bijectors, a site then the value and log density the general
path's transformed draw gives (a mean-field guide: no site reads another).

:func:`compiled_objective` decides once per run. It refuses, naming why, a guide or model
that does not trace (a dynamic model, a ``mask`` handler, a scan loop, a distribution the
graph IR has no family for, such as a flow's), a guide site with a learned baseline (every
estimator compiles: the re-runs of measure-valued derivatives replay through the compiled
guide), an objective that evaluates the model at other arguments, and a compiled step whose
value differs from the general path's on the same draws (:meth:`CompiledObjective.check`,
on a fork of the stream: it also catches a graph that specialized on a shape the particles
change). Guide and model must be functions of their arguments, params and draws: Python
side effects happen at tracing only, and Python values they read are frozen there.
:class:`CheckedStep` checks again at the 10th, 100th, ... step and hands the rest of a run
whose values changed (an annealing factor a callback moves) to the general path;
``VI(..., fast_path=False)`` keeps such values live from the start.

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

import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import (
    Distribution,
    Transform,
    TransformedDistribution,
    constraints,
    transform_to,
)

from ppl.ir import Graph
from ppl.model import Model
from ppl.params import current_store
from ppl.randomness import forked
from ppl.runtime import PlateFrame
from ppl.subsample import SUBSAMPLE_ATTR, subsample
from ppl.trace import Site, Trace, site_log_prob
from ppl.vectorize import PARTICLE_PLATE, batch_ndims

from ..lowering.flat import FastPathWarning
from .guides import AutoNormal
from .mvd import Redraw
from .objectives import Draws, Expectation, Surrogate, Term, Terms, site_drawer
from .step_code import SiteDrawer, Unsupported, compile_guide, compile_model

__all__ = ["CompiledObjective", "CheckedStep", "compiled_objective", "COMPILED"]

COMPILED = "compiled (generated guide and model code)"


class CheckedStep:
    """The run's surrogate on the compiled step, checked against the general path again at
    the 10th, 100th, 1000th, ... evaluation (on forks: the run's draws stay the same). The
    graphs froze the Python values guide and model read at tracing; when one has changed
    since (an annealing factor that a callback moves), the values part, and the rest of the
    run takes the general path (``general``) with a :class:`FastPathWarning`: ``why`` then
    says from when and why, else it is ''."""

    def __init__(self, step: CompiledObjective, general: Callable[[], Surrogate]):
        self.step, self.general = step, general
        self.calls, self.next_check, self.why = 0, 10, ""

    def __call__(self) -> Surrogate:
        self.calls += 1
        if not self.why and self.calls == self.next_check:
            self.next_check *= 10
            why = self.step.check()
            if why:
                self.why = f"from evaluation {self.calls}: {why}"
                warnings.warn(f"VI: the compiled step no longer agrees with the general path "
                              f"({why}), as if guide or model read a Python value that changed "
                              "after tracing; the run goes on on the general path",
                              FastPathWarning, stacklevel=4)
        return self.general() if self.why else self.step.surrogate()


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
                 shared: dict[str, Tensor], record: list[Draws],
                 redraws: list[Redraw] | None):
        self._step, self._params, self._shared = step, params, shared
        self._record, self._redraws = record, redraws

    def sample(self, num_particles: int = 1, *, linear: bool = False,
               detach: bool = False) -> Draws:
        step = self._step
        particles = step.particles(num_particles)
        drawer = site_drawer(self._record, self._redraws, step.particle_dim, linear, detach)
        trace = Trace()
        for address, dist, value, log_prob in step.draw(
                self._params, self._shared, particles, SiteDrawer(drawer, step.infers)):
            if address in step.bijectors:
                dist, value, log_prob = step.mapped(address, dist, value)
            plates = _with_particles(step.guide_plates[address], particles)
            trace.add(Site(address, "sample", dist, value, log_prob, plates,
                           infer=step.infers.get(address, {})))
        draws = Draws(trace, num_particles, step.particle_dim, drawer.estimators,
                      step.model_pilot)
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
        particles = step.particles(zs.num_particles)
        sites = step.score(self._params, self._shared, particles, values)
        return Terms(tuple(Term(address, log_prob,
                                _with_particles(step.model_plates[address], particles))
                           for address, _, _, log_prob in sites), zs)


def _with_particles(plates: tuple[PlateFrame, ...],
                    particles: PlateFrame | None) -> tuple[PlateFrame, ...]:
    """A site's plates as the general path records them: the particle plate outermost."""
    return plates if particles is None else (particles, *plates)


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class CompiledObjective:
    """``objective`` on the compiled guide and model: :meth:`surrogate` is one step's."""

    def __init__(self, objective: Expectation, fns: tuple[Callable, Callable],
                 graphs: tuple[Graph, Graph], args: tuple, kwargs: dict,
                 pilots: tuple[Trace, Trace], bijectors: dict[str, Transform]):
        self.objective, self.args, self.kwargs = objective, args, kwargs
        self.bijectors = bijectors
        self.model_fn, self.guide_fn = fns
        model, guide = graphs
        self.model_pilot, guide_pilot = pilots
        self.particle_dim = -(max(batch_ndims(self.model_pilot), batch_ndims(guide_pilot)) + 1)
        self.draw = compile_guide(guide)
        self.score = compile_model(model)
        self.guide_plates = {n.address: n.meta.plates for n in guide.nodes_of("sample")}
        self.guide_scales = {n.address: n.meta.attr("scale") for n in guide.nodes_of("sample")}
        self.infers = {name: site.infer for name, site in guide_pilot.sites.items()}
        self.model_plates = {n.address: n.meta.plates for n in model.nodes
                             if n.kind in ("sample", "observe", "factor")}
        addresses = [n.address for g in (guide, model) for n in g.nodes_of("param")]
        self.params = _Params(list(dict.fromkeys(addresses)))

    def mapped(self, address: str, dist: Distribution,
               value: Tensor) -> tuple[Distribution, Tensor, Tensor]:
        """A guide site drawn on the reals (``dist``, ``value``) mapped to its support by its
        bijector, drawn and scored as the general path's ``TransformedDistribution`` is."""
        mapped = TransformedDistribution(dist, [self.bijectors[address]])
        value = self.bijectors[address](value)
        return mapped, value, site_log_prob(mapped, value, self.guide_scales[address])

    def particles(self, num: int) -> PlateFrame | None:
        """The plate that ``num`` particles take (None for one: no dim of its own)."""
        return None if num == 1 else PlateFrame(PARTICLE_PLATE, num, self.particle_dim, num)

    def check(self) -> str:
        """'' when one compiled evaluation equals the general path's on the same stream (both
        on a fork, the objective's running state put back); else why not. The compiled
        one's errors propagate; the general one's are the answer."""
        state = self.objective.state_dict()
        try:
            with torch.no_grad():
                with forked():
                    compiled = self.surrogate().value
                try:
                    with forked(), subsample():
                        general = self.objective(self.model_fn, self.guide_fn, *self.args,
                                                 **self.kwargs).value
                except Exception as error:  # noqa: BLE001 - the general path will say it again
                    return f"the general path fails on it ({type(error).__name__}: {error})"
        finally:
            self.objective.load_state_dict(state)
        if not torch.allclose(compiled, general, rtol=1e-5, atol=1e-6, equal_nan=True):
            return (f"its compiled step gives {float(compiled):.6g} where the general path "
                    f"gives {float(general):.6g}")
        return ""

    def surrogate(self) -> Surrogate:
        """One evaluation of the objective: its value and surrogate."""
        params, shared = self.params.values(), {}
        return self.objective.run_views(
            CompiledModel(self, params, shared),
            lambda record, redraws: CompiledGuide(self, params, shared, record, redraws),
            self.args, self.kwargs)


def compiled_objective(model: Callable, guide: Callable, objective: Expectation, args: tuple,
                       kwargs: dict) -> tuple[CompiledObjective | None, str]:
    """The compiled step of this run, or ``None``; and ``COMPILED`` or why not. Call it
    inside the run's param store once guide and model have created their params; it leaves
    the random stream where it was."""
    traced, bijectors = guide.unconstrained() if isinstance(guide, AutoNormal) else (guide, {})
    try:
        with forked():
            graphs = [_as_model(f).graph(*args, **kwargs) for f in (traced, model)]
    except Exception as error:  # noqa: BLE001 - any model that does not trace runs on handlers
        return None, f"it does not trace to a graph ({type(error).__name__}: {error})"
    guide_graph, model_graph = graphs
    why = _mismatch(guide_graph, model_graph)
    if why:
        return None, why
    pilots = objective.pilot_traces(model, guide, args, kwargs)
    try:
        step = CompiledObjective(objective, (model, guide), (model_graph, guide_graph), args,
                                 kwargs, pilots, bijectors)
        why = step.check()
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
