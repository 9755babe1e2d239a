"""NUTS transitions in C: the Python side of ``nuts.c``.

A model's generated potential (``#define PPL_DIM``, ``static double ppl_potential(z, grad)``)
followed by :func:`nuts_source` compiles into one library whose ``ppl_nuts`` makes a whole
NUTS transition for every chain in one call, each chain building its own tree (no lockstep
padding), with the algorithm of :mod:`ppl.inference.mcmc.nuts` (Stan's). Python draws what
depends on the metric's factor and on the chains' generators: the momentum ``p0 ~ N(0, M)``
and one 64-bit seed per chain, both from one ``randn`` call of ``D + 1`` normals per chain
(the seed is the bit pattern of the last normal; C hashes it with splitmix64 into its
xoshiro256** stream). So with per-chain generators chain ``c`` depends only on its own
generator and state, and is bitwise the same in any batch.

    >>> from ppl.inference.native.compiler import compile_library   # doctest: +SKIP
    >>> lib = compile_library(potential_c + nuts_source())           # doctest: +SKIP
    >>> state, info = native_nuts_transition(lib, rng, state)         # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path

import torch

from ppl.inference.mcmc.base import Info, State, make_info
from ppl.inference.mcmc.integrators import sample_momentum
from ppl.inference.mcmc.rng import RNG, randn

__all__ = ["nuts_source", "native_nuts_transition"]

_P = ctypes.c_void_p
# ppl_nuts(C, z0, lp0, g0, p0, step_size, inv_mass, dense, seeds, max_depth, threshold,
#          z, lp, g, accept_prob, divergent, energy, num_steps, tree_depth) -> status
_ARGTYPES = (ctypes.c_long, _P, _P, _P, _P, _P, _P, ctypes.c_int, _P, ctypes.c_int,
             ctypes.c_double, _P, _P, _P, _P, _P, _P, _P, _P)


@cache
def nuts_source() -> str:
    """The C text of the NUTS transition, to append to a generated potential."""
    return (Path(__file__).with_name("nuts.c")).read_text()


def _entry(library: ctypes.CDLL):
    """``library.ppl_nuts`` with its argument types set (once per library)."""
    fn = library.ppl_nuts
    if fn.argtypes is None:
        fn.restype = ctypes.c_int
        fn.argtypes = _ARGTYPES
    return fn


def _f64(t: torch.Tensor, name: str) -> torch.Tensor:
    """``t`` as the contiguous float64 CPU tensor C reads (a copy only when it is not)."""
    if t.dtype is not torch.float64 or not t.is_cpu:
        raise TypeError(f"native NUTS needs float64 CPU tensors; {name} is {t.dtype} on "
                        f"{t.device}")
    return t if t.is_contiguous() else t.contiguous()


def native_nuts_transition(
    library: ctypes.CDLL,
    rng: RNG,
    state: State,
    max_tree_depth: int = 10,
    divergence_threshold: float = 1000.0,
) -> tuple[State, Info]:
    """One NUTS transition of all chains in C; the contract of
    :func:`ppl.inference.mcmc.nuts.nuts_transition` (same ``State``/``Info`` fields and
    dtypes), with the potential compiled into ``library``."""
    z0, lp0, g0, step_size, metric = state
    num_chains, dim = z0.shape
    xi = randn(rng, num_chains, (dim + 1,), dtype=torch.float64)
    p0 = sample_momentum(metric, xi[:, :dim]).contiguous()
    seeds = xi[:, dim].contiguous()  # its bits, read as uint64 by C
    inv_mass = _f64(metric.inverse_mass, "the inverse mass matrix")
    step_size = _f64(step_size, "step_size")
    z0, lp0, g0 = _f64(z0, "position"), _f64(lp0, "log_density"), _f64(g0, "grad")

    z, g = torch.empty_like(z0), torch.empty_like(z0)
    lp, accept, energy = (torch.empty_like(lp0) for _ in range(3))
    divergent = torch.empty(num_chains, dtype=torch.bool)  # one byte each: C's uint8_t
    num_steps = torch.empty(num_chains, dtype=torch.int64)
    depth = torch.empty(num_chains, dtype=torch.int64)
    status = _entry(library)(
        num_chains, z0.data_ptr(), lp0.data_ptr(), g0.data_ptr(), p0.data_ptr(),
        step_size.data_ptr(), inv_mass.data_ptr(), int(metric.dense), seeds.data_ptr(),
        int(max_tree_depth), float(divergence_threshold), z.data_ptr(), lp.data_ptr(),
        g.data_ptr(), accept.data_ptr(), divergent.data_ptr(), energy.data_ptr(),
        num_steps.data_ptr(), depth.data_ptr())
    if status != 0:
        raise MemoryError("native NUTS could not allocate its workspace")
    info = make_info(accept, divergent, energy, num_steps, state.step_size, depth)
    return State(z, lp, g, state.step_size, metric), info
