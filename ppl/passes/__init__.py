"""Passes: ``Graph -> Graph`` program transformations, composed by ``run``.

Each pass is a small class named as a verb (``condition``, ``do``, ``unconstrain``,
``noncenter``, ``simplify``, ``temper``, ``drop_likelihood``, ``enumerate_discrete``,
``unroll``, ``vectorize_loops``); an instance is the pass. Passes other than ``unroll`` and
``vectorize_loops`` refuse loop nodes (``ppl.scan``), naming themselves; unroll first
(``enumerate_discrete`` sums out a scan whose carry is its step's discrete site).
``run(graph, passes)`` applies a list, checking the graph after each, naming the pass
that broke it, and refusing passes out of the order they declare (``must_precede``);
``run_report`` also says which passes changed the graph. A user pass is any callable
``Graph -> Graph`` (see ``examples/custom_pass.py``).

    >>> import torch
    >>> from ppl import model, plate, sample
    >>> from ppl.stdlib import HalfCauchy, Normal
    >>> @model
    ... def eight_schools(sigma, y=None):
    ...     mu = sample("mu", Normal(0.0, 5.0))
    ...     tau = sample("tau", HalfCauchy(5.0))
    ...     with plate("schools", len(sigma)):
    ...         theta = sample("theta", Normal(mu, tau))
    ...         sample("y", Normal(theta, sigma), obs=y)
    >>> sigma = torch.full((8,), 10.0)
    >>> g = run(eight_schools.graph(sigma), [condition({"y": torch.zeros(8)}), noncenter(),
    ...                                      unconstrain(), simplify()])
    >>> [n.address for n in g.latent_nodes]
    ['mu', 'tau__unconstrained', 'theta__raw']
"""

from . import _ops  # noqa: F401  (registers the ops passes emit with the call allow-list)
from .conditioning import condition
from .contraction import Plan, contract_enumerated, plan_contraction, posterior_marginals
from .enumeration import (
    EnumerationWarning,
    enumerate_discrete,
    enumeration_plans,
    posterior_of_enumerated,
)
from .intervention import do
from .likelihood import drop_likelihood
from .loop_vectorization import vectorize_loops
from .manager import Pass, PassResult, apply_user_passes, check, pass_name, run, run_report
from .noncentering import noncenter
from .simplification import simplify
from .tempering import temper
from .unconstraining import UnconstrainedSite, constrained_values, latent_transforms, unconstrain
from .unrolling import unroll

__all__ = [
    "Pass",
    "PassResult",
    "run",
    "run_report",
    "apply_user_passes",
    "check",
    "pass_name",
    "condition",
    "do",
    "unconstrain",
    "noncenter",
    "simplify",
    "temper",
    "drop_likelihood",
    "enumerate_discrete",
    "unroll",
    "vectorize_loops",
    "latent_transforms",
    "constrained_values",
    "UnconstrainedSite",
    "posterior_of_enumerated",
    "contract_enumerated",
    "EnumerationWarning",
    "enumeration_plans",
    "Plan",
    "plan_contraction",
    "posterior_marginals",
]
