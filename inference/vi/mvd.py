"""Measure-valued derivatives (MVD): a guide site's gradient from the cost re-evaluated at
other values, ``infer={"estimator": "mvd"}``.

The derivative of ``E_q[f(z)]`` in a distribution parameter θ is written as a difference of
two distributions (Mohamed et al. 2020, "Monte Carlo Gradient Estimation in Machine
Learning", §6): ``∂θ E_q[f] = c_θ (E_{q⁺}[f] - E_{q⁻}[f])``. One draw from each side gives an
unbiased estimate; no derivative of ``f`` is needed, so it suits discrete sites, and it is
usually far less noisy than the score function. The rules:

- Normal(μ, σ): ``∂μ``: c = 1/(σ√(2π)), q± = μ ± σW with W ~ Weibull(√2, 2) (the same W on
  both sides); ``∂σ``: c = 1/σ, q⁺ = μ + σ·(±M) with M ~ Maxwell (double-sided), q⁻ = the
  site's own draw (it is a draw of N(μ, σ²)).
- Bernoulli(p): ``∂p`` = f(1) - f(0).
- Categorical(p): ``∂p_k`` = f(k) (the simplex constraint enters through the chain rule
  into the logits, where the common part of the f(k) cancels).

How the cost is re-evaluated. ``f`` is the site's *downstream cost*, the same one the score
function uses (the cost terms that depend on the site, per element along the plates they
share). For each alternative value the whole objective program runs again, after the
first run, under ``no_grad`` and on a fork of the random stream: every guide site is
replayed from the first run's draws except the MVD site (set to the alternative) and the
sites whose distributions depend on it (read from the first run's provenance), which are
drawn afresh by :class:`Redraw`: a fresh draw of ``z' | alternative`` keeps the estimate
unbiased, and every alternative's run continues the same fork, so those redraws share
their random numbers (common random numbers across q⁺ and q⁻). Each plate element's
alternative is set at once, so the cost of element ``i`` may only come from costs that
share the site's plates: a site varying along a dim its downstream costs do not share is
refused by name (use the score function there). The objective must be linear in the log
densities (the per-particle costs must separate), as for enumeration. The first run's
value and surrogate are kept: the MVD adds ``Σ_θ θ·ĝ_θ - (same, detached)``, so only the
gradient changes.

    >>> import torch
    >>> from ppl.stdlib import Bernoulli
    >>> q = Bernoulli(probs=torch.tensor([0.3, 0.6], requires_grad=True))
    >>> rule_for(q).alternatives(q, torch.tensor([1.0, 0.0]))
    [tensor([1., 1.]), tensor([0., 0.])]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Categorical, Distribution, Normal

from ppl.errors import ModelError
from ppl.randomness import drawing
from ppl.runtime import Message, Messenger, internal
from ppl.trace import Trace

from .provenance import sources, track

__all__ = ["MVDRule", "NormalRule", "BernoulliRule", "CategoricalRule", "rule_for",
           "Redraw", "FAMILIES"]


class MVDRule(ABC):
    """One family's decomposition: the values at which the cost is re-evaluated, and a
    tensor whose gradient in the distribution's parameters is the MVD estimate."""

    @abstractmethod
    def alternatives(self, dist: Distribution, value: Tensor) -> list[Tensor]:
        """The values (site shaped, detached) at which the downstream cost is needed."""

    @abstractmethod
    def gradient_carrier(self, dist: Distribution, value: Tensor, cost: Tensor,
                         costs: list[Tensor]) -> Tensor:
        """Scalar with gradient ``Σ_θ ∂θ · (MVD estimate of ∂θ E[f])``; ``cost`` is f at the
        site's own draw, ``costs`` at each alternative (all detached, site shaped)."""


class NormalRule(MVDRule):
    def alternatives(self, dist: Normal, value: Tensor) -> list[Tensor]:
        shape = value.shape
        with internal(), drawing() as generator:
            weibull = (2 * torch.empty(shape).exponential_(generator=generator)).sqrt()
            maxwell = torch.randn((*shape, 3), generator=generator).norm(dim=-1)
            sign = torch.randint(0, 2, shape, generator=generator) * 2.0 - 1.0
        loc, scale = dist.loc.detach(), dist.scale.detach()
        return [loc + scale * weibull, loc - scale * weibull, loc + scale * sign * maxwell]

    def gradient_carrier(self, dist, value, cost, costs):
        plus, minus, maxwell = costs
        scale = dist.scale.detach()
        d_loc = (plus - minus) / (scale * math.sqrt(2 * math.pi))
        d_scale = (maxwell - cost) / scale
        return (dist.loc * d_loc).sum() + (dist.scale * d_scale).sum()


class BernoulliRule(MVDRule):
    def alternatives(self, dist: Bernoulli, value: Tensor) -> list[Tensor]:
        return [torch.ones_like(value), torch.zeros_like(value)]

    def gradient_carrier(self, dist, value, cost, costs):
        one, zero = costs
        return (dist.probs * (one - zero)).sum()


class CategoricalRule(MVDRule):
    def alternatives(self, dist: Categorical, value: Tensor) -> list[Tensor]:
        return [torch.full_like(value, k) for k in range(dist.probs.shape[-1])]

    def gradient_carrier(self, dist, value, cost, costs):
        return (dist.probs * torch.stack(costs, -1)).sum()


_RULES: tuple[tuple[type, MVDRule], ...] = (
    (Normal, NormalRule()), (Bernoulli, BernoulliRule()), (Categorical, CategoricalRule()))
FAMILIES = tuple(kind.__name__ for kind, _ in _RULES)


def rule_for(dist: Distribution, name: str = "?") -> MVDRule:
    """The MVD rule of ``dist``'s family (a :class:`ModelError` naming the site if none)."""
    for kind, rule in _RULES:
        if isinstance(dist, kind):
            return rule
    raise ModelError(f"guide site {name!r}: no measure-valued derivative for "
                     f"{type(dist).__name__} (MVD covers {', '.join(FAMILIES)}); use "
                     "infer={'estimator': 'score'}")


class Redraw(Messenger):
    """A guide re-run for one MVD alternative: site ``target`` takes ``value``, the sites
    whose log density depended on ``target`` in the first run (``trace``) are drawn again,
    every other site is replayed (and enumerated sites always: their support is fixed).
    ``estimators``: the first run's :class:`~.estimators.SiteEstimator` of each site;
    ``target=None`` replays everything."""

    def __init__(self, trace: Trace, estimators: dict[str, Any],
                 target: str | None = None, value: Tensor | None = None):
        self.trace, self.estimators = trace, estimators
        self.target, self.value = target, value

    def process(self, msg: Message) -> None:
        if msg.kind != "sample" or msg.is_observed or msg.intervened or msg.value is not None:
            return
        if msg.name not in self.trace:
            raise ModelError(f"guide site {msg.name!r} was not drawn in the first run of the "
                             "objective; a measure-valued derivative re-runs it, so the guide "
                             "must draw the same sites each time")
        first = self.trace[msg.name]
        if msg.name == self.target:
            msg.value = track(self.value, msg.name)
            return
        first_estimator = self.estimators.get(msg.name)
        kind = first_estimator.estimator if first_estimator is not None else None
        if self.target not in sources(first.log_prob) or kind == "enumerate":
            msg.value = first.value
            return
        with internal(), drawing():
            fresh = msg.fn.sample()
        msg.value = track(fresh, msg.name) if kind in ("score", "mvd") else fresh
