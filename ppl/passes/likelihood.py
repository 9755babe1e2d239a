"""``drop_likelihood()``: the prior of a model, as a graph without its observations.

Every ``observe`` node (and, with ``factors=True``, every user ``factor``) is removed, with
the computations only they read (the likelihood's linear predictor, say); nodes that read an
observation read its value instead, so the graph's density is the prior ``p(z)``, its
latents laid out exactly as in the full graph. Nodes that other passes
made to carry prior terms (``role`` set) stay, and the pass runs before
``enumerate_discrete`` (whose log marginal holds the likelihood of the enumerated sites).
Tempered SMC evaluates the prior and the full graph as two potentials, so that
``prior + beta * (full - prior)`` changes ``beta`` without lowering anything again.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m(y):
    ...     x = sample("x", Normal(0.0, 1.0))
    ...     sample("y", Normal(x, 1.0), obs=y)
    >>> g = drop_likelihood()(m.graph(torch.tensor(0.5)))
    >>> [n.kind for n in g.nodes]
    ['sample', 'output']
"""

from __future__ import annotations

from ppl.ir import Graph
from ppl.ir.loop import refuse_loops

from .rewriting import Rewriter
from .simplification import _eliminate_dead


class drop_likelihood:
    """Pass: remove the observations (with ``factors=True``, the factors too), keeping the
    prior."""

    name = "drop_likelihood"
    must_precede = {
        "enumerate_discrete": "the log marginal it adds holds the enumerated sites' "
                              "likelihood as a prior-role factor, which would stay",
    }

    def __init__(self, factors: bool = False):
        self.factors = factors

    def __repr__(self) -> str:
        return "drop_likelihood(factors=True)" if self.factors else "drop_likelihood()"

    def __call__(self, graph: Graph) -> Graph:
        refuse_loops(graph, "pass 'drop_likelihood'")
        kinds = ("observe", "factor") if self.factors else ("observe",)
        rw = Rewriter(graph)
        for node in graph.nodes:
            if node.kind in kinds and node.meta.attr("role") is None:
                if node.kind == "observe":
                    rw.subst[node.name] = rw.arg(node.args[0])
            else:
                rw.copy(node)
        return _eliminate_dead(rw.build())
