"""Pointwise log likelihood of posterior draws: what LOO and WAIC (``az.loo``, ``az.waic``) read.

``pointwise_log_likelihood(graph, samples)`` evaluates, for every draw of ``samples``
(``(chains, draws, *site_shape)``, the latents of ``graph`` by address), the log density of
each observed site at its data, element by element: ``{observed address: (chains, draws,
*batch_shape)}``, one entry per independent observation (the site's plates; an event
dimension, e.g. a multivariate observation, is one entry). Subsampling scales are not
applied: each entry is one observation's log likelihood. The graph runs vectorized over the
draws (``torch.func.vmap``, in chunks), each draw cast to its site's dtype in the graph, so a
float32 model sees float32 values.

    >>> import torch
    >>> from ppl import model, plate, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m(y):
    ...     mu = sample("mu", Normal(0.0, 1.0))
    ...     with plate("data", len(y)):
    ...         sample("y", Normal(mu, 1.0), obs=y)
    >>> draws = {"mu": torch.zeros(2, 5)}
    >>> ll = pointwise_log_likelihood(m.graph(torch.tensor([0.0, 1.0, 2.0])), draws)
    >>> ll["y"].shape, round(float(ll["y"][0, 0, 1]), 4)
    (torch.Size([2, 5, 3]), -1.4189)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ppl.ir import Graph, Interpreter
from ppl.passes.rewriting import dtype_of
from ppl.trace import site_log_prob

__all__ = ["pointwise_log_likelihood"]

CHUNK = 1024  # draws per vectorized call: bounds the memory of a large model's run


class _PointwiseLogLikelihood(Interpreter):
    """The latents at ``values``; each observed site's elementwise log density, unscaled."""

    def __init__(self, graph: Graph, values: Mapping[str, Tensor]):
        super().__init__(graph)
        self.values = values
        self.pointwise: dict[str, Tensor] = {}

    def sample(self, node, args, kwargs):
        return self.values[node.address]

    def observe(self, node, args, kwargs):
        dist = self.site_distribution(node, kwargs)
        self.pointwise[node.address] = site_log_prob(dist, args[0])
        return args[0]


def pointwise_log_likelihood(graph: Graph, samples: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``{observed address: (chains, draws, *batch_shape)}`` (see the module docstring)."""
    latents = [n for n in graph.nodes if n.kind == "sample"]
    missing = sorted(n.address for n in latents if n.address not in samples)
    if missing:
        raise ValueError(f"the draws have no values of latent sites {missing} of graph "
                         f"{graph.name!r}; the log likelihood needs every latent")
    lead = tuple(next(iter(samples.values())).shape[:2])
    flat = {n.address: samples[n.address].reshape(-1, *samples[n.address].shape[2:])
            .to(dtype_of(n.meta)) for n in latents}

    def one_draw(values: dict[str, Tensor]) -> dict[str, Tensor]:
        interpreter = _PointwiseLogLikelihood(graph, values)
        interpreter.run()
        return interpreter.pointwise

    with torch.no_grad():
        pointwise = torch.func.vmap(one_draw, chunk_size=CHUNK)(flat)
    return {k: v.reshape(*lead, *v.shape[1:]) for k, v in pointwise.items()}
