"""Cut a model's graph into the steps a particle method runs in order.

By default each observation (an ``observe`` or ``factor`` site), in graph order, opens a step
holding it and the latents it needs that no earlier step has drawn (its ancestors through
any chain of ``call`` nodes); latents no observation needs go in the final step. A user may
give the partition instead, a list of address groups, which is validated: every random site
in exactly one group, no site reading a latent of a later group.

Each step also knows the nodes it evaluates (the sub-graph from its sites back to the latents
of earlier steps, which it *reads*, and to inputs and params) and, across steps, which
latents are still read later (``needed_after``), so a driver can drop the others. Building
is linear in the size of the graph: a node is visited once when the steps are cut, and once
per step whose sub-graph holds it.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def chain():
    ...     x = sample("x_0", Normal(0.0, 1.0))
    ...     for t in range(1, 3):
    ...         x = sample(f"x_{t}", Normal(x, 1.0))
    ...         sample(f"y_{t}", Normal(x, 1.0), obs=torch.tensor(0.5))
    >>> s = Schedule.from_graph(chain.graph())
    >>> [s.step_sites(k) for k in range(s.num_steps)]
    [('x_0', 'x_1', 'y_1'), ('x_2', 'y_2')]
    >>> s.needed_after(0), s.steps[1].reads
    (frozenset({'x_1'}), ('x_1',))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ppl.ir import Graph
from ppl.ir.node import Node, iter_refs

_OBSERVATIONS = ("observe", "factor")
_RANDOM = ("sample", *_OBSERVATIONS)


class ScheduleError(ValueError):
    """A partition that no particle method can run (the message names the sites)."""


@dataclass(frozen=True)
class Step:
    """One step: its sites by address (graph order), the latents it draws, its observed sites
    (observations and factors), the names of the nodes it evaluates (graph order) and the
    latents of earlier steps that those nodes read."""

    sites: tuple[str, ...]
    latents: tuple[str, ...]
    observed: tuple[str, ...]
    nodes: tuple[str, ...]
    reads: tuple[str, ...]


class _Refs:
    """Each node's refs, and those its value reads (an observation's value is its first
    argument alone), computed once for all walks."""

    def __init__(self, graph: Graph):
        self.all = {n.name: tuple(dict.fromkeys(n.refs())) for n in graph.nodes}
        self.value = {n.name: tuple(dict.fromkeys(iter_refs(n.args[0])))
                      if n.kind == "observe" else self.all[n.name] for n in graph.nodes}


class Schedule:
    """The steps of a graph, from :meth:`from_graph`."""

    def __init__(self, graph: Graph, steps: Sequence[Step]):
        self.graph = graph
        self.steps: tuple[Step, ...] = tuple(steps)
        self._step_of = {a: k for k, step in enumerate(self.steps) for a in step.sites}
        self._needed_after = needed_after_sets([s.latents for s in self.steps],
                                               [s.reads for s in self.steps])

    @classmethod
    def from_graph(cls, graph: Graph,
                   partition: Sequence[Sequence[str]] | None = None) -> Schedule:
        """The default schedule of ``graph``, or the user's ``partition`` (address groups, in
        the order the steps run) once validated."""
        index = {node.name: i for i, node in enumerate(graph.nodes)}
        refs = _Refs(graph)
        groups = (_default_groups(graph, index, refs) if partition is None
                  else _validated_groups(graph, partition, refs))
        return cls(graph, [_step(graph, index, refs, group) for group in groups])

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def step_sites(self, k: int) -> tuple[str, ...]:
        return self.steps[k].sites

    def step_of(self, address: str) -> int:
        """The step that draws or observes ``address``."""
        return self._step_of[address]

    def needed_after(self, k: int) -> frozenset[str]:
        """The latents drawn by steps ``<= k`` that steps ``> k`` read."""
        return self._needed_after[k]

    def __repr__(self) -> str:
        return f"<Schedule of {self.graph.name}: {self.num_steps} steps>"


def _default_groups(graph: Graph, index: dict[str, int], refs: _Refs) -> list[list[Node]]:
    """Each observation with its not yet drawn latent ancestors; a node seen once is never
    walked again (every latent it needs is in that step or an earlier one)."""
    seen: set[str] = set()
    groups: list[list[Node]] = []
    for node in graph.nodes:
        if node.kind not in _OBSERVATIONS:
            continue
        seen.add(node.name)
        latents, stack = [], list(refs.all[node.name])
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            ancestor = graph.node(name)
            if ancestor.kind == "sample":
                latents.append(ancestor)
            stack.extend(refs.value[name])
        groups.append(sorted(latents, key=lambda n: index[n.name]) + [node])
    rest = [n for n in graph.nodes if n.kind == "sample" and n.name not in seen]
    if rest or not groups:
        if groups:
            groups[-1] = sorted(groups[-1] + rest, key=lambda n: index[n.name])
        else:
            groups.append(rest)
    return groups


def _validated_groups(graph: Graph, partition: Sequence[Sequence[str]],
                      refs: _Refs) -> list[list[Node]]:
    """The partition's groups as nodes, or a :class:`ScheduleError` naming what is wrong."""
    if isinstance(partition, str) or any(isinstance(g, str) for g in partition):
        raise ScheduleError("a partition is a list of address groups (lists of addresses), "
                            f"got {partition!r}")
    group_of: dict[str, int] = {}
    for k, group in enumerate(partition):
        for address in group:
            if not graph.has_site(address):
                raise ScheduleError(f"partition group {k} names {address!r}, which is not a "
                                    f"site of graph {graph.name!r}")
            kind = graph.site(address).kind
            if kind not in _RANDOM:
                raise ScheduleError(f"partition group {k} names {address!r}, a {kind} site; "
                                    "only latent and observed sites are scheduled")
            if address in group_of:
                raise ScheduleError(f"site {address!r} is in partition groups "
                                    f"{group_of[address]} and {k}; each site goes in one group")
            group_of[address] = k
    missing = [n.address for n in graph.nodes if n.kind in _RANDOM and n.address not in group_of]
    if missing:
        raise ScheduleError(f"the partition leaves out sites {missing[:8]}"
                            f"{' ...' if len(missing) > 8 else ''}; every latent and observed "
                            "site goes in one group")
    _check_order(graph, group_of, refs)
    groups: list[list[Node]] = [[] for _ in partition]
    for node in graph.nodes:
        if node.address in group_of and node.kind in _RANDOM:
            groups[group_of[node.address]].append(node)
    return groups


