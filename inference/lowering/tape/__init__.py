"""The generated potential: a graph's flat log density and gradient as straight-line torch code.

``build_potential(graph, blocks)`` (``graph`` unconstrained) returns ``fn(z) -> (log_density,
grad)`` or raises ``Unsupported``; :class:`ppl.inference.lowering.flat.FlatModel` uses it and
falls back to autograd.
"""

from .build import (
    Lowered,
    RuntimeInput,
    build_potential,
    lower_potential,
    per_chain_dtype,
    torch_potential,
    torch_values,
)
from .tape import Unsupported

__all__ = [
    "Lowered",
    "RuntimeInput",
    "Unsupported",
    "build_potential",
    "lower_potential",
    "per_chain_dtype",
    "torch_potential",
    "torch_values",
]
