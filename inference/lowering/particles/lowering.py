"""One step of a schedule as generated, particle-batched torch code.

:class:`StepLowering` runs a step's sub-graph over a tape (:mod:`..tape`) whose leading
chain dimension holds the N particles: the latents of earlier steps, the graph's inputs
(data) and its params are inputs of the generated function, so new param values or other
particles never regenerate it; the call nodes replay through the tape's batched call
rules; a new latent is drawn by its family's sampling rule (``Family.sample``, written
against :mod:`.rng_ops`) as one recorded instruction; each scored site's log density comes
from its family's tape rule, summed per particle into one ``(N,)`` float64 weight.

A family without a sampling rule is drawn by its torch class, a site whose tape rule cannot
express it is scored by torch's ``log_prob``; both are recorded in ``fallbacks`` (one line
per family and reason) for the engine to report.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> from ppl.inference.lowering.tape.tape import Tape
    >>> @model
    ... def m():
    ...     x = sample("x", Normal(0.0, 1.0))
    ...     sample("y", Normal(x, 1.0), obs=torch.tensor(0.5))
    >>> g = m.graph()
    >>> step = StepLowering(g, Tape(), [n.name for n in g.nodes[:-1]], own={"x", "y"})
    >>> step.run()
    >>> sorted(step.drawn), sorted(step.site_weights)
    (['x'], ['y'])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ppl.inference.lowering.tape import prims as P
from ppl.inference.lowering.tape.build import NestedDistribution, TapeInterpreter
from ppl.inference.lowering.tape.tape import Tape, Unsupported, Value, Var, is_var
from ppl.ir import Graph
from ppl.ir.node import DistSpec, Node
from ppl.registry import Family, get_family


def value_dtype(node: Node) -> torch.dtype:
    """The dtype a site's particles are held in: int64 for integer values (categories),
    float64 otherwise (counts and booleans too, as torch's samplers give them)."""
    dtype = node.meta.dtype or ""
    return torch.int64 if dtype.startswith(("int", "i")) else torch.float64


@dataclass(frozen=True)
class DistributionSource:
    """A site's distribution with tape values as parameters; ``expression`` writes the
    source that builds it from the batched values (a nested one for a wrapper's base)."""

    family: Family
    params: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, family: Family, params: Mapping[str, Any]) -> DistributionSource:
        return cls(family, tuple(
            (k, cls.of(v.family, v.params) if isinstance(v, NestedDistribution) else v)
            for k, v in params.items()))

    def has_sampling_rule(self) -> bool:
        """Whether the family has a rule, and a wrapper's base has one too."""
        family = self.family
        if family.sample is None:
            return False
        base = dict(self.params).get(family.wraps) if family.wraps is not None else None
        return not isinstance(base, DistributionSource) or base.has_sampling_rule()

    def leaves(self) -> list[Var]:
        out: list[Var] = []
        for _, v in self.params:
            out.extend(v.leaves() if isinstance(v, DistributionSource) else _vars_in(v))
        return out

    def arguments(self, tape: Tape) -> str:
        return ", ".join(f"{k}={_expression(tape, v)}" for k, v in self.params)

    def expression(self, tape: Tape) -> str:
        return f"{tape.const(self.family.cls)}({self.arguments(tape)})"


def _vars_in(value: Any) -> list[Var]:
    if is_var(value):
        return [value]
    if isinstance(value, (tuple, list)):
        return [v for item in value for v in _vars_in(item)]
    return []


def _expression(tape: Tape, value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)  # a literal, so a sampling rule can see a 0 or a 1
    if isinstance(value, DistributionSource):
        return value.expression(tape)
    if is_var(value):
        return value.name
    if isinstance(value, (tuple, list)):
        return "(" + "".join(f"{_expression(tape, v)}, " for v in value) + ")"
    return tape.const(value)


class Draw(P.Prim):
    """The N particles' draws of one site, ``(C, *shape)``: the family's sampling rule, or
    its torch class's ``sample`` when it has none (``fallback``)."""

    def __init__(self, dist: DistributionSource, shape: tuple[int, ...], dtype: torch.dtype,
                 address: str):
        self.dist, self.shape, self.dtype, self.address = dist, shape, dtype, address
        self.name = f"draw {address}"
        self.fallback = not dist.has_sampling_rule()

    def infer(self, *args: Value, **attrs: Any) -> tuple[tuple[int, ...], torch.dtype]:
        return self.shape, self.dtype

    def emit(self, tape: Tape, out: Var, *args: Value, **attrs: Any) -> str:
        shape = "(C, " + "".join(f"{d}, " for d in self.shape) + ")"
        if self.fallback:
            return f"_torch_sample(_gen, {shape}, {self.dist.expression(tape)})"
        rule = tape.const(self.dist.family.sample)
        arguments = self.dist.arguments(tape)
        draw = f"{rule}(_rng, _gen, {shape}{', ' if arguments else ''}{arguments})"
        return draw if self.dtype == torch.float64 else f"{draw}.to({tape.const(self.dtype)})"


class TorchLogProb(P.Prim):
    """A site's per-particle log density by torch's ``log_prob`` (summed over the site's
    dims), for a parameterization the family's tape rule cannot express."""

    def __init__(self, dist: DistributionSource, weight: float):
        self.dist, self.weight = dist, weight
        self.name = f"log_prob {dist.family.name}"

    def infer(self, *args: Value, **attrs: Any) -> tuple[tuple[int, ...], torch.dtype]:
        return (), torch.float64

    def emit(self, tape: Tape, out: Var, value: Value, *args: Value, **attrs: Any) -> str:
        log_prob = (f"_torch_log_prob({self.dist.expression(tape)}, {_expression(tape, value)}, "
                    "C)")
        return log_prob if self.weight == 1.0 else f"{log_prob} * {self.weight!r}"


