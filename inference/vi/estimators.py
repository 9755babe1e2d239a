"""Per-site gradient estimators: how each latent site of a guide is drawn so that the
surrogate built by :mod:`.objectives` differentiates it correctly.

A guide site picks its estimator with ``sample(name, dist, infer={"estimator": ...})``:

- ``"reparam"``: ``dist.rsample()``, the pathwise gradient. For Gamma, Beta and Dirichlet
  torch's ``rsample`` is the implicit reparameterization (the gradient of the CDF inverse
  taken implicitly), so the same estimator covers them.
- ``"score"``: a plain draw, tracked (:mod:`.provenance`) so that its score ``∇ log q``
  multiplies only the cost terms downstream of it (Rao-Blackwellization), per element along
  the plates they share, minus a baseline: a running average (``infer={"baseline": decay}``,
  default 0.9), a learned network (``"learned"`` or an ``nn.Module``, :mod:`.baselines`), or
  ``None`` for none.
- ``"mvd"``: a plain draw whose gradient is a measure-valued derivative, the cost
  re-evaluated at other values of the site (:mod:`.mvd`; Normal, Bernoulli, Categorical;
  objectives linear in the log densities).
- ``"enumerate"``: every value of a finite support at once, along a new dimension left of
  the particles; the expectation over it is then exact (for objectives linear in the log
  densities, such as the ELBO).

The default (no ``"estimator"``, or ``"auto"``) is reparam where the family has ``rsample``,
enumeration where its support has at most :data:`MAX_ENUMERATE` values and the objective
allows it, the score function otherwise.

    >>> from ppl.stdlib import Bernoulli, Normal, Poisson
    >>> [choose_estimator("z", d, None, allow_enumerate=True)
    ...  for d in (Normal(0.0, 1.0), Bernoulli(0.3), Poisson(2.0))]
    ['reparam', 'enumerate', 'score']
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import Distribution

from ppl.errors import ModelError
from ppl.randomness import drawing
from ppl.runtime import Message, Messenger, internal

from .mvd import rule_for
from .provenance import track

__all__ = ["ESTIMATORS", "MAX_ENUMERATE", "SiteEstimator", "choose_estimator", "DrawByEstimator"]

ESTIMATORS = ("reparam", "score", "mvd", "enumerate")
MAX_ENUMERATE = 16
DEFAULT_BASELINE_DECAY = 0.9


@dataclass(frozen=True)
class SiteEstimator:
    """How one guide site was drawn: its estimator, the dim its enumerated values occupy
    (enumeration only) and its baseline (score only): a running average's decay,
    ``"learned"``, an ``nn.Module`` or None."""

    estimator: str
    enum_dim: int | None = None
    baseline: float | str | torch.nn.Module | None = None


def _support_size(dist: Distribution) -> int:
    return int(dist.enumerate_support(expand=False).shape[0])


def _family(dist: Distribution) -> str:
    return type(dist).__name__


def choose_estimator(name: str, dist: Distribution, requested: str | None, *,
                     allow_enumerate: bool) -> str:
    """The estimator of site ``name``: ``requested`` checked against ``dist``, or the default."""
    if requested in (None, "auto"):
        if dist.has_rsample:
            return "reparam"
        if allow_enumerate and dist.has_enumerate_support and _support_size(dist) <= MAX_ENUMERATE:
            return "enumerate"
        return "score"
    if requested not in ESTIMATORS:
        raise ModelError(
            f"guide site {name!r}: unknown estimator {requested!r}; choose one of {ESTIMATORS}"
        )
    if requested == "reparam" and not dist.has_rsample:
        raise ModelError(
            f"guide site {name!r}: {_family(dist)} has no rsample, so it cannot be "
            "reparameterized; use infer={'estimator': 'score'} (or 'enumerate' if finite)"
        )
    if requested == "mvd":
        rule_for(dist, name)
        if not allow_enumerate:
            raise ModelError(
                f"guide site {name!r} asks for a measure-valued derivative, which needs an "
                "objective linear in the log densities (such as ELBO); this objective is not"
            )
    if requested == "enumerate":
        if not dist.has_enumerate_support:
            raise ModelError(
                f"guide site {name!r}: {_family(dist)} has no finite support to enumerate"
            )
        if not allow_enumerate:
            raise ModelError(
                f"guide site {name!r} asks for exact enumeration, which needs an objective "
                "linear in the log densities (such as ELBO); this objective is not"
            )
    return requested


def _checked_baseline(name: str, infer: dict) -> float | str | torch.nn.Module | None:
    baseline = infer.get("baseline", DEFAULT_BASELINE_DECAY)
    if baseline is None or baseline == "learned" or isinstance(baseline, torch.nn.Module):
        return baseline
    if isinstance(baseline, (int, float)) and 0 <= baseline < 1:
        return float(baseline)
    raise ModelError(f"guide site {name!r}: baseline {baseline!r} is not a decay in [0, 1), "
                     "'learned', an nn.Module or None")


class DrawByEstimator(Messenger):
    """Draw each latent guide site according to its estimator (records them in
    ``self.estimators``). Enumerated sites take dims ``first_enum_dim``, one to the left per
    site. ``detach=True`` draws every site without any gradient path (for objectives such as
    RWS whose guide gradient is a weighted score)."""

    def __init__(self, first_enum_dim: int, *, allow_enumerate: bool, detach: bool = False):
        self.next_enum_dim = first_enum_dim
        self.allow_enumerate = allow_enumerate
        self.detach = detach
        self.estimators: dict[str, SiteEstimator] = {}

    def process(self, msg: Message) -> None:
        if msg.kind != "sample" or msg.is_observed or msg.intervened or msg.value is not None:
            return
        dist = msg.fn
        if self.detach:
            with internal(), drawing(), torch.no_grad():
                msg.value = dist.sample()
            return
        requested = msg.infer.get("estimator")
        estimator = choose_estimator(msg.name, dist, requested,
                                     allow_enumerate=self.allow_enumerate)
        with internal():
            if estimator == "reparam":
                with drawing():
                    msg.value = dist.rsample()
                self.estimators[msg.name] = SiteEstimator("reparam")
            elif estimator in ("score", "mvd"):
                with drawing():
                    msg.value = track(dist.sample(), msg.name)
                baseline = _checked_baseline(msg.name, msg.infer) if estimator == "score" else None
                self.estimators[msg.name] = SiteEstimator(estimator, baseline=baseline)
            else:
                msg.value = track(self._enumerated_values(dist), msg.name)
                self.estimators[msg.name] = SiteEstimator("enumerate", self.next_enum_dim)
                self.next_enum_dim -= 1

    def _enumerated_values(self, dist: Distribution) -> torch.Tensor:
        """The support along ``next_enum_dim`` with size-1 dims up to the event."""
        support = dist.enumerate_support(expand=False)
        size, event = support.shape[0], tuple(dist.event_shape)
        ones = (1,) * (-self.next_enum_dim - 1)
        return support.reshape(size, *event).reshape(size, *ones, *event)
