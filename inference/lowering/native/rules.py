"""The C for each tape primitive: elementwise templates, fused loops, and one rule per
structural primitive (reductions, reshapes, gathers, matrix products, linear algebra).

Each rule takes the :class:`~.emitter.Emitter` and an instruction, declares the output's
buffer and appends the loops that fill it. :func:`supported` says whether an instruction has
a rule; :func:`emit` writes an instruction or a :class:`~.fusion.FusedLoop`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ppl.inference.lowering.tape import Unsupported
from ppl.inference.lowering.tape import prims as P
from ppl.inference.lowering.tape.tape import Instr, Value, Var, is_var, shape_of

from . import chain
from .emitter import Emitter, contiguous_strides, literal
from .fusion import FusedLoop, is_full_sum

__all__ = ["emit", "has_rule", "supported"]

# C spellings of the elementwise primitives; {0}, {1}, {2} are the operands.
_ELEMENTWISE = {
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "div": "{0} / {1}",
    "neg": "-{0}",
    "pow": "pow({0}, {1})",
    "exp": "ppl_exp({0})",
    "log": "ppl_log({0})",
    "log1p": "ppl_log1p({0})",
    "expm1": "expm1({0})",
    "sqrt": "sqrt({0})",
    "square": "ppl_square({0})",
    "abs": "fabs({0})",
    "sign": "ppl_sign({0})",
    "sigmoid": "ppl_sigmoid({0})",
    "logsigmoid": "ppl_logsigmoid({0})",
    "softplus": "ppl_softplus({0})",
    "tanh": "tanh({0})",
    "sin": "sin({0})",
    "cos": "cos({0})",
    "reciprocal": "1.0 / {0}",
    "trigamma": "ppl_trigamma({0})",
    "digamma": "ppl_digamma({0})",
    "lgamma": "lgamma({0})",
    "erf": "erf({0})",
    "logaddexp": "ppl_logaddexp({0}, {1})",
    "log1mexp": "ppl_log1mexp({0})",
    "log_ndtr": "ppl_log_ndtr({0})",
    "log_i0": "ppl_log_i0({0})",
    "log_i0_slope": "ppl_log_i0_slope({0})",
    "maximum": "ppl_maximum({0}, {1})",
    "where": "({0} != 0.0 ? {1} : {2})",
    "lt": "(double)({0} < {1})",
    "le": "(double)({0} <= {1})",
    "gt": "(double)({0} > {1})",
    "ge": "(double)({0} >= {1})",
    "eq": "(double)({0} == {1})",
    "ne": "(double)({0} != {1})",
}

# The maps spelled with e = exp(-|x|) of their operand x: a fused loop computes each
# operand's e once (softplus and sigmoid of one logit are a Bernoulli's value and gradient).
_FROM_EXP_NEG_ABS = {
    "sigmoid": "ppl_sigmoid_e({0}, {e})",
    "logsigmoid": "ppl_logsigmoid_e({0}, {e})",
    "softplus": "ppl_softplus_e({0}, {e})",
}


def _fused_loop(em: Emitter, loop: FusedLoop) -> None:
    """One loop for a :class:`~.fusion.FusedLoop`: each map's value a local of the body
    (written out when read after the loop), each full sum an accumulator; the ``exp(-|x|)``
    of :data:`_FROM_EXP_NEG_ABS`'s maps a local per operand."""
    i = em.fresh()
    accumulators = {instr.out.name: em.fresh("acc") for instr in loop.instrs
                    if is_full_sum(instr)}
    for acc in accumulators.values():
        em.emit(f"double {acc} = 0.0;")
    reduction = f" reduction(+:{', '.join(accumulators.values())})" if accumulators else ""
    em.emit(f"#pragma omp simd{reduction}")
    em.emit(f"for (long {i} = 0; {i} < {loop.size}; {i}++) {{")
    local: dict[str, str] = {}
    exp_neg_abs: dict[str, str] = {}  # operand -> the local holding its exp(-|x|)

    def ref(value: Value) -> str:
        if is_var(value) and value.name in local:
            return local[value.name]
        return em.at(value, i if math.prod(shape_of(value)) == loop.size else "0")

    for instr in loop.instrs:
        name = instr.out.name
        if name in accumulators:
            em.emit(f"{accumulators[name]} += {ref(instr.args[0])};", 1)
            continue
        operands = [ref(a) for a in instr.args]
        template = _FROM_EXP_NEG_ABS.get(instr.prim.name)
        if template is not None and operands[0] not in exp_neg_abs:
            exp_neg_abs[operands[0]] = em.fresh("e")
            em.emit(f"const double {exp_neg_abs[operands[0]]} = ppl_exp(-fabs({operands[0]}));",
                    1)
        local[name] = em.fresh("t")
        expr = (_ELEMENTWISE[instr.prim.name].format(*operands) if template is None
                else template.format(*operands, e=exp_neg_abs[operands[0]]))
        em.emit(f"const double {local[name]} = {expr};", 1)
        if name in loop.stored:
            em.declare(instr.out)
            em.emit(f"{name}[{i}] = {local[name]};", 1)
    em.emit("}")
    for instr in loop.instrs:
        if instr.out.name in accumulators:
            em.declare(instr.out)
            em.emit(f"{em.at(instr.out, '0')} = {accumulators[instr.out.name]};")


