"""Learned baselines for score-function sites: ``infer={"baseline": "learned"}`` (a small
network made here) or ``infer={"baseline": net}`` (a ``torch.nn.Module`` of your own).

A score site's gradient ``(∇ log q(z)) (f - b)`` stays unbiased for any baseline ``b`` that
does not depend on the draw ``z``. The baseline is the running average of ``f`` (as by
default, quick to find the scale) plus a network of the *site's features* (its
distribution's parameters, detached, per element: exactly what the guide computed from
the observed inputs and the upstream draws, so an amortized guide's baseline sees the
data), one value per element and particle, trained alongside the guide to minimise the
squared error to the residual of the site's downstream cost ``f``. Its weights are params
of the run's param store, named ``baseline/<site>/<weight>`` (a checkpoint restores them);
a module of your own only gives the architecture and the initial weights, evaluated with
the store's weights by ``torch.func.functional_call``. It needs per-element costs, so
objectives linear in the log densities (such as ELBO).

    >>> import torch
    >>> from ppl import ParamStore
    >>> from ppl.stdlib import Bernoulli
    >>> q = Bernoulli(logits=torch.zeros(4, 3))
    >>> site_features(q, torch.Size([4, 3])).shape
    torch.Size([4, 3, 2])
    >>> with ParamStore() as store:
    ...     b = LearnedBaseline("z", "learned")(q, torch.Size([4, 3]))
    >>> b.shape, sorted(store)[0]
    (torch.Size([4, 3]), 'baseline/z/0.bias')
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ppl.params import get_param
from ppl.randomness import drawing, forked

__all__ = ["LearnedBaseline", "site_features", "PREFIX", "HIDDEN"]

PREFIX = "baseline"
HIDDEN = 16


def site_features(dist: Distribution, shape: torch.Size) -> Tensor:
    """The distribution's tensor parameters (detached), each broadcast to the site's shape
    with its own event part flattened: ``(*shape, num_features)``."""
    parts = []
    for name in sorted(dist.arg_constraints):
        value = getattr(dist, name, None)
        if not isinstance(value, Tensor):
            continue
        value = value.detach()
        own_event = value.dim() - len(dist.batch_shape)
        value = value.reshape(*value.shape[:value.dim() - own_event], -1) if own_event > 0 \
            else value.unsqueeze(-1)
        parts.append(value.expand(*shape, value.shape[-1]))
    return torch.cat(parts, -1)


def _default_network(num_features: int) -> nn.Module:
    """features → tanh(16) → 1, its initial weights drawn from a fork of the random stream
    (reproducible under a seed, and shifting no draw of the run)."""
    with forked(), drawing():
        return nn.Sequential(nn.Linear(num_features, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))


class LearnedBaseline:
    """The baseline network of site ``name``: ``spec`` is ``"learned"`` or an ``nn.Module``
    mapping ``(..., num_features)`` to ``(..., 1)``."""

    def __init__(self, name: str, spec: str | nn.Module):
        self.name = name
        self.module = spec if isinstance(spec, nn.Module) else None

    def __call__(self, dist: Distribution, shape: torch.Size) -> Tensor:
        """The baseline per element of the site, shape ``shape``, with a gradient path to
        the network's params (in the current param store)."""
        features = site_features(dist, shape)
        if self.module is None:
            self.module = _default_network(features.shape[-1])
        weights = {n: get_param(f"{PREFIX}/{self.name}/{n}", w.detach())
                   for n, w in self.module.named_parameters()}
        out = torch.func.functional_call(self.module, weights, (features,))
        return out.reshape(shape)
