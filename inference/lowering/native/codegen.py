"""Emit a potential recorded on the tape as one C function of a single chain's position.

:func:`emit_potential` turns a :class:`~ppl.inference.lowering.tape.Lowered` potential into C
source that defines::

    #define PPL_DIM D
    void ppl_bind(const void *const *constants);      /* the tensor constants, in order */
    void ppl_bind_inputs(const void *const *inputs, const long *row_strides);
    double ppl_potential_row(const double *z, double *grad, long row);  /* log p(z), grad */
    double ppl_potential(const double *z, double *grad);   /* row 0 */
    void ppl_potential_batch(long C, const double *z, double *lp, double *grad);  /* row c */

Every tape value becomes a buffer of its per-chain shape (:mod:`.emitter`), each instruction
a loop nest over its output (:mod:`.rules`), runs of elementwise instructions one loop
(:mod:`.fusion`), so the C has no shape logic at run time. Tensor constants (data, indices) are not
embedded: they are bound by pointer through ``ppl_bind``, so models that differ only in
their data share one compiled library. The run-time inputs (per-chain data rows, param
values, the tempering beta: ``Lowered.data``) are bound the same way through
``ppl_bind_inputs``, each with a row stride: input ``k`` of chain ``row`` starts at element
``row * row_strides[k]``, so a stride of 0 shares one value between all chains. An
instruction without a C rule raises ``Unsupported``, and the caller keeps the torch
potential.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from itertools import pairwise

import torch

from ppl.inference.lowering.tape import Lowered, Unsupported

from .emitter import Emitter
from .fusion import schedule
from .rules import emit, supported

__all__ = ["CSource", "emit_potential", "prelude", "rng_source"]


@dataclass
class CSource:
    """Generated C and the tensors its ``ppl_bind`` table must point at, in order."""

    text: str
    constants: list[torch.Tensor]
    dim: int
    inputs: tuple[tuple[tuple[int, ...], torch.dtype], ...] = ()  # per-chain shape, dtype
    optimization: str = "-O3"  # the flag it compiles with (see LARGE_LINES)


def prelude() -> str:
    """The scalar helpers every generated unit includes (``scalar.h``)."""
    return resources.files(__package__).joinpath("scalar.h").read_text()


def rng_source() -> str:
    """The C random numbers the native samplers and filters share (``rng.h``: xoshiro256**
    seeded by splitmix64, uniforms, Box-Muller normals), to prepend to a unit's text."""
    return resources.files(__package__).joinpath("rng.h").read_text()


