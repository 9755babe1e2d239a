"""Trace a model once, with its concrete data, into a ``Graph``.

Two pieces work together. A ``TorchFunctionMode`` sees every torch operation the model runs
and records the ones whose inputs depend on the model's arguments, params or random
choices as ``call`` nodes (anything else is a constant, folded at trace time). A handler
on ppl's effect stack turns each primitive into its node (sample, observe, factor, param,
deterministic). Python control flow on data or shapes simply specializes the graph; reading
the value of a random choice (``bool``, ``float``, ``.item()``, ...) makes the model
*dynamic*: tracing stops with a ``DynamicModelError`` naming the site and the line, and the
model keeps working on the trace path.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m(x):
    ...     mu = sample("mu", Normal(0.0, 1.0))
    ...     return sample("y", Normal(mu * 2.0, 1.0), obs=x)
    >>> g = trace_graph(m, torch.tensor(0.5))
    >>> [n.kind for n in g if n.kind != "call"], [n.target for n in g if n.kind == "call"][0]
    (['input', 'sample', 'observe', 'output'], 'Tensor.mul')

Parameters are checked at trace time unless they depend on a random site (the log density
checks those at every point): one that a constructor derived from a literal or data
argument (a scale broadcast against a latent loc) is checked once per distinct literal.

    >>> @model
    ... def bad():
    ...     x = sample("x", Normal(0.0, 1.0))
    ...     return sample("y", Normal(x, -1.0))
    >>> trace_graph(bad)
    Traceback (most recent call last):
    ppl.errors.ModelError: sample site 'y': parameter 'scale' of Normal must satisfy ... = -1.0...
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ppl.errors import operation_error
from ppl.randomness import forked
from ppl.registry import family_of, observing_construction
from ppl.runtime import (
    Message,
    Messenger,
    PlateFrame,
    in_internal,
    internal,
    is_library_file,
    source_location,
    unwatched,
)
from ppl.subsample import SUBSAMPLE_ATTR, draw_subsample
from ppl.validation import checking_only

from .errors import DynamicModelError, IRError
from .graph import Graph, GraphBuilder, no_cycle_collection
from .interpreter import draw
from .node import DistSpec, Meta, Node, Ref
from .ops import is_random_op, op_name

SMALL_LITERAL = 16
"""Untracked tensors with at most this many elements are printed inline; larger ones become
bound ``input`` nodes."""

_READS_VALUE = frozenset(
    "__bool__ item __float__ __int__ __index__ __complex__ tolist __array__ numpy is_nonzero "
    "equal allclose __contains__".split()
)
_INPLACE_DUNDERS = {"__iadd__": "Tensor.add", "__isub__": "Tensor.sub", "__imul__": "Tensor.mul",
                    "__itruediv__": "Tensor.div", "__ipow__": "Tensor.pow"}


def _user_line() -> str:
    """``file:line (source)`` of the innermost stack frame outside torch and ppl (walking the
    frames, reading one source line: it runs for every recorded operation)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not is_library_file(filename):
            return source_location(filename, frame.f_lineno)
        frame = frame.f_back
    return "<unknown>"


@functools.cache
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def tensor_meta(value: Any, **extra: Any) -> Meta:
    if isinstance(value, torch.Tensor):
        return Meta(tuple(value.shape), _dtype_name(value.dtype), **extra)
    return Meta(**extra)


_SCALARS = frozenset({type(None), bool, int, float, str})
_NO_DEPS: frozenset[str] = frozenset()


