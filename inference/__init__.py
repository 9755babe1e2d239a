"""Inference algorithms and their results.

``infer`` methods: ``Importance``; ``SMC`` (a particle filter over the model's graph, cut
into steps by the particle engine) and ``TemperedSMC`` (adaptive tempered SMC with
resample-move for static models; ``ParticleFilter`` runs any particle program,
``SMCPosterior`` is their result); MCMC by ``NUTS``, ``HMC``, ``MALA``, ``RWMH``, ``Slice``
(factories of :class:`MCMC`, which runs any kernel); ``Gibbs``, which composes block updates
(``DiscreteGibbs`` for finite sites, ``Conjugate`` for conjugate pairs, ``KernelUpdate``
running any kernel on the rest); ``VI`` (variational inference with objectives written as
programs, per-site gradient estimators and autoguides, :mod:`ppl.inference.vi`). The
kernels themselves, with the same names, live in ``ppl.inference.mcmc``.

    >>> from ppl.inference import NUTS, Importance
    >>> NUTS(num_samples=500, chains=2, dense_mass=True).kernel.metric
    'dense'
"""

from . import mcmc
from .lowering.flat import FastPathWarning
from .mcmc.gibbs import Conjugate, DiscreteGibbs, KernelUpdate
from .mcmc.gibbs.method import Gibbs
from .mcmc.methods import HMC, MALA, MCMC, NUTS, RWMH, Slice
from .mcmc.runner import SamplingInterrupted
from .results.posterior import Posterior, WeightedPosterior
from .results.sampler_diagnostics import SamplerDiagnostics
from .results.summary import ConvergenceWarning, Summary, convergence_warnings, summarize
from .smc import PMMH, SMC, SMC2, ParticleFilter, ParticleGibbs, SMCPosterior, TemperedSMC
from .smc.importance import Importance
from .vi import (
    CUBO,
    ELBO,
    IWAE,
    RWS,
    VI,
    VIMCO,
    AutoDelta,
    AutoIAF,
    AutoLaplace,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNeuralSpline,
    AutoNormal,
    AutoPlanar,
    AutoRadial,
    AutoStructured,
    RenyiELBO,
    expectation,
)

__all__ = [
    "Importance", "SMC", "TemperedSMC", "ParticleFilter", "SMCPosterior",
    "PMMH", "ParticleGibbs", "SMC2",
    "MCMC", "NUTS", "HMC", "MALA", "RWMH", "Slice", "mcmc",
    "Gibbs", "DiscreteGibbs", "Conjugate", "KernelUpdate",
    "Posterior", "WeightedPosterior", "SamplerDiagnostics", "ConvergenceWarning",
    "Summary", "summarize", "convergence_warnings", "SamplingInterrupted", "FastPathWarning",
    "VI", "expectation", "ELBO", "IWAE", "RWS", "VIMCO", "RenyiELBO", "CUBO", "AutoDelta",
    "AutoNormal", "AutoMultivariateNormal", "AutoLowRankMultivariateNormal", "AutoLaplace",
    "AutoPlanar", "AutoRadial", "AutoIAF", "AutoNeuralSpline", "AutoStructured",
]
