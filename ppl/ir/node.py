"""Nodes of the graph IR: immutable records, one per operation of a model.

Eight kinds, the operation in ``target``:

========  ==========================================================================
kind      meaning, ``target``, arguments
========  ==========================================================================
input     model argument or captured data; ``target`` = argument name
param     learnable tensor; ``target`` = address, kwarg ``constraint``
sample    latent random choice; ``target`` = family name, kwargs = family params
observe   random choice with a fixed value; as sample, ``args = (value,)``
factor    extra log-weight term; ``target`` = address, ``args = (log_weight,)``
call      deterministic torch operation; ``target`` = allow-listed op name (``ppl.ir.ops``)
loop      a ``scan``: ``target`` = name of its body in ``graph.subgraphs``,
          ``args = (init, xs, captured)`` (three tuples), kwarg ``length``
output    the return value; ``args = (value,)``
========  ==========================================================================

A loop is its own kind, not a ``call`` whose target is a graph: a call is a pure
deterministic function every pass may fold, move or differentiate through, while a loop
body holds random sites that repeat once per step, under their own addresses. As a call,
each pass that handles calls would treat the loop as one opaque op and silently drop its
sites; as a kind of its own, every walker of a graph either runs it or fails naming
itself (``Interpreter.loop`` refuses unless a meaning implements it).

A loop's body is a ``Graph`` (``ppl.ir.loop`` documents its layout): inputs ``step``
(the index, an int64 scalar), ``carry`` (one per leaf of the carry), ``x`` (one per leaf
of ``xs``, each the step's slice) and ``captured`` (outer values it reads, passed by
``Ref`` in ``args[2]``), in that order; its output is the tuple of the new carry leaves
then the step's outputs ``y``. The loop node's value is the tuple of the final carry
leaves then each ``y`` stacked over steps on a new leading dimension; it is read only
through ``ppl.getitem(%loop, i)``. A body site with address ``"x"`` stands for the sites
``"x[0]" .. "x[T-1]"`` (``ppl.ir.loop.step_address``): the addresses of the unrolled
twin (``ppl.passes.unroll``), the keys of a values dict.

Deterministic sites are ``call`` nodes of ``ppl.identity`` whose ``meta.address`` is set;
every random and param node carries its address in ``meta.address`` as well. An argument
(``Arg``) is a ``Ref`` to another node, a ``DistSpec`` (a nested distribution, e.g. the base
of ``Independent``), or a literal: None, bool, int, float, str, a small tensor, a dtype, a
slice, Ellipsis, a constraint, or a tuple/list of arguments.

    >>> n = Node("mu", "sample", "Normal", kwargs=(("loc", 0.0), ("scale", 5.0)),
    ...          meta=Meta(address="mu"))
    >>> n.is_random, n.address
    (True, 'mu')
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch

from ppl.runtime import PlateFrame

NODE_KINDS = ("input", "param", "sample", "observe", "factor", "call", "loop", "output")
RANDOM_KINDS = ("sample", "observe", "factor")


class Ref(NamedTuple):
    """The value of the node called ``name``."""

    name: str

    def __repr__(self) -> str:
        return f"%{self.name}"


@dataclass(frozen=True)
class DistSpec:
    """A distribution as an argument: family name and named parameters."""

    family: str
    params: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Meta:
    """What a node knows beyond its operation: value shape and dtype, plates, address,
    source line, and free-form ``attrs`` (e.g. a gradient-estimator choice) as pairs."""

    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    plates: tuple[PlateFrame, ...] = ()
    address: str | None = None
    source: str = ""
    attrs: tuple[tuple[str, Any], ...] = ()

    def attr(self, key: str, default: Any = None) -> Any:
        return dict(self.attrs).get(key, default)

    def with_attr(self, key: str, value: Any) -> Meta:
        attrs = tuple((k, v) for k, v in self.attrs if k != key) + ((key, value),)
        return replace(self, attrs=attrs)


@dataclass(frozen=True, slots=True)
class Node:
    """One operation (slotted: a graph holds one per operation of a model, 40k for an
    unrolled series of 10k steps)."""

    name: str
    kind: str
    target: str
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    meta: Meta = field(default_factory=Meta)
    _refs: tuple[str, ...] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def address(self) -> str | None:
        return self.meta.address

    @property
    def is_random(self) -> bool:
        return self.kind in RANDOM_KINDS

    @property
    def is_deterministic_site(self) -> bool:
        return self.kind == "call" and self.meta.address is not None

    @property
    def kwarg_dict(self) -> dict[str, Any]:
        return dict(self.kwargs)

    def refs(self) -> tuple[str, ...]:
        """Names of the nodes this one reads, in argument order (with repeats): found once
        and kept, since linting, dead-code passes and users() each ask for every node."""
        found = self._refs
        if found is None:
            found = []
            _collect_refs(self.args, found)
            for _, value in self.kwargs:
                _collect_refs(value, found)
            found = tuple(found)
            object.__setattr__(self, "_refs", found)
        return found

    def replace(self, **changes: Any) -> Node:
        return replace(self, **changes)


def iter_refs(arg: Any) -> Iterator[str]:
    """Every ``Ref`` name inside a (nested) argument."""
    found: list[str] = []
    _collect_refs(arg, found)
    return iter(found)


_LEAF_TYPES = frozenset({type(None), bool, int, float, str, torch.Tensor})


def _collect_refs(arg: Any, out: list[str]) -> None:
    """Append every ``Ref`` name inside ``arg`` to ``out``: literals, most arguments, are
    told apart by their exact type first."""
    kind = type(arg)
    if kind in _LEAF_TYPES:
        return
    if kind is Ref:
        out.append(arg.name)
    elif kind is tuple or kind is list:
        for item in arg:
            _collect_refs(item, out)
    elif isinstance(arg, Ref):
        out.append(arg.name)
    elif isinstance(arg, DistSpec):
        for _, value in arg.params:
            _collect_refs(value, out)
    elif isinstance(arg, (tuple, list)):
        for item in arg:
            _collect_refs(item, out)
    elif isinstance(arg, slice):
        _collect_refs((arg.start, arg.stop, arg.step), out)


def map_refs(arg: Any, fn) -> Any:
    """Rebuild a (nested) argument with every ``Ref`` replaced by ``fn(ref)``."""
    if isinstance(arg, Ref):
        return fn(arg)
    if isinstance(arg, DistSpec):
        return DistSpec(arg.family, tuple((k, map_refs(v, fn)) for k, v in arg.params))
    if isinstance(arg, tuple) and not hasattr(arg, "_fields"):
        return tuple(map_refs(a, fn) for a in arg)
    if isinstance(arg, list):
        return [map_refs(a, fn) for a in arg]
    if isinstance(arg, slice):
        return slice(map_refs(arg.start, fn), map_refs(arg.stop, fn), map_refs(arg.step, fn))
    return arg