class _Recorder:
    """Shared state of one tracing run: which tensor is which node, and what is random."""

    def __init__(self, name: str):
        self.builder = GraphBuilder(name)
        # Keyed by id: every tracked tensor is kept alive for the run, so no id is reused
        # (and a plain dict costs a tenth of a weak one on every recorded operation).
        self.refs: dict[int, Ref] = {}
        self.random_deps: dict[str, frozenset[str]] = {}
        self.reads_data = False
        self._keep_alive: list[torch.Tensor] = []
        # results of operations inside distribution constructors, by id: recorded only
        # when something reads them (most sites record the constructor's arguments instead)
        self.deferred: dict[int, _Deferred] = {}
        self.constructions: dict[int, _Deferred] = {}  # the same entries, by distribution
        # (class, parameter, literal) whose derived parameter this trace checked
        self.checked_literals: set[tuple] = set()

    def track(self, tensor: torch.Tensor, ref: Ref, deps: frozenset[str] = frozenset()) -> None:
        self.refs[id(tensor)] = ref
        self.random_deps[ref.name] = deps
        self._keep_alive.append(tensor)

    def dynamic_message(self, deps: frozenset[str], fname: str, line: str) -> str:
        """Why reading a value that depends on ``deps`` (with ``fname()``) cannot be traced."""
        return (
            f"the model reads the value of random site(s) {sorted(deps)} with {fname}() at "
            f"{line}, so its structure depends on a random choice. It has no static "
            "graph; it still runs on the trace path (handlers, Importance). To trace it, "
            "replace Python control flow on random values with torch.where / masking"
        )

    def ref_of(self, tensor: torch.Tensor) -> Ref | None:
        ref = self.refs.get(id(tensor))
        if ref is None and id(tensor) in self.deferred:
            return self.materialize(tensor)
        return ref

    def materialize(self, tensor: torch.Tensor) -> Ref | None:
        """Record the deferred operation that made ``tensor``; None when it turns out not
        to depend on anything tracked (a constant)."""
        entry = self.deferred[id(tensor)]
        if not entry.recorded:
            entry.recorded = True
            entry.record()
        return self.refs.get(id(tensor))

    def deps(self, arg: Any) -> frozenset[str]:
        """The random sites the tracked tensors in ``arg`` depend on."""
        return self.tracked_deps(arg) or _NO_DEPS

    def tracked_deps(self, arg: Any) -> frozenset[str] | None:
        """The random sites the tracked tensors in ``arg`` (nested in tuples, lists, dicts,
        slices) depend on; None when it holds no tracked tensor: both answers in one walk,
        which runs on every torch call of the model. The walk recurses through
        ``_walk_deps``, so that an override (a scan body adds its parent's) runs once."""
        return self._walk_deps(arg)

    def _walk_deps(self, arg: Any) -> frozenset[str] | None:
        if isinstance(arg, torch.Tensor):
            return self._tensor_deps(arg)
        if isinstance(arg, tuple | list):
            items = arg
        elif isinstance(arg, dict):
            items = arg.values()
        elif isinstance(arg, slice):
            items = (arg.start, arg.stop, arg.step)
        else:
            return None
        found = None
        for item in items:
            if type(item) in _SCALARS:
                continue
            deps = self._walk_deps(item)
            if deps is None or deps is found:
                continue
            found = deps if found is None or not found else found | deps
        return found

    def _tensor_deps(self, tensor: torch.Tensor) -> frozenset[str] | None:
        ref = self.refs.get(id(tensor))
        if ref is not None:
            return self.random_deps.get(ref.name, _NO_DEPS)
        entry = self.deferred.get(id(tensor))
        return None if entry is None else entry.deps

    def to_arg(self, value: Any) -> Any:
        """A Python value as an IR argument: tracked tensors become refs, the rest literals."""
        if type(value) in _SCALARS:
            return value
        if isinstance(value, torch.Tensor):
            ref = self.ref_of(value)
            if ref is not None:
                return ref
            if isinstance(value, torch.nn.Parameter):
                raise IRError(_unregistered_message(value))
            if value.numel() <= SMALL_LITERAL:
                return value.detach().clone()
            const = self.builder.add("input", "const", meta=tensor_meta(value), name="const")
            self.builder.bind(const.name, value.detach())
            self.track(value, const)
            return const
        if isinstance(value, torch.Size):
            return tuple(value)
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(self.to_arg(v) for v in value)
        if isinstance(value, list):
            return [self.to_arg(v) for v in value]
        if isinstance(value, slice):
            return slice(self.to_arg(value.start), self.to_arg(value.stop), self.to_arg(value.step))
        if isinstance(value, torch.device):
            return str(value)
        if isinstance(value, torch.distributions.Distribution):
            return self.dist_spec(value, site="(argument)")
        return value

    def dist_spec(self, dist: torch.distributions.Distribution, site: str) -> DistSpec:
        family = family_of(dist)
        try:
            names = None if family is None else _arg_names(dist)
        except AttributeError:
            names = None
        if names is None:
            raise IRError(
                f"site {site!r}: {type(dist).__name__} is not a registered distribution family, so "
                "it cannot appear in a graph; use the ppl.stdlib families or register yours "
                "with ppl.registry.register_family"
            )
        # A distribution built from tracked arguments records them: they rebuild it, and
        # what its constructor derived from them (broadcasting) is never recorded.
        # (A construction with an entry had tracked arguments, and tracked stays tracked.)
        entry = self.constructions.get(id(dist))
        given = (entry.take_given(dist) if entry is not None
                 else getattr(dist, "ppl_constructor_args", lambda: None)())
        if (given is not None and all(k in given for k in names)
                and (entry is not None or self.tracked_deps(tuple(given.values())) is not None)):
            return DistSpec(family.name, tuple((k, self.to_arg(given[k])) for k in names))
        with torch._C._EnableTorchFunction():  # reading them may compute (an expanded Beta)
            params = dist.ppl_args
        return DistSpec(family.name, tuple((k, self.to_arg(v)) for k, v in params.items()))

    def checked_now(self, dist: torch.distributions.Distribution, name: str,
                    value: torch.Tensor) -> bool:
        """Whether ``ppl.validation`` checks parameter ``name`` of ``dist`` at trace time: when
        it depends on no random site, or when the constructor derived it (broadcast) from a
        literal or data argument of that name not checked yet (``Normal(x, -1.0)``'s scale
        fails here, naming the site); the one draw the tracer runs with says nothing about the
        rest, which the log density checks at every point."""
        entry = self.constructions.get(id(dist))
        if entry is None or self.deferred.get(id(value)) is not entry:
            return not self.tracked_deps(value)
        arg = entry.peek_given(dist).get(name)
        kind = type(arg)
        if kind is float or kind is int or kind is bool:  # the usual literal: a number
            key = (type(dist), name, kind, arg)
        elif arg is None or self.tracked_deps(arg):
            return False
        elif isinstance(arg, torch.Tensor):  # by identity, kept alive for the run
            key = (type(dist), name, id(arg))
        else:
            return True
        # one check per class, parameter and distinct literal: a scale of 1.0 at every
        # step of a series is checked once
        if key in self.checked_literals:
            return False
        self.checked_literals.add(key)
        self._keep_alive.append(arg)
        return True


