"""Build a graph's flat, chain-batched potential and gradient as one generated function.

:class:`TapeInterpreter` runs the ``unconstrain`` pass's graph once over the tape: inputs and
anything computed from them alone are evaluated at build time, every value that depends on
the position is recorded. Each latent (real-valued, by the pass) is a block of ``z``; the
pass's bijections run the tape's bijectors (the same maps as ``biject_to``); log-density
terms of the families, ``log|det J|`` and factors add up to the log density, and the tape
records its gradient by reverse accumulation. The result is ``fn(z) -> (log_density (C,),
grad (C, D))`` in float64 with no autograd, no ``Distribution`` objects and no per-site
Python at run time; ``fn.source`` shows it.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import HalfNormal, Normal
    >>> from ppl.inference.lowering.flat import FlatModel
    >>> @model
    ... def m():
    ...     s = sample("s", HalfNormal(1.0))
    ...     sample("y", Normal(0.0, s), obs=torch.tensor(0.5))
    >>> flat = FlatModel.from_graph(m.graph())
    >>> fn = build_potential(flat.unconstrained, flat.blocks)
    >>> log_p, grad = fn(torch.zeros(2, 1, dtype=torch.float64))
    >>> log_p.shape, grad.shape
    (torch.Size([2]), torch.Size([2, 1]))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch.distributions import constraints

from ppl.ir import Graph, Interpreter
from ppl.ir.interpreter import build_distribution
from ppl.ir.node import DistSpec, Node, iter_refs, map_refs
from ppl.ir.ops import resolve_op
from ppl.passes import contract_enumerated
from ppl.passes._ops import expand_right
from ppl.registry import Family, get_family
from ppl.shapes import broadcast_shapes

from . import ops
from . import prims as P
from .bijectors import unconstrain
from .calls import call_rule
from .enumerated import TapeOps
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


@dataclass(frozen=True)
class LogDetTerms:
    """A bijection's ``log|det J|`` as the tape's ``unconstrain`` gives it: ``terms`` whose
    sum, each broadcast to ``shape`` (the unconstrained value's), is the log-determinant; a
    factor adds them one by one, like a family's terms."""

    terms: tuple[Value, ...]
    shape: tuple[int, ...]


class RuntimeInput(NamedTuple):
    """What a run-time input of a lowered potential stands for: ``("row", input name)``, a
    graph input given per chain; ``("param", address)``, a param's value; ``("beta",
    "beta")``, the ``temper`` pass's beta."""

    kind: str
    key: str


# call targets of the unconstrain pass that the tape runs with its own bijectors: method names
_BIJECTOR_CALLS = {"ppl.biject_to": "biject", "ppl.log_abs_det_jacobian": "log_abs_det_jacobian"}
# call targets of the enumerate_discrete pass that the tape runs itself: method names
_ENUMERATION_CALLS = {
    "ppl.log_prob": "log_prob",
    "ppl.expand_right": "expand_right",
    "ppl.contract_enumerated": "contract_enumerated",
    "ppl.chain_logsumexp": "chain_logsumexp",
}


class TapeInterpreter(Interpreter):
    """Evaluate an unconstrained graph (the ``unconstrain`` pass's output: every latent is
    real-valued) with position-dependent values as tape ``Var`` s; collect log terms.

    Each latent is the block of ``z`` that ``blocks`` assigns it (by ``block.latent``); the
    pass's bijector calls (``ppl.biject_to``, ``ppl.log_abs_det_jacobian``) run the tape's
    ``unconstrain``, and ``torch.exp`` (the positive support's bijector) its ``exp`` rule."""

    def __init__(self, graph: Graph, blocks: Sequence[Any], per_chain: Sequence[str] = (),
                 sites: Mapping[str, str] | None = None, tape: Tape | None = None,
                 runtime: bool = False):
        super().__init__(graph)
        self.sites = dict(sites or {})  # address -> node name of the values to report
        self.tape = Tape() if tape is None else tape  # several graphs may share one tape
        self.blocks = {b.latent: b for b in blocks}
        self.latents = {
            b.latent: self.tape.input(f"u{i}", b.unconstrained_shape) for i, b in enumerate(blocks)
        }
        # graph inputs given per chain at run time (a Gibbs block's view of the other blocks)
        self.data = {
            RuntimeInput("row", name): self.tape.input(
                f"x{i}", tuple(torch.as_tensor(self.inputs[name]).shape),
                per_chain_dtype(self.inputs[name]))
            for i, name in enumerate(per_chain)
        }
        # with ``runtime``, param values and the tempering beta are inputs too, not constants
        self.runtime = runtime
        self.terms: list[Value] = []
        self.constant = 0.0
        self._log_dets: dict[str, LogDetTerms] = {}  # by the name of the bijection's value

    # -- values ---------------------------------------------------------------------------
    def resolve(self, arg: Any) -> Any:
        """A nested distribution stays a ``DistSpec``: each family's rule reads its
        parameters itself."""
        if isinstance(arg, DistSpec):
            return arg
        return map_refs(_as_float64(arg) if isinstance(arg, torch.Tensor) else arg, self._lookup)

    def input(self, node: Node, args: tuple, kwargs: dict) -> Any:
        row = self.data.get(RuntimeInput("row", node.name))
        if row is not None:
            return row
        return _as_float64(super().input(node, args, kwargs))

    def param(self, node: Node, args: tuple, kwargs: dict) -> Value:
        value = _as_float64(super().param(node, args, kwargs))
        if not self.runtime:
            return value
        return self._runtime_input(RuntimeInput("param", node.address), tuple(value.shape))

    def _runtime_input(self, key: RuntimeInput, shape: tuple[int, ...]) -> Var:
        if key not in self.data:
            self.data[key] = self.tape.input(f"x{len(self.data)}", shape)
        return self.data[key]

    def weight(self, node: Node) -> Value:
        """The factor a site's log density is multiplied by: its ``scale`` (1 by default),
        or, for a node the ``temper`` pass tempered, its earlier scale times the run-time
        input ``beta`` when the interpreter was built with ``runtime``."""
        base = node.meta.attr("tempered")
        if self.runtime and base is not None and "beta" in self.graph.attrs:
            return self._runtime_input(RuntimeInput("beta", "beta"), ()) * float(base)
        scale = node.meta.attr("scale")
        return 1.0 if scale is None else float(scale)

    def call(self, node: Node, args: tuple, kwargs: dict) -> Any:
        if node.target in _BIJECTOR_CALLS and is_var(args[0]):
            return getattr(self, _BIJECTOR_CALLS[node.target])(*args, **kwargs)
        if node.target in _ENUMERATION_CALLS:
            return getattr(self, _ENUMERATION_CALLS[node.target])(node, *args, **kwargs)
        if any(isinstance(a, DistSpec) for a in (*args, *kwargs.values())):
            raise Unsupported(f"call {node.target} takes a distribution argument")
        if not contains_var((args, list(kwargs.values()))):
            return _as_float64(resolve_op(node.target)(*args, **kwargs))
        return call_rule(node.target)(self.tape, *args, **kwargs)

    # -- the unconstrain pass's bijections -----------------------------------------------
    def biject(self, u: Var, support: Any) -> Var:
        """``ppl.biject_to(u, support)``: the constrained value; its log|det J| terms are
        kept for the matching ``ppl.log_abs_det_jacobian`` call."""
        value, log_det = unconstrain(self._support(support), u)
        self._log_dets[value.name] = LogDetTerms(tuple(log_det), u.shape)
        return value

    def log_abs_det_jacobian(self, u: Var, value: Var, support: Any) -> LogDetTerms:
        """The terms recorded when ``biject`` computed ``value`` (recomputed otherwise)."""
        if value.name not in self._log_dets:
            return LogDetTerms(tuple(unconstrain(self._support(support), u)[1]), u.shape)
        return self._log_dets[value.name]

    def _support(self, support: Any) -> constraints.Constraint:
        """A bijection's support: a constraint literal, or (bounds read at run time) a site's
        distribution; the bounds a family declares (``support_bounds``: Uniform's,
        TruncatedNormal's) may be batched values."""
        if not isinstance(support, DistSpec):
            return support
        bounds = get_family(support.family).support_bounds
        if bounds is not None:
            params = self._params(support)
            return _between(*(params[name] for name in bounds))
        if any(contains_var(self.env[name]) for name in iter_refs(support)):
            raise Unsupported(f"the support of a {support.family} site depends on other latents")
        return build_distribution(support, self._lookup).support

    # -- the enumerate_discrete pass's log-factors and contraction ------------------------
    def log_prob(self, node: Node, spec: DistSpec, value: Value, scale: float | None = None
                 ) -> Value:
        """``ppl.log_prob``: the family's terms summed and broadcast to the site's batch
        shape, as a tensor (a log-factor of the contraction), not added to the density."""
        params = self._params(spec, node.name)
        if not _depends_on_position(value, params):
            log_p = build_distribution(spec, self._lookup).log_prob(_as_float64(value))
        else:
            family = get_family(spec.family)
            terms = self.family_terms(family, params, value, node.name)
            value_shape = shape_of(value)
            batch = value_shape[: len(value_shape) - _event_dims(family, params)]
            full = broadcast_shapes(batch, *(shape_of(t) for t in terms))
            log_p = terms[0]
            for term in terms[1:]:
                log_p = TapeOps.add(log_p, term)
            if shape_of(log_p) != full:
                log_p = (log_p.tape.apply(P.EXPAND, log_p, shape=full) if is_var(log_p)
                         else torch.broadcast_to(torch.as_tensor(log_p), full))
        return log_p if scale is None else log_p * float(scale)

    def expand_right(self, node: Node, x: Value, shape: Sequence[int]) -> Value:
        """``ppl.expand_right``: an expand whose target is fixed by ``x``'s per-chain shape."""
        if not is_var(x):
            return expand_right(x, shape)
        target = tuple(expand_right(torch.zeros(x.shape), shape).shape)
        return x if target == x.shape else self.tape.apply(P.EXPAND, x, shape=target)

    def contract_enumerated(self, node: Node, factors: Sequence[Value], *layout: Any) -> Value:
        """``ppl.contract_enumerated``: the contraction plan replayed with tape operations
        (one ``logsumexp`` per eliminated site)."""
        if not contains_var(list(factors)):
            return _as_float64(contract_enumerated(factors, *layout))
        return contract_enumerated(factors, *layout, ops=TapeOps)

    def chain_logsumexp(self, node: Node, F: Value, start: int) -> Value:
        """``ppl.chain_logsumexp``: one tape primitive (forward recursion; its VJP the
        forward-backward marginals)."""
        if not is_var(F):
            return _as_float64(P.CHAIN_LOGSUMEXP.evaluate(F, start))
        return self.tape.apply(P.CHAIN_LOGSUMEXP, F, start=start)

    # -- log density terms ----------------------------------------------------------------
    def add_term(self, term: Value, full_shape: tuple[int, ...], weight: Value = 1.0) -> None:
        """Add ``sum(broadcast_to(term, full_shape)) * weight`` to the log density (a run-time
        ``weight``, beta, multiplies the term on the tape)."""
        factor = math.prod(full_shape) / math.prod(shape_of(term))
        if is_var(term):
            total = P.sum_all(term) * factor
        elif shape_of(term) == ():  # most sites' constant terms: no tensor to sum
            total = float(term) * factor
        else:
            total = float(torch.as_tensor(term, dtype=torch.float64).sum()) * factor
        if is_var(weight):
            self.terms.append(weight * total)
        elif is_var(total):
            self.terms.append(total * weight)
        else:
            self.constant += total * weight

    def site_terms(self, node: Node, spec: DistSpec, value: Value) -> None:
        weight = self.weight(node)
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
    def sample(self, node: Node, args: tuple, kwargs: dict) -> Value:
        value = self.latents[node.address]
        self.site_terms(node, DistSpec(node.target, node.kwargs), value)
        return value

    def observe(self, node: Node, args: tuple, kwargs: dict) -> Value:
        value = args[0]
        self.site_terms(node, DistSpec(node.target, node.kwargs), value)
        return value

    def factor(self, node: Node, args: tuple, kwargs: dict) -> Value:
        value = args[0]
        weight = self.weight(node)
        if isinstance(value, LogDetTerms):
            for term in value.terms:
                self.add_term(term, value.shape, weight)
        else:
            self.add_term(value, shape_of(value), weight)
        return value

    def output(self, node: Node, args: tuple, kwargs: dict) -> None:
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
        values = {address: self.env[name] for address, name in self.sites.items()}
        return Lowered(self.tape, log_density, grad, inputs, tuple(self.data.values()), values,
                       tuple(self.data))


class NestedDistribution:
    """A distribution parameter (a wrapper's base) as its wrapper's rule sees it:
    ``log_density(value)`` gives the wrapped family's terms."""

    def __init__(self, interpreter: TapeInterpreter, spec: DistSpec, address: str | None):
        self.family = get_family(spec.family)
        self.params = interpreter._params(spec, address)
        self._interpreter, self._address = interpreter, address

    def log_density(self, value: Value) -> list[Value]:
        return self._interpreter.family_terms(self.family, self.params, value, self._address)


def _between(low: Value, high: Value) -> constraints.Constraint:
    """The support between two declared bounds (either may be infinite or batched), as the
    families that declare ``support_bounds`` give it."""
    def infinite(bound: Value, sign: float) -> bool:
        return not is_var(bound) and bool((torch.as_tensor(bound) == sign * math.inf).all())

    low_free, high_free = infinite(low, -1.0), infinite(high, 1.0)
    if low_free and high_free:
        return constraints.real
    if high_free:
        return constraints.greater_than(low)
    if low_free:
        return constraints.less_than(high)
    return constraints.interval(low, high)


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
    block (offset and size in ``z``), the per-chain data inputs (further arguments of
    the potential, each ``(C, *shape)``), the values of the sites asked for, by address
    (the constrained latents, deterministic sites), and what each data input stands for
    (``data_keys``, a :class:`RuntimeInput` per entry of ``data``)."""

    tape: Tape
    log_density: Value
    grad: Value
    inputs: list[tuple[Var, Any]]
    data: tuple[Var, ...] = ()
    values: dict[str, Value] = {}
    data_keys: tuple[RuntimeInput, ...] = ()


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


def build_potential(graph: Graph, blocks: Sequence[Any]) -> Callable:
    """The generated ``fn(z) -> (log_density, grad)`` of an unconstrained (and possibly
    conditioned) graph, or ``Unsupported`` naming what the generated path cannot express."""
    return torch_potential(lower_potential(graph, blocks))


def _prologue(low: Lowered) -> list[str]:
    return ["C = z.shape[0]"] + [f"{var.name} = {_block_slice(b)}" for var, b in low.inputs]


CHUNK_VALUES = 1 << 18
"""On the CPU a batch of chains runs in chunks whose widest per-chain value, times the rows
of a chunk, holds about this many numbers (2 MiB in float64), so the temporaries stay in
the cache: a whole batch's (1,000 particles times a 5,000-row linear predictor) costs fresh
pages at every operation and runs 2.6x slower (the potential of bench/smc.py's tempered
logistic regression, measured at 1/4, 1, 4 and 16 MiB chunks: 2 MiB was fastest). A CUDA
batch runs whole."""


def rows_per_chunk(tape: Tape) -> int:
    """How many chains a CPU chunk holds (see :data:`CHUNK_VALUES`)."""
    widest = max((math.prod(i.out.shape) for i in tape.instrs), default=1)
    return max(1, CHUNK_VALUES // max(1, widest))


def in_chunks(fn: Callable, rows: int) -> Callable:
    """``fn(z, *data) -> (C,)- and (C, D)-shaped outputs`` run ``rows`` chains at a time on
    the CPU (the chains are independent, so the pieces concatenate exactly); a data input
    with one row for all chains goes whole to every chunk."""
    def chunked(z: torch.Tensor, *data: torch.Tensor):
        total = z.shape[0]
        if z.device.type != "cpu" or total <= rows:
            return fn(z, *data)
        pieces = [fn(z[i:i + rows], *(d[i:i + rows] if d.shape[0] == total else d for d in data))
                  for i in range(0, total, rows)]
        return tuple(torch.cat(parts) for parts in zip(*pieces, strict=True))

    chunked.source = fn.source  # type: ignore[attr-defined]
    return chunked


def torch_potential(low: Lowered) -> Callable:
    """The lowered potential as generated straight-line torch code: ``fn(z, *data)`` with
    one ``(C, *shape)`` tensor per data input, run in cache-sized chunks of chains on the
    CPU."""
    arguments = ["z", *(var.name for var in low.data)]
    fn = low.tape.compile([low.log_density, low.grad], arguments, "potential", _prologue(low))
    return in_chunks(fn, rows_per_chunk(low.tape))


def torch_values(low: Lowered) -> Callable:
    """The lowered site values as generated torch code: ``fn(z, *data) -> {address: (C,
    *shape)}``, the forward part of the tape only (no gradient, no autograd)."""
    batched = [address for address, value in low.values.items() if is_var(value)]
    arguments = ["z", *(var.name for var in low.data)]
    fn = low.tape.compile([low.values[a] for a in batched], arguments, "values", _prologue(low))
    constants = {a: torch.as_tensor(v) for a, v in low.values.items() if not is_var(v)}

    def values(z: torch.Tensor, *data: torch.Tensor) -> dict[str, torch.Tensor]:
        computed = dict(zip(batched, fn(z, *data) if batched else (), strict=True))
        for address, value in constants.items():
            computed[address] = value.expand(z.shape[0], *value.shape)
        return {address: computed[address] for address in low.values}

    values.source = fn.source  # type: ignore[attr-defined]
    return values


def lower_potential(
    graph: Graph,
    blocks: Sequence[Any],
    per_chain: Sequence[str] = (),
    sites: Mapping[str, str] | None = None,
    runtime: bool = False,
) -> Lowered:
    """The potential and its gradient recorded on a tape, for emitters other than torch's
    (``Unsupported`` as for :func:`build_potential`). ``per_chain`` names graph inputs whose
    values are given per chain at run time instead of being folded in as constants;
    ``sites`` (address -> node name) the values to keep in ``Lowered.values``; with
    ``runtime``, param values and the ``temper`` pass's beta are run-time inputs as well
    (``Lowered.data_keys`` says which input is which)."""
    return TapeInterpreter(graph, blocks, per_chain, sites, runtime=runtime).lower()