def _elementwise(em: Emitter, instr: Instr) -> None:
    out, args = instr.out, instr.args
    template = _ELEMENTWISE[instr.prim.name]
    em.declare(out)
    size = math.prod(out.shape)
    flat = all(math.prod(shape_of(a)) in (1, size) for a in args)
    if flat:  # every operand is full-size or a single value: one flat loop
        i = em.fresh() if size > 1 else "0"
        exprs = [em.at(a, i if math.prod(shape_of(a)) == size else "0") for a in args]
        rhs = template.format(*exprs)
        if size == 1:
            em.emit(f"{em.at(out, '0')} = {rhs};")
        else:
            em.emit("#pragma omp simd")
            em.emit(f"for (long {i} = 0; {i} < {size}; {i}++) {out.name}[{i}] = {rhs};")
        return

    def body(indices, depth):
        exprs = [em.at(a, em.offset(shape_of(a), indices, out.ndim)) for a in args]
        em.emit(f"{out.name}[{em.offset(out.shape, indices, out.ndim)}] = "
                f"{template.format(*exprs)};", depth)

    em.loops(out.shape, body)


def _reduce_sum(em: Emitter, out: Var, x: Value, loop_shape: Sequence[int],
                x_shape: Sequence[int], kept: Sequence[bool], factor: float = 1.0) -> None:
    """``out = factor * sum of x over the loop dimensions not kept``; ``x`` (of ``x_shape``,
    right-aligned and broadcast to ``loop_shape``) is visited once per loop index, ``out``
    is contiguous over the kept dimensions (in order)."""
    em.declare(out)
    out_shape = [n for n, k in zip(loop_shape, kept, strict=True) if k]
    if not any(kept):  # a full reduction into one scalar: a vectorizable accumulation
        acc = em.fresh("acc")
        size = math.prod(loop_shape)
        em.emit(f"double {acc} = 0.0;")
        if tuple(x_shape) == tuple(loop_shape) or len(loop_shape) <= 1:
            i = em.fresh()
            idx = i if math.prod(x_shape) == size else "0"
            em.emit("#pragma omp simd reduction(+:" + acc + ")")
            em.emit(f"for (long {i} = 0; {i} < {size}; {i}++) {acc} += {em.at(x, idx)};")
        else:
            em.loops(loop_shape, lambda ix, d: em.emit(
                f"{acc} += {em.at(x, em.offset(x_shape, ix, len(loop_shape)))};", d))
        scale = f" * {literal(factor)}" if factor != 1.0 else ""
        em.emit(f"{em.at(out, '0')} = {acc}{scale};")
        return
    size = math.prod(out_shape)
    em.emit(f"memset({out.name}, 0, sizeof(double) * {size});")
    out_strides = iter(contiguous_strides(out_shape))
    strides = [next(out_strides) if k else 0 for k in kept]

    def body(indices, depth):
        target = " + ".join(f"{i} * {s}" for i, s in zip(indices, strides, strict=True) if s)
        value = em.at(x, em.offset(x_shape, indices, len(loop_shape)))
        em.emit(f"{out.name}[{target or '0'}] += {value};", depth)

    em.loops(loop_shape, body)
    if factor != 1.0:
        i = em.fresh()
        em.emit(f"for (long {i} = 0; {i} < {size}; {i}++) {out.name}[{i}] *= {literal(factor)};")


