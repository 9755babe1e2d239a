"""``Gibbs``: MCMC that moves blocks of latent sites in turn, each with its own update, as an
``infer`` method (HMC-within-Gibbs, Metropolis-within-Gibbs, conjugate Gibbs).

Every latent site of the model's graph belongs to exactly one block. Blocks come from
``updates`` (``{site or tuple of sites: update}``; an update is a
:class:`~ppl.inference.mcmc.gibbs.discrete.GibbsUpdate`, or a flat-density kernel such as
``ppl.inference.mcmc.Slice()``, which is wrapped in a
:class:`~ppl.inference.mcmc.gibbs.kernel_update.KernelUpdate`); the sites left over are assigned by
default:

* discrete sites with a finite support: ``discrete="gibbs"`` (default) draws them exactly
  from their full conditionals (:class:`~ppl.inference.mcmc.gibbs.discrete.DiscreteGibbs`),
  except that sites forming a chain (an HMM written as a Python loop, ``z_t`` reading only
  ``z_{t-1}``: :mod:`~ppl.inference.mcmc.gibbs.unrolled_chain`) are drawn jointly, one
  block per chain, by forward filtering, backward sampling; a chain that no other discrete
  latent reads is summed out of the graph the other blocks sample (``enumerate_discrete``:
  the kernel runs on the forward algorithm's density, natively) and drawn after them;
  ``discrete="enumerate"`` sums them out of the graph (``enumerate_discrete``), samples the
  rest, and draws them afterwards, per kept draw, from ``P(z | continuous sites, data)``
  (``posterior_of_enumerated``; the probabilities themselves are kept in
  ``extra["discrete_probs"]``, a Rao-Blackwellized estimate). Sites forming a chain (as
  above) are drawn jointly by FFBS; every other site from its own marginal: exact jointly
  for conditionally independent sites (plate elements), but other dependence between sites
  is not kept (use ``"gibbs"`` for joint questions). It costs one interpreted contraction
  per kept draw (about 2 ms);
* the chain of a scan HMM (a ``ppl.scan`` whose carry is its step's discrete site, see
  ``ppl.passes.chain_enumeration``) is summed out of the graph in either mode, so the
  kernel moves the continuous sites on the forward algorithm's density, and the whole chain
  ``z_{0:T-1}`` is drawn jointly from ``P(z | continuous sites, data)`` by forward filtering,
  backward sampling (``O(T K^2)``): with ``discrete="gibbs"`` as the last block of every
  sweep (:class:`~ppl.inference.mcmc.gibbs.chain.ChainGibbs`), with ``"enumerate"`` once
  per kept draw (and ``extra["discrete_probs"]`` holds ``P(z_t = k)``, ``(T, K)`` per draw).
  Other loops are refused (unroll them);
* with ``conjugate=True``, continuous sites whose conditional is a recognized conjugate pair
  (:mod:`ppl.inference.mcmc.gibbs.conjugate`) get exact conjugate draws;
* every other continuous site goes into one block moved by ``kernel`` (default NUTS), whose
  step size and metric adapt during warmup (``adaptation``, Stan's windowed scheme).

One iteration runs the user's blocks in the order given, then the discrete, conjugate and
kernel blocks; every block leaves the posterior invariant, so the sweep does too. Draws are
kept after ``num_warmup`` sweeps: ``(chains, num_samples, *shape)`` for every latent
(discrete included) and deterministic site, and the kernel blocks' per-draw info (keys
prefixed by the block's sites when there are several kernel blocks, with ``divergent``
for any of them). ``extra`` holds the sampled ``graph``, the ``blocks``, each kernel block's
adapted parameters (``tuned``) and where its transitions ran (``backends``: "native" for
NUTS in C, else "torch"; why a block's potential is not in C: ``fallback_reasons``),
times, and with a single kernel block its ``backend``,
``step_size``, ``inverse_mass_matrix`` and ``max_tree_depth`` for the sampler diagnostics.

Randomness: one seed is drawn from the stream of ``infer(seed=...)`` (:mod:`ppl.randomness`);
chain ``c`` takes every random number (initial values from the prior, updates) from its own
generator, so the same seed gives the same draws.

    >>> import torch
    >>> from ppl import infer, model, plate, sample
    >>> from ppl.stdlib import Bernoulli, Normal
    >>> @model
    ... def m(y):
    ...     mu = sample("mu", Normal(0.0, 3.0))
    ...     with plate("data", len(y)):
    ...         z = sample("z", Bernoulli(0.5))
    ...         sample("y", Normal(mu * z, 1.0), obs=y)
    >>> post = infer(m, torch.tensor([0.1, 2.9, 3.2]), method=Gibbs(20, 20, chains=2), seed=0)
    >>> post.samples["z"].shape, post.samples["mu"].shape
    (torch.Size([2, 20, 3]), torch.Size([2, 20]))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ppl.errors import ModelError
from ppl.inference.mcmc.adaptation import WindowAdaptation
from ppl.inference.mcmc.base import Kernel
from ppl.inference.mcmc.nuts import NUTS
from ppl.inference.mcmc.progress import ProgressLine, progress_enabled
from ppl.inference.results.posterior import Posterior
from ppl.inference.rng import RNG, chain_generators, rand
from ppl.ir import Graph
from ppl.ir.loop import refuse_loops
from ppl.model import Model
from ppl.passes import enumerate_discrete, posterior_of_enumerated
from ppl.passes import run as run_passes
from ppl.passes.chain_enumeration import chain_candidates
from ppl.passes.rewriting import probe
from ppl.randomness import drawing, seeded

from .chain import ChainDraws, ChainGibbs, chain_sites
from .conjugate import Conjugate, conjugate_match
from .discrete import DiscreteGibbs, GibbsUpdate, Values, categorical_draw
from .kernel_update import KernelUpdate
from .site_program import SiteProgram
from .unrolled_chain import UnrolledChainGibbs, find_chains, summable

__all__ = ["Gibbs", "assign_blocks"]

Block = tuple[tuple[str, ...], GibbsUpdate]


def _as_update(sites: tuple[str, ...], update: Any,
               adaptation: WindowAdaptation | None) -> GibbsUpdate:
    if isinstance(update, Kernel):
        return KernelUpdate(update, adaptation)
    if isinstance(update, GibbsUpdate):
        return update
    raise TypeError(
        f"the update for sites {list(sites)} is {update!r}; give a Gibbs update (DiscreteGibbs(), "
        "Conjugate(), KernelUpdate(...)) or a kernel from ppl.inference.mcmc (NUTS(), Slice(), "
        "...), not an infer method"
    )


def assign_blocks(
    graph: Graph,
    updates: Mapping[str | tuple[str, ...], Any] | None = None,
    *,
    discrete: str = "gibbs",
    max_size: int = 64,
    conjugate: bool = False,
    kernel: Kernel | GibbsUpdate | None = None,
    adaptation: WindowAdaptation | None = WindowAdaptation(),
) -> tuple[Graph, list[Block]]:
    """The graph to sample (discrete sites summed out for ``discrete="enumerate"``) and its
    blocks ``[(sites, unbound update)]``, as described in the module docstring."""
    if discrete not in ("gibbs", "enumerate"):
        raise ValueError(f"discrete must be 'gibbs' or 'enumerate', got {discrete!r}")
    chains = chain_candidates(graph)
    if chains:
        graph = enumerate_discrete(chains, max_size=max_size)(graph)
    refuse_loops(graph, "Gibbs")
    latents = [n.address for n in graph.latent_nodes]
    blocks: list[Block] = []
    last: list[Block] = []  # the chains' blocks
    owner: dict[str, tuple[str, ...]] = {}
    for key, update in (updates or {}).items():
        sites = (key,) if isinstance(key, str) else tuple(key)
        for site in sites:
            if site not in latents:
                raise ModelError(f"Gibbs: {site!r} in updates is not a latent site of graph "
                                 f"{graph.name!r}; latent sites are {latents}")
            if site in owner:
                raise ModelError(f"Gibbs: site {site!r} is in two blocks, {list(owner[site])} "
                                 f"and {list(sites)}")
            owner[site] = sites
        blocks.append((sites, _as_update(sites, update, adaptation)))
    p = probe(graph)
    dists = {n.address: p.dists[n.name] for n in graph.latent_nodes if n.address not in owner}
    discrete_sites = [a for a, d in dists.items() if d.support.is_discrete]
    finite = [a for a in discrete_sites if dists[a].has_enumerate_support]
    infinite = [a for a in discrete_sites if a not in finite]
    if infinite:
        raise ModelError(f"Gibbs: discrete sites {infinite} have no finite enumerable support; "
                         "give them an update of your own in updates={...}")
    if finite and discrete == "enumerate":
        graph = enumerate_discrete(finite, max_size=max_size)(graph)
    elif finite:
        chained = find_chains(graph, finite)
        summed = [c for c in chained if summable(graph, c)]  # for the others, drawn last
        blocks += [(c, UnrolledChainGibbs()) for c in chained if c not in summed]
        last += [(c, UnrolledChainGibbs(source=graph)) for c in summed]
        if summed:
            graph = enumerate_discrete([a for c in summed for a in c], max_size=max_size)(graph)
        single = tuple(a for a in finite if not any(a in chain for chain in chained))
        if single:
            blocks.append((single, DiscreteGibbs()))
    continuous = [n.address for n in graph.latent_nodes
                  if n.address not in owner and n.address not in finite]
    if conjugate:
        exact = tuple(a for a in continuous if not isinstance(conjugate_match(graph, a), str))
        if exact:
            blocks.append((exact, Conjugate()))
            continuous = [a for a in continuous if a not in exact]
    if continuous:
        sites = tuple(continuous)
        blocks.append((sites, _as_update(sites, kernel or NUTS(), adaptation)))
    if chains and discrete == "gibbs":
        last.append((tuple(chains), ChainGibbs()))
    return graph, blocks + last  # chains last: drawn given every site of the summed-out graph


def _initial_values(graph: Graph, rng: Sequence[torch.Generator]) -> Values:
    """One prior draw per chain (improper sites at a point of their support), chain ``c``
    seeded from its generator."""
    draws = []
    for g in rng:
        with seeded(int(torch.randint(0, 2**62, (), generator=g))):
            env = probe(graph).env
        draws.append({n.address: env[n.name] for n in graph.latent_nodes})
    return {a: torch.stack([d[a] for d in draws]) for a in draws[0]}


def _stack(rows: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([r[k] for r in rows], 1) for k in rows[0]} if rows else {}


def _identity(dist, value: Tensor) -> Tensor:
    return value


def _deterministic(graph: Graph, samples: dict[str, Tensor]) -> dict[str, Tensor]:
    """Every deterministic site at every draw (``(chains, draws, *shape)``)."""
    sites = [n.address for n in graph.nodes if n.is_deterministic_site]
    if not sites:
        return {}
    program = SiteProgram(graph, {a: _identity for a in sites})
    chains, draws = next(iter(samples.values())).shape[:2]
    flat = {a: samples[a].reshape(chains * draws, *samples[a].shape[2:]) for a in program.latents}
    with torch.no_grad():
        out = program(flat)
    return {a: v.reshape(chains, draws, *v.shape[1:]) for a, v in out.items()}


def _draw_enumerated(graph: Graph, original: Graph, samples: dict[str, Tensor], chains: int,
                     draws: int, rng: RNG) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per kept draw, ``P(z | continuous, data)`` for every enumerated site not sampled yet,
    and one draw of each ``z`` from it (a scan chain's jointly, by FFBS)."""
    values: dict[str, Tensor] = {}
    probs: dict[str, Tensor] = {}
    rows = {a: v.reshape(chains * draws, *v.shape[2:]) for a, v in samples.items()}
    pending = tuple(a for a in chain_sites(graph) if a not in samples)
    if pending:
        chain_draws = ChainDraws(graph, pending)
        u = {a: rand(rng, chains, (draws, T)).reshape(chains * draws, T)
             for a, T in chain_draws.length.items()}
        for a, v in chain_draws.draws(u, rows).items():
            values[a] = v.reshape(chains, draws, -1)
        for a, p in chain_draws.probs(rows, chains * draws).items():
            probs[a] = p.reshape(chains, draws, *p.shape[1:])
    records = [r for r in graph.attrs.get("enumerated", ())
               if any(s["address"] not in samples for s in r["sites"])]
    if not records:
        return values, probs
    if not original.subgraphs:  # chains of sites among them (a Python-loop HMM): jointly
        sites = [s["address"] for r in records for s in r["sites"] if s["address"] not in samples]
        for chain in find_chains(original, sites):
            update = UnrolledChainGibbs().bind(original, chain)
            if set(update.program.latents) <= set(samples) | set(chain):
                u = rand(rng, chains, (draws, len(chain))).reshape(chains * draws, -1)
                values.update({a: v.reshape(chains, draws)
                               for a, v in update.draw(u, rows).items()})
    if graph.latent_nodes:
        per_row = [posterior_of_enumerated(graph, {a: v[c, s] for a, v in samples.items()})
                   for c in range(chains) for s in range(draws)]
        site_probs = {a: torch.stack([r[a] for r in per_row]).reshape(chains, draws, *p.shape)
                      for a, p in per_row[0].items()}
    else:
        once = posterior_of_enumerated(graph, {})
        site_probs = {a: p.expand(chains, draws, *p.shape) for a, p in once.items()}
    for record in records:
        for site in record["sites"]:
            a = site["address"]
            if a in samples:  # drawn jointly with its chain
                continue
            probs[a] = site_probs[a]
            if a in values:
                continue
            dtype = getattr(torch, original.site(a).meta.dtype)
            support = torch.tensor(site["values"], dtype=dtype)
            index = categorical_draw(rng, site_probs[a].log().movedim(-1, 0))
            values[a] = support[index]
    return values, probs


