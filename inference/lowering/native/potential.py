"""A model's potential compiled to C: the same ``fn(z) -> (log_density, grad)`` contract as
the torch potential, evaluated chain by chain in one foreign call; its run-time inputs
(:meth:`NativePotential.bind_inputs`) are rebound without recompiling.

The library holds the generated potential and whatever C units a sampler links to it
(:meth:`NativePotential.link`, e.g. ``ppl.inference.mcmc.native_nuts`` links its NUTS). It is
compiled on first use, not when the model is built, and is cached on disk by :mod:`.compiler`.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ppl.inference.lowering.tape import Lowered, Unsupported

from .codegen import CSource, emit_potential
from .compiler import Unit, compile_library, compiler_available

__all__ = ["NativePotential"]

_LOCKS: dict[str, threading.Lock] = {}  # one per loaded library (its constants table)


class NativePotential:
    """``fn(z (C, D)) -> (log_density (C,), grad (C, D))`` in float64 on the CPU, through C."""

    def __init__(self, source: CSource):
        self.source = source
        self.dim = source.dim
        self._constants = source.constants  # kept alive: the C reads them by pointer
        self._table = (ctypes.c_void_p * max(1, len(source.constants)))(
            *(t.data_ptr() for t in source.constants)
        )
        self._library: ctypes.CDLL | None = None
        self._lock: threading.Lock | None = None  # the library's, shared with its other users
        self._companions: tuple[Unit, ...] = ()
        self._rows, self._row_owner = 1, None
        self._inputs: list[torch.Tensor] | None = None  # bound by bind_inputs
        self._input_table = (ctypes.c_void_p * max(1, len(source.inputs)))()
        self._input_strides = (ctypes.c_long * max(1, len(source.inputs)))()
        if not source.inputs:
            self.bind_inputs([])

    def bind_inputs(self, values: list[torch.Tensor], names: list[str] | None = None) -> None:
        """Point the run-time inputs (``CSource.inputs``, in order; ``names`` for errors) at
        ``values``: each is ``(R, *shape)``, R rows of which row ``c`` is chain ``c``'s, or
        ``(1, *shape)``, one value for every chain. Copies only what is not already
        contiguous in its dtype; the values are read at every evaluation until the next
        binding, nothing is recompiled."""
        if len(values) != len(self.source.inputs):
            raise ValueError(f"the potential takes {len(self.source.inputs)} run-time inputs, "
                             f"got {len(values)}")
        names = names or [f"run-time input {k}" for k in range(len(values))]
        kept, rows, self._row_owner = [], 1, None
        for k, (value, (shape, dtype)) in enumerate(zip(values, self.source.inputs, strict=True)):
            value = value.detach().to(dtype).contiguous()
            if tuple(value.shape[1:]) != tuple(shape):
                raise ValueError(f"{names[k]}: expected rows of shape {tuple(shape)}, "
                                 f"got {tuple(value.shape)}")
            if value.shape[0] != 1:
                if rows not in (1, value.shape[0]):
                    raise ValueError(f"{names[k]} has {value.shape[0]} rows, "
                                     f"{self._row_owner} {rows}")
                rows, self._row_owner = value.shape[0], names[k]
            kept.append(value)
            self._input_table[k] = value.data_ptr()
            self._input_strides[k] = 0 if value.shape[0] == 1 else value[0].numel()
        self._inputs, self._rows = kept, rows  # kept alive: the C reads them by pointer

    @classmethod
    def from_lowered(cls, lowered: Lowered) -> NativePotential:
        """Emit C for a lowered potential (``Unsupported`` without a C rule or compiler)."""
        if not compiler_available():
            raise Unsupported("no C compiler on this machine (set $CC to use one)")
        return cls(emit_potential(lowered))

    def link(self, *companions: Unit) -> None:
        """Compile ``companions`` (C units that call ``ppl_potential``, e.g. a sampler) into the
        library with the potential. Called when a kernel is built, before the first
        evaluation, so that the library is compiled once."""
        if companions != self._companions:
            self._companions, self._library = companions, None

    def build(self) -> None:
        """Compile (or load from the cache) the library now, not at the first call."""
        with self.bound():
            pass

    @contextmanager
    def bound(self) -> Iterator[ctypes.CDLL]:
        """The compiled library, pointed at this model's constants for the duration of the
        block. Models with the same structure share one library and its table of constants,
        so each entry holds the library's lock: two such models used from different threads
        take turns instead of reading each other's data."""
        if self._library is None:
            library = compile_library(Unit(self.source.text, (self.source.optimization,)),
                                      *self._companions)
            library.ppl_bind.argtypes = [ctypes.c_void_p]
            library.ppl_bind.restype = None
            library.ppl_potential_batch.argtypes = [ctypes.c_long] + [ctypes.c_void_p] * 3
            library.ppl_potential_batch.restype = None
            library.ppl_bind_inputs.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            library.ppl_bind_inputs.restype = None
            self._library = library
            self._lock = _LOCKS.setdefault(library._name, threading.Lock())
        if self._inputs is None:
            raise RuntimeError(f"the potential's {len(self.source.inputs)} run-time inputs are "
                               "not bound; call bind_inputs first")
        with self._lock:
            self._library.ppl_bind(self._table)
            self._library.ppl_bind_inputs(self._input_table, self._input_strides)
            yield self._library

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z.detach().to(torch.float64).contiguous()
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"expected positions of shape (chains, {self.dim}), "
                             f"got {tuple(z.shape)}")
        num_chains = z.shape[0]
        if self._rows not in (1, num_chains):
            raise ValueError(f"{self._row_owner} is bound with {self._rows} rows, one per "
                             f"chain, but {num_chains} positions were given")
        log_density = torch.empty(num_chains, dtype=torch.float64)
        grad = torch.empty(num_chains, self.dim, dtype=torch.float64)
        with self.bound() as library:
            library.ppl_potential_batch(num_chains, z.data_ptr(), log_density.data_ptr(),
                                        grad.data_ptr())
        return log_density, grad