def _sum(em: Emitter, instr: Instr) -> None:
    (x,) = instr.args
    dims = instr.attrs.get("dims")
    shape = shape_of(x)
    reduced = set(range(len(shape))) if dims is None else {d % len(shape) for d in dims}
    _reduce_sum(em, instr.out, x, shape, shape, [d not in reduced for d in range(len(shape))])


def _sum_to(em: Emitter, instr: Instr) -> None:
    (x,) = instr.args
    logical, target = instr.attrs["logical"], instr.attrs["target"]
    rank, lead = len(logical), len(logical) - len(target)
    x_shape = (1,) * (rank - len(shape_of(x))) + tuple(shape_of(x))
    loop, kept, factor = [], [], 1.0
    for d in range(rank):
        summed = d < lead or target[d - lead] == 1
        if summed and x_shape[d] == 1:  # a broadcast dimension summed away: a factor
            factor *= logical[d]
            loop.append(1)
        else:
            loop.append(logical[d])
        kept.append(not summed)
    _reduce_sum(em, instr.out, x, loop, x_shape, kept, factor)


def _expand(em: Emitter, instr: Instr) -> None:
    (x,) = instr.args
    out = instr.out
    em.declare(out)
    em.loops(out.shape, lambda ix, d: em.emit(
        f"{out.name}[{em.offset(out.shape, ix, out.ndim)}] = "
        f"{em.at(x, em.offset(shape_of(x), ix, out.ndim))};", d))


def _reshape(em: Emitter, instr: Instr) -> None:
    em.alias(instr.out, instr.args[0])


def _permute(em: Emitter, instr: Instr) -> None:
    (x,) = instr.args
    perm, out = instr.attrs["perm"], instr.out
    em.declare(out)
    x_strides = contiguous_strides(x.shape)

    def body(indices, depth):
        source = " + ".join(f"{indices[o]} * {x_strides[p]}" for o, p in enumerate(perm))
        em.emit(f"{out.name}[{em.offset(out.shape, indices, out.ndim)}] = {x.name}[{source}];",
                depth)

    em.loops(out.shape, body)


def _gather(em: Emitter, instr: Instr) -> None:
    (x,) = instr.args
    positions, out = instr.attrs["positions"], instr.out
    em.declare(out)
    where = em.constant(positions)
    i = em.fresh()
    em.emit(f"for (long {i} = 0; {i} < {positions.numel()}; {i}++) "
            f"{em.at(out, i)} = {em.at(x, f'{where}[{i}]')};")


def _index_select(em: Emitter, instr: Instr) -> None:
    """``table[index]`` along the first dimension of a constant ``table``: the row
    ``index`` (a whole number held as a double, or an int64 constant) of each element."""
    table, index = instr.args
    out, rest = instr.out, shape_of(table)[1:]
    lead = out.ndim - len(rest)
    em.declare(out)

    def body(indices: list[str], depth: int) -> None:
        row = em.at(index, em.offset(shape_of(index), indices[:lead], lead))
        within = em.offset(rest, indices[lead:], len(rest))
        em.emit(f"{em.at(out, em.offset(out.shape, indices, out.ndim))} = "
                f"{em.at(table, f'(long)({row}) * {max(1, math.prod(rest))} + {within}')};",
                depth)

    if out.ndim == 0:
        body([], 0)
    else:
        em.loops(out.shape, body)


