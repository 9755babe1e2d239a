"""Build a graph's flat, chain-batched potential and gradient as one generated function.

:class:`TapeInterpreter` runs the graph once over the tape: inputs and anything computed
from them alone are evaluated at build time, every value that depends on the position is
recorded. Each latent block is a slice of ``z``, mapped into its support with the same
bijector as ``biject_to``; log-density terms of the families, ``log|det J|`` and factors add
up to the log density, and the tape records its gradient by reverse accumulation. The
result is ``fn(z) -> (log_density (C,), grad (C, D))`` in float64 with no autograd, no
``Distribution`` objects and no per-site Python at run time; ``fn.source`` shows it.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import HalfNormal, Normal
    >>> from ppl.inference.lowering.flat import FlatModel
    >>> @model
    ... def m():
    ...     s = sample("s", HalfNormal(1.0))
    ...     sample("y", Normal(0.0, s), obs=torch.tensor(0.5))
    >>> flat = FlatModel.from_graph(m.graph())
    >>> fn = build_potential(flat.graph, flat.blocks, flat.supports)
    >>> log_p, grad = fn(torch.zeros(2, 1, dtype=torch.float64))
    >>> log_p.shape, grad.shape
    (torch.Size([2]), torch.Size([2, 1]))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch.distributions import constraints

from ppl.ir import Graph, Interpreter
from ppl.ir.interpreter import build_distribution
from ppl.ir.node import DistSpec, Node, map_refs
from ppl.ir.ops import resolve_op
from ppl.registry import Family, get_family
from ppl.shapes import broadcast_shapes

from . import ops
from . import prims as P
from .bijectors import INTERVALS, base_support, unconstrain
from .calls import call_rule
from .tape import Tape, Unsupported, Value, Var, contains_var, is_var, shape_of


def _as_float64(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().to(torch.float64)
    return value


def _scalar_as_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point():
        return float(value)
    return value


def _unbroadcast(tape: Tape, value: Any, site_shape: tuple[int, ...]) -> Any:
    """A parameter without the broadcasting that the site's value already carries: a
    constant whose entries are all equal (``Normal(zeros(8), ones(8))``) becomes one float,
    so ``x - 0.0`` and ``x / 1.0`` vanish, and a batched parameter expanded to the site's
    shape (``broadcast_all`` in a distribution's constructor) is used unexpanded, so
    ``log(scale)`` runs once, not once per data point."""

    def fits(shape: tuple[int, ...]) -> bool:
        return broadcast_shapes(tuple(shape), site_shape) == tuple(site_shape)

    if is_var(value):
        inner = tape.defining(value)
        while (
            inner is not None
            and inner.prim is P.EXPAND
            and is_var(inner.args[0])
            and fits(inner.args[0].shape)
        ):
            value, inner = inner.args[0], tape.defining(inner.args[0])
        return value
    if (
        isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and value.numel() > 0
        and fits(tuple(value.shape))
        and bool((value == value.reshape(-1)[0]).all())
    ):
        return float(value.reshape(-1)[0])
    return value


class TapeInterpreter(Interpreter):
    """Evaluate a graph with position-dependent values as tape ``Var`` s; collect log terms."""

    def __init__(
        self,
        graph: Graph,
        blocks: Sequence[Any],
        supports: dict[str, constraints.Constraint],
        per_chain: Sequence[str] = (),
    ):
        super().__init__(graph)
        self.tape = Tape()
        self.blocks = {b.address: b for b in blocks}
        self.supports = supports
        self.latents = {
            b.address: self.tape.input(f"u{i}", b.unconstrained_shape) for i, b in enumerate(blocks)
        }
        # graph inputs given per chain at run time (a Gibbs block's view of the other blocks)
        self.data = {
            name: self.tape.input(f"x{i}", tuple(torch.as_tensor(self.inputs[name]).shape),
                                  per_chain_dtype(self.inputs[name]))
            for i, name in enumerate(per_chain)
        }
        self.terms: list[Value] = []
        self.constant = 0.0

    # -- values ---------------------------------------------------------------------------
    def resolve(self, arg: Any) -> Any:
        if isinstance(arg, DistSpec):
            return arg
        return map_refs(_as_float64(arg) if isinstance(arg, torch.Tensor) else arg, self._lookup)

    def input(self, node: Node) -> Any:
        if node.name in self.data:
            return self.data[node.name]
        return _as_float64(super().input(node))

    def param(self, node: Node) -> torch.Tensor:
        return _as_float64(super().param(node))

    def call(self, node: Node) -> Any:
        if any(isinstance(a, DistSpec) for a in (*node.args, *(v for _, v in node.kwargs))):
            raise Unsupported(f"call {node.target} takes a distribution argument")
        args = [self.resolve(a) for a in node.args]
        kwargs = {k: self.resolve(v) for k, v in node.kwargs}
        if not contains_var((args, list(kwargs.values()))):
            return _as_float64(resolve_op(node.target)(*args, **kwargs))
        return call_rule(node.target)(self.tape, *args, **kwargs)

    # -- log density terms ----------------------------------------------------------------
    def add_term(self, term: Value, full_shape: tuple[int, ...], weight: float = 1.0) -> None:
        """Add ``sum(broadcast_to(term, full_shape)) * weight`` to the log density."""
        factor = weight * math.prod(full_shape) / math.prod(shape_of(term))
        if is_var(term):
            self.terms.append(P.sum_all(term) * factor)
        else:
            self.constant += float(torch.as_tensor(term, dtype=torch.float64).sum()) * factor

    def site_terms(self, node: Node, spec: DistSpec, value: Value) -> None:
        weight = node.meta.attr("scale")
        weight = 1.0 if weight is None else float(weight)
        params = self._params(spec, node.address)
        if not _depends_on_position(value, params):
            log_prob = build_distribution(spec, self._lookup).log_prob(_as_float64(value))
            self.add_term(log_prob, tuple(log_prob.shape), weight)
            return
        family = get_family(spec.family)
        terms = self.family_terms(family, params, value, node.address)
        value_shape = shape_of(value)
        batch = value_shape[: len(value_shape) - _event_dims(family, params)]
        full = broadcast_shapes(batch, *(shape_of(t) for t in terms))
        for term in terms:
            self.add_term(term, full, weight)

    def family_terms(
        self, family: Family, params: dict[str, Any], value: Value, address: str
    ) -> list[Value]:
        """The terms of the family's declared tape rule (``Unsupported`` without one)."""
        if family.log_density is None:
            raise Unsupported(
                f"no generated log density for family {family.name} (site {address!r})"
            )
        value_shape = shape_of(value)
        params = {
            k: v if k in family.vector_params else _unbroadcast(self.tape, v, value_shape)
            for k, v in params.items()
        }
        return family.log_density(ops, value, **params)

    def _params(self, spec: DistSpec, address: str | None = None) -> dict[str, Any]:
        """Resolved parameters; 0-d constants become Python floats so they fold and simplify,
        a distribution parameter (a wrapper's base) becomes a :class:`NestedDistribution`."""
        return {
            k: (
                NestedDistribution(self, v, address)
                if isinstance(v, DistSpec)
                else _scalar_as_float(self.resolve(v))
            )
            for k, v in spec.params
        }

    # -- node kinds -------------------------------------------------------------------------
    def sample(self, node: Node) -> Value:
        spec = DistSpec(node.target, node.kwargs)
        params, support = self._params(spec), self.supports[node.address]
        bounds, names = None, get_family(spec.family).support_bounds
        if names is not None:  # declared bounds: latent ones are read by an interval's bijector
            bounds = tuple(params[name] for name in names)
            fixed = not contains_var(list(bounds)) or isinstance(base_support(support), INTERVALS)
        else:
            fixed = not (_depends_on_position(None, params) and _has_tensor_bounds(support))
        if not fixed:
            raise Unsupported(f"support of {node.address!r} depends on other latents")
        block = self.blocks[node.address]
        value, log_det = unconstrain(support, self.latents[node.address], bounds)
        value = P.reshape(value, block.shape)
        for term in log_det:
            self.add_term(term, block.unconstrained_shape)
        self.site_terms(node, spec, value)
        return value

    def observe(self, node: Node) -> Value:
        value = self.resolve(node.args[0])
        self.site_terms(node, DistSpec(node.target, node.kwargs), value)
        return value

    def factor(self, node: Node) -> Value:
        value = self.resolve(node.args[0])
        weight = node.meta.attr("scale")
        self.add_term(value, shape_of(value), 1.0 if weight is None else float(weight))
        return value

    def output(self, node: Node) -> None:
        return None

    # -- assembly --------------------------------------------------------------------------
    def lower(self) -> Lowered:
        """Run the graph on the tape and record the gradient: what every emitter needs."""
        self.run()
        log_density: Value = self.constant
        for term in self.terms:
            log_density = term + log_density
        grads = self.tape.gradients(log_density, list(self.latents.values()))
        parts = [
            g
            if is_var(g)
            else torch.broadcast_to(torch.as_tensor(g, dtype=torch.float64), b.unconstrained_shape)
            for g, b in zip(grads, self.blocks.values(), strict=True)
        ]
        grad = self.tape.apply(P.COLUMNS, parts) if parts else torch.zeros(0, dtype=torch.float64)
        inputs = list(zip(self.latents.values(), self.blocks.values(), strict=True))
        return Lowered(self.tape, log_density, grad, inputs, tuple(self.data.values()))


class NestedDistribution:
    """A distribution parameter (a wrapper's base) as its wrapper's rule sees it:
    ``log_density(value)`` gives the wrapped family's terms."""

    def __init__(self, interpreter: TapeInterpreter, spec: DistSpec, address: str | None):
        self.family = get_family(spec.family)
        self.params = interpreter._params(spec, address)
        self._interpreter, self._address = interpreter, address

    def log_density(self, value: Value) -> list[Value]:
        return self._interpreter.family_terms(self.family, self.params, value, self._address)


def _depends_on_position(value: Value, params: dict[str, Any]) -> bool:
    """Whether the value or a parameter, nested ones included, is a tape variable."""
    nested = [v for v in params.values() if isinstance(v, NestedDistribution)]
    plain = [v for v in params.values() if not isinstance(v, NestedDistribution)]
    return contains_var([value, *plain]) or any(
        _depends_on_position(None, n.params) for n in nested
    )


def _event_dims(family: Family, params: dict[str, Any]) -> int:
    """The value dims the family's rule sums itself (a wrapper's: its base's)."""
    if family.wraps is not None:
        base = params[family.wraps]
        return _event_dims(base.family, base.params)
    dims = family.event_dims
    return dims(**params) if callable(dims) else dims


class Lowered(NamedTuple):
    """A potential on the tape: the scalar-per-chain ``log_density``, the flat ``grad`` (a
    ``COLUMNS`` value of per-chain shape ``(D,)``), each latent's input ``Var`` with its
    block (offset and size in ``z``), and the per-chain data inputs (further arguments of
    the potential, each ``(C, *shape)``)."""

    tape: Tape
    log_density: Value
    grad: Value
    inputs: list[tuple[Var, Any]]
    data: tuple[Var, ...] = ()


def _block_slice(block: Any) -> str:
    """Source for a latent's unconstrained block of ``z`` (a view where possible)."""
    shape = block.unconstrained_shape
    if shape == ():
        return f"z[:, {block.offset}]"
    piece = f"z[:, {block.offset}:{block.offset + block.size}]"
    return piece if len(shape) == 1 else f"{piece}.reshape({(-1, *shape)!r})"


def per_chain_dtype(value: Any) -> torch.dtype:
    """The dtype a per-chain input is passed in: float64, or int64 when integer (indices,
    categories)."""
    value = torch.as_tensor(value)
    return torch.float64 if value.is_floating_point() or value.dtype == torch.bool else torch.int64


def _has_tensor_bounds(support: constraints.Constraint) -> bool:
    return any(
        isinstance(getattr(support, attr, None), torch.Tensor)
        for attr in ("lower_bound", "upper_bound")
    )


def build_potential(
    graph: Graph, blocks: Sequence[Any], supports: dict[str, constraints.Constraint]
) -> Callable:
    """The generated ``fn(z) -> (log_density, grad)`` of a (conditioned) graph, or
    ``Unsupported`` naming what the generated path cannot express."""
    return torch_potential(lower_potential(graph, blocks, supports))


def torch_potential(low: Lowered) -> Callable:
    """The lowered potential as generated straight-line torch code: ``fn(z, *data)`` with
    one ``(C, *shape)`` tensor per data input."""
    prologue = ["C = z.shape[0]"] + [f"{var.name} = {_block_slice(b)}" for var, b in low.inputs]
    arguments = ["z", *(var.name for var in low.data)]
    return low.tape.compile([low.log_density, low.grad], arguments, "potential", prologue)


def lower_potential(
    graph: Graph,
    blocks: Sequence[Any],
    supports: dict[str, constraints.Constraint],
    per_chain: Sequence[str] = (),
) -> Lowered:
    """The potential and its gradient recorded on a tape, for emitters other than torch's
    (``Unsupported`` as for :func:`build_potential`). ``per_chain`` names graph inputs whose
    values are given per chain at run time instead of being folded in as constants."""
    return TapeInterpreter(graph, blocks, supports, per_chain).lower()
