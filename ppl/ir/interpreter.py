"""Evaluate a graph node by node: one protocol for every meaning of a graph.

``Interpreter.run`` walks the nodes in order. For each node it resolves the arguments (a
``Ref`` is looked up in ``env``, the values of the nodes already run; a nested ``DistSpec``
is built by the :meth:`~Interpreter.distribution` hook) and calls the method named after
the node's kind with the node and its resolved ``args`` and ``kwargs``; the result is the
node's value in ``env``. For ``sample`` and ``observe`` nodes the kwargs are the
distribution's parameters (``site_distribution`` builds it). A meaning is a subclass that
overrides what it changes (the pattern of torch.fx's ``Interpreter``); a "value" is whatever
the subclass computes with: a tensor here, a source expression for the code generators of
``ppl.ir.codegen``, a tape value for the lowering's tape builder.

The reference meanings of a model:

- ``Simulate``: draw every latent from its prior; returns ``{address: value}``.
- ``LogDensity``: given a value for every latent, the joint log density.
- ``Generate``: given values for some latents, draw the rest; returns the values and the
  log weight ``log p(given latents, observations | drawn latents)``.

All three run loop nodes (``ppl.scan``) step by step (``RunsLoops``): body site ``x`` at
step t is read from and reported under ``x[t]``. Any other interpreter refuses a loop
node, naming itself, unless it implements ``loop`` (or the graph is unrolled first).

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> from ppl.ir.tracer import trace_graph
    >>> @model
    ... def m():
    ...     x = sample("x", Normal(0.0, 1.0))
    ...     sample("y", Normal(x, 1.0), obs=torch.tensor(1.0))
    >>> g = trace_graph(m)
    >>> round(float(LogDensity(g, {"x": torch.tensor(0.0)}).run()), 4)
    -2.3379

A new meaning overrides what it changes; here the log prior leaves observations out:

    >>> class LogPrior(LogDensity):
    ...     def observe(self, node, args, kwargs):
    ...         return args[0]
    >>> round(float(LogPrior(g, {"x": torch.tensor(0.0)}).run()), 4)
    -0.9189
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.distributions import Distribution, biject_to

from ppl.params import get_param
from ppl.randomness import drawing
from ppl.registry import get_family
from ppl.subsample import SUBSAMPLE_ATTR, draw_subsample
from ppl.trace import site_log_prob

from .errors import IRError
from .graph import Graph
from .loop import body_inputs, step_address
from .node import DistSpec, Node, Ref, map_refs
from .ops import resolve_op


def build_distribution(spec: DistSpec, resolve) -> Distribution:
    """Instantiate a ``DistSpec``, resolving refs (and nested specs) with ``resolve``."""
    params = {
        k: build_distribution(v, resolve) if isinstance(v, DistSpec) else map_refs(v, resolve)
        for k, v in spec.params
    }
    return get_family(spec.family).build(**params)


def draw(dist: Distribution) -> torch.Tensor:
    """One prior draw; a family without a sampler (e.g. ``ImproperUniform``) gives the image
    of zeros under its support's bijector instead: a valid point of the right shape, which is
    all tracing and layout need."""
    try:
        with drawing():
            return dist.rsample() if dist.has_rsample else dist.sample()
    except NotImplementedError:
        bijector = biject_to(dist.support)
        return bijector(torch.zeros(bijector.inverse_shape(dist.batch_shape + dist.event_shape)))


class Interpreter:
    """Runs a graph; ``run()`` returns the output node's value, ``self.env`` holds all values."""

    def __init__(self, graph: Graph, inputs: dict[str, torch.Tensor] | None = None,
                 params: dict[str, torch.Tensor] | None = None):
        self.graph = graph
        self.inputs = {**graph.data, **(inputs or {})}
        self.params = dict(params or {})
        self.env: dict[str, Any] = {}
        self.step: int | None = None  # inside a loop body: the step being run

    def run(self) -> Any:
        return self.walk()

    def walk(self) -> Any:
        """Run every node in order; the output node's value."""
        for node in self.graph.nodes:
            self.env[node.name] = self.run_node(node)
        return self.env[self.graph.output.name]

    def site_address(self, node: Node) -> str:
        """The address of ``node``'s site here: ``x[t]`` for body site ``x`` at step t."""
        return node.address if self.step is None else step_address(node.address, self.step)

    def run_node(self, node: Node) -> Any:
        """Resolve the node's arguments and call its kind's method."""
        args = tuple(self.resolve(a) for a in node.args)
        kwargs = {k: self.resolve(v) for k, v in node.kwargs}
        return getattr(self, node.kind)(node, args, kwargs)

    # -- resolution -----------------------------------------------------------------------
    def resolve(self, arg: Any) -> Any:
        """An argument's value: refs looked up, a nested ``DistSpec`` built by the hook."""
        if isinstance(arg, DistSpec):
            return self.distribution(arg, {k: self.resolve(v) for k, v in arg.params})
        return map_refs(arg, self._lookup)

    def _lookup(self, ref: Ref) -> Any:
        return self.env[ref.name]

    def distribution(self, spec: DistSpec, params: dict[str, Any]) -> Any:
        """Hook: the distribution ``spec`` stands for, given its resolved ``params``."""
        return get_family(spec.family).build(**params)

    def site_distribution(self, node: Node, kwargs: dict[str, Any]) -> Any:
        """A sample or observe node's distribution, from its resolved parameters."""
        return self.distribution(DistSpec(node.target, node.kwargs), kwargs)

    # -- one method per node kind -----------------------------------------------------------
    def input(self, node: Node, args: tuple, kwargs: dict) -> Any:
        try:
            return self.inputs[node.name]
        except KeyError:
            plate = node.meta.attr(SUBSAMPLE_ATTR)
            if plate is not None:
                raise IRError(
                    f"graph {self.graph.name!r}: input {node.name!r} holds the indices of the "
                    f"subsampled plate {plate!r}, which {type(self).__name__} does not draw per "
                    "evaluation (Simulate, LogDensity and Generate do); pass them in inputs=, "
                    "or give the plate no subsample_size"
                ) from None
            raise IRError(
                f"graph {self.graph.name!r}: input {node.name!r} has no value; pass it in inputs="
            ) from None

    def param(self, node: Node, args: tuple, kwargs: dict) -> Any:
        if node.address in self.params:
            return self.params[node.address]
        return get_param(node.address, None, kwargs.get("constraint"))

    def call(self, node: Node, args: tuple, kwargs: dict) -> Any:
        return resolve_op(node.target)(*args, **kwargs)

    def sample(self, node: Node, args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define sample nodes")

    def observe(self, node: Node, args: tuple, kwargs: dict) -> Any:
        return args[0]

    def factor(self, node: Node, args: tuple, kwargs: dict) -> Any:
        return args[0]

    def output(self, node: Node, args: tuple, kwargs: dict) -> Any:
        return args[0]

    def loop(self, node: Node, args: tuple, kwargs: dict) -> Any:
        raise IRError(
            f"{type(self).__name__} does not run loop nodes (scan {node.name!r} of graph "
            f"{self.graph.name!r}); unroll the graph first with ppl.passes.unroll()"
        )


class RunsLoops(Interpreter):
    """Runs a loop node as a Python loop over its body: one copy of this interpreter per
    step (``step_interpreter``), whose results ``absorb`` folds into this one. A subsampled
    plate's indices not given in ``inputs`` are drawn afresh on each run, as the trace path
    draws them on each run of the model."""

    def input(self, node: Node, args: tuple, kwargs: dict) -> Any:
        plate = node.meta.attr(SUBSAMPLE_ATTR)
        if plate is None or node.name in self.inputs:
            return super().input(node, args, kwargs)
        return draw_subsample(node.meta.attr("size"), node.meta.shape[0])

    def loop(self, node: Node, args: tuple, kwargs: dict) -> tuple:
        body = self.graph.subgraphs[node.target]
        roles = body_inputs(body)
        init, xs, captured = args
        carry, ys = list(init), []
        for t in range(kwargs["length"]):
            values = [torch.tensor(t), *carry, *(x[t] for x in xs), *captured]
            inputs = {n.name: v for n, v in zip(body.inputs, values, strict=True)}
            child = self.step_interpreter(body, inputs, t)
            out = child.walk()
            self.absorb(child)
            carry, y = list(out[: len(roles["carry"])]), out[len(roles["carry"]):]
            ys.append(y)
        return (*carry, *(torch.stack(list(leaf)) for leaf in zip(*ys, strict=True)))

    def step_interpreter(self, body: Graph, inputs: dict[str, Any], t: int) -> RunsLoops:
        child = copy.copy(self)
        child.graph, child.inputs, child.env, child.step = body, inputs, {}, t
        child.reset()
        return child

    def reset(self) -> None:
        """Start the accumulators of a step's run afresh (shared ones stay shared)."""

    def absorb(self, child: RunsLoops) -> None:
        """Fold a step's results into this run."""


class Simulate(RunsLoops):
    """Draw from the prior; ``run()`` returns the values of all sample/observe/deterministic
    sites."""

    def __init__(self, graph: Graph, *args, **kw):
        super().__init__(graph, *args, **kw)
        self.reset()

    def sample(self, node: Node, args: tuple, kwargs: dict) -> torch.Tensor:
        return draw(self.site_distribution(node, kwargs))

    def reset(self) -> None:
        self.step_sites: dict[str, torch.Tensor] = {}

    def absorb(self, child: Simulate) -> None:
        self.step_sites.update(child.sites())

    def sites(self) -> dict[str, torch.Tensor]:
        """The values of the sample, observe and deterministic sites run so far."""
        here = {self.site_address(n): self.env[n.name] for n in self.graph.nodes
                if n.kind in ("sample", "observe") or n.is_deterministic_site}
        return {**here, **self.step_sites}

    def run(self) -> dict[str, torch.Tensor]:
        super().run()
        return self.sites()


class LogDensity(RunsLoops):
    """Joint log density of ``values`` (one per latent site, by address; ``x[t]`` for a
    loop's site ``x`` at step t)."""

    def __init__(self, graph: Graph, values: dict[str, torch.Tensor], **kw):
        super().__init__(graph, **kw)
        self.values = values
        self.reset()

    def reset(self) -> None:
        self.log_density = torch.zeros(())
        self.drawn: dict[str, torch.Tensor] = {}

    def absorb(self, child: LogDensity) -> None:
        self.log_density = self.log_density + child.log_density
        self.drawn.update(child.drawn)

    def add_site(self, node: Node, dist: Distribution, value: torch.Tensor) -> None:
        scale = node.meta.attr("scale")
        self.log_density = self.log_density + site_log_prob(dist, value, scale).sum()

    def sample(self, node: Node, args: tuple, kwargs: dict) -> torch.Tensor:
        address = self.site_address(node)
        try:
            value = self.values[address]
        except KeyError:
            raise IRError(f"log density needs a value for latent site {address!r}") from None
        self.add_site(node, self.site_distribution(node, kwargs), value)
        return value

    def observe(self, node: Node, args: tuple, kwargs: dict) -> torch.Tensor:
        self.add_site(node, self.site_distribution(node, kwargs), args[0])
        return args[0]

    def factor(self, node: Node, args: tuple, kwargs: dict) -> torch.Tensor:
        value = args[0]
        scale = node.meta.attr("scale")
        self.log_density = self.log_density + (value.sum() * (scale if scale is not None else 1.0))
        return value

    def run(self) -> torch.Tensor:
        super().run()
        return self.log_density


class Generate(LogDensity):
    """Given some latents, draw the others from their priors; ``run()`` returns
    ``(values, log_weight)`` with ``log_weight`` = log density of the given latents and the
    observations (the drawn latents' own densities cancel against the proposal)."""

    def sample(self, node: Node, args: tuple, kwargs: dict) -> torch.Tensor:
        address = self.site_address(node)
        if address in self.values:
            value = super().sample(node, args, kwargs)
        else:
            dist = self.site_distribution(node, kwargs)
            with drawing():
                value = dist.rsample() if dist.has_rsample else dist.sample()
        self.drawn[address] = value
        return value

    def run(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        log_weight = super().run()
        return dict(self.drawn), log_weight