def _take_last(em: Emitter, instr: Instr) -> None:
    """``table[..., index]`` element by element, ``table`` broadcast with ``index`` (the
    indices are whole numbers held as doubles, or int64 constants)."""
    table, index = instr.args
    out = instr.out
    em.declare(out)

    def body(indices: list[str], depth: int) -> None:
        at = em.at(index, em.offset(shape_of(index), indices, out.ndim))
        row = em.offset(shape_of(table)[:-1], indices, out.ndim)
        size = shape_of(table)[-1]
        em.emit(f"{em.at(out, em.offset(out.shape, indices, out.ndim))} = "
                f"{em.at(table, f'({row}) * {size} + (long)({at})')};", depth)

    if out.ndim == 0:
        body([], 0)
    else:
        em.loops(out.shape, body)


def _scatter_add(em: Emitter, instr: Instr) -> None:
    (g,) = instr.args
    positions, out = instr.attrs["positions"], instr.out
    em.declare(out)
    size = max(1, math.prod(out.shape))
    where = em.constant(positions)
    if out.ndim:
        em.emit(f"memset({out.name}, 0, sizeof(double) * {size});")
    else:
        em.emit(f"{out.name} = 0.0;")
    i = em.fresh()
    em.emit(f"for (long {i} = 0; {i} < {positions.numel()}; {i}++) "
            f"{em.at(out, f'{where}[{i}]')} += {em.at(g, i)};")


def _matmul(em: Emitter, instr: Instr) -> None:
    """``out (m, n) = a (m, k) @ b (k, n)``, vectors as a row (``a``) or a column (``b``);
    when ``n == 1``, a dot product per output (vectorized reduction), or for a tall constant
    ``a`` (a design matrix times coefficients) ``out += a[:, kk] b[kk]`` per column, read
    from ``a``'s transpose: contiguous, vectorized along the ``m`` rows, and the same
    constant the gradient's ``aᵀ g`` reads; else the ``i, k, j`` order whose inner loop runs
    along contiguous rows of ``b`` and ``out``."""
    a, b = instr.args
    out = instr.out
    sa, sb = shape_of(a), shape_of(b)
    if len(sa) not in (1, 2) or len(sb) not in (1, 2):
        raise Unsupported(f"matmul of per-chain shapes {sa} and {sb}")
    m, k = (1, sa[0]) if len(sa) == 1 else sa
    n = 1 if len(sb) == 1 else sb[1]
    em.declare(out)
    i, kk, j, acc = em.fresh(), em.fresh(), em.fresh(), em.fresh("acc")
    if n == 1 and isinstance(a, torch.Tensor) and m > k:
        columns = em.constant(a.mT)
        em.emit(f"memset({out.name}, 0, sizeof(double) * {m});")
        em.emit(f"for (long {kk} = 0; {kk} < {k}; {kk}++) {{")
        em.emit(f"const double {acc} = {em.at(b, kk)};", 1)
        em.emit("#pragma omp simd", 1)
        em.emit(f"for (long {i} = 0; {i} < {m}; {i}++) "
                f"{out.name}[{i}] += {columns}[{kk} * {m} + {i}] * {acc};", 1)
        em.emit("}")
        return
    if n == 1:
        em.emit(f"for (long {i} = 0; {i} < {m}; {i}++) {{")
        em.emit(f"double {acc} = 0.0;", 1)
        em.emit(f"#pragma omp simd reduction(+:{acc})", 1)
        em.emit(f"for (long {kk} = 0; {kk} < {k}; {kk}++) "
                f"{acc} += {em.at(a, f'{i} * {k} + {kk}')} * {em.at(b, kk)};", 1)
        em.emit(f"{em.at(out, i)} = {acc};", 1)
        em.emit("}")
        return
    em.emit(f"memset({out.name}, 0, sizeof(double) * {m * n});")
    em.emit(f"for (long {i} = 0; {i} < {m}; {i}++) {{")
    em.emit(f"for (long {kk} = 0; {kk} < {k}; {kk}++) {{", 1)
    em.emit(f"const double {acc} = {em.at(a, f'{i} * {k} + {kk}')};", 2)
    em.emit("#pragma omp simd", 2)
    em.emit(f"for (long {j} = 0; {j} < {n}; {j}++) "
            f"{out.name}[{i} * {n} + {j}] += {acc} * {em.at(b, f'{kk} * {n} + {j}')};", 2)
    em.emit("}", 1)
    em.emit("}")


