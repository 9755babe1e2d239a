"""The C filter's resampling (``resample.c``) as a function of torch tensors, to test it
against :mod:`.resampling` (the torch schemes, whose semantics it follows).

:func:`resample_native` normalizes the log weights as :func:`.resampling.resample` does (so
NaN, ``+inf`` or all ``-inf`` raise the same :class:`~.resampling.DegenerateWeights`), then
draws ``N`` ancestors in C from a xoshiro256** stream seeded by ``seed``. Multinomial
ancestors come out sorted (see ``resample.c``); the offspring counts are what matter.

    >>> import torch
    >>> resample_native(torch.tensor([0.0, float("nan")]), "residual", seed=0, where="step 3")
    Traceback (most recent call last):
    ...
    ppl.inference.smc.resampling.DegenerateWeights: step 3: 1 of 2 log weights are NaN
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from ppl.inference.lowering.native.codegen import prelude, rng_source
from ppl.inference.lowering.native.compiler import Unit, compile_library

from .native import SCHEME_CODES, c_source
from .resampling import normalize

__all__ = ["resample_native"]

_ENTRY = """
void ppl_resample(int scheme, long n, uint64_t seed, const double *w, double *scratch,
                  int64_t *index)
{
    ppl_rng rng;
    ppl_rng_seed(&rng, seed);
    pf_resample(scheme, w, n, n, &rng, scratch, index);
}
"""


@functools.cache
def _library() -> ctypes._CFuncPtr:
    text = "\n".join([prelude(), rng_source(), c_source("resample.c"), _ENTRY])
    run = compile_library(Unit(text)).ppl_resample
    run.argtypes = (ctypes.c_int, ctypes.c_long, ctypes.c_uint64, *(ctypes.c_void_p,) * 3)
    run.restype = None
    return run


def resample_native(log_weights: Tensor, scheme: str, seed: int,
                    where: str = "the weights") -> Tensor:
    """``N`` ancestor indices drawn in C by ``scheme`` from the 1-D ``log_weights``."""
    if scheme not in SCHEME_CODES:
        raise ValueError(f"unknown resampling scheme {scheme!r}; choose one of "
                         f"{sorted(SCHEME_CODES)}")
    weights = torch.exp(normalize(log_weights, where)).contiguous()
    n = weights.shape[-1]
    index = torch.empty(n, dtype=torch.int64)
    scratch = torch.empty(2 * n, dtype=torch.float64)
    _library()(SCHEME_CODES.index(scheme), n, seed, weights.data_ptr(), scratch.data_ptr(),
               index.data_ptr())
    return index
