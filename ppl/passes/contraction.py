"""Exact sum-product over enumerated discrete variables in plated factor graphs (log space).

After ``enumerate_discrete`` every enumerated variable ``i`` owns one tensor dim
``var_dims[i]`` (negative, to the left of every batch dim) and lives in the plates
``var_plates[i]`` (negative batch dims). Every log-factor is a tensor in the same layout:
size ``K_i`` on the dim of each variable it depends on, the plate sizes on its plate dims.
``contract_enumerated`` computes

    log sum_{assignments} prod_factors exp(log_factor)

by tensor variable elimination (Obermeyer et al., 2019): factors are grouped by plate set;
the deepest group eliminates the variables local to it (greedy order, one ``logsumexp``
each, so a chain of T dependent variables costs T small contractions, not K^T), then takes
the product over the plates no remaining variable needs (a sum of logs) and moves to the
outer group; at the root the global variables are eliminated. Batch dims of a factor that
are not its plates are independent terms and are summed first.

``posterior_marginals`` differentiates the same contraction: adding a zero tensor ``delta``
to a variable's own prior log-factor, ``d log Z / d delta[k, n] = P(var_n = k | rest)``.

    >>> import torch
    >>> prior = torch.tensor([0.3, 0.7]).log()          # one Bernoulli-like variable, dim -1
    >>> like = torch.tensor([0.5, 0.1]).log()
    >>> z = contract_enumerated((prior, like), ((), ()), (-1,), ((),))
    >>> round(float(z.exp()), 4)                        # 0.3*0.5 + 0.7*0.1
    0.22
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ppl.ir.errors import IRError
from ppl.shapes import broadcast_shapes


def _layout(var_dims: Sequence[int]) -> tuple[int, int]:
    """(rank of the layout, number of batch dims) implied by the variables' dims."""
    rank = max(-d for d in var_dims)
    return rank, min(-d for d in var_dims) - 1


def _pad(f: torch.Tensor, rank: int, where: int) -> torch.Tensor:
    f = torch.as_tensor(f)
    if f.dim() > rank:
        raise IRError(
            f"enumeration: log-factor {where} has shape {tuple(f.shape)}, more dims than the "
            f"enumeration layout ({rank}); model code downstream of an enumerated site must "
            "broadcast on the left (index from the right, e.g. dim=-1, and avoid reshape/view)"
        )
    return f.reshape((1,) * (rank - f.dim()) + tuple(f.shape))


def _cost(factors: list[torch.Tensor], d: int) -> int:
    """Elements of the factor made by summing out dim ``d``."""
    shapes = [f.shape for f in factors if f.shape[d] > 1]
    return math.prod(broadcast_shapes(*shapes)) if shapes else 0


def _eliminate(factors: list[torch.Tensor], dims: Sequence[int]) -> list[torch.Tensor]:
    """Sum out ``dims`` (log space), one at a time, cheapest result first."""
    factors, remaining = list(factors), list(dims)
    while remaining:
        d = min(remaining, key=lambda d: _cost(factors, d))  # noqa: B023 (used at once)
        remaining.remove(d)
        involved = [i for i, f in enumerate(factors) if f.shape[d] > 1]
        if not involved:
            continue
        total = factors[involved[0]]
        for i in involved[1:]:
            total = total + factors[i]
        factors = [f for i, f in enumerate(factors) if i not in involved]
        factors.append(torch.logsumexp(total, dim=d, keepdim=True))
    return factors


def contract_enumerated(
    log_factors: Sequence[torch.Tensor],
    factor_plates: Sequence[Sequence[int]],
    var_dims: Sequence[int],
    var_plates: Sequence[Sequence[int]],
) -> torch.Tensor:
    """The log of the sum over all enumerated assignments of the product of the factors."""
    if not log_factors:
        return torch.zeros(())
    rank, n_batch = _layout(var_dims)
    plates_of = {d: frozenset(p) for d, p in zip(var_dims, var_plates, strict=True)}
    groups: dict[frozenset[int], list[torch.Tensor]] = {}
    for i, (f, plates) in enumerate(zip(log_factors, factor_plates, strict=True)):
        f = _pad(f, rank, i)
        free = [d for d in range(-n_batch, 0) if d not in plates and f.shape[d] > 1]
        if free:
            f = f.sum(free, keepdim=True)
        groups.setdefault(frozenset(plates), []).append(f)
    while True:
        deep = [p for p, fs in groups.items() if p and fs]
        if not deep:
            break
        plates = max(deep, key=len)
        factors = _eliminate(groups.pop(plates), [d for d, p in plates_of.items() if p == plates])
        for f in factors:
            outer = frozenset().union(*(plates_of[d] for d in var_dims if f.shape[d] > 1))
            if not outer < plates:
                raise IRError(
                    f"enumeration: cannot contract a factor in plates {sorted(plates)} that "
                    f"depends on variables from plates {sorted(outer)}; the plates of "
                    "enumerated sites must nest (a factor's variables may not come from two "
                    "sibling plates)"
                )
            gone = [d for d in plates - outer if f.shape[d] > 1]
            groups.setdefault(outer, []).append(f.sum(gone, keepdim=True) if gone else f)
    roots = _eliminate(groups.get(frozenset(), []), [d for d, p in plates_of.items() if not p])
    total = torch.zeros(())
    for f in roots:
        total = total + f.sum()
    return total


def posterior_marginals(
    log_factors: Sequence[torch.Tensor],
    factor_plates: Sequence[Sequence[int]],
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
            factors[j] = _pad(factors[j], rank, j) + delta
        log_z = contract_enumerated(factors, factor_plates, var_dims, var_plates)
        grads = torch.autograd.grad(log_z, deltas)
    out = []
    for g, d, batch, k in zip(grads, var_dims, batch_shapes, sizes, strict=True):
        g = g.movedim(rank + d, -1).reshape(tuple(batch) + (k,))
        out.append(g)
    return out