def _arg_names(dist: torch.distributions.Distribution) -> tuple[str, ...]:
    """The names of ``dist.ppl_args``, read without computing the values where the family
    can say (``ppl_arg_names``; reading Beta's values computes)."""
    names_of = getattr(dist, "ppl_arg_names", None)
    if names_of is not None:
        return names_of()
    with unwatched():
        return tuple(dist.ppl_args)


class _Deferred:
    """A deferred construction: how to record it, the random sites it depends on, whether it
    has been recorded, and its arguments by name until its site's spec takes them (bound
    once for the site's checks and spec, and no dict per step kept alive after)."""

    __slots__ = ("record", "deps", "recorded", "_given")

    def __init__(self, record, deps: frozenset[str]):
        self.record, self.deps, self.recorded = record, deps, False
        self._given: dict[str, Any] | None = None

    def peek_given(self, dist: torch.distributions.Distribution) -> dict[str, Any]:
        if self._given is None:
            self._given = dist.ppl_constructor_args()
        return self._given

    def take_given(self, dist: torch.distributions.Distribution) -> dict[str, Any]:
        given, self._given = self.peek_given(dist), None
        return given


def _tensors_in(arg: Any):
    if isinstance(arg, torch.Tensor):
        yield arg
    elif isinstance(arg, (tuple, list)):
        for item in arg:
            yield from _tensors_in(item)
    elif isinstance(arg, dict):
        for item in arg.values():
            yield from _tensors_in(item)
    elif isinstance(arg, slice):
        yield from _tensors_in((arg.start, arg.stop, arg.step))


