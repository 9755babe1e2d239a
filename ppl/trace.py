"""A record of one run of a model: its sites in execution order.

    >>> from ppl import handlers, sample
    >>> from ppl.stdlib import Normal
    >>> with handlers.trace() as tr:
    ...     x = sample("x", Normal(0.0, 1.0))
    >>> list(tr.trace), tr.trace["x"].kind
    (['x'], 'sample')
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .runtime import PlateFrame


@dataclass(frozen=True)
class Site:
    """One recorded primitive call.

    ``log_prob`` is the elementwise log density (batch shaped) with the site's scale and
    mask already applied; it is None for params and deterministic sites, and zero for an
    intervened (``do``) site, which is no longer random.
    """

    name: str
    kind: str
    fn: Any
    value: Any
    log_prob: torch.Tensor | None
    plates: tuple[PlateFrame, ...] = ()
    is_observed: bool = False
    intervened: bool = False
    scale: Any = 1.0
    mask: Any = None
    infer: dict = field(default_factory=dict)
    source: str = ""

    @property
    def is_latent(self) -> bool:
        return self.kind == "sample" and not self.is_observed and not self.intervened

    @property
    def log_prob_sum(self) -> torch.Tensor:
        return self.log_prob.sum() if self.log_prob is not None else torch.tensor(0.0)


def site_log_prob(dist: Any, value: torch.Tensor, scale: Any = None,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """A random site's elementwise log density: ``dist.log_prob(value)``, zero where ``mask``
    is False, times the site's recorded ``scale`` (None or 1.0: unscaled). The one meaning of
    a site's log-prob, shared by the trace handler and every graph interpreter (which sum
    it)."""
    log_prob = dist.log_prob(value)
    if mask is not None:
        log_prob = torch.where(mask, log_prob, torch.zeros((), dtype=log_prob.dtype))
    if scale is not None and not (isinstance(scale, float) and scale == 1.0):
        log_prob = log_prob * scale
    return log_prob


def sum_except(log_prob: torch.Tensor, keep_dim: int | None) -> torch.Tensor:
    """Sum all dims of ``log_prob`` except the (negative) ``keep_dim``, which leads the result."""
    if keep_dim is None:
        return log_prob.sum()
    if log_prob.dim() < -keep_dim:
        return log_prob.sum().reshape(1)
    lead = log_prob.dim() + keep_dim
    moved = log_prob.movedim(lead, 0)
    return moved.reshape(moved.shape[0], -1).sum(-1)


class Trace:
    """Ordered sites of one run, with the model's return value."""

    def __init__(self) -> None:
        self.sites: dict[str, Site] = {}
        self.return_value: Any = None

    def add(self, site: Site) -> None:
        self.sites[site.name] = site

    def __getitem__(self, name: str) -> Site:
        return self.sites[name]

    def __contains__(self, name: object) -> bool:
        return name in self.sites

    def __iter__(self) -> Iterator[str]:
        return iter(self.sites)

    def __len__(self) -> int:
        return len(self.sites)

    def __repr__(self) -> str:
        kinds = ", ".join(
            f"{n}:{s.kind}{'(obs)' if s.is_observed else ''}" for n, s in self.sites.items()
        )
        return f"Trace({kinds})"

    def values(self, kinds: tuple[str, ...] = ("sample", "deterministic")) -> dict[str, Any]:
        return {n: s.value for n, s in self.sites.items() if s.kind in kinds}

    def latent_sites(self) -> list[Site]:
        return [s for s in self.sites.values() if s.is_latent]

    def observed_sites(self) -> list[Site]:
        return [s for s in self.sites.values() if s.kind in ("sample", "factor") and s.is_observed]

    def log_joint(self, keep_dim: int | None = None) -> torch.Tensor:
        """Sum of every random site's log density (scale and mask applied).

        With ``keep_dim`` (a negative batch dim, e.g. a vectorized-particle plate's), the sum
        runs over everything else and one log joint per index along that dim is returned.
        """
        total: torch.Tensor | float = 0.0
        for site in self.sites.values():
            if site.log_prob is not None:
                total = total + sum_except(site.log_prob, keep_dim)
        return torch.as_tensor(total)
