"""Gibbs updates: the block interface, and exact updates of discrete sites by enumeration.

A compositional sampler (``ppl.inference.mcmc.gibbs.method.Gibbs``) keeps the value of every
latent site per chain, ``values[address]`` of shape ``(chains, *site_shape)``, and runs one
*update* per block of sites in turn. An update is an object with the :class:`GibbsUpdate`
interface: ``bind(graph, sites)`` returns a copy set up for those sites of that graph;
``init(rng, values, num_warmup) -> (values, state)`` and ``step(rng, values, state) ->
(values, state, info)`` then move only the block's sites, leaving every other site's value
as it is. Each update leaves the posterior invariant, so any sequence of them does too.

:class:`DiscreteGibbs` draws a discrete site (finite enumerable support: Bernoulli,
Categorical, Binomial, ...) exactly from its full conditional. For each candidate value
``k`` it evaluates only the factors of the site's Markov blanket that involve it (its own
prior and its children, read from ``ppl.ir.analysis.random_dag``) with a
:class:`~ppl.inference.mcmc.gibbs.site_program.SiteProgram`, for all chains and all candidates in
one vmapped call. Elements of the site along a plate dim that every child shares are
conditionally independent, so they are all drawn at once (mixture assignments ``z[i]``);
elements along other batch dims are drawn one after another. Sites that depend on each other
(an HMM's ``z_t``) are separate sites and are updated one after another, in the order given
(``Gibbs`` gives a chain of them one joint block instead: ``unrolled_chain``).

    >>> import torch
    >>> from ppl import model, plate, sample
    >>> from ppl.stdlib import Bernoulli, Normal
    >>> from ppl.inference.mcmc import chain_generators
    >>> @model
    ... def m(y):
    ...     with plate("data", 3):
    ...         z = sample("z", Bernoulli(0.5))
    ...         sample("y", Normal(4.0 * z, 1.0), obs=y)
    >>> update = DiscreteGibbs().bind(m.graph(torch.tensor([0.0, 4.0, 4.0])), ("z",))
    >>> values = {"z": torch.zeros(2, 3)}
    >>> values, _, _ = update.step(chain_generators(0, 2), values, None)
    >>> values["z"]
    tensor([[0., 1., 1.],
            [0., 1., 1.]])
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ppl.errors import ModelError
from ppl.inference.rng import RNG, rand
from ppl.ir import Graph, Node
from ppl.ir.analysis import random_dag
from ppl.ir.errors import IRError
from ppl.trace import site_log_prob

from .site_by_site import SiteBySite
from .site_program import SiteProgram

Values = dict[str, Tensor]

__all__ = ["Values", "GibbsUpdate", "DiscreteGibbs", "categorical_draw"]


@runtime_checkable
class GibbsUpdate(Protocol):
    """One block of a compositional sampler (see the module docstring)."""

    def bind(self, graph: Graph, sites: tuple[str, ...]) -> GibbsUpdate: ...

    def init(self, rng: RNG, values: Values, num_warmup: int) -> tuple[Values, Any]: ...

    def step(
        self, rng: RNG, values: Values, state: Any
    ) -> tuple[Values, Any, dict[str, Tensor]]: ...


def categorical_draw(rng: RNG, logits: Tensor) -> Tensor:
    """Indices drawn from unnormalized ``logits`` ``(K, chains, *shape)`` -> ``(chains, *shape)``,
    by inverting the CDF at one uniform per chain and element (chain ``c``'s uniforms come from
    its own generator)."""
    num_chains, shape = logits.shape[1], tuple(logits.shape[2:])
    u = rand(rng, num_chains, shape, dtype=torch.float64, device=logits.device)
    cdf = torch.softmax(logits.double(), 0).cumsum(0)
    return (u > cdf).sum(0).clamp(max=logits.shape[0] - 1)


def _keep_dims(lp: Tensor, rank: int, kept: frozenset[int]) -> Tensor:
    """Sum a log density term to the site's batch rank, keeping only the dims in ``kept``
    (negative) and leaving size 1 elsewhere."""
    if lp.dim() > rank:
        lp = lp.sum(tuple(range(lp.dim() - rank)))
    lp = lp.reshape((1,) * (rank - lp.dim()) + tuple(lp.shape))
    summed = tuple(d for d in range(-rank, 0) if d not in kept)
    return lp.sum(summed, keepdim=True) if summed else lp


class _Term:
    """A ``SiteFn``: the log density of one blanket factor, summed to the site's batch shape
    except along the dims drawn at once."""

    def __init__(self, scale: float | None, rank: int, kept: frozenset[int]):
        self.scale, self.rank, self.kept = scale, rank, kept

    def __call__(self, dist, value: Tensor) -> Tensor:
        if dist is not None:
            lp = site_log_prob(dist, value, self.scale)
        else:  # a factor: its value is the log weight
            lp = value if self.scale is None else value * self.scale
        return _keep_dims(lp, self.rank, self.kept)


@dataclass(frozen=True)
class _SitePlan:
    """How one discrete site is updated: its candidate values, which of its dims are drawn
    at once, the element masks visited one after another, and its blanket program."""

    address: str
    support: Tensor  # (K,)
    shape: tuple[int, ...]
    masks: tuple[Tensor, ...]
    program: SiteProgram

    def step(self, rng: RNG, values: Values) -> Tensor:
        z = values[self.address]
        num_chains, num_values = z.shape[0], self.support.shape[0]
        rows = {
            a: values[a].expand(num_values, *values[a].shape).reshape(-1, *values[a].shape[1:])
            for a in self.program.latents
            if a != self.address
        }
        candidates = self.support.to(z.dtype).reshape((num_values, 1) + (1,) * len(self.shape))
        for mask in self.masks:
            rows[self.address] = torch.where(mask, candidates, z).reshape(-1, *self.shape)
            terms = self.program(rows)
            drawn_shape = terms[self.address].shape[1:]
            logits = sum(terms.values()).reshape(num_values, num_chains, *drawn_shape)
            self._check(logits)
            z = torch.where(mask, self.support.to(z.dtype)[categorical_draw(rng, logits)], z)
        return z

    def _check(self, logits: Tensor) -> None:
        bad = ~torch.isfinite(torch.logsumexp(logits, 0))
        if bad.any():
            chains = sorted(set(bad.nonzero()[:, 0].tolist()))
            raise ModelError(
                f"DiscreteGibbs: the conditional of site {self.address!r} has no finite value "
                f"for chains {chains} (every candidate in {self.support.tolist()} has log density "
                f"{logits[:, chains[0]].flatten().tolist()[:8]}...); the other sites' values "
                "are outside the model's support"
            )


def _lp_shape(p, node: Node) -> tuple[int, ...]:
    if node.kind == "factor":
        return tuple(torch.as_tensor(p.env[node.name]).shape)
    return tuple(p.dists[node.name].batch_shape)


def _plan(graph: Graph, p, address: str) -> _SitePlan:
    node = graph.site(address)
    where = f"DiscreteGibbs: site {address!r}"
    if node.kind != "sample":
        raise IRError(f"{where} is a {node.kind} node; only latent sample sites are updated")
    dist = p.dists[node.name]
    if not dist.support.is_discrete or not dist.has_enumerate_support:
        raise IRError(
            f"{where} ({node.target}) has no finite enumerable support; give it a kernel for "
            "continuous sites (NUTS, slice, ...) instead"
        )
    if dist.event_shape:
        raise IRError(f"{where} has event shape {tuple(dist.event_shape)}; only scalar events "
                      "are enumerated (use Categorical rather than OneHotCategorical)")
    try:
        support = dist.enumerate_support(expand=False).reshape(-1)
    except Exception as e:
        raise IRError(f"{where}: its support cannot be enumerated ({e})") from e
    shape = tuple(dist.batch_shape)
    children = [graph.site(a) for a in random_dag(graph).successors(address)]
    lp_shapes = {child.name: _lp_shape(p, child) for child in children}

    def shared(frame) -> bool:
        """Whether every child sits in the plate too, with the plate's dim in its density."""
        d = frame.dim
        return all(
            any(f.name == frame.name for f in child.meta.plates)
            and len(lp_shapes[child.name]) >= -d and lp_shapes[child.name][d] == shape[d]
            for child in children
        )

    kept = frozenset(f.dim for f in node.meta.plates
                     if f.dim is not None and -f.dim <= len(shape) and shared(f))
    sequential = [d for d in range(-len(shape), 0) if d not in kept]
    masks = []
    for index in itertools.product(*(range(shape[d]) for d in sequential)):
        mask = torch.zeros(shape, dtype=torch.bool)
        full = [slice(None)] * len(shape)
        for d, i in zip(sequential, index, strict=True):
            full[d] = i
        mask[tuple(full)] = True
        masks.append(mask)
    fns = {
        n.address: _Term(n.meta.attr("scale"), len(shape), kept) for n in [node, *children]
    }
    return _SitePlan(address, support, shape, tuple(masks), SiteProgram(graph, fns))


@dataclass(frozen=True)
class DiscreteGibbs(SiteBySite):
    """Exact Gibbs updates of discrete sites, one site after another (module docstring).

    Candidate values are the support read from the prior once (at ``bind``). Plate semantics
    are trusted: a child in the site's plate reads only the same element of the site.
    """

    plan_site = staticmethod(_plan)