@dataclass
class Gibbs:
    """Compositional MCMC as an ``infer`` method (see the module docstring).

    ``updates``: ``{site or tuple of sites: update or kernel}``. ``discrete``: ``"gibbs"`` or
    ``"enumerate"``; ``max_size``: the most values a site summed out by ``"enumerate"`` may
    have (a larger one is an error naming it). ``conjugate``: use exact conjugate updates
    where the graph shows them.
    ``kernel``: the flat-density kernel (or a whole update) for the remaining continuous
    sites (NUTS by default).
    ``adaptation``: warmup adaptation of every kernel block (None: none).
    ``progress_bar``: a progress line on stderr, sweeps done and divergent transitions
    (None: only when stderr is a terminal).
    """

    num_warmup: int = 1000
    num_samples: int = 1000
    chains: int = 4
    updates: Mapping[str | tuple[str, ...], Any] = field(default_factory=dict)
    discrete: str = "gibbs"
    max_size: int = 64
    conjugate: bool = False
    kernel: Kernel | GibbsUpdate = field(default_factory=NUTS)
    adaptation: WindowAdaptation | None = field(default_factory=WindowAdaptation)
    progress_bar: bool | None = None

    def run(self, model: Model, args: tuple, kwargs: dict, *,
            passes: Sequence[Callable] = ()) -> Posterior:
        original = model.graph(*args, **kwargs)
        if passes:
            original = run_passes(original, passes)
        if not original.latent_nodes and not chain_candidates(original):
            raise ModelError(f"Gibbs: model {original.name!r} has no latent sites to sample")
        graph, blocks = assign_blocks(original, self.updates, discrete=self.discrete,
                                      max_size=self.max_size, conjugate=self.conjugate,
                                      kernel=self.kernel,
                                      adaptation=self.adaptation)
        bound = [(sites, update.bind(graph, sites)) for sites, update in blocks]
        with drawing() as generator:
            rng = chain_generators(int(torch.randint(0, 2**31 - 1, (), generator=generator)),
                                   self.chains)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small tensors: one thread is faster (see mcmc.runner)
        try:
            start = time.perf_counter()
            values = _initial_values(graph, rng) if graph.latent_nodes else {}
            states = []
            for _, update in bound:
                values, state = update.init(rng, values, self.num_warmup)
                states.append(state)
            infos: list[list[dict[str, Tensor]]] = [[] for _ in bound]
            line = (ProgressLine(self.num_warmup + self.num_samples, self.num_warmup,
                                 label="gibbs") if progress_enabled(self.progress_bar) else None)

            def sweep(values: Values, keep: bool) -> Values:
                divergent = 0
                for j, (_, update) in enumerate(bound):
                    values, states[j], info = update.step(rng, values, states[j])
                    if keep and info:
                        infos[j].append(info)
                    if line is not None and "divergent" in info:
                        divergent = divergent + info["divergent"].sum()
                if line is not None:
                    line.update(divergent)
                return values

            for _ in range(self.num_warmup):
                values = sweep(values, False)
            warm_end = time.perf_counter()
            kept: list[Values] = []
            for _ in range(self.num_samples):
                values = sweep(values, True)
                kept.append(values)
            end = time.perf_counter()
            if line is not None:
                line.close()
            samples = _stack(kept)
            extra: dict[str, Any] = {"graph": graph, "blocks": blocks,
                                     "warmup_time": warm_end - start,
                                     "sampling_time": end - warm_end}
            if graph is not original:
                drawn, probs = _draw_enumerated(graph, original, samples, self.chains,
                                                self.num_samples, rng)
                samples.update(drawn)
                if probs:
                    extra["discrete_probs"] = probs
            # a loop's sites are summed out (a chain) or refused: its outer sites are the graph's
            samples.update(_deterministic(graph if original.subgraphs else original, samples))
        finally:
            torch.set_num_threads(threads)
        extra.update(self._facts(bound, states))
        return Posterior(samples=samples, info=self._info(bound, infos), extra=extra)

    @staticmethod
    def _facts(bound, states) -> dict[str, Any]:
        """Run facts for ``Posterior.extra``: each kernel block's adapted parameters under
        ``tuned``, where its transitions ran under ``backends`` (``KernelUpdate.backend``)
        and, for a block whose potential is not in C, why under ``fallback_reasons``;
        with one kernel block, also its ``backend``, ``step_size``, ``inverse_mass_matrix``
        and ``max_tree_depth`` (read by the sampler diagnostics). ``kernel`` is "Gibbs": the
        block's target moves between its transitions, so E-BFMI does not apply."""
        tuned = {sites: update.tuned(state)
                 for (sites, update), state in zip(bound, states, strict=True)
                 if isinstance(update, KernelUpdate)}
        backends = {sites: update.backend for sites, update in bound
                    if isinstance(update, KernelUpdate)}
        reasons = {sites: update.flat.fallback_reason for sites, update in bound
                   if isinstance(update, KernelUpdate) and update.flat.fallback_reason}
        facts: dict[str, Any] = {"kernel": "Gibbs", "tuned": tuned, "backends": backends,
                                 "fallback_reasons": reasons}
        kernels = [update.kernel for _, update in bound if isinstance(update, KernelUpdate)]
        if len(kernels) == 1:
            facts.update(next(iter(tuned.values())), backend=next(iter(backends.values())))
            if hasattr(kernels[0], "max_tree_depth"):
                facts["max_tree_depth"] = kernels[0].max_tree_depth
        return facts

    @staticmethod
    def _info(bound, infos) -> dict[str, Tensor]:
        reporting = [(sites, _stack(rows))
                     for (sites, _), rows in zip(bound, infos, strict=True) if rows]
        if len(reporting) == 1:
            return reporting[0][1]
        info = {f"{','.join(sites)}:{k}": v for sites, block in reporting for k, v in block.items()}
        if reporting:
            info["divergent"] = sum(block["divergent"].long() for _, block in reporting
                                    if "divergent" in block) > 0
        return info
