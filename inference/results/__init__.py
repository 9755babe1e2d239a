"""What inference returns: posteriors, their summaries, convergence and sampler diagnostics,
and export to ArviZ. Engines import this package; it imports none of them.

    >>> import torch
    >>> post = WeightedPosterior({"x": torch.randn(100)}, log_weights=torch.zeros(100))
    >>> round(float(post.ess), 3)
    100.0
"""

from .posterior import Posterior, WeightedPosterior
from .sampler_diagnostics import SamplerDiagnostics
from .summary import ConvergenceWarning, Summary, convergence_warnings, summarize

__all__ = ["ConvergenceWarning", "Posterior", "SamplerDiagnostics", "Summary",
           "WeightedPosterior", "convergence_warnings", "summarize"]
