"""Exact sum-product over enumerated discrete variables in plated factor graphs (log space).

After ``enumerate_discrete`` every enumerated variable ``i`` owns one tensor dim
``var_dims[i]`` (negative, to the left of every batch dim) and lives in the plates
``var_plates[i]`` (negative batch dims). Variables that never share a tensor share a dim
(an HMM's ``z_t`` takes ``z_{t-2}``'s), so the layout's rank stays bounded as a chain grows.
Every log-factor is a tensor in that layout, and ``factor_vars[j]`` names the variables
factor ``j`` depends on (its size on their dims is ``K``, 1 on the other enumeration dims).
``contract_enumerated`` computes

    log sum_{assignments} prod_factors exp(log_factor)

by tensor variable elimination (Obermeyer et al., 2019) along a :class:`Plan` that depends
only on which variables each factor reads: factors are grouped by plate set; the deepest
group eliminates the variables local to it, then takes the product over the plates no
remaining variable needs (a sum of logs) and moves to the outer group; at the root the
global variables are eliminated. Within a group the order is greedy min-fill over the
variables' interaction graph (fewest new interactions first, then the smallest result),
so a chain of ``T`` variables is eliminated front to back like the forward algorithm: ``T``
contractions of ``K x K`` factors, never a factor over more variables than the graph's
treewidth forces. Batch dims of a factor that are not its plates are independent terms and
are summed first.

``posterior_marginals`` differentiates the same contraction: adding a zero tensor ``delta``
to a variable's own prior log-factor, ``d log Z / d delta[k, n] = P(var_n = k | rest)``.

    >>> import torch
    >>> prior = torch.tensor([0.3, 0.7]).log()          # one Bernoulli-like variable, dim -1
    >>> like = torch.tensor([0.5, 0.1]).log()
    >>> z = contract_enumerated((prior, like), ((), ()), ((0,), (0,)), (-1,), ((),))
    >>> round(float(z.exp()), 4)                        # 0.3*0.5 + 0.7*0.1
    0.22
    >>> chain = plan_contraction([(0,), (0, 1), (1, 2), (2, 3)], [()] * 4, [()] * 4)
    >>> [step.var for step in chain.steps], chain.largest([2] * 4)
    ([0, 1, 2, 3], 4)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ppl.ir.errors import IRError


@dataclass(frozen=True)
class Step:
    """One contraction: ``eliminate`` sums the product of ``inputs`` over variable ``var``
    (a logsumexp over its dim); ``product`` multiplies factor ``inputs[0]`` over the plates
    ``plates`` (a sum of logs over those dims). Either appends one factor, over ``vars``."""

    kind: str
    inputs: tuple[int, ...]
    vars: frozenset[int]
    var: int | None = None
    plates: tuple[int, ...] = ()


@dataclass(frozen=True)
class Plan:
    """The contraction order of a factor graph: ``steps`` in order, the variables of every
    factor it holds (``factor_vars``: the inputs, then one per step) and the factors whose
    sums make the result (``roots``)."""

    steps: tuple[Step, ...]
    factor_vars: tuple[frozenset[int], ...]
    roots: tuple[int, ...]

    def cliques(self) -> list[frozenset[int]]:
        """The variable sets that appear together in one tensor while contracting (each
        factor, and each step's sum of its inputs): those variables need distinct dims."""
        out = list(self.factor_vars)
        out += [s.vars | {s.var} for s in self.steps if s.kind == "eliminate"]
        return out

    def largest(self, sizes: Sequence[int]) -> int:
        """Entries (per batch element) of the largest tensor over enumeration dims the
        contraction holds, given each variable's number of values: its memory, and the cost
        of its widest step."""
        return max((math.prod(sizes[v] for v in vs) for vs in self.cliques()), default=1)


class _Elimination:
    """Greedy min-fill elimination of ``targets`` from the factors ``slots``, appending
    steps and factors to ``steps`` / ``factor_vars``; scores are refreshed only around each
    eliminated variable, so a chain of ``T`` costs ``O(T)``."""

    def __init__(self, slots: list[int], factor_vars: list[frozenset[int]], steps: list[Step]):
        self.factor_vars, self.steps = factor_vars, steps
        self.live = set(slots)
        self.holding: dict[int, set[int]] = {}
        for s in slots:
            for v in factor_vars[s]:
                self.holding.setdefault(v, set()).add(s)

    def neighbors(self, v: int) -> set[int]:
        return set().union(*(self.factor_vars[s] for s in self.holding.get(v, ()))) - {v}

    def _adjacent(self, a: int, b: int) -> bool:
        return not self.holding[a].isdisjoint(self.holding[b])

    def score(self, v: int) -> tuple[int, int, int]:
        nb = sorted(self.neighbors(v))
        fill = sum(not self._adjacent(a, b) for i, a in enumerate(nb) for b in nb[i + 1:])
        return fill, len(nb), v

    def run(self, targets: Sequence[int]) -> list[int]:
        remaining = {v: self.score(v) for v in targets if self.holding.get(v)}
        while remaining:
            v = min(remaining, key=remaining.__getitem__)
            del remaining[v]
            inputs = tuple(sorted(self.holding.pop(v)))
            result = frozenset().union(*(self.factor_vars[s] for s in inputs)) - {v}
            self.factor_vars.append(result)
            out = len(self.factor_vars) - 1
            self.steps.append(Step("eliminate", inputs, result, var=v))
            self.live.difference_update(inputs)
            self.live.add(out)
            for u in result:
                self.holding[u].difference_update(inputs)
                self.holding[u].add(out)
            touched = set(result).union(*(self.neighbors(u) for u in result))
            for u in touched & remaining.keys():
                remaining[u] = self.score(u)
        return sorted(self.live)


@functools.lru_cache(maxsize=64)
def _plan(factor_vars: tuple[tuple[int, ...], ...], factor_plates: tuple[tuple[int, ...], ...],
          var_plates: tuple[tuple[int, ...], ...]) -> Plan:
    plates_of = [frozenset(p) for p in var_plates]
    all_vars = [frozenset(vs) for vs in factor_vars]
    steps: list[Step] = []
    groups: dict[frozenset[int], list[int]] = {}
    for j, plates in enumerate(factor_plates):
        groups.setdefault(frozenset(plates), []).append(j)
    while True:
        deep = [p for p, fs in groups.items() if p and fs]
        if not deep:
            break
        plates = max(deep, key=lambda p: (len(p), sorted(p)))
        local = [v for v, p in enumerate(plates_of) if p == plates]
        for j in _Elimination(groups.pop(plates), all_vars, steps).run(local):
            outer = frozenset().union(*(plates_of[v] for v in all_vars[j]))
            if not outer < plates:
                raise IRError(
                    f"enumeration: cannot contract a factor in plates {sorted(plates)} that "
                    f"depends on variables from plates {sorted(outer)}; the plates of "
                    "enumerated sites must nest (a factor's variables may not come from two "
                    "sibling plates)"
                )
            all_vars.append(all_vars[j])
            steps.append(Step("product", (j,), all_vars[j], plates=tuple(sorted(plates - outer))))
            groups.setdefault(outer, []).append(len(all_vars) - 1)
    global_vars = [v for v, p in enumerate(plates_of) if not p]
    roots = _Elimination(groups.get(frozenset(), []), all_vars, steps).run(global_vars)
    return Plan(tuple(steps), tuple(all_vars), tuple(roots))


def plan_contraction(
    factor_vars: Sequence[Sequence[int]],
    factor_plates: Sequence[Sequence[int]],
    var_plates: Sequence[Sequence[int]],
) -> Plan:
    """The elimination plan for factors reading ``factor_vars`` (variable indices) in plates
    ``factor_plates``, the variables living in ``var_plates`` (plate dims). Cached: the
    pass, each evaluation and the tape share one plan per structure."""
    return _plan(
        tuple(tuple(sorted(vs)) for vs in factor_vars),
        tuple(tuple(sorted(p)) for p in factor_plates),
        tuple(tuple(sorted(p)) for p in var_plates),
    )


class TorchOps:
    """The tensor operations a contraction runs (the tape supplies its own, same names)."""

    @staticmethod
    def shape(x: Any) -> tuple[int, ...]:
        return tuple(torch.as_tensor(x).shape)

    @staticmethod
    def reshape(x: Any, shape: tuple[int, ...]) -> Any:
        return torch.as_tensor(x).reshape(shape)

    @staticmethod
    def add(a: Any, b: Any) -> Any:
        return a + b

    @staticmethod
    def sum(x: Any, dims: Sequence[int]) -> Any:
        return x.sum(tuple(dims), keepdim=True)

    @staticmethod
    def logsumexp(x: Any, dim: int) -> Any:
        return torch.logsumexp(x, dim=dim, keepdim=True)

    @staticmethod
    def total(x: Any) -> Any:
        return x.sum()


def _layout(var_dims: Sequence[int]) -> tuple[int, int]:
    """(rank of the layout, number of batch dims) implied by the variables' dims."""
    rank = max(-d for d in var_dims)
    return rank, min(-d for d in var_dims) - 1


def _pad(f: Any, rank: int, where: int, ops: Any) -> Any:
    shape = ops.shape(f)
    if len(shape) > rank:
        raise IRError(
            f"enumeration: log-factor {where} has shape {shape}, more dims than the "
            f"enumeration layout ({rank}); model code downstream of an enumerated site must "
            "broadcast on the left (index from the right, e.g. dim=-1, and avoid reshape/view)"
        )
    return f if len(shape) == rank else ops.reshape(f, (1,) * (rank - len(shape)) + shape)


def contract_enumerated(
    log_factors: Sequence[Any],
    factor_plates: Sequence[Sequence[int]],
    factor_vars: Sequence[Sequence[int]],
    var_dims: Sequence[int],
    var_plates: Sequence[Sequence[int]],
    ops: Any = TorchOps,
) -> Any:
    """The log of the sum over all enumerated assignments of the product of the factors,
    along :func:`plan_contraction`'s plan; ``ops`` runs it on torch tensors (or the tape's
    values)."""
    if not log_factors:
        return torch.zeros(())
    rank, n_batch = _layout(var_dims)
    plan = plan_contraction(factor_vars, factor_plates, var_plates)
    slots: list[Any] = []
    for i, (f, plates) in enumerate(zip(log_factors, factor_plates, strict=True)):
        f = _pad(f, rank, i, ops)
        free = [d for d in range(-n_batch, 0) if d not in plates and ops.shape(f)[d] > 1]
        slots.append(ops.sum(f, free) if free else f)
    for step in plan.steps:
        if step.kind == "eliminate":
            total = slots[step.inputs[0]]
            for i in step.inputs[1:]:
                total = ops.add(total, slots[i])
            slots.append(ops.logsumexp(total, var_dims[step.var]))
        else:
            f = slots[step.inputs[0]]
            gone = [d for d in step.plates if ops.shape(f)[d] > 1]
            slots.append(ops.sum(f, gone) if gone else f)
        for i in step.inputs:
            slots[i] = None  # consumed: free it
    result: Any = 0.0
    for r in plan.roots:
        result = ops.total(slots[r]) + result
    return result if plan.roots else torch.zeros(())


def posterior_marginals(
    log_factors: Sequence[torch.Tensor],
    factor_plates: Sequence[Sequence[int]],
    factor_vars: Sequence[Sequence[int]],
    var_dims: Sequence[int],
    var_plates: Sequence[Sequence[int]],
    prior_index: Sequence[int],
    batch_shapes: Sequence[Sequence[int]],
    sizes: Sequence[int],
) -> list[torch.Tensor]:
    """For each variable, ``P(var = k | rest)`` per batch element: shape ``batch + (K,)``.

    ``prior_index[i]`` is the position in ``log_factors`` of variable ``i``'s own prior
    log-factor; ``batch_shapes[i]`` and ``sizes[i]`` its batch shape and number of values.
    """
    rank, _ = _layout(var_dims)
    factors = [torch.as_tensor(f).detach() for f in log_factors]
    deltas = []
    with torch.enable_grad():
        for d, batch, k, j in zip(var_dims, batch_shapes, sizes, prior_index, strict=True):
            shape = [1] * rank
            shape[rank + d] = k
            for pos, size in enumerate(reversed(tuple(batch))):
                shape[rank - 1 - pos] = size
            delta = torch.zeros(shape, dtype=factors[j].dtype, requires_grad=True)
            deltas.append(delta)
            factors[j] = _pad(factors[j], rank, j, TorchOps) + delta
        log_z = contract_enumerated(factors, factor_plates, factor_vars, var_dims, var_plates)
        grads = torch.autograd.grad(log_z, deltas)
    out = []
    for g, d, batch, k in zip(grads, var_dims, batch_shapes, sizes, strict=True):
        g = g.movedim(rank + d, -1).reshape(tuple(batch) + (k,))
        out.append(g)
    return out
