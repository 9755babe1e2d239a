"""Emit a potential recorded on the tape as one C function of a single chain's position.

:func:`emit_potential` turns a :class:`~ppl.inference.lowering.tape.Lowered` potential into C
source that defines::

    #define PPL_DIM D
    void ppl_bind(const void *const *constants);      /* the tensor constants, in order */
    double ppl_potential(const double *z, double *grad);   /* log p(z), writes grad */
    void ppl_potential_batch(long C, const double *z, double *lp, double *grad);

Every tape value becomes a buffer of its per-chain shape (:mod:`.emitter`), each instruction
a loop nest over its output (:mod:`.rules`), runs of elementwise instructions one loop
(:mod:`.fusion`), so the C has no shape logic at run time. Tensor constants (data, indices) are not
embedded: they are bound by pointer through ``ppl_bind``, so models that differ only in
their data share one compiled library. An instruction without a C rule raises
``Unsupported``, and the caller keeps the torch potential.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import torch

from ppl.inference.lowering.tape import Lowered, Unsupported

from .emitter import Emitter
from .fusion import schedule
from .rules import emit, supported

__all__ = ["CSource", "emit_potential"]


@dataclass
class CSource:
    """Generated C and the tensors its ``ppl_bind`` table must point at, in order."""

    text: str
    constants: list[torch.Tensor]
    dim: int


def _prelude() -> str:
    """The scalar helpers every generated potential includes (``scalar.h``)."""
    return resources.files(__package__).joinpath("scalar.h").read_text()


def emit_potential(lowered: Lowered) -> CSource:
    """C source of ``lowered``'s log density and gradient for one chain (see the module
    docstring), or ``Unsupported`` naming the first instruction without a C rule."""
    tape, log_density, grad = lowered.tape, lowered.log_density, lowered.grad
    dim = sum(block.size for _, block in lowered.inputs)
    if dim == 0:
        raise Unsupported("no latent dimensions")
    if lowered.data:
        raise Unsupported("per-chain data inputs (the C potential takes constants only)")
    em = Emitter()
    for var, block in lowered.inputs:
        if var.ndim == 0:
            em.declared[var.name] = f"double {var.name};"
            em.emit(f"{var.name} = z[{block.offset}];")
        else:
            em.declared[var.name] = f"const double *{var.name};"
            em.emit(f"{var.name} = z + {block.offset};")
    live = tape.live([log_density, grad])
    refused = next((instr for instr in live if not supported(instr)), None)
    if refused is not None:
        raise Unsupported(f"no C rule for {refused.prim.name} ({refused.out.dtype})")
    for item in schedule(live, [log_density, grad]):
        emit(em, item)
    i = em.fresh()
    em.emit(f"for (long {i} = 0; {i} < PPL_DIM; {i}++) grad[{i}] = {em.at(grad, i)};")
    em.emit(f"return {em.at(log_density, '0')};")
    declarations = ["    " + d for d in em.declared.values()]
    text = "\n".join([
        f"#define PPL_DIM {dim}",
        _prelude(),
        "double ppl_potential(const double *restrict z, double *restrict grad) {",
        *declarations,
        *em.lines,
        "}",
        "",
        "void ppl_potential_batch(long C, const double *z, double *lp, double *grad) {",
        "    for (long c = 0; c < C; c++)",
        "        lp[c] = ppl_potential(z + c * PPL_DIM, grad + c * PPL_DIM);",
        "}",
        "",
    ])
    return CSource(text, em.constants, dim)
