"""Particle methods: importance sampling today; sequential Monte Carlo (particle filters,
resample-move, tempering, particle Gibbs) builds here on the same lowering.

    >>> from ppl.inference.smc import Importance
    >>> Importance(num_samples=100).num_samples
    100
"""

from .importance import Importance

__all__ = ["Importance"]