def _outer_inner(shape: Sequence[int], dim: int) -> tuple[int, int, int]:
    return math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1:])


def _copy_block(em: Emitter, dst: str, src: Value, outer: int, width: int, dst_row: int,
                dst_start: int) -> None:
    """``dst[o * dst_row + dst_start + t] = src[o * width + t]`` for every ``o``, ``t``."""
    o, t = em.fresh(), em.fresh()
    em.emit(f"for (long {o} = 0; {o} < {outer}; {o}++)")
    em.emit(f"for (long {t} = 0; {t} < {width}; {t}++) "
            f"{dst}[{o} * {dst_row} + {dst_start} + {t}] = {em.at(src, f'{o} * {width} + {t}')};",
            1)


def _concat(em: Emitter, instr: Instr) -> None:
    (parts,) = instr.args
    out = instr.out
    dim = instr.attrs["dim"] % out.ndim
    em.declare(out)
    outer, total, inner = _outer_inner(out.shape, dim)
    start = 0
    for part in parts:
        size = shape_of(part)[dim]
        _copy_block(em, out.name, part, outer, size * inner, total * inner, start * inner)
        start += size


def _columns(em: Emitter, instr: Instr) -> None:
    (parts,) = instr.args
    out = instr.out
    em.declare(out)
    start = 0
    for part in parts:
        size = max(1, math.prod(shape_of(part)))
        _copy_block(em, out.name, part, 1, size, 0, start)
        start += size


def _narrow(em: Emitter, instr: Instr) -> None:
    (x,) = instr.args
    out = instr.out
    dim, start, length = instr.attrs["dim"] % x.ndim, instr.attrs["start"], instr.attrs["length"]
    em.declare(out)
    outer, size, inner = _outer_inner(x.shape, dim)
    o, t = em.fresh(), em.fresh()
    em.emit(f"for (long {o} = 0; {o} < {outer}; {o}++)")
    em.emit(f"for (long {t} = 0; {t} < {length * inner}; {t}++) "
            f"{out.name}[{o} * {length * inner} + {t}] = "
            f"{x.name}[{o} * {size * inner} + {start * inner} + {t}];", 1)


def _cumsum(em: Emitter, instr: Instr, reverse: bool = False, log_space: bool = False) -> None:
    """Running sums along a dim (``log_space``: running log-sum-exps, logcumsumexp)."""
    (x,) = instr.args
    out = instr.out
    dim = instr.attrs["dim"] % x.ndim
    em.declare(out)
    outer, size, inner = _outer_inner(x.shape, dim)
    o, t, s = em.fresh(), em.fresh(), em.fresh()
    steps = f"long {s} = {size - 1}; {s} >= 0; {s}--" if reverse else \
        f"long {s} = 0; {s} < {size}; {s}++"
    em.emit(f"for (long {o} = 0; {o} < {outer}; {o}++)")
    em.emit(f"for (long {t} = 0; {t} < {inner}; {t}++) {{", 1)
    em.emit(f"double run = {'-INFINITY' if log_space else '0.0'};", 2)
    em.emit(f"for ({steps}) {{", 2)
    cell = f"{o} * {size * inner} + {s} * {inner} + {t}"
    update = f"run = ppl_logaddexp(run, {x.name}[{cell}]);" if log_space else \
        f"run += {x.name}[{cell}];"
    em.emit(f"{update} {out.name}[{cell}] = run;", 3)
    em.emit("}", 2)
    em.emit("}", 1)


