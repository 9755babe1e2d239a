"""Inference algorithms and their results.

    >>> from ppl.inference import Importance
"""

from .importance import Importance
from .results import Posterior, WeightedPosterior
from .summary import Summary, convergence_warnings, summarize

__all__ = ["Importance", "Posterior", "WeightedPosterior", "Summary", "summarize", "convergence_warnings"]
