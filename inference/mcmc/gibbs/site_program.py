"""``SiteProgram``: what a few sites of a graph say, given every latent's value, batched over rows.

A Gibbs update needs a handful of terms of the joint density, not all of them: the log
densities of one site and of its children (the factors of its Markov blanket that involve it),
or the parameters of those children for a conjugate update. A ``SiteProgram`` keeps only the
nodes that the chosen sites read (stopping at latent values, which are given), compiles them
to straight-line code with ``ppl.ir.codegen`` and runs it for one row of latent values,
``torch.func.vmap``-ed over rows (chains, or chains times candidate values). Model code thus
never sees the batch dimension.

Each chosen site comes with a function ``fn(dist, value)`` whose (tensor or tuple of tensors)
result is returned for that site: ``dist`` is the site's distribution for a sample or observe
node and None for a factor (``value`` is its log weight) or a deterministic site. Values of
other nodes, by name (``nodes=``), are returned too: a chain's log factors for its FFBS draw.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m():
    ...     x = sample("x", Normal(0.0, 1.0))
    ...     sample("y", Normal(x, 1.0), obs=torch.tensor(0.5))
    >>> program = SiteProgram(m.graph(), {"y": lambda d, v: d.log_prob(v)})
    >>> program.latents, program({"x": torch.tensor([0.5, 1.5])})["y"].shape
    (('x',), torch.Size([2]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from ppl.ir import CodeGen, Graph, Node
from ppl.ir.loop import refuse_loops
from ppl.ir.node import iter_refs

SiteFn = Callable[[Distribution | None, Tensor], Any]

__all__ = ["SiteFn", "SiteProgram"]


def _pruned(graph: Graph, chosen: set[str]) -> Graph:
    """The nodes that chosen nodes (by name) read, in order, ending with an empty output.

    Latent (sample) nodes that are not chosen keep no arguments (their value is given), and
    observe nodes that are not chosen keep only their value."""
    need = set(chosen)
    for node in reversed(graph.nodes):
        if node.name not in need or (node.kind == "sample" and node.name not in chosen):
            continue
        value_only = node.kind == "observe" and node.name not in chosen
        refs = iter_refs(node.args) if value_only else node.refs()
        need.update(refs)
    nodes = []
    for node in graph.nodes:
        if node.name in need and node.kind != "output":
            if node.kind in ("sample", "observe") and node.name not in chosen:
                node = node.replace(kwargs=())
            nodes.append(node)
    nodes.append(graph.output.replace(args=(None,)))
    return graph.replace(nodes, attrs={})


class _SiteCodeGen(CodeGen):
    """``program(values)`` for one row: a dict address -> the chosen site's ``fn`` result."""

    def __init__(self, graph: Graph, fns: Mapping[str, SiteFn], nodes: frozenset[str]):
        super().__init__(graph, "site_program")
        self.fns, self.nodes = fns, nodes

    def prologue(self) -> None:
        super().prologue()
        self.emit("_out = {}")

    def report(self, node: Node, value: str, dist: str = "None") -> str:
        """Emit the chosen site's ``fn`` call (nothing for a site that is not chosen)."""
        if node.address in self.fns:
            fn = self.const(self.fns[node.address], "fn")
            self.emit(f"_out[{node.address!r}] = {fn}({dist}, {value})")
        return value

    def site_distribution(self, node: Node, kwargs: dict) -> str:
        """Only chosen sites keep their parameters (see ``_pruned``)."""
        return super().site_distribution(node, kwargs) if node.address in self.fns else "None"

    def sample(self, node: Node, args: tuple, kwargs: dict) -> str:
        value = self.assign(node, f"values[{node.address!r}]")
        return self.report(node, value, self.site_distribution(node, kwargs))

    def observe(self, node: Node, args: tuple, kwargs: dict) -> str:
        value = super().observe(node, args, kwargs)
        return self.report(node, value, self.site_distribution(node, kwargs))

    def factor(self, node: Node, args: tuple, kwargs: dict) -> str:
        return self.report(node, super().factor(node, args, kwargs))

    def call(self, node: Node, args: tuple, kwargs: dict) -> str:
        value = super().call(node, args, kwargs)
        if node.name in self.nodes:
            self.emit(f"_out[{node.name!r}] = {value}")
        return self.report(node, value)

    def output(self, node: Node, args: tuple, kwargs: dict) -> None:
        self.emit("return _out")


class SiteProgram:
    """Evaluate ``fns[address](dist, value)`` for the chosen sites of ``graph``.

    ``latents``: the addresses of the latent sites whose values the program reads. Calling
    the program with ``values`` (address -> ``(rows, *site_shape)``, at least ``latents``)
    returns address -> result with a leading ``rows`` dimension, and name -> value for each
    call node named in ``nodes``.
    """

    def __init__(self, graph: Graph, fns: Mapping[str, SiteFn], nodes: Sequence[str] = ()):
        refuse_loops(graph, "SiteProgram (Gibbs' site programs)")
        chosen = {graph.site(address).name for address in fns} | set(nodes)
        pruned = _pruned(graph, chosen)
        self.graph = pruned
        self.latents: tuple[str, ...] = tuple(n.address for n in pruned.latent_nodes)
        self.fn = _SiteCodeGen(pruned, dict(fns), frozenset(nodes)).compile()
        self._batched = torch.func.vmap(self.fn)

    def __call__(self, values: Mapping[str, Tensor]) -> dict[str, Any]:
        return self._batched({a: values[a] for a in self.latents})