def torch_sample(gen: torch.Generator, shape: tuple[int, ...], dist: Any) -> torch.Tensor:
    """``dist`` expanded to the draw's batch shape and sampled by torch, from a global stream
    seeded by ``gen`` inside a forked RNG state: as reproducible as the rules, and the
    caller's global stream is left as it was."""
    batch = shape[: len(shape) - len(dist.event_shape)]
    seed = int(torch.randint(0, 2**62, (), generator=gen, device=gen.device))
    devices = [gen.device] if gen.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=gen.device.type):
        torch.manual_seed(seed)
        draws = dist.expand(torch.Size(batch)).sample()
    return draws.to(torch.float64) if draws.is_floating_point() else draws


def torch_log_prob(dist: Any, value: torch.Tensor, num_particles: int) -> torch.Tensor:
    log_prob = dist.log_prob(value).to(torch.float64)
    return log_prob.expand(num_particles, *log_prob.shape[1:]).reshape(num_particles, -1).sum(-1)


class StepLowering(TapeInterpreter):
    """Evaluate the nodes ``nodes`` (a step's sub-graph, graph order) on ``tape``.

    ``own``: the step's site addresses. ``live``: the tape inputs of earlier steps' latents;
    ``given``: tape inputs for some of the step's latents (scored, not drawn); every other
    latent of the step is drawn, and scored when ``score_draws``. ``data`` and ``params``:
    the tape inputs of the graph's input nodes (by node name) and params (by address).
    After :meth:`run`, ``drawn`` holds the drawn values and ``site_weights`` the scored
    sites' per-particle log densities (a ``Var`` or a constant), by address.
    """

    def __init__(self, graph: Graph, tape: Tape, nodes: Iterable[str], own: Iterable[str],
                 live: Mapping[str, Var] | None = None, given: Mapping[str, Var] | None = None,
                 score_draws: bool = False, data: Mapping[str, Var] | None = None,
                 params: Mapping[str, Var] | None = None):
        super().__init__(graph, blocks=(), tape=tape)
        self.nodes = tuple(nodes)
        self.own = frozenset(own)
        self.live, self.given = dict(live or {}), dict(given or {})
        self.score_draws = score_draws
        self.data, self.param_inputs = dict(data or {}), dict(params or {})
        self.drawn: dict[str, Var] = {}
        self.site_weights: dict[str, Value] = {}
        self.fallbacks: list[str] = []

    def run(self) -> None:
        for name in self.nodes:
            node = self.graph.node(name)
            if node.kind == "sample" and node.address not in self.own:
                value = self._live(node)
            elif node.kind == "observe" and node.address not in self.own:
                value = self.resolve(node.args[0])  # an earlier observation, read as data
            else:
                value = self.run_node(node)
            self.env[name] = value

    def _live(self, node: Node) -> Var:
        try:
            return self.live[node.address]
        except KeyError:
            raise Unsupported(f"site {node.address!r} is read by this step but neither drawn "
                              "here nor given as a live latent") from None

    def param(self, node: Node, args: tuple, kwargs: dict) -> Value:
        if node.address in self.param_inputs:
            return self.param_inputs[node.address]
        return super().param(node, args, kwargs)

    # -- random sites ---------------------------------------------------------------------
    def sample(self, node: Node, args: tuple, kwargs: dict) -> Value:
        spec = DistSpec(node.target, node.kwargs)
        if node.address in self.given:
            value = self.given[node.address]
        else:
            family = get_family(node.target)
            dist = DistributionSource.of(family, self._params(spec, node.address))
            draw = Draw(dist, tuple(node.meta.shape or ()), value_dtype(node), node.address)
            if draw.fallback:
                self.fallbacks.append(f"{family.name} has no sampling rule (site "
                                      f"{node.address!r}): drawn by torch's sampler")
            value = self.tape.record(draw, *dist.leaves())
            self.drawn[node.address] = value
            if not self.score_draws:
                return value
        self._score(node.address, lambda: self.site_terms(node, spec, value))
        return value

    def observe(self, node: Node, args: tuple, kwargs: dict) -> Value:
        value = args[0]
        self._score(node.address,
                    lambda: self.site_terms(node, DistSpec(node.target, node.kwargs), value))
        return value

    def factor(self, node: Node, args: tuple, kwargs: dict) -> Value:
        self._score(node.address, lambda: TapeInterpreter.factor(self, node, args, kwargs))
        return args[0]

    def site_terms(self, node: Node, spec: DistSpec, value: Value) -> None:
        """The family's tape rule; torch's ``log_prob`` where the rule cannot express the
        site (e.g. a Binomial whose count is drawn)."""
        try:
            super().site_terms(node, spec, value)
        except Unsupported as refusal:
            self.terms, self.constant = [], 0.0
            family = get_family(spec.family)
            dist = DistributionSource.of(family, self._params(spec, node.address))
            weight = node.meta.attr("scale")
            prim = TorchLogProb(dist, 1.0 if weight is None else float(weight))
            self.terms.append(self.tape.record(prim, value, *dist.leaves()))
            self.fallbacks.append(f"{family.name} log density by torch's log_prob (site "
                                  f"{node.address!r}: {refusal})")

    def _score(self, address: str, add_terms) -> None:
        """Collect one site's terms into its per-particle weight."""
        self.terms, self.constant = [], 0.0
        add_terms()
        total: Value = self.constant
        for term in self.terms:
            total = term + total
        self.site_weights[address] = total

