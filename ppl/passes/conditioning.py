"""``condition(data)``: observe latent sites at given values.

Each named latent ``sample`` node becomes an ``observe`` node (same SSA name, address,
family and parameters) whose value is a new ``input`` bound in ``graph.data`` (named after
the site, e.g. ``%y_obs``), so the graph means what ``ppl.handlers.condition`` does at run
time: the site contributes ``log p(value | parents)`` and downstream nodes read the value.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m():
    ...     x = sample("x", Normal(0.0, 1.0))
    ...     sample("y", Normal(x, 1.0))
    >>> g = condition({"y": torch.tensor(0.3)})(m.graph())
    >>> g.site("y").kind, [n.address for n in g.latent_nodes]
    ('observe', ['x'])
"""

from __future__ import annotations

from typing import Any

from ppl.ir import Graph
from ppl.ir.errors import IRError
from ppl.ir.loop import refuse_loops
from ppl.primitives import as_tensor
from ppl.shapes import broadcast_shapes

from .rewriting import Rewriter, latent_site


class condition:
    """Pass: turn the latent sites named in ``data`` into observations of those values."""

    name = "condition"

    def __init__(self, data: dict[str, Any]):
        self.data = {k: as_tensor(v) for k, v in dict(data).items()}

    def __repr__(self) -> str:
        return f"condition({sorted(self.data)})"

    def __call__(self, graph: Graph) -> Graph:
        refuse_loops(graph, "pass 'condition'")
        for address, value in self.data.items():
            node = latent_site(graph, address, "condition")
            shape = node.meta.shape
            if shape is not None:
                try:
                    broadcast_shapes(tuple(value.shape), shape)
                except RuntimeError:
                    raise IRError(
                        f"condition: the value for site {address!r} has shape "
                        f"{tuple(value.shape)}, which does not broadcast with the site's shape "
                        f"{shape}"
                    ) from None
        rw = Rewriter(graph)
        for node in graph.nodes:
            if node.kind == "sample" and node.address in self.data:
                name = rw.fresh(f"{node.address}_obs")
                value = rw.add_input(self.data[node.address], name=name, target=name)
                rw.copy(node, kind="observe", args=(value,))
            else:
                rw.copy(node)
        conditioned = list(graph.attrs.get("conditioned", ())) + sorted(self.data)
        return rw.build({"conditioned": conditioned})
