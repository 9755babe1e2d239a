"""Tracing ``ppl.scan``: the step runs once, recorded into a loop node's body graph.

The graph tracer (``ppl.ir.tracer``) hands ``scan`` here. The step runs once on step 0's
values under a recorder of its own, whose inputs are the step index, the carry and the
slice of ``xs``; an outer value the step reads becomes a ``captured`` input, passed by
``Ref``. The loop node's outputs get placeholder values of the right shapes (the last carry
of step 0, its ``y`` repeated) that are marked as symbolic, so reading one in Python is
reported, as is Python control flow on the carry, the slice or the step index inside the
step: the body is traced once and cannot bake in step 0's branch. Tracing costs the same
for any number of steps.

    >>> import torch
    >>> from ppl import model, sample, scan
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def ar(y):
    ...     rho = sample("rho", Normal(0.0, 1.0))
    ...     def step(x, y_t):
    ...         x = sample("x", Normal(rho * x, 1.0))
    ...         sample("y", Normal(x, 1.0), obs=y_t)
    ...         return x, None
    ...     scan(step, torch.tensor(0.0), y)
    >>> g = ar.graph(torch.zeros(1000))
    >>> len(g.nodes), [n.target for n in g.subgraphs["step"].inputs]
    (4, ['step', 'carry', 'x', 'captured'])
"""

from __future__ import annotations

from typing import Any

import torch

from ppl.errors import ModelError
from ppl.primitives import as_tensor
from ppl.runtime import internal
from ppl.scan import flatten, step_result, unflatten

from .node import Meta, Node, Ref
from .tracer import SMALL_LITERAL, _Recorder, _user_line, tensor_meta


class _BodyRecorder(_Recorder):
    """The recorder of a step: outer values it reads become ``captured`` inputs."""

    def __init__(self, scan_name: str, parent: _Recorder):
        super().__init__(scan_name)
        self.parent = parent
        self.scan_name = scan_name
        self.captured: list[Ref] = []
        self.step_marker = f"<step-dependent value of scan {scan_name!r}>"

    def tracked_deps(self, arg: Any) -> frozenset[str] | None:
        own, outer = super().tracked_deps(arg), self.parent.tracked_deps(arg)
        if own is None or outer is None:
            return outer if own is None else own
        return own | outer

    def to_arg(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor) and id(value) not in self.refs:
            outer = self.parent.ref_of(value)
            if outer is None and value.numel() > SMALL_LITERAL:
                outer = self.parent.to_arg(value)  # large data: an outer input, captured
            if outer is not None:
                ref = self.builder.add("input", "captured", meta=tensor_meta(value),
                                       name=outer.name)
                self.track(value, ref, self.parent.deps(value))
                self.captured.append(outer)
                return ref
        return super().to_arg(value)

    def dynamic_message(self, deps: frozenset[str], fname: str, line: str) -> str:
        if self.step_marker not in deps:
            return super().dynamic_message(deps, fname, line)
        return (
            f"the step of scan {self.scan_name!r} reads a value that changes from step to step "
            f"(its carry, its slice of xs, or something computed from them) with {fname}() at "
            f"{line}. The step is traced once, so its Python control flow cannot depend on the "
            "step; use torch.where / masking, or run the model on the trace path"
        )


def trace_scan(tracer, step, init: Any, x_leaves: list, x_spec, length: int, name: str):
    """Record ``scan(step, init, xs)`` as a loop node of ``tracer``'s graph; return the
    placeholder ``(final carry, ys)`` the rest of the model is traced with."""
    outer = tracer.rec
    if isinstance(outer, _BodyRecorder):
        raise ModelError(f"scan {name!r} inside the step of scan {outer.scan_name!r}: scans do "
                         "not nest; unroll the inner loop in Python or merge the steps")
    init_leaves, init_spec = flatten(init)
    init_leaves = [_init_leaf(v) for v in init_leaves]
    body = _BodyRecorder(name, outer)
    marker = frozenset({body.step_marker})
    with internal():
        step_index = torch.tensor(0)
        carry = [v.detach().clone() for v in init_leaves]
        x_t = [leaf[0].clone() for leaf in x_leaves]
    b = body.builder
    body.track(step_index, b.add("input", "step", meta=tensor_meta(step_index), name="t"), marker)
    for role, values in (("carry", carry), ("x", x_t)):
        for i, v in enumerate(values):
            body.track(v, b.add("input", role, meta=tensor_meta(v), name=f"{role}{i}"), marker)
    tracer.rec = tracer.mode.rec = body
    try:
        new_carry, y = step_result(name, step(unflatten(carry, init_spec),
                                              unflatten(x_t, x_spec)))
        new_leaves, new_spec = flatten(new_carry)
        _check_carry(name, init_spec, init_leaves, new_spec, new_leaves)
        y_leaves, y_spec = flatten(y)
        outs = [as_tensor(v) for v in [*new_leaves, *y_leaves]]
        b.add("output", "output", (tuple(body.to_arg(v) for v in outs),))
    finally:
        tracer.rec = tracer.mode.rec = outer
    outer.reads_data |= body.reads_data
    loop_name = outer.builder.fresh(name)
    b.name = loop_name
    outer.builder.subgraphs[loop_name] = b.build()
    args = (tuple(outer.to_arg(v) for v in init_leaves), tuple(outer.to_arg(v) for v in x_leaves),
            tuple(body.captured))
    outer.builder.nodes.append(Node(loop_name, "loop", loop_name, args, (("length", length),),
                                    Meta(source=_user_line())))
    symbolic = frozenset({f"<output of scan {loop_name!r}>"})
    with internal():
        finals = [v.detach().clone() for v in outs[: len(new_leaves)]]
        stacked = [v.detach().unsqueeze(0).expand(length, *v.shape).clone()
                   for v in outs[len(new_leaves):]]
    for i, value in enumerate([*finals, *stacked]):
        ref = outer.builder.add("call", "ppl.getitem", (Ref(loop_name), i),
                                meta=tensor_meta(value), name=f"{loop_name}_{i}")
        deps = symbolic | {f"{a}[t]" for a in body.deps(outs[i]) if not a.startswith("<")}
        outer.track(value, ref, deps)
    return unflatten(finals, init_spec), unflatten(stacked, y_spec)


def _init_leaf(value: Any) -> torch.Tensor:
    """A leaf of ``init`` as a tensor: an integer stays int64, as on the trace path (where
    ``init`` reaches the step as it is), so ``scan(step, 0, y)`` can index ``trans[z]``;
    anything else as data (``as_tensor``: other Python numbers become the default float)."""
    if not isinstance(value, torch.Tensor | bool) and torch.as_tensor(value).dtype == torch.int64:
        return torch.as_tensor(value)
    return as_tensor(value)


def _check_carry(name: str, init_spec, init_leaves: list, new_spec, new_leaves: list) -> None:
    if new_spec != init_spec:
        raise ModelError(f"scan {name!r}: the step returns a carry of structure {new_spec}, but "
                         f"init has {init_spec}; a carry keeps its structure")
    for i, (a, b) in enumerate(zip(init_leaves, new_leaves, strict=True)):
        b = as_tensor(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ModelError(f"scan {name!r}: the step turns carry leaf {i} from "
                             f"{tuple(a.shape)} {a.dtype} into {tuple(b.shape)} {b.dtype}; a "
                             "carry keeps its shape and dtype (give init the step's shape)")
