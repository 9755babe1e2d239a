"""Lowering: a passed graph becomes runnable numerics that every engine shares.

- :mod:`.flat`: ``FlatModel``, the posterior as a function of one unconstrained vector per
  chain (what MCMC kernels, SMC moves and VI objectives evaluate);
- :mod:`.tape`: the tape of primitives that records a log density and its reverse pass, and
  emits them as straight-line batched torch code;
- :mod:`.native`: the same tape emitted as C and compiled (the potential only; samplers
  that run in C own their C, e.g. ``ppl.inference.mcmc.native_nuts``).

Nothing here imports an engine (``mcmc``, ``smc``, ``vi``): engines import lowering.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m():
    ...     sample("x", Normal(0.0, 1.0))
    >>> FlatModel.from_graph(m.graph()).dim
    1
"""

from .flat import BACKENDS, FlatModel, LatentBlock
from .tape import Unsupported

__all__ = ["BACKENDS", "FlatModel", "LatentBlock", "Unsupported"]
