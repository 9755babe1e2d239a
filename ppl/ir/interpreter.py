"""Evaluate a graph node by node. The reference meanings of a model are interpreters:

- ``Simulate``: draw every latent from its prior; returns ``{address: value}``.
- ``LogDensity``: given a value for every latent, the joint log density.
- ``Generate``: given values for some latents, draw the rest; returns the values and the
  log weight ``log p(given latents, observations | drawn latents)``.

Subclass ``Interpreter`` and override one method per node kind to give a graph another
meaning (the code generator in ``ppl.ir.codegen`` mirrors these for speed).

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> from ppl.ir.tracer import trace_graph
    >>> @model
    ... def m():
    ...     sample("x", Normal(0.0, 1.0))
    >>> g = trace_graph(m)
    >>> round(float(LogDensity(g, {"x": torch.tensor(0.0)}).run()), 4)
    -0.9189
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import Distribution, biject_to

from ppl.params import get_param
from ppl.randomness import drawing
from ppl.registry import get_family

from .errors import IRError
from .graph import Graph
from .node import DistSpec, Node, Ref, map_refs
from .ops import resolve_op


def build_distribution(spec: DistSpec, resolve) -> Distribution:
    """Instantiate a ``DistSpec``, resolving refs (and nested specs) with ``resolve``."""
    params = {
        k: build_distribution(v, resolve) if isinstance(v, DistSpec) else map_refs(v, resolve)
        for k, v in spec.params
    }
    return get_family(spec.family).build(**params)


def site_log_prob(node: Node, dist: Distribution, value: torch.Tensor) -> torch.Tensor:
    """The site's total log density, with its recorded scale."""
    log_prob = dist.log_prob(value).sum()
    scale = node.meta.attr("scale")
    return log_prob * scale if scale is not None else log_prob


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

    def run(self) -> Any:
        for node in self.graph.nodes:
            self.env[node.name] = getattr(self, node.kind)(node)
        return self.env[self.graph.output.name]

    # -- helpers --------------------------------------------------------------------------
    def resolve(self, arg: Any) -> Any:
        if isinstance(arg, DistSpec):
            return build_distribution(arg, self._lookup)
        return map_refs(arg, self._lookup)

    def _lookup(self, ref: Ref) -> Any:
        return self.env[ref.name]

    def distribution(self, node: Node) -> Distribution:
        return build_distribution(DistSpec(node.target, node.kwargs), self._lookup)

    # -- one method per node kind -----------------------------------------------------------
    def input(self, node: Node) -> Any:
        try:
            return self.inputs[node.name]
        except KeyError:
            raise IRError(
                f"graph {self.graph.name!r}: input {node.name!r} has no value; pass it in inputs="
            ) from None

    def param(self, node: Node) -> torch.Tensor:
        if node.address in self.params:
            return self.params[node.address]
        return get_param(node.address, None, node.kwarg_dict.get("constraint"))

    def call(self, node: Node) -> Any:
        fn = resolve_op(node.target)
        args = [self.resolve(a) for a in node.args]
        kwargs = {k: self.resolve(v) for k, v in node.kwargs}
        return fn(*args, **kwargs)

    def sample(self, node: Node) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not define sample nodes")

    def observe(self, node: Node) -> torch.Tensor:
        return self.resolve(node.args[0])

    def factor(self, node: Node) -> torch.Tensor:
        return self.resolve(node.args[0])

    def output(self, node: Node) -> Any:
        return self.resolve(node.args[0])


class Simulate(Interpreter):
    """Draw from the prior; ``run()`` returns the values of all sample/observe/deterministic
    sites."""

    def sample(self, node: Node) -> torch.Tensor:
        return draw(self.distribution(node))

    def run(self) -> dict[str, torch.Tensor]:
        super().run()
        return {n.address: self.env[n.name] for n in self.graph.nodes
                if n.kind in ("sample", "observe") or n.is_deterministic_site}


class LogDensity(Interpreter):
    """Joint log density of ``values`` (one per latent site, by address)."""

    def __init__(self, graph: Graph, values: dict[str, torch.Tensor], **kw):
        super().__init__(graph, **kw)
        self.values = values
        self.log_density = torch.zeros(())

    def sample(self, node: Node) -> torch.Tensor:
        try:
            value = self.values[node.address]
        except KeyError:
            raise IRError(f"log density needs a value for latent site {node.address!r}") from None
        self.log_density = self.log_density + site_log_prob(node, self.distribution(node), value)
        return value

    def observe(self, node: Node) -> torch.Tensor:
        value = self.resolve(node.args[0])
        self.log_density = self.log_density + site_log_prob(node, self.distribution(node), value)
        return value

    def factor(self, node: Node) -> torch.Tensor:
        value = self.resolve(node.args[0])
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

    def sample(self, node: Node) -> torch.Tensor:
        if node.address in self.values:
            return super().sample(node)
        dist = self.distribution(node)
        with drawing():
            return dist.rsample() if dist.has_rsample else dist.sample()

    def run(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        log_weight = super().run()
        values = {n.address: self.env[n.name] for n in self.graph.nodes if n.kind == "sample"}
        return values, log_weight
