"""Inference algorithms and their results.

``infer`` methods: ``Importance``; MCMC by ``NUTS``, ``HMC``, ``MALA``, ``RWMH``, ``Slice``
(factories of :class:`MCMC`, which runs any kernel). The kernels themselves, with the same
names, live in ``ppl.inference.mcmc``.

    >>> from ppl.inference import NUTS, Importance
    >>> NUTS(num_samples=500, chains=2, dense_mass=True).kernel.metric
    'dense'
"""

from . import mcmc
from .importance import Importance
from .mcmc_method import HMC, MALA, MCMC, NUTS, RWMH, Slice
from .results import Posterior, WeightedPosterior
from .sampler_diagnostics import SamplerDiagnostics
from .summary import ConvergenceWarning, Summary, convergence_warnings, summarize

__all__ = [
    "Importance", "MCMC", "NUTS", "HMC", "MALA", "RWMH", "Slice", "mcmc",
    "Posterior", "WeightedPosterior", "SamplerDiagnostics", "ConvergenceWarning",
    "Summary", "summarize", "convergence_warnings",
]