def emit_potential(lowered: Lowered) -> CSource:
    """C source of ``lowered``'s log density and gradient for one chain (see the module
    docstring), or ``Unsupported`` naming the first instruction without a C rule."""
    tape, log_density, grad = lowered.tape, lowered.log_density, lowered.grad
    dim = sum(block.size for _, block in lowered.inputs)
    if dim == 0:
        raise Unsupported("no latent dimensions")
    em = Emitter()
    for var, block in lowered.inputs:
        if var.ndim == 0:
            em.declared[var.name] = f"double {var.name};"
            em.emit(f"{var.name} = z[{block.offset}];")
        else:
            em.declared[var.name] = f"const double *{var.name};"
            em.emit(f"{var.name} = z + {block.offset};")
    for k, var in enumerate(lowered.data):
        ctype = _INPUT_TYPES.get(var.dtype)
        if ctype is None:
            raise Unsupported(f"a run-time input of dtype {var.dtype} (C takes float64, int64)")
        row = f"(const {ctype} *)ppl_X[{k}] + row * ppl_XS[{k}]"
        if var.ndim == 0:
            em.declared[var.name] = f"{ctype} {var.name};"
            em.emit(f"{var.name} = *({row});")
        else:
            em.declared[var.name] = f"const {ctype} *{var.name};"
            em.emit(f"{var.name} = {row};")
    live = tape.live([log_density, grad])
    refused = next((instr for instr in live if not supported(instr)), None)
    if refused is not None:
        raise Unsupported(f"no C rule for {refused.prim.name} ({refused.out.dtype})")
    boundaries = [len(em.lines)]
    for item in schedule(live, [log_density, grad]):
        emit(em, item)
        boundaries.append(len(em.lines))
    i = em.fresh()
    em.emit(f"for (long {i} = 0; {i} < PPL_DIM; {i}++) grad[{i}] = {em.at(grad, i)};")
    em.emit(f"return {em.at(log_density, '0')};")
    text = "\n".join([
        f"#define PPL_DIM {dim}",
        prelude(),
        "static const void *const *ppl_X;  /* run-time inputs */",
        "static const long *ppl_XS;        /* their row strides (0: one value for all rows) */",
        "void ppl_bind_inputs(const void *const *inputs, const long *row_strides) {",
        "    ppl_X = inputs;",
        "    ppl_XS = row_strides;",
        "}",
        "",
        *_row_function(em, boundaries),
        "",
        "double ppl_potential(const double *restrict z, double *restrict grad) {",
        "    return ppl_potential_row(z, grad, 0);",
        "}",
        "",
        "void ppl_potential_batch(long C, const double *z, double *lp, double *grad) {",
        "    for (long c = 0; c < C; c++)",
        "        lp[c] = ppl_potential_row(z + c * PPL_DIM, grad + c * PPL_DIM, c);",
        "}",
        "",
    ])
    inputs = tuple((var.shape, var.dtype) for var in lowered.data)
    optimization = "-O1" if len(em.lines) > LARGE_LINES else "-O3"
    return CSource(text, em.constants, dim, inputs, optimization)


_INPUT_TYPES = {torch.float64: "double", torch.int64: "int64_t"}

PART_LINES = 400
"""A potential whose body is longer than this many C lines is split into functions of about
this length: gcc's time grows with the square of a function's length (an unrolled 2-state
HMM: T=100, 6,700 lines, 11 s at -O3; T=300, 19,000 lines, 146 s), so a long straight-line
body compiles in parts that share its values through file-scope thread-local variables.
A shorter body stays one function, its scalars in registers."""

LARGE_LINES = 8000
"""A body longer than this compiles at -O1, not -O3: straight-line code this long (an
unrolled time series) gains little from -O3 and takes much longer (a 2-state HMM at T=1000,
64,000 lines: about 50 s to build at -O3, 32 s at -O1, gradients 0.2 and 0.3 ms)."""

_ROW_PARAMETERS = "const double *restrict z, double *restrict grad, long row"


def _row_function(em: Emitter, boundaries: list[int]) -> list[str]:
    """``ppl_potential_row``: the body as one function, or, past :data:`PART_LINES`, as
    parts cut at the scheduled items' boundaries (``boundaries``: line counts after each)
    that it calls in order."""
    body, tail = em.lines[:boundaries[-1]], em.lines[boundaries[-1]:]
    signature = f"double ppl_potential_row({_ROW_PARAMETERS}) {{"
    if len(body) <= PART_LINES:
        return [signature, *em.pointer_declarations(),
                *("    " + d for d in em.declared.values()), *body, *tail, "}"]
    cuts, start = [0], 0
    for end in boundaries:
        if end - start >= PART_LINES:
            cuts.append(end)
            start = end
    cuts.append(len(body))
    parts = [body[a:b] for a, b in pairwise(cuts) if b > a]
    lines = em.pointer_macros() + [d if d.startswith("static ") else f"static _Thread_local {d}"
                                   for d in em.declared.values()]
    for k, part in enumerate(parts):
        lines += ["", f"static void ppl_part_{k}({_ROW_PARAMETERS}) {{", *part, "}"]
    calls = [f"    ppl_part_{k}(z, grad, row);" for k in range(len(parts))]
    return [*lines, "", signature, *calls, *tail, "}"]