class _RecordingMode(TorchFunctionMode):
    """Records torch operations on tracked tensors as ``call`` nodes."""

    def __init__(self, recorder: _Recorder):
        super().__init__()
        self.rec = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if in_internal():
            return func(*args, **(kwargs or {}))
        rec = self.rec
        fname = getattr(func, "__name__", "")
        if fname == "__get__":  # a property such as x.shape or x.T
            return self._getter(func, args)
        deps = rec.tracked_deps((args, kwargs) if kwargs else args)
        kwargs = kwargs or {}
        if fname in _READS_VALUE:
            if deps is not None:
                self._check_static(fname, args)
            return func(*args, **kwargs)
        if deps is None:
            for value in (*args, *kwargs.values()):
                if isinstance(value, torch.nn.Parameter):
                    raise IRError(_unregistered_message(value))
            if is_random_op(func):
                raise IRError(
                    f"torch.{fname} called inside the model at {_user_line()}: randomness in a "
                    "model must come from sample sites (e.g. sample('eps', Normal(0, 1)))"
                )
            return func(*args, **kwargs)
        if (
            fname == "__setitem__"
            or (fname.endswith("_") and not fname.endswith("__"))
            or fname in _INPLACE_DUNDERS
        ):
            return self._inplace(func, fname, args, kwargs, deps)
        if "out" in kwargs:
            raise IRError(
                f"{fname}(..., out=...) at {_user_line()} cannot be traced; "
                "assign the result instead"
            )
        try:
            result = func(*args, **kwargs)
        except (RuntimeError, TypeError, ValueError, IndexError) as error:
            inputs = [(tuple(x.shape), _dtype_name(x.dtype)) for x in _tensors_in((args, kwargs))]
            raise operation_error(fname or repr(func), _user_line(), rec.deps((args, kwargs)),
                                  inputs, error) from error
        if not isinstance(result, torch.Tensor) and not any(True for _ in _tensors_in(result)):
            return result  # shapes, sizes, dtypes: the graph specializes on them
        return self._record(func, args, kwargs, result, deps)

    # -- distribution constructors ----------------------------------------------------
    def constructed(self, dist: torch.distributions.Distribution) -> None:
        """A ppl distribution was built, its constructor unwatched (``observing_construction``):
        the parameters it derived from tracked arguments (broadcast, normalized) are
        deferred, recorded by replaying the constructor only if something reads them; a site
        records the constructor's arguments instead (``dist_spec``)."""
        rec = self.rec
        args, kwargs = dist._ppl_init
        deps = rec.tracked_deps((args, kwargs) if kwargs else args)
        if deps is None:
            return
        derived = _derived_tensors(dist, rec.refs)
        entry = _Deferred(lambda: self._replay(dist, derived), deps)
        rec.constructions[id(dist)] = entry
        for value in derived.values():
            rec.deferred[id(value)] = entry
            rec._keep_alive.append(value)

    def _replay(self, dist: torch.distributions.Distribution, derived: dict) -> None:
        """Run ``dist``'s constructor again, watched (its operations recorded), and let each
        derived parameter stand for its twin's node."""
        rec = self.rec
        args, kwargs = dist._ppl_init
        watching = self in torch.overrides._get_current_function_mode_stack()
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch._C._EnableTorchFunction())
            if not watching:  # inside this mode's handler, which took it off the stack
                stack.enter_context(self)
            stack.enter_context(observing_construction(None))
            twin = type(dist)(*args, **kwargs)
        for path, value in derived.items():
            twin_value = twin
            for name in path:
                twin_value = vars(twin_value).get(name)
            ref = rec.refs.get(id(twin_value))
            if ref is not None:
                rec.track(value, ref, rec.random_deps[ref.name])


    def _check_static(self, fname: str, args: tuple) -> None:
        deps = self.rec.deps(args)
        if deps:
            raise DynamicModelError(self.rec.dynamic_message(deps, fname, _user_line()))
        self.rec.reads_data = True

    def _getter(self, func, args):
        result = func(*args)
        if not isinstance(result, torch.Tensor):
            return result
        deps = self.rec.tracked_deps(args)
        if deps is None:
            return result
        attr_name = getattr(getattr(func, "__self__", None), "__name__", "")
        return self._emit("ppl.attr", (self.rec.to_arg(args[0]), attr_name), (), result, deps)

    def _inplace(self, func, fname, args, kwargs, deps):
        rec = self.rec
        target_tensor = args[0]
        base = target_tensor._base
        if base is not None and rec.ref_of(base) is not None:
            raise IRError(
                f"in-place {fname} on a view of a traced tensor at {_user_line()} cannot be traced "
                "(the base tensor would change behind the graph's back); build the result "
                "out of place, e.g. with torch.cat or torch.where"
            )
        if fname == "__setitem__":
            op, call_args = "ppl.setitem", args
        else:
            op = _INPLACE_DUNDERS.get(fname) or f"Tensor.{fname[:-1]}"
            call_args = args
        arg_ir = tuple(rec.to_arg(a) for a in call_args)
        kwarg_ir = tuple((k, rec.to_arg(v)) for k, v in kwargs.items())
        func(*args, **kwargs)  # mutate the concrete tensor so later code sees the right value
        ref = rec.builder.add(
            "call", op, arg_ir, kwarg_ir, meta=tensor_meta(target_tensor, source=_user_line())
        )
        rec.track(target_tensor, ref, deps)
        return target_tensor if fname != "__setitem__" else None

    def _record(self, func, args, kwargs, result, deps):
        rec = self.rec
        name = op_name(func)
        if name is None:
            raise IRError(
                f"operation {getattr(func, '__qualname__', func)!r} at {_user_line()} is not on "
                "the graph IR's allow-list (ppl.ir.ops), so this model cannot be traced"
            )
        arg_ir = tuple(rec.to_arg(a) for a in args)
        kwarg_ir = tuple((k, rec.to_arg(v)) for k, v in kwargs.items())
        return self._emit(name, arg_ir, kwarg_ir, result, deps)

    def _emit(self, name, arg_ir, kwarg_ir, result, deps):
        rec = self.rec
        if isinstance(result, torch.Tensor):
            ref = rec.builder.add(
                "call", name, arg_ir, kwarg_ir, meta=tensor_meta(result, source=_user_line())
            )
            rec.track(result, ref, deps)
            return result
        if isinstance(result, (tuple, list)) and all(isinstance(r, torch.Tensor) for r in result):
            ref = rec.builder.add("call", name, arg_ir, kwarg_ir, meta=Meta(source=_user_line()))
            rec.random_deps[ref.name] = deps
            for i, item in enumerate(result):
                item_ref = rec.builder.add(
                    "call", "ppl.getitem", (ref, i), meta=tensor_meta(item), name=f"{ref.name}_{i}"
                )
                rec.track(item, item_ref, deps)
            return result
        return result


