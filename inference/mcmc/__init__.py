"""MCMC kernels over a flat, batched log density, and a runner with Stan's windowed warmup.

Every kernel works on ``fn(z) -> (log_density (C,), grad (C, D))`` for ``C`` chains of
unconstrained positions ``z`` ``(C, D)`` and is a pure-ish pair ``init(position) -> State``,
``step(rng, state) -> (State, Info)`` whose randomness comes only from ``rng`` (one
``torch.Generator`` or one per chain).

>>> import torch
>>> from ppl.inference.mcmc import NUTS, sample
>>> fn = lambda z: (-0.5 * (z * z).sum(-1), -z)
>>> run = sample(NUTS(), fn, torch.zeros(4, 2, dtype=torch.float64), 200, 200, seed=0)
>>> run.draws.shape
torch.Size([4, 200, 2])
"""

from ppl.inference.rng import chain_generators

from .adaptation import WindowAdaptation, find_reasonable_step_size
from .base import Info, Kernel, KernelBase, State
from .hmc import HMC
from .integrators import LogDensityFn, Metric, make_metric
from .mala import MALA
from .nuts import NUTS
from .runner import Checkpoint, MCMCRun, SamplingInterrupted, sample
from .rwmh import RWMH
from .slice import Slice

__all__ = [
    "HMC",
    "MALA",
    "NUTS",
    "RWMH",
    "Slice",
    "Info",
    "Kernel",
    "KernelBase",
    "LogDensityFn",
    "Checkpoint",
    "MCMCRun",
    "SamplingInterrupted",
    "Metric",
    "State",
    "WindowAdaptation",
    "chain_generators",
    "find_reasonable_step_size",
    "make_metric",
    "sample",
]
