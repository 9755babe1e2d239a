"""The particle engine: a graph's schedule with one generated, batched function per step.

:meth:`ParticleEngine.from_graph` cuts the graph into steps (:mod:`.schedule`) and lowers
each to straight-line torch code (:mod:`.lowering`) once; :meth:`~ParticleEngine.run_step`
then costs one call of that code: it takes the N particles' live latents, draws the step's
new latents from their priors (one generator call per site for all rows) and returns the
per-particle log weight of each observed site and their sum (the bootstrap weights). Data
and params are arguments of the generated code: :meth:`~ParticleEngine.set_params` swaps
param values without generating anything. :meth:`~ParticleEngine.score_step` scores given
values of a step's latents as well (log p of every site of the step), for conditional SMC
and checks against the joint density.

With ``optimal=True`` a step whose locally optimal proposal is Gaussian in closed form
(:mod:`.optimal`) draws its latent from it; ``proposal_kinds`` says which steps do.
:meth:`~ParticleEngine.lookahead_log_weight` gives an auxiliary particle filter its
first-stage weights (:mod:`.lookahead`), its code generated on first use.

Families without a sampling rule are drawn by torch, and sites whose tape rule cannot
express them are scored by torch's ``log_prob``: ``fallback_reason`` names them, and one
:class:`SamplerFallbackWarning` says so when the engine is built.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def walk(ys):
    ...     x = 0.0
    ...     for t in range(len(ys)):
    ...         x = sample(f"x_{t}", Normal(0.9 * x, 1.0))
    ...         sample(f"y_{t}", Normal(x, 1.0), obs=ys[t])
    >>> engine = ParticleEngine.from_graph(walk.graph(torch.zeros(3)))
    >>> gen = torch.Generator().manual_seed(0)
    >>> live = {}
    >>> for k in range(engine.num_steps):
    ...     out = engine.run_step(k, live, 100, gen)
    ...     live.update(out.values)
    >>> engine.num_steps, out.log_weight.shape, out.log_weight.dtype, engine.fallback_reason
    (3, torch.Size([100]), torch.float64, None)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ppl.inference.lowering.tape.build import per_chain_dtype
from ppl.inference.lowering.tape.tape import Tape, Unsupported, Value, Var
from ppl.ir import Graph
from ppl.ir.errors import IRError
from ppl.params import get_param

from . import rng_ops
from .lookahead import PriorMeanStep, lookahead_kind
from .lowering import StepLowering, torch_log_prob, torch_sample, value_dtype
from .optimal import GaussianStep, gaussian_step, optimal_proposal
from .program import StepOutput
from .proposal import proposal_steps
from .schedule import Schedule, Step, needed_after_sets


class SamplerFallbackWarning(UserWarning):
    """Some site is drawn or scored by torch's distributions instead of the generated code
    (slower, and the reason names the family and site)."""


@dataclass
class StepFunction:
    """A step's generated code and the order of its arguments and results: ``fn(C, _gen,
    *live latents, *data and params)`` returns the drawn values, the scored sites' weights,
    then their sum. ``tape`` and ``outputs`` (the drawn values, then the summed weight) are
    what the code was generated from, for other backends (the C filter of
    ``ppl.inference.smc.native``). ``cached`` keeps the data and param arguments expanded to
    one particle count (and the engine's param version they were made for)."""

    fn: Callable
    reads: tuple[str, ...]
    read_dtypes: tuple[torch.dtype, ...]
    inputs: tuple[tuple[str, str], ...]  # ("data", input name) or ("param", address)
    drawn: tuple[str, ...]
    scored: tuple[str, ...]
    fallbacks: tuple[str, ...] = ()
    tape: Tape | None = field(default=None, repr=False)
    outputs: tuple[Value, ...] = ()
    cached: tuple = field(default=(None, None, ()))

    @property
    def source(self) -> str:
        return self.fn.source


class ParticleEngine:
    """A :class:`~.program.ParticleProgram` generated from a graph (see the module doc)."""

    def __init__(self, graph: Graph, schedule: Schedule, steps: Sequence[StepFunction],
                 params: dict[str, torch.Tensor], proposal: Graph | None = None,
                 optimal: Sequence[GaussianStep | None] | None = None):
        self.graph, self.schedule, self.proposal = graph, schedule, proposal
        self.steps = tuple(steps)
        self.optimal = tuple(optimal or (None,) * schedule.num_steps)
        proposed = set() if proposal is None else {n.address for n in proposal.latent_nodes}
        self.proposal_kinds: tuple[str, ...] = tuple(
            "optimal" if plan is not None
            else "guide" if proposed.intersection(step.latents) else "prior"
            for plan, step in zip(self.optimal, schedule.steps, strict=True))
        self.lookahead_kinds: tuple[str, ...] = tuple(
            lookahead_kind(graph, step, kind)
            for step, kind in zip(schedule.steps, self.proposal_kinds, strict=True))
        self._lookaheads: dict[int, StepFunction] = {}
        self._params = params
        self._param_version = 0
        self._data = {(role, name): _as_input(value)
                      for role, g in (("model", graph), ("proposal", proposal)) if g is not None
                      for name, value in g.data.items()}
        self._needed_after = needed_after_sets([s.latents for s in schedule.steps],
                                               [s.reads for s in self.steps])
        self._scorers: dict[int, StepFunction] = {}
        reasons = dict.fromkeys(r for step in self.steps for r in step.fallbacks)
        self.fallback_reason: str | None = "; ".join(reasons) or None
        if self.fallback_reason is not None:
            warnings.warn(f"particle engine for {graph.name!r}: {self.fallback_reason}",
                          SamplerFallbackWarning, stacklevel=3)

    @classmethod
    def from_graph(cls, graph: Graph, schedule: Schedule | Sequence[Sequence[str]] | None = None,
                   proposal: Graph | None = None,
                   params: Mapping[str, torch.Tensor] | None = None,
                   optimal: bool = False) -> ParticleEngine:
        """The engine of ``graph`` under ``schedule`` (a :class:`Schedule`, a partition into
        address groups, or None for the default one). ``proposal``: a graph whose sites draw
        some of the model's latents (:mod:`.proposal`) instead of their priors; the weights
        are then ``log p - log q``. ``optimal``: draw each step that has a closed-form locally
        optimal proposal from it (:mod:`.optimal`), the others from their priors; a
        ``ValueError`` gives each step's reason when none has. ``params`` overrides values of
        the graphs' params (the others are read from the param store once, here)."""
        if not isinstance(schedule, Schedule):
            schedule = Schedule.from_graph(graph, schedule)
        plans = _optimal_plans(graph, schedule) if optimal else [None] * schedule.num_steps
        if optimal and proposal is not None:
            raise ValueError("give a proposal graph or optimal=True, not both")
        graphs = (graph,) if proposal is None else (graph, proposal)
        values = {node.address: get_param(node.address, None, node.kwarg_dict.get("constraint"))
                  for g in graphs for node in g.nodes_of("param")}
        values.update(params or {})
        proposed = (proposal_steps(schedule, proposal) if proposal is not None
                    else [None] * schedule.num_steps)
        steps = [_lower_step(graph, k, step, score_all=False, params=values, proposal=proposal,
                             proposal_step=q, optimal=plan)
                 for k, (step, q, plan) in enumerate(zip(schedule.steps, proposed, plans,
                                                         strict=True))]
        return cls(graph, schedule, steps, {a: _as_input(v) for a, v in values.items()},
                   proposal, plans)

    # -- the ParticleProgram protocol ---------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    def step_sites(self, k: int) -> tuple[str, ...]:
        return self.schedule.step_sites(k)

    def needed_after(self, k: int) -> frozenset[str]:
        """The latents of steps ``<= k`` that later steps (the proposal's too) read."""
        return self._needed_after[k]

    def run_step(self, k: int, live: Mapping[str, torch.Tensor], num_particles: int,
                 generator: torch.Generator | None = None) -> StepOutput:
        """Draw step ``k``'s latents for ``num_particles`` particles given ``live`` (every
        latent the step reads, each ``(N, *shape)``): from the proposal where it proposes
        them, else from their priors. The log weight is the sum of the step's observed sites'
        log densities, plus ``log p - log q`` of each proposed latent."""
        return self._call(self.steps[k], k, live, num_particles, generator)

    def score_step(self, k: int, live: Mapping[str, torch.Tensor],
                   values: Mapping[str, torch.Tensor], num_particles: int) -> StepOutput:
        """Step ``k``'s sites scored at given ``values`` of its latents: the log weight is
        ``log p(latents, observations of step k | live)``. Its code is generated on first
        use."""
        scorer = self.scorer(k)
        missing = [a for a in self.schedule.steps[k].latents if a not in values]
        if missing:
            raise KeyError(f"score_step({k}) needs values for the step's latents {missing}")
        return self._call(scorer, k, {**live, **values}, num_particles, None)

    def scorer(self, k: int) -> StepFunction:
        """The generated function of :meth:`score_step` (on first use): step ``k``'s
        latents are read as live values, nothing is drawn, the output is the log weight."""
        if k not in self._scorers:
            self._scorers[k] = _lower_step(self.graph, k, self.schedule.steps[k],
                                           score_all=True, params=self._params)
        return self._scorers[k]

    def lookahead_log_weight(self, k: int, live: Mapping[str, torch.Tensor],
                             num_particles: int) -> torch.Tensor:
        """``log p̂(y_k | live)``, ``(N,)``: the exact predictive at a locally optimal step,
        else the step's observation densities with its latents at their prior means, 0 where
        a latent is discrete (``lookahead_kinds``; the auxiliary filter's first stage)."""
        if self.lookahead_kinds[k] == "none":
            return torch.zeros(num_particles, dtype=torch.float64)
        if k not in self._lookaheads:
            self._lookaheads[k] = _lower_step(self.graph, k, self.schedule.steps[k],
                                              score_all=False, params=self._params,
                                              optimal=self.optimal[k], lookahead=True)
        return self._call(self._lookaheads[k], k, live, num_particles, None).log_weight

    def transition_log_density(self, k: int, prev: Mapping[str, torch.Tensor],
                               values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``log p(values_m, observations of step k | prev_n)`` for every pair: ``prev`` holds
        the N particles' latents step ``k`` reads, ``values`` M draws of its latents; the
        result is ``(M, N)`` (the smoothing protocol of ``ppl.inference.smc.smoothing``).
        The observations' term is kept: it depends on ``prev`` where they read it."""
        m = next(iter(values.values())).shape[0]
        n = next(iter(prev.values())).shape[0] if prev else 1
        pairs_prev = {a: v.repeat(m, *(1,) * (v.dim() - 1)) for a, v in prev.items()}
        pairs_values = {a: v.repeat_interleave(n, dim=0) for a, v in values.items()}
        return self.score_step(k, pairs_prev, pairs_values, m * n).log_weight.view(m, n)

    # -- params -------------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, torch.Tensor]:
        return dict(self._params)

    def set_params(self, values: Mapping[str, torch.Tensor]) -> None:
        """New values for some params; the generated code is kept (they are its arguments)."""
        unknown = sorted(set(values) - set(self._params))
        if unknown:
            raise KeyError(f"graph {self.graph.name!r} has no params {unknown}; its params: "
                           f"{sorted(self._params)}")
        for address, value in values.items():
            old = self._params[address]
            value = _as_input(value)
            if value.shape != old.shape:
                raise ValueError(f"param {address!r} has shape {list(old.shape)}, got "
                                 f"{list(value.shape)}")
            self._params[address] = value
        self._param_version += 1

    # -- running ------------------------------------------------------------------------------
    def _call(self, step: StepFunction, k: int, live: Mapping[str, torch.Tensor],
              num_particles: int, generator: torch.Generator | None) -> StepOutput:
        try:
            latents = [v if v.dtype is dtype else v.to(dtype)
                       for v, dtype in zip([live[a] for a in step.reads], step.read_dtypes,
                                           strict=True)]
        except KeyError:
            missing = [a for a in step.reads if a not in live]
            raise KeyError(f"step {k} reads latents {missing} of earlier steps; keep them in "
                           f"live (they are in needed_after({k - 1}))") from None
        count, version, inputs = step.cached
        if count != num_particles or version != self._param_version:
            inputs = tuple(self._input(kind, key, num_particles) for kind, key in step.inputs)
            step.cached = (num_particles, self._param_version, inputs)
        gen = torch.default_generator if generator is None else generator
        outputs = step.fn(num_particles, gen, *latents, *inputs)
        drawn = len(step.drawn)
        return StepOutput(dict(zip(step.drawn, outputs[:drawn], strict=True)), outputs[-1],
                          dict(zip(step.scored, outputs[drawn:-1], strict=True)))

    def input_value(self, role: str, key: str) -> torch.Tensor:
        """The current value of a step's run-time input (a ``StepFunction.inputs`` key: a
        param's, or a graph's data), one for all particles."""
        return self._params[key] if role == "param" else self._data[role, key]

    def _input(self, role: str, key: str, num_particles: int) -> torch.Tensor:
        value = self.input_value(role, key)
        return value.expand(num_particles, *value.shape)


def _as_input(value: torch.Tensor) -> torch.Tensor:
    value = torch.as_tensor(value)
    return value.to(per_chain_dtype(value))


def _optimal_plans(graph: Graph, schedule: Schedule) -> list[GaussianStep | None]:
    found = [gaussian_step(graph, step) for step in schedule.steps]
    if not any(isinstance(plan, GaussianStep) for plan in found):
        reasons = "; ".join(f"step {k}: {why}" for k, why in enumerate(found[:6]))
        raise ValueError(f"no step of graph {graph.name!r} has a closed-form locally optimal "
                         f"proposal (a Normal latent observed through Normal sites whose means "
                         f"are affine in it): {reasons}{' ...' if len(found) > 6 else ''}")
    return [plan if isinstance(plan, GaussianStep) else None for plan in found]


def _lower_step(graph: Graph, k: int, step: Step, score_all: bool,
                params: Mapping[str, torch.Tensor], proposal: Graph | None = None,
                proposal_step: Step | None = None, optimal: GaussianStep | None = None,
                lookahead: bool = False) -> StepFunction:
    """Generate step ``k``'s function: live latents, data and params become tape inputs;
    with a proposal, its sub-graph draws (and scores) the latents it proposes first; with
    ``optimal``, the latent comes from its locally optimal proposal. A ``lookahead``
    function returns only the step's look-ahead log weight (:mod:`.lookahead`)."""
    tape = Tape()
    proposing = proposal_step is not None and not score_all and not lookahead
    reads = tuple(dict.fromkeys((*step.reads, *(proposal_step.reads if proposing else ()))))
    live = {a: tape.input(f"l{i}", _shape(graph, a), value_dtype(graph.site(a)))
            for i, a in enumerate(reads)}
    given = ({a: tape.input(f"g{i}", _shape(graph, a), value_dtype(graph.site(a)))
              for i, a in enumerate(step.latents)} if score_all else {})
    inputs: list[tuple[str, str]] = []
    param_vars: dict[str, Var] = {}
    proposed, log_q, fallbacks = {}, {}, []
    if proposing:
        data, param_inputs = _tape_inputs(tape, proposal, proposal_step.nodes, "proposal",
                                          params, inputs, param_vars)
        q = StepLowering(proposal, tape, proposal_step.nodes, proposal_step.sites, live=live,
                         score_draws=True, data=data, params=param_inputs)
        _run(q, k, proposal)
        proposed, log_q, fallbacks = q.drawn, q.site_weights, q.fallbacks
    data, param_inputs = _tape_inputs(tape, graph, step.nodes, "model", params, inputs,
                                      param_vars)
    if optimal is not None and not score_all:
        proposed, log_q = optimal_proposal(graph, tape, step, optimal, live, data, param_inputs,
                                           at_mean=lookahead)
    lowering = PriorMeanStep if lookahead and optimal is None else StepLowering
    p = lowering(graph, tape, step.nodes, step.sites, live=live, given={**given, **proposed},
                 data=data, params=param_inputs)
    _run(p, k, graph)
    scored = tuple(a for a in step.sites if a in p.site_weights)
    weights = [p.site_weights[a] - log_q[a] if a in log_q else p.site_weights[a] for a in scored]
    total: Value = 0.0
    for weight in weights:
        total = weight + total
    tape.namespace.update(_rng=rng_ops, _torch_sample=torch_sample,
                          _torch_log_prob=torch_log_prob)
    drawn_values = {**proposed, **p.drawn}
    drawn = () if lookahead else tuple(a for a in step.latents if a in drawn_values)
    if lookahead:
        scored, weights = (), []
    arguments = ["C", "_gen", *(v.name for v in (*live.values(), *given.values())),
                 *(v.name for v in tape.inputs[len(live) + len(given):])]
    kind = "score" if score_all else "lookahead" if lookahead else "step"
    fn = tape.compile([*(drawn_values[a] for a in drawn), *weights, total], arguments,
                      f"{kind}_{k}")
    reads = (*reads, *given)
    dtypes = tuple(value_dtype(graph.site(a)) for a in reads)
    return StepFunction(fn, reads, dtypes, tuple(inputs), drawn, scored,
                        (*fallbacks, *p.fallbacks), tape,
                        (*(drawn_values[a] for a in drawn), total))


def _tape_inputs(tape: Tape, graph: Graph, nodes: Sequence[str], role: str,
                 params: Mapping[str, torch.Tensor], inputs: list[tuple[str, str]],
                 param_vars: dict[str, Var]) -> tuple[dict[str, Var], dict[str, Var]]:
    """Tape inputs for the input and param nodes among ``nodes``; ``inputs`` gets the key of
    each, in argument order, ``param_vars`` the params' (one input for a param that both
    graphs read)."""
    data, param_inputs = {}, {}
    for name in nodes:
        node = graph.node(name)
        if node.kind == "input":
            if node.name not in graph.data:
                raise IRError(f"graph {graph.name!r}: input {node.name!r} has no value; the "
                              "particle engine needs every input bound")
            value = _as_input(graph.data[node.name])
            data[name] = tape.input(f"d{len(inputs)}", tuple(value.shape), value.dtype)
            inputs.append((role, name))
        elif node.kind == "param":
            if node.address not in param_vars:
                value = _as_input(params[node.address])
                param_vars[node.address] = tape.input(f"d{len(inputs)}", tuple(value.shape),
                                                      value.dtype)
                inputs.append(("param", node.address))
            param_inputs[node.address] = param_vars[node.address]
    return data, param_inputs


def _run(lowering: StepLowering, k: int, graph: Graph) -> None:
    try:
        lowering.run()
    except Unsupported as refusal:
        raise IRError(f"the particle engine cannot lower step {k} (sites "
                      f"{sorted(lowering.own)}) of graph {graph.name!r}: {refusal}") from None


def _shape(graph: Graph, address: str) -> tuple[int, ...]:
    return tuple(graph.site(address).meta.shape or ())
