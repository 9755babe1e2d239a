"""Graph-aware MCMC: block updates that read the model's graph, and the ``Gibbs`` method.

``DiscreteGibbs`` (finite sites from their Markov-blanket conditionals), ``Conjugate``
(closed-form conjugate draws) and ``KernelUpdate`` (any kernel of ``ppl.inference.mcmc`` on a
block) share one update interface; ``Gibbs`` composes them into an ``infer`` method.

    >>> from ppl.inference.mcmc.gibbs import Gibbs
    >>> Gibbs(num_samples=10).num_samples
    10
"""

from .conjugate import Conjugate, conjugate_match
from .discrete import DiscreteGibbs, GibbsUpdate
from .kernel_update import KernelUpdate
from .method import Gibbs
from .site_program import SiteProgram

__all__ = ["Conjugate", "DiscreteGibbs", "Gibbs", "GibbsUpdate", "KernelUpdate", "SiteProgram",
           "conjugate_match"]