def _derived_tensors(dist: Any, refs: dict, path: tuple[str, ...] = ()) -> dict[tuple, Any]:
    """The untracked tensors a constructor stored, by attribute path, nested distributions
    included (torch's ``Beta`` keeps its parameters in a ``Dirichlet``)."""
    out = {}
    for name, value in vars(dist).items():
        if isinstance(value, torch.Tensor) and id(value) not in refs:
            out[(*path, name)] = value
        elif isinstance(value, torch.distributions.Distribution):
            out.update(_derived_tensors(value, refs, (*path, name)))
    return out


class GraphTracer(Messenger):
    """The effect handler that turns each primitive into its IR node."""

    def __init__(self, recorder: _Recorder, mode: _RecordingMode | None = None):
        self.rec = recorder
        self.mode = mode

    def trace_scan(self, step, init, x_leaves, x_spec, length: int, name: str):
        """``ppl.scan`` under this tracer: its step traced once into a loop node."""
        from .scan_tracing import trace_scan

        return trace_scan(self, step, init, x_leaves, x_spec, length, name)

    def subsample_indices(self, frame: PlateFrame) -> torch.Tensor:
        """A subsampled plate's indices: an unbound ``input`` node (attrs ``subsample`` = the
        plate, ``size``) that the reference interpreters draw afresh on every evaluation."""
        with internal():
            indices = draw_subsample(frame.size, frame.subsample_size)
        meta = tensor_meta(indices).with_attr(SUBSAMPLE_ATTR, frame.name)
        hint = f"{frame.name}_indices"
        ref = self.rec.builder.add("input", hint, meta=meta.with_attr("size", frame.size),
                                   name=hint)
        self.rec.track(indices, ref)
        return indices

    def process(self, msg: Message) -> None:
        if msg.kind == "sample" and msg.value is None:
            with internal():
                msg.value = draw(msg.fn)

    def postprocess(self, msg: Message) -> None:
        with unwatched():  # the tracer's bookkeeping is no part of the model
            self._postprocess(msg)

    def _postprocess(self, msg: Message) -> None:
        rec = self.rec
        meta = tensor_meta(msg.value, plates=msg.plates, address=msg.name, source=msg.source)
        meta = _with_site_attrs(meta, msg)
        if msg.kind == "param":
            ref = rec.builder.add("param", msg.name, kwargs=(("constraint", msg.fn),), meta=meta)
            rec.track(msg.value, ref)
        elif msg.kind == "deterministic":
            ref = rec.builder.add("call", "ppl.identity", (rec.to_arg(msg.value),), meta=meta)
            rec.track(msg.value, ref, rec.deps(msg.value))
        elif msg.kind == "factor":
            rec.builder.add("factor", msg.name, (rec.to_arg(msg.value),), meta=meta)
        elif msg.kind == "sample":
            self._sample(msg, meta)

    def _sample(self, msg: Message, meta: Meta) -> None:
        rec = self.rec
        if msg.intervened:
            return  # a do()-fixed value is a constant of the graph
        spec = rec.dist_spec(msg.fn, msg.name)
        if msg.is_observed:
            ref = rec.builder.add(
                "observe", spec.family, (rec.to_arg(msg.value),), spec.params, meta=meta
            )
            rec.track(msg.value, ref, rec.deps(msg.value))
        else:
            ref = rec.builder.add("sample", spec.family, (), spec.params, meta=meta)
            rec.track(msg.value, ref, frozenset({msg.name}))


