"""``do(values)``: intervene on sites, as ``ppl.handlers.do`` does at run time.

The node of each named site (a latent ``sample`` or an ``observe``) is replaced by a
constant ``input`` node (target ``const``) with the same SSA name, bound in ``graph.data``
to the value: it is cut from its parents, contributes no log-density term, and every
downstream node reads the value.
The site's address disappears from the graph (as in a trace under ``do``, where the site is
no longer random); ``graph.attrs["intervened"]`` lists the addresses. Nodes that only fed
the removed site are left for ``simplify`` to drop.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m():
    ...     x = sample("x", Normal(0.0, 1.0))
    ...     sample("y", Normal(x, 1.0))
    >>> g = do({"x": torch.tensor(2.0)})(m.graph())
    >>> [n.address for n in g.latent_nodes], g.data["x"]
    (['y'], tensor(2.))
"""

from __future__ import annotations

from typing import Any

from ppl.ir import Graph
from ppl.ir.errors import IRError
from ppl.ir.loop import refuse_loops
from ppl.primitives import as_tensor

from .rewriting import Rewriter


class do:
    """Pass: fix the sites named in ``values`` to constants, cut from their parents."""

    name = "do"

    def __init__(self, values: dict[str, Any]):
        self.values = {k: as_tensor(v) for k, v in dict(values).items()}

    def __repr__(self) -> str:
        return f"do({sorted(self.values)})"

    def __call__(self, graph: Graph) -> Graph:
        refuse_loops(graph, "pass 'do'")
        for address in self.values:
            if not graph.has_site(address):
                raise IRError(
                    f"do: graph {graph.name!r} has no site {address!r}; random sites are "
                    f"{[n.address for n in graph.nodes_of('sample', 'observe')]}"
                )
            kind = graph.site(address).kind
            if kind not in ("sample", "observe"):
                raise IRError(
                    f"do: site {address!r} is a {kind} node; only sample sites can be intervened on"
                )
        rw = Rewriter(graph)
        for node in graph.nodes:
            if node.kind in ("sample", "observe") and node.address in self.values:
                rw.add_input(self.values[node.address], name=node.name)
            else:
                rw.copy(node)
        intervened = list(graph.attrs.get("intervened", ())) + sorted(self.values)
        return rw.build({"intervened": intervened})
