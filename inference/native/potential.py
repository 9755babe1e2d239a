"""A model's potential compiled to C: the same ``fn(z) -> (log_density, grad)`` contract as
the torch potential, evaluated chain by chain in one foreign call.

The library links the generated potential and the native NUTS that calls it (``nuts.c``,
compiled for the model's dimension). It is compiled on first use, not when the model is
built, and is cached on disk by :mod:`.compiler`.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ppl.inference.mcmc.adaptation import StepAdaptation
from ppl.inference.mcmc.base import Info, State
from ppl.inference.mcmc.rng import RNG
from ppl.inference.potential import Lowered, Unsupported

from .codegen import CSource, emit_potential
from .compiler import compiler_available
from .nuts import native_nuts_run, native_nuts_transition, native_nuts_warmup, nuts_source

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

    @classmethod
    def from_lowered(cls, lowered: Lowered) -> NativePotential:
        """Emit C for a lowered potential (``Unsupported`` without a C rule or compiler)."""
        if not compiler_available():
            raise Unsupported("no C compiler on this machine (set $CC to use one)")
        return cls(emit_potential(lowered))

    @contextmanager
    def bound(self) -> Iterator[ctypes.CDLL]:
        """The compiled library, pointed at this model's constants for the duration of the
        block. Models with the same structure share one library and its table of constants,
        so each entry holds the library's lock: two such models used from different threads
        take turns instead of reading each other's data."""
        if self._library is None:
            from .compiler import Unit, compile_library

            nuts = Unit(nuts_source(), ("-O1", f"-DPPL_DIM={self.dim}"))
            library = compile_library(Unit(self.source.text), nuts)
            library.ppl_bind.argtypes = [ctypes.c_void_p]
            library.ppl_bind.restype = None
            library.ppl_potential_batch.argtypes = [ctypes.c_long] + [ctypes.c_void_p] * 3
            library.ppl_potential_batch.restype = None
            self._library = library
            self._lock = _LOCKS.setdefault(library._name, threading.Lock())
        with self._lock:
            self._library.ppl_bind(self._table)
            yield self._library

    @property
    def native(self) -> NativePotential:
        """Kernels look for ``fn.native`` to run in C; wrappers of this function forward it."""
        return self

    def nuts_transition(self, rng: RNG, state: State, max_tree_depth: int,
                        divergence_threshold: float) -> tuple[State, Info]:
        """One NUTS transition of every chain, in C (see :mod:`.nuts`)."""
        with self.bound() as library:
            return native_nuts_transition(library, rng, state, max_tree_depth,
                                          divergence_threshold)

    def nuts_run(self, rng: RNG, state: State, num_iter: int, max_tree_depth: int,
                 divergence_threshold: float) -> tuple[State, Info, torch.Tensor]:
        """``num_iter`` NUTS transitions of every chain in one C call (see :mod:`.nuts`)."""
        with self.bound() as library:
            return native_nuts_run(library, rng, state, num_iter, max_tree_depth,
                                   divergence_threshold)

    def nuts_warmup(self, rng: RNG, state: State, num_iter: int, plan: StepAdaptation,
                    max_tree_depth: int, divergence_threshold: float
                    ) -> tuple[State, Info, StepAdaptation]:
        """``num_iter`` warmup transitions with their adaptation, in one C call."""
        with self.bound() as library:
            return native_nuts_warmup(library, rng, state, num_iter, plan, max_tree_depth,
                                      divergence_threshold)

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z.detach().to(torch.float64).contiguous()
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"expected positions of shape (chains, {self.dim}), "
                             f"got {tuple(z.shape)}")
        num_chains = z.shape[0]
        log_density = torch.empty(num_chains, dtype=torch.float64)
        grad = torch.empty(num_chains, self.dim, dtype=torch.float64)
        with self.bound() as library:
            library.ppl_potential_batch(num_chains, z.data_ptr(), log_density.data_ptr(),
                                        grad.data_ptr())
        return log_density, grad