def _check_order(graph: Graph, group_of: dict[str, int], refs: _Refs) -> None:
    """No site reads a latent of a later group: one forward pass carrying, for each node's
    value, the latest group (and its latent) it depends on."""
    latest: dict[str, tuple[int, str | None]] = {}
    for node in graph.nodes:
        reads = max((latest[r] for r in refs.all[node.name]), default=(-1, None))
        if node.kind in _RANDOM:
            group = group_of[node.address]
            if reads[0] > group:
                raise ScheduleError(
                    f"site {node.address!r} (partition group {group}) reads latent {reads[1]!r}, "
                    f"which group {reads[0]} draws later; a latent's group must come no later "
                    "than the groups of the sites that read it")
        if node.kind == "sample":
            latest[node.name] = (group_of[node.address], node.address)
        elif node.kind == "observe":
            latest[node.name] = max((latest[r] for r in refs.value[node.name]),
                                    default=(-1, None))
        else:
            latest[node.name] = reads


def sub_graph(graph: Graph, group: Sequence[Node]) -> Step:
    """The :class:`Step` of the site nodes ``group`` of ``graph`` (one walk of the graph's
    refs; for one group, e.g. a proposal's sites of one step)."""
    return _step(graph, {n.name: i for i, n in enumerate(graph.nodes)}, _Refs(graph), group)


def _step(graph: Graph, index: dict[str, int], refs: _Refs, group: Sequence[Node]) -> Step:
    """A step from its site nodes: the sub-graph it evaluates and the latents it reads."""
    own = {n.name for n in group}
    needed: set[str] = set()
    reads: list[Node] = []
    stack = list(own)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        if name in own:
            stack.extend(refs.all[name])
            continue
        node = graph.node(name)
        if node.kind == "sample":
            reads.append(node)
        else:
            stack.extend(refs.value[name])
    order = index.__getitem__
    return Step(
        sites=tuple(n.address for n in group),
        latents=tuple(n.address for n in group if n.kind == "sample"),
        observed=tuple(n.address for n in group if n.kind in _OBSERVATIONS),
        nodes=tuple(sorted(needed, key=order)),
        reads=tuple(n.address for n in sorted(reads, key=lambda n: order(n.name))),
    )


def needed_after_sets(latents: Sequence[Sequence[str]],
                      reads: Sequence[Sequence[str]]) -> list[frozenset[str]]:
    """For each step ``k`` (its ``latents`` drawn, its ``reads`` read), the latents of steps
    ``<= k`` that steps ``> k`` read: one sweep over the steps."""
    last_read: dict[str, int] = {}
    for k, step_reads in enumerate(reads):
        for address in step_reads:
            last_read[address] = k
    alive: set[str] = set()
    out = []
    for k, step_latents in enumerate(latents):
        alive.update(a for a in step_latents if last_read.get(a, -1) > k)
        alive.difference_update([a for a in alive if last_read[a] <= k])
        out.append(frozenset(alive))
    return out
