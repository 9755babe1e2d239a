"""Variational inference: objectives written as programs, per-site gradient estimators and
guides, trained by the ``VI`` infer method (imports ``lowering`` and ``results``, never
``mcmc`` or ``smc``).

    >>> import ppl.inference.vi as vi
    >>> vi.ELBO(num_particles=8)
    elbo(num_particles=8)
"""

from .estimators import ESTIMATORS, MAX_ENUMERATE, choose_estimator
from .flows import AutoIAF, AutoNeuralSpline, AutoPlanar, AutoRadial, FlowDistribution
from .guides import (
    AutoDelta,
    AutoGuide,
    AutoLaplace,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from .method import VI, TrainedGuide, TrainingInterrupted, VICheckpoint, VIResult
from .objectives import (
    CIWAE,
    CUBO,
    ELBO,
    IWAE,
    MIWAE,
    PIWAE,
    RWS,
    VIMCO,
    Draws,
    Estimate,
    Expectation,
    ForwardChi2,
    RenyiELBO,
    Surrogate,
    Terms,
    expectation,
)
from .structured import AutoStructured

__all__ = [
    "VI", "VIResult", "VICheckpoint", "TrainingInterrupted", "TrainedGuide",
    "expectation", "Expectation", "Estimate", "Surrogate", "Draws", "Terms",
    "ELBO", "IWAE", "MIWAE", "CIWAE", "RenyiELBO", "VIMCO", "RWS", "CUBO",
    "PIWAE", "ForwardChi2",
    "AutoGuide", "AutoDelta", "AutoNormal", "AutoMultivariateNormal",
    "AutoLowRankMultivariateNormal", "AutoLaplace",
    "AutoPlanar", "AutoRadial", "AutoIAF", "AutoNeuralSpline", "FlowDistribution",
    "AutoStructured",
    "ESTIMATORS", "MAX_ENUMERATE", "choose_estimator",
]
