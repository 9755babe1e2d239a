"""Exact answers every engine is tested against: the conjugate suite (``conjugate``) and
sequential models with closed-form filters (``sequential``: a linear-Gaussian state-space
model with its Kalman filter and RTS smoother, a discrete HMM with its forward algorithm).

    >>> sorted(conjugate_cases())[:2]
    ['beta_binomial', 'discrete_mixture']
"""

from .conjugate import (
    ConjugateCase,
    ExactPosterior,
    check_draws,
    conjugate_cases,
    moment_z_scores,
)
from .sequential import DiscreteHMM, KalmanResult, LinearGaussianSSM

__all__ = ["ExactPosterior", "ConjugateCase", "conjugate_cases", "moment_z_scores", "check_draws",
           "LinearGaussianSSM", "KalmanResult", "DiscreteHMM"]
