"""Export MCMC results to ArviZ (an optional dependency: ``pip install 'ppl[arviz]'``).

``to_arviz(samples, info, observed, posterior_predictive)`` builds an ``InferenceData`` with

* ``posterior``: every latent and deterministic site, dims ``(chain, draw, *site dims)``;
* ``sample_stats``: the per-draw sampler info under ArviZ's names: ``diverging``,
  ``tree_depth``, ``energy``, ``step_size``, ``acceptance_rate`` and ``n_steps`` (gradient
  evaluations of the transition), those the sampler recorded;
* ``observed_data``: the observed sites' values, when known;
* ``posterior_predictive``: draws from ``ppl.predictive``, when given;
* ``log_likelihood``: each observed site's pointwise log likelihood per draw, when given
  (``Posterior.to_arviz`` gives it, so ``az.loo`` and ``az.waic`` work).

There is no ``lp`` (the kernels record the Hamiltonian, not the log density).
``observed_values(graph)`` reads the observations out of a graph
(those whose value is model data or a constant). ArviZ 0.x (``from_dict(posterior=...)``)
and 1.x (``from_dict({"posterior": ...})``) are both accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ppl.ir import Ref

__all__ = ["to_arviz", "observed_values", "SAMPLE_STATS_NAMES"]

#: ppl's Info field -> ArviZ's sample_stats name
SAMPLE_STATS_NAMES = {
    "divergent": "diverging",
    "tree_depth": "tree_depth",
    "energy": "energy",
    "step_size": "step_size",
    "accept_prob": "acceptance_rate",
    "num_grad_evals": "n_steps",
}


def _import_arviz():
    try:
        import arviz
    except ImportError as err:
        raise ImportError(
            "to_arviz() needs ArviZ, which is not installed; install it with "
            "`pip install 'ppl[arviz]'` (or `pip install arviz`)"
        ) from err
    return arviz


def _numpy(values: Mapping[str, Tensor]) -> dict[str, Any]:
    return {k: torch.as_tensor(v).detach().cpu().numpy() for k, v in values.items()}


def observed_values(graph) -> dict[str, Tensor]:
    """Observed site address -> value, for observations whose value is a model input (data)
    or a constant in the graph; observations computed from other nodes are left out."""
    out = {}
    for node in graph.nodes_of("observe"):
        value = node.args[0]
        if isinstance(value, Ref) and graph.node(value.name).kind == "input":
            value = graph.data.get(value.name)
        if isinstance(value, Tensor):
            out[node.address] = value
    return out


def to_arviz(
    samples: Mapping[str, Tensor],
    info: Mapping[str, Tensor] | None = None,
    observed: Mapping[str, Tensor] | None = None,
    posterior_predictive: Mapping[str, Tensor] | None = None,
    log_likelihood: Mapping[str, Tensor] | None = None,
):
    """An ``arviz.InferenceData`` of ``(chains, draws, *shape)`` draws (see module docstring).

    ``info``: per-draw sampler info ``{Info field: (chains, draws)}``. ``observed``: observed
    site values. ``posterior_predictive``: ``{site: (chains, draws, *shape)}``.
    ``log_likelihood``: ``{observed site: (chains, draws, *batch_shape)}``.
    """
    az = _import_arviz()
    groups: dict[str, dict[str, Any]] = {"posterior": _numpy(samples)}
    stats = {SAMPLE_STATS_NAMES[k]: v for k, v in (info or {}).items() if k in SAMPLE_STATS_NAMES}
    if stats:
        groups["sample_stats"] = _numpy(stats)
    if posterior_predictive:
        groups["posterior_predictive"] = _numpy(posterior_predictive)
    if log_likelihood:
        groups["log_likelihood"] = _numpy(log_likelihood)
    if observed:
        groups["observed_data"] = _numpy(observed)
    attrs = {"inference_library": "ppl"}
    if int(az.__version__.split(".")[0]) >= 1:
        return az.from_dict(groups, attrs=attrs)
    return az.from_dict(**groups, attrs=attrs)
