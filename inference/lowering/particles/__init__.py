"""The particle engine's protocol: a model cut into steps (``ParticleProgram``) that particle
methods (``ppl.inference.smc``) run in order, each step returning a ``StepOutput``.

    >>> from ppl.inference.lowering.particles import ParticleProgram, StepOutput
    >>> sorted(StepOutput.__dataclass_fields__)
    ['log_weight', 'site_log_weights', 'values']
"""

from .program import ParticleProgram, StepOutput

__all__ = ["ParticleProgram", "StepOutput"]