def _log_sum_exp(em: Emitter, x: Var, dims: Sequence[int], out: Var | None,
                 subtract_into: str | None = None) -> None:
    """``logsumexp`` of ``x`` over ``dims`` into ``out`` (laid out as the kept dimensions);
    with ``subtract_into``, ``x - logsumexp`` (``log_softmax``) into that full buffer."""
    reduced = {d % x.ndim for d in dims}
    kept_dims = [d for d in range(x.ndim) if d not in reduced]
    red_dims = sorted(reduced)
    strides = contiguous_strides(x.shape)
    kept_shape = [x.shape[d] for d in kept_dims]
    red_shape = [x.shape[d] for d in red_dims]

    def outer_body(kept_ix, depth):
        base = " + ".join(f"{i} * {strides[d]}" for i, d in zip(kept_ix, kept_dims,
                                                                  strict=True)) or "0"
        m, total, lse = em.fresh("m"), em.fresh("acc"), em.fresh("lse")
        em.emit(f"double {m} = -INFINITY, {total} = 0.0, {lse};", depth)

        def cell(red_ix, name=x.name):
            inner = " + ".join(f"{i} * {strides[d]}" for i, d in zip(red_ix, red_dims,
                                                                       strict=True)) or "0"
            return f"{name}[{base} + {inner}]"

        nest(red_shape, lambda ix, d: em.emit(f"if ({cell(ix)} > {m} || isnan({cell(ix)})) "
                                              f"{m} = {cell(ix)};", d), depth)
        em.emit(f"if (isinf({m})) {lse} = {m}; else {{", depth)
        nest(red_shape, lambda ix, d: em.emit(f"{total} += exp({cell(ix)} - {m});", d), depth + 1)
        em.emit(f"{lse} = {m} + log({total}); }}", depth + 1)
        if out is not None:
            flat = em.offset(kept_shape, kept_ix, len(kept_shape))
            em.emit(f"{em.at(out, flat)} = {lse};", depth)
        if subtract_into is not None:
            nest(red_shape, lambda ix, d: em.emit(
                f"{cell(ix, subtract_into)} = {cell(ix)} - {lse};", d), depth)

    def nest(shape, body, depth):
        indices = []
        for k, n in enumerate(shape):
            i = em.fresh()
            indices.append(i)
            em.emit(f"for (long {i} = 0; {i} < {n}; {i}++) {{", depth + k)
        body(indices, depth + len(shape))
        for k in reversed(range(len(shape))):
            em.emit("}", depth + k)

    nest(kept_shape, outer_body, 0)


def _logsumexp(em: Emitter, instr: Instr) -> None:
    (x,) = instr.args
    dim = instr.attrs["dim"]
    em.declare(instr.out)
    _log_sum_exp(em, x, dim if isinstance(dim, (tuple, list)) else (dim,), instr.out)


def _log_softmax(em: Emitter, instr: Instr) -> None:
    (x,) = instr.args
    em.declare(instr.out)
    _log_sum_exp(em, x, (instr.attrs["dim"],), None, subtract_into=instr.out.name)


def _cholesky(em: Emitter, instr: Instr) -> None:
    """Cholesky-Banachiewicz, row by row from the lower triangle; a pivot that is not
    positive is NaN, which then spreads through the rest of the factor (a divergence)."""
    (x,) = instr.args
    out = instr.out
    n = shape_of(x)[-1]
    em.declare(out)
    i, j, k, acc = em.fresh(), em.fresh(), em.fresh(), em.fresh("acc")
    em.emit(f"for (long {i} = 0; {i} < {n}; {i}++) {{")
    em.emit(f"for (long {j} = 0; {j} <= {i}; {j}++) {{", 1)
    em.emit(f"double {acc} = {em.at(x, f'{i} * {n} + {j}')};", 2)
    em.emit(f"for (long {k} = 0; {k} < {j}; {k}++) "
            f"{acc} -= {out.name}[{i} * {n} + {k}] * {out.name}[{j} * {n} + {k}];", 2)
    em.emit(f"{out.name}[{i} * {n} + {j}] = {i} == {j} ? ({acc} > 0.0 ? sqrt({acc}) : NAN) "
            f": {acc} / {out.name}[{j} * {n} + {j}];", 2)
    em.emit("}", 1)
    em.emit(f"for (long {j} = {i} + 1; {j} < {n}; {j}++) {out.name}[{i} * {n} + {j}] = 0.0;", 1)
    em.emit("}")


