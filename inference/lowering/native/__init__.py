"""The native backend: a model's potential and samplers generated as C and compiled once.

``NativePotential.from_lowered(lowered)`` emits C (:mod:`.codegen`) for a potential lowered
on the tape of :mod:`ppl.inference.lowering.tape`; it raises ``Unsupported`` when the graph needs
an operation without a C rule or the machine has no C compiler (:func:`compiler_available`),
and ``FlatModel`` then keeps the torch potential.
"""

from __future__ import annotations

from .codegen import CSource, emit_potential
from .compiler import CompileError, compiler_available
from .potential import NativePotential

__all__ = [
    "CSource",
    "CompileError",
    "NativePotential",
    "compiler_available",
    "emit_potential",
]

