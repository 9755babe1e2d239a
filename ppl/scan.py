"""``scan``: a sequential loop whose step holds sample statements.

``scan(step, init, xs)`` runs ``carry, y_t = step(carry, x_t)`` for t = 0..T-1 and returns
``(final carry, ys)``, each output leaf stacked over steps on a new leading dim (the
semantics of ``jax.lax.scan``). ``init``, ``xs`` and what ``step`` returns may be tensors or
tuples, lists and dicts of them. A site named ``"x"`` inside the step is the site ``"x[t]"``
at step t, and its ``infer["steps"]`` (``Meta.attr("steps")`` in a graph) holds
``((name, t), ...)``, outermost first, as the sequential plate iterator records it.

On the trace path the loop runs in Python. Tracing a graph records the step once, as a
``loop`` node with a body graph (``ppl.ir.loop``). A step may hold plates, and a scan may sit
inside plates; a scan inside another scan's step is refused (an error naming both), and so
is a ``param`` inside a step (declare it outside; the step reads it).

    >>> import torch
    >>> from ppl import sample
    >>> from ppl.handlers import trace
    >>> from ppl.stdlib import Normal
    >>> def ar1():
    ...     def step(x, y):
    ...         x = sample("x", Normal(0.9 * x, 1.0))
    ...         sample("y", Normal(x, 1.0), obs=y)
    ...         return x, x
    ...     return scan(step, torch.tensor(0.0), torch.zeros(4))
    >>> tr = trace().get_trace(ar1)
    >>> [name for name in tr.sites][:4], tr.sites["x[2]"].infer["steps"]
    (['x[0]', 'y[0]', 'x[1]', 'y[1]'], (('step', 2),))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree

from .errors import ModelError
from .runtime import Message, Messenger, active_handlers

STEP_KINDS = ("sample", "factor", "deterministic")
"""The messages that get the step index in their address (a param inside a step is refused:
declared outside, it is one value that every step reads)."""


def flatten(tree: Any) -> tuple[list, Any]:
    """The tensor leaves of a pytree and its structure; ``None`` (no value) has no leaves."""
    if tree is None:
        return [], None
    return pytree.tree_flatten(tree)


def unflatten(leaves: list, spec: Any) -> Any:
    return None if spec is None else pytree.tree_unflatten(leaves, spec)


def record_step(msg: Message, name: str, t: int) -> None:
    """Prepend ``(name, t)`` to the message's ``infer["steps"]`` (handlers see a message from
    the innermost out, so the outermost loop ends up first)."""
    msg.infer["steps"] = ((name, t), *msg.infer.get("steps", ()))


class ScanStep(Messenger):
    """Inside step ``t`` of scan ``name``: sites get the address ``site[t]``."""

    def __init__(self, name: str, t: int):
        self.name, self.t = name, t

    def process(self, msg: Message) -> None:
        if msg.kind == "param":
            raise ModelError(f"param {msg.name!r} inside step {self.t} of scan {self.name!r}: "
                             "declare params outside the step (the step may read them)")
        if msg.kind in STEP_KINDS:
            msg.name = f"{msg.name}[{self.t}]"
            record_step(msg, self.name, self.t)


def scan(
    step: Callable[[Any, Any], tuple[Any, Any]],
    init: Any,
    xs: Any = None,
    *,
    length: int | None = None,
    name: str | None = None,
) -> tuple[Any, Any]:
    """``(final carry, ys)`` of ``carry, y = step(carry, x_t)`` over the leading dim of ``xs``
    (or ``length`` steps with ``x_t = None``); see the module docstring. ``name`` (default: the
    step function's name) names the loop in ``infer["steps"]`` and the graph's loop node."""
    name = name or getattr(step, "__name__", "scan")
    x_leaves, x_spec = flatten(xs)
    length = scan_length(name, x_leaves, length)
    outer = [h for h in active_handlers() if isinstance(h, ScanStep)]
    if outer:
        raise ModelError(f"scan {name!r} inside step {outer[-1].t} of scan {outer[-1].name!r}: "
                         "scans do not nest; unroll the inner loop in Python or merge the steps")
    for handler in reversed(active_handlers()):
        trace_scan = getattr(handler, "trace_scan", None)
        if trace_scan is not None:  # a graph tracer records the step once
            return trace_scan(step, init, x_leaves, x_spec, length, name)
    carry, ys = init, []
    for t in range(length):
        x_t = unflatten([leaf[t] for leaf in x_leaves], x_spec)
        with ScanStep(name, t):
            new, y = step_result(name, step(carry, x_t))
        check_carry(name, t, carry, new)
        carry = new
        ys.append(y)
    return carry, stack_outputs(name, ys)


def scan_length(name: str, x_leaves: list, length: int | None) -> int:
    """The number of steps: ``length``, or the leading dim every xs leaf shares."""
    sizes = {int(leaf.shape[0]) for leaf in x_leaves if isinstance(leaf, torch.Tensor)
             and leaf.dim() > 0}
    if any(not isinstance(leaf, torch.Tensor) or leaf.dim() == 0 for leaf in x_leaves):
        raise ModelError(f"scan {name!r}: every leaf of xs is a tensor with a leading step dim; "
                         f"got {[type(v).__name__ for v in x_leaves]}")
    if length is not None:
        sizes.add(int(length))
    if len(sizes) != 1:
        raise ModelError(f"scan {name!r}: the steps disagree: xs leading dims and length give "
                         f"{sorted(sizes)}" if sizes else
                         f"scan {name!r}: give xs or length (the number of steps)")
    (n,) = sizes
    if n < 1:
        raise ModelError(f"scan {name!r}: length {n}; a scan takes at least one step")
    return n


def step_result(name: str, out: Any) -> tuple[Any, Any]:
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ModelError(f"scan {name!r}: the step returns {type(out).__name__}; it returns a "
                         "pair (new carry, y)")
    return out


def check_carry(name: str, t: int, old: Any, new: Any) -> None:
    """The carry keeps its structure, and its tensors their shapes and dtypes, over a step
    (the first step may broadcast ``init`` up to its batch shape)."""
    (old_leaves, old_spec), (new_leaves, new_spec) = flatten(old), flatten(new)
    if old_spec != new_spec:
        raise ModelError(f"scan {name!r}: step {t} returns a carry of structure {new_spec}, but "
                         f"it came in as {old_spec}; a carry keeps its structure")
    for i, (a, b) in enumerate(zip(old_leaves, new_leaves, strict=True)):
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        if t == 0:  # init may broadcast up to the step's batch shape (plates, num_samples)
            same = _broadcasts_to(a.shape, b.shape)
        else:
            same = a.shape == b.shape and a.dtype == b.dtype
        if not same:
            raise ModelError(f"scan {name!r}: step {t} turns carry leaf {i} from "
                             f"{tuple(a.shape)} {a.dtype} into {tuple(b.shape)} {b.dtype}; a "
                             "carry keeps its shape and dtype")


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def stack_outputs(name: str, ys: list) -> Any:
    """The per-step outputs stacked leaf by leaf on a new leading dim."""
    leaves = [flatten(y) for y in ys]
    spec = leaves[0][1]
    for t, (_, s) in enumerate(leaves):
        if s != spec:
            raise ModelError(f"scan {name!r}: step {t} returns outputs of structure {s}, step 0 "
                             f"{spec}; every step returns the same structure")
    stacked = [torch.stack([torch.as_tensor(ls[i]) for ls, _ in leaves])
               for i in range(len(leaves[0][0]))]
    return unflatten(stacked, spec)


def unstack_steps(values: dict[str, Any], sites: Any, dim: int = 0) -> dict[str, Any]:
    """``values`` with every stacked body site (a key ``x`` that is no site of ``sites``
    while ``x[0]`` is, as MCMC reports a vectorized loop's site) split along ``dim`` into its
    steps ``x[0] .. x[T-1]``; other keys pass through."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in sites and f"{key}[0]" in sites:
            out.update({f"{key}[{t}]": value.select(dim, t)
                        for t in range(value.shape[dim])})
        else:
            out[key] = value
    return out
