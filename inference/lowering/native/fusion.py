"""Loop fusion for the C emitter: elementwise instructions over the same number of elements,
and full sums of them, share one loop.

A straight-line potential over data is mostly chains of elementwise maps over ``N`` data
points ending in a sum (``sum(y * eta - softplus(eta))``), then the same again for the
gradient. One loop per instruction streams every intermediate through memory; one fused
loop keeps them in registers, lets the compiler share subexpressions between instructions
(``softplus`` and ``sigmoid`` of the same ``eta`` both need ``exp(-|eta|)``) and vectorizes
the whole body. :func:`schedule` groups a tape's instructions into such loops, moving
instructions that do not depend on a loop before it and those that depend on its results
after it, so every value is still computed before it is used.

    >>> from ppl.inference.lowering.tape import prims as P
    >>> from ppl.inference.lowering.tape.tape import Tape
    >>> tape = Tape()
    >>> x = tape.input("x", (100,))
    >>> total = tape.apply(P.SUM, P.exp(x) * x)
    >>> [type(item).__name__ for item in schedule(tape.live([total]), [total])]
    ['FusedLoop']
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ppl.inference.lowering.tape import prims as P
from ppl.inference.lowering.tape.tape import Instr, Value, Var, is_var, shape_of

__all__ = ["FusedLoop", "is_full_sum", "schedule"]

MAX_FUSED = 64
"""The most instructions one loop holds. A model's loops hold a few dozen, but an unrolled
time series fuses every step's same-size maps (a 2-state HMM at T=100: 2,000 lines in one
loop body), and gcc's time grows with the square of a loop body's length."""

WINDOW = 256
"""How far past its last member a loop looks for more: each loop's search is bounded, so
scheduling a long unrolled tape costs time linear in its length (an unrolled HMM at T=400
spent 11 s here when every loop searched the rest of the tape)."""


@dataclass
class FusedLoop:
    """One loop over ``size`` elements running ``instrs`` (elementwise maps, and full sums
    accumulated across the loop) in order; ``stored``: the maps' outputs that are read after
    the loop and so are written to memory (the others live in registers)."""

    size: int
    instrs: list[Instr]
    stored: set[str]


def _arg_vars(instr: Instr) -> list[Var]:
    found = []
    for arg in instr.args:
        items = arg if isinstance(arg, (tuple, list)) else (arg,)
        found += [a for a in items if is_var(a)]
    return found


def _readers(instrs: Sequence[Instr]) -> dict[str, set[int]]:
    """For each value, the ids of the instructions that read it."""
    readers: dict[str, set[int]] = {}
    for instr in instrs:
        for var in _arg_vars(instr):
            readers.setdefault(var.name, set()).add(id(instr))
    return readers


def is_full_sum(instr: Instr) -> bool:
    """``sum(x)`` over every dimension of a var ``x`` (an accumulation across a loop): a
    ``SUM`` to one value, or a ``SUM_TO`` one value that broadcasts nothing."""
    if math.prod(instr.out.shape) != 1 or not is_var(instr.args[0]):
        return False
    if instr.prim is P.SUM:
        return True
    return (instr.prim is P.SUM_TO
            and math.prod(instr.attrs["logical"]) == math.prod(instr.args[0].shape))


def _fusable_size(instr: Instr) -> int | None:
    """The loop size ``instr`` can join, or None: a flat elementwise map (every operand one
    value or as many as the output) or a full sum, over more than one element."""
    if is_full_sum(instr):
        size = math.prod(instr.args[0].shape)
        return size if size > 1 else None
    if not isinstance(instr.prim, P.Elementwise):
        return None
    size = math.prod(instr.out.shape)
    if size <= 1 or any(math.prod(shape_of(a)) not in (1, size) for a in instr.args):
        return None
    return size


def schedule(instrs: Sequence[Instr], outputs: Sequence[Value]) -> list[Instr | FusedLoop]:
    """The instructions in an order that computes every value before its use, with runs of
    same-size elementwise maps and full sums merged into :class:`FusedLoop` s."""
    readers: dict[str, set[int]] | None = None  # who reads each value: for the first loop
    results = {o.name for o in outputs if is_var(o)}
    queue = deque(instrs)
    plan: list[Instr | FusedLoop] = []
    while queue:
        group: list[Instr] = []
        size = None
        sums: set[str] = set()  # full sums of the group: known only after its loop
        inside: set[str] = set()  # everything the group computes
        later: list[Instr] = []  # instructions that read the group's results
        later_names: set[str] = set()
        since_join = 0
        while queue and len(group) < MAX_FUSED and since_join < WINDOW:
            instr = queue.popleft()
            since_join += 1
            n = _fusable_size(instr)
            if n is None and not inside and not later_names:
                plan.append(instr)  # no loop to order it against (a scalar model's every one)
                continue
            reads = {v.name for v in _arg_vars(instr)}
            joins = (n is not None and size in (None, n) and not reads & later_names
                     and not reads & sums)
            if joins:
                since_join = 0
                group.append(instr)
                size = n
                inside.add(instr.out.name)
                if is_full_sum(instr):
                    sums.add(instr.out.name)
            elif reads & (inside | later_names) or n is not None:
                later.append(instr)  # after the loop (a map of another size: its own loop)
                later_names.add(instr.out.name)
            else:
                plan.append(instr)  # independent of the group: before its loop
        queue.extendleft(reversed(later))  # the rest keeps its order after them
        if len(group) == 1:
            plan.append(group[0])
        elif group:
            readers = _readers(instrs) if readers is None else readers
            members = {id(i) for i in group}
            stored = {
                i.out.name for i in group
                if not is_full_sum(i)
                and (i.out.name in results or readers.get(i.out.name, set()) - members)
            }
            plan.append(FusedLoop(size, group, stored))
    return plan
