"""The state of one C emission: buffers for tape values, bound constants, loop nests.

Every tape value becomes a buffer of its per-chain shape (a plain ``double`` when it is a
scalar); :meth:`Emitter.at` spells an operand at a flat index (a literal for a number, the
bound table's pointer for a tensor constant), :meth:`Emitter.offset` the index of a
broadcast operand inside a loop nest, so the generated C has no shape logic at run time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ppl.inference.lowering.tape.tape import Value, Var, is_var

__all__ = ["Emitter", "contiguous_strides", "literal"]


#: Data constants at least this large whose values are all exact in float32 are stored as
#: float32 (a data matrix read once per gradient is the memory-bound part of a large model).
_SINGLE_MIN = 4096


def literal(value: float) -> str:
    """A float as C source (``NAN``, ``INFINITY`` and exact decimal otherwise)."""
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0 else "(-INFINITY)"
    return f"{value!r}" if "." in repr(value) or "e" in repr(value) else f"{value!r}.0"


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    """Element strides of a row-major buffer of ``shape``."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return strides[::-1]


@dataclass
class Emitter:
    """Emission state: the declared buffers, the bound constants and the body lines."""

    constants: list[torch.Tensor] = field(default_factory=list)
    declared: dict[str, str] = field(default_factory=dict)  # var name -> C declaration
    pointers: dict[str, str] = field(default_factory=dict)  # constant name -> its C type
    lines: list[str] = field(default_factory=list)
    _constant_names: dict[int, str] = field(default_factory=dict)
    _keep: list[torch.Tensor] = field(default_factory=list)
    _counter: int = 0

    # -- operands --------------------------------------------------------------------------
    def constant(self, value: torch.Tensor) -> str:
        """The C name of a bound tensor constant, flattened (float64, or int64 for indices).
        Keyed by identity (kept alive here, so that an id is never reused); a constant equal
        to an earlier one (a matrix's transpose, taken by the forward and the gradient) shares
        its name, so its data are read from one place."""
        key = id(value)
        if key not in self._constant_names:
            self._keep.append(value)  # its id stays its own while this emitter lives
            flat = value.detach().reshape(-1)
            if value.dtype in (torch.int64, torch.int32):
                data, ctype = flat.to(torch.int64).contiguous(), "int64_t"
            else:
                data, ctype = flat.to(torch.float64).contiguous(), "double"
                single = data.to(torch.float32)
                if data.numel() >= _SINGLE_MIN and bool((single.to(torch.float64) == data).all()):
                    # exactly representable: half the memory traffic, the same numbers
                    data, ctype = single, "float"
            for k, known in enumerate(self.constants):
                if known.dtype == data.dtype and known.shape == data.shape and bool(
                        torch.equal(known, data)):
                    self._constant_names[key] = f"K{k}"
                    return f"K{k}"
            name = f"K{len(self.constants)}"
            self.constants.append(data)
            self._constant_names[key] = name
            self.pointers[name] = ctype
        return self._constant_names[key]

    def pointer_declarations(self) -> list[str]:
        """Each bound constant's typed pointer into the ``ppl_K`` table, as locals of the
        function that reads them (``Kn`` is entry n)."""
        return [f"    const {ctype} *{name} = (const {ctype} *)ppl_K[{name[1:]}];"
                for name, ctype in self.pointers.items()]

    def pointer_macros(self) -> list[str]:
        """The same pointers as file-scope macros, for code split over several functions."""
        return [f"#define {name} ((const {ctype} *)ppl_K[{name[1:]}])"
                for name, ctype in self.pointers.items()]

    def at(self, value: Value, index: str) -> str:
        """``value`` at flat index ``index`` of its own contiguous layout."""
        if is_var(value):
            return value.name if value.ndim == 0 else f"{value.name}[{index}]"
        if type(value) is float:
            return literal(value)
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            return f"{self.constant(value)}[{index}]"
        return literal(float(torch.as_tensor(value, dtype=torch.float64).reshape(-1)[0]))

    def fresh(self, prefix: str = "i") -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    # -- buffers ---------------------------------------------------------------------------
    def declare(self, var: Var) -> None:
        if var.ndim == 0:
            self.declared[var.name] = f"double {var.name};"
        else:
            size = max(1, math.prod(var.shape))
            self.declared[var.name] = f"static _Thread_local double {var.name}[{size}];"

    def alias(self, var: Var, source: Var) -> None:
        """``var`` shares ``source``'s buffer (same contiguous data, another shape)."""
        if source.ndim == 0 or var.ndim == 0:
            self.declare(var)
            self.emit(f"{self.at(var, '0')} = {self.at(source, '0')};")
        else:
            self.declared[var.name] = f"const double *{var.name};"
            self.emit(f"{var.name} = {source.name};")

    def emit(self, line: str, depth: int = 0) -> None:
        self.lines.append("    " * (depth + 1) + line)

    # -- loop nests ------------------------------------------------------------------------
    def loops(self, shape: Sequence[int], body: Callable[[list[str], int], None]) -> None:
        """A loop nest over ``shape``; ``body(indices, depth)`` emits the innermost lines."""
        indices = []
        for depth, n in enumerate(shape):
            i = self.fresh()
            indices.append(i)
            self.emit(f"for (long {i} = 0; {i} < {n}; {i}++) {{", depth)
        body(indices, len(shape))
        for depth in reversed(range(len(shape))):
            self.emit("}", depth)

    @staticmethod
    def offset(shape: Sequence[int], indices: Sequence[str], out_rank: int) -> str:
        """Flat offset into a contiguous operand of ``shape`` broadcast against an output of
        rank ``out_rank`` looped over by ``indices`` (broadcast dimensions contribute 0)."""
        lead = out_rank - len(shape)
        terms = []
        for d, (n, stride) in enumerate(zip(shape, contiguous_strides(shape), strict=True)):
            if n != 1:
                term = indices[lead + d]
                terms.append(term if stride == 1 else f"{term} * {stride}")
        return " + ".join(terms) or "0"


