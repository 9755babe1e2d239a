"""Inference algorithms and their results.

``infer`` methods: ``Importance``; MCMC by ``NUTS``, ``HMC``, ``MALA``, ``RWMH``, ``Slice``
(factories of :class:`MCMC`, which runs any kernel); ``Gibbs``, which composes block updates
(``DiscreteGibbs`` for finite sites, ``Conjugate`` for conjugate pairs, ``KernelUpdate``
running any kernel on the rest). The kernels themselves, with the same names, live in
``ppl.inference.mcmc``.

    >>> from ppl.inference import NUTS, Importance
    >>> NUTS(num_samples=500, chains=2, dense_mass=True).kernel.metric
    'dense'
"""

from . import mcmc
from .compositional import Gibbs
from .importance import Importance
from .mcmc import Conjugate, DiscreteGibbs, KernelUpdate
from .mcmc_method import HMC, MALA, MCMC, NUTS, RWMH, Slice
from .results import Posterior, WeightedPosterior
from .sampler_diagnostics import SamplerDiagnostics
from .summary import ConvergenceWarning, Summary, convergence_warnings, summarize

__all__ = [
    "Importance", "MCMC", "NUTS", "HMC", "MALA", "RWMH", "Slice", "mcmc",
    "Gibbs", "DiscreteGibbs", "Conjugate", "KernelUpdate",
    "Posterior", "WeightedPosterior", "SamplerDiagnostics", "ConvergenceWarning",
    "Summary", "summarize", "convergence_warnings",
]