def _with_site_attrs(meta: Meta, msg: Message) -> Meta:
    if msg.mask is not None:
        raise IRError(
            f"site {msg.name!r} is under the mask handler, which the graph IR does not represent; "
            "use dist.mask(m) on the distribution instead"
        )
    scale = msg.scale
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise IRError(
                f"site {msg.name!r}: a tensor scale of shape {tuple(scale.shape)} "
                "cannot be traced"
            )
        scale = float(scale)
    if scale != 1.0:
        meta = meta.with_attr("scale", float(scale))
    for key, value in sorted(msg.infer.items()) if msg.infer else ():
        if isinstance(value, (bool, int, float, str)) or value is None or key == "steps":
            meta = meta.with_attr(key, value)
    return meta


def _unregistered_message(weight: torch.nn.Parameter) -> str:
    """Why a module's weight that is no param of the store cannot enter a graph, naming the
    outermost module on the stack that owns it."""
    owner, path = None, None
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, torch.nn.Module):
            found = next((p for p, w in candidate.named_parameters() if w is weight), None)
            if found is not None:
                owner, path = candidate, found
        frame = frame.f_back
    what = (f"parameter {path!r} of module {type(owner).__name__}" if owner is not None
            else "a torch.nn.Parameter")
    return (
        f"{what} (shape {tuple(weight.shape)}) is used at {_user_line()} without being "
        "registered: the graph would freeze it as a constant, so no gradient would reach it "
        "and an optimizer step would leave the graph stale. Register the module in the model "
        "or guide with ppl.module('name', net) before calling it"
    )


def _bind_inputs(rec: _Recorder, fn, args: tuple, kwargs: dict) -> None:
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
        named = list(bound.arguments.items())
    except (TypeError, ValueError):
        named = [(f"arg{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
    for pname, value in named:
        for i, tensor in enumerate(_tensors_in(value)):
            if rec.ref_of(tensor) is not None:
                continue
            name = pname if isinstance(value, torch.Tensor) else f"{pname}_{i}"
            ref = rec.builder.add("input", name, meta=tensor_meta(tensor), name=name)
            rec.builder.bind(ref.name, tensor)
            rec.track(tensor, ref)


def trace_graph(model, *args, **kwargs) -> Graph:
    """Run ``model(*args, **kwargs)`` once and return its graph (see the module docstring)."""
    fn = getattr(model, "fn", model)
    rec = _Recorder(getattr(fn, "__name__", "model"))
    _bind_inputs(rec, fn, args, kwargs)
    # The trace's one prior draw leaves the seed stream where it was: a graph served from the
    # cache and a freshly traced one give an engine the same draws after them.
    with forked(), no_cycle_collection():
        mode = _RecordingMode(rec)
        try:
            with mode, GraphTracer(rec, mode), checking_only(
                    lambda dist, name, value: mode.rec.checked_now(dist, name, value)), \
                    observing_construction(mode.constructed):
                result = fn(*args, **kwargs)
            rec.builder.add("output", "output", (rec.to_arg(_as_structure(result)),))
            rec.builder.attrs["reads_data"] = rec.reads_data
            rec.builder.nodes = _without_dead_calls(rec.builder.nodes)
            return rec.builder.build()
        finally:
            # The deferred replays refer back to the recorder: without this the run's tensors
            # and distributions would wait for the cyclic collector, which then walks them all.
            rec.deferred.clear()
            rec.constructions.clear()


def _without_dead_calls(nodes: list[Node]) -> list[Node]:
    """``nodes`` less the operations nothing reads (a replayed constructor's parameters that
    no site uses, results the model computed and dropped): one backward pass."""
    read: set[str] = set()
    kept = []
    for node in reversed(nodes):
        if node.kind == "call" and node.address is None and node.name not in read:
            continue
        read.update(node.refs())
        kept.append(node)
    return kept[::-1]


def _as_structure(value: Any) -> Any:
    if isinstance(value, dict):
        raise IRError("a model returning a dict cannot be traced yet; return a tuple instead")
    return value