def _solve_triangular(em: Emitter, instr: Instr) -> None:
    """Forward or back substitution, one system per column of ``b`` (``left``: ``a X = b``)
    or per row (``X a = b``, i.e. ``a^T X^T = b^T``: ``a`` read transposed, its triangle
    flipped)."""
    a, b = instr.args
    upper, left, out = instr.attrs["upper"], instr.attrs.get("left", True), instr.out
    rows, cols = shape_of(b)
    n = shape_of(a)[-1]
    em.declare(out)
    s, i, j, acc = em.fresh(), em.fresh(), em.fresh(), em.fresh("acc")
    if left:
        systems, forward = cols, not upper
        cell, entry = (lambda r, c: f"{r} * {cols} + {c}"), (lambda r, c: f"{r} * {n} + {c}")
    else:
        systems, forward = rows, upper
        cell, entry = (lambda r, c: f"{c} * {n} + {r}"), (lambda r, c: f"{c} * {n} + {r}")
    order, solved = (
        (f"long {i} = 0; {i} < {n}; {i}++", f"long {j} = 0; {j} < {i}; {j}++") if forward
        else (f"long {i} = {n - 1}; {i} >= 0; {i}--", f"long {j} = {i} + 1; {j} < {n}; {j}++")
    )
    em.emit(f"for (long {s} = 0; {s} < {systems}; {s}++)")
    em.emit(f"for ({order}) {{", 1)
    em.emit(f"double {acc} = {em.at(b, cell(i, s))};", 2)
    em.emit(f"for ({solved}) {acc} -= {em.at(a, entry(i, j))} * {out.name}[{cell(j, s)}];", 2)
    em.emit(f"{out.name}[{cell(i, s)}] = {acc} / {em.at(a, entry(i, i))};", 2)
    em.emit("}", 1)


_RULES: dict[str, Callable[[Emitter, Instr], None]] = {
    "sum": _sum,
    "sum_to": _sum_to,
    "expand": _expand,
    "reshape": _reshape,
    "permute": _permute,
    "gather": _gather,
    "take_last": _take_last,
    "index_select": _index_select,
    "scatter_add": _scatter_add,
    "matmul": _matmul,
    "cat": _concat,
    "columns": _columns,
    "narrow": _narrow,
    "cumsum": _cumsum,
    "reverse_cumsum": lambda em, instr: _cumsum(em, instr, reverse=True),
    "logcumsumexp": lambda em, instr: _cumsum(em, instr, log_space=True),
    "reverse_logcumsumexp": lambda em, instr: _cumsum(em, instr, reverse=True, log_space=True),
    "cholesky": _cholesky,
    "solve_triangular": _solve_triangular,
    "logsumexp": _logsumexp,
    "log_softmax": _log_softmax,
    "chain_logsumexp": chain.chain_logsumexp,
    "chain_marginals": chain.chain_marginals,
}




def has_rule(prim: P.Prim) -> bool:
    """Whether the primitive has a C rule."""
    if isinstance(prim, P.Elementwise):
        return prim.name in _ELEMENTWISE
    return prim.name in _RULES


def supported(instr: Instr) -> bool:
    """Whether ``instr`` has a C rule (and a value type the C buffers hold)."""
    return instr.out.dtype in (torch.float64, torch.bool) and has_rule(instr.prim)


def emit(em: Emitter, item: Instr | FusedLoop) -> None:
    """Append the C of one scheduled item."""
    if isinstance(item, FusedLoop):
        _fused_loop(em, item)
    elif isinstance(item.prim, P.Elementwise):
        _elementwise(em, item)
    else:
        _RULES[item.prim.name](em, item)
