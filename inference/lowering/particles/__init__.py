"""Particle methods' view of a graph: a schedule of steps, each lowered to batched code.

    >>> from ppl.inference.lowering.particles import ParticleEngine, Schedule, StepOutput
    >>> ParticleEngine.run_step.__name__, Schedule.from_graph.__name__, StepOutput.__name__
    ('run_step', 'from_graph', 'StepOutput')
"""

from .engine import ParticleEngine, SamplerFallbackWarning
from .optimal import GaussianStep, gaussian_step
from .program import ParticleProgram, StepOutput
from .schedule import Schedule, ScheduleError, Step

__all__ = ["GaussianStep", "ParticleEngine", "ParticleProgram", "SamplerFallbackWarning",
           "Schedule", "ScheduleError", "Step", "StepOutput", "gaussian_step"]
