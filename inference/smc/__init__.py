"""Particle methods: importance sampling, the particle filter over a model's graph (``SMC``)
or any particle program (``ParticleFilter``), adaptive tempered SMC for static models
(``TemperedSMC``), particle MCMC for the static parameters of a state-space model
(``PMMH``, ``ParticleGibbs``, ``SMC2``), the four resampling schemes and the result they
share (``SMCPosterior``).

    >>> from ppl.inference.smc import Importance, ParticleFilter
    >>> Importance(num_samples=100).num_samples, ParticleFilter(resample="residual").resample
    (100, 'residual')
"""

from .annealed import DataAnnealedSMC
from .filter import ParticleFilter
from .importance import Importance
from .method import SMC
from .moves import ResampleMove
from .paris import AdditiveSmoother
from .pgibbs import ParticleGibbs
from .pmmh import PMMH
from .resampling import SCHEMES, DegenerateWeights, ess, resample
from .result import SMCPosterior
from .runs import EvidenceRuns, log_evidence_runs
from .smc2 import SMC2
from .tempered import TemperedSMC

__all__ = ["Importance", "SMC", "ParticleFilter", "TemperedSMC", "SMCPosterior",
           "DegenerateWeights", "SCHEMES", "ess", "resample",
           "ResampleMove", "DataAnnealedSMC", "EvidenceRuns", "log_evidence_runs",
           "AdditiveSmoother", "PMMH", "ParticleGibbs", "SMC2"]
