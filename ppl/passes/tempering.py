"""``temper(beta)``: raise the likelihood to the power ``beta``.

Every ``observe`` node's log density is multiplied by ``beta`` through its ``scale``
attribute (``meta.attr("scale")``, honoured by the interpreters and the code generator; an
existing scale is multiplied). With ``factors=True``, user ``factor`` terms are tempered too.
Nodes that other passes made to carry prior terms (``role`` set: the constrained sites and
Jacobians of ``unconstrain``, the log marginal of ``enumerate_discrete``) are left alone, so
``temper`` runs before ``enumerate_discrete`` (``must_precede``: ``passes.run`` refuses the
other order). ``beta = 0``
gives the prior, ``beta = 1`` the posterior: the path of annealed importance sampling and
tempered SMC.

``beta`` is also left as a run-time input for the lowerings: each tempered node keeps the
scale it had before the pass (``meta.attr("tempered")``) and ``graph.attrs["beta"]`` holds
``beta``, so a flat model (``FlatModel.bind(beta=...)``) multiplies the node's log density by
``tempered * beta`` with ``beta`` read at each call instead of the ``scale`` literal: a new
``beta`` never rebuilds or recompiles the model.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m(y):
    ...     sample("y", Normal(sample("x", Normal(0.0, 1.0)), 1.0), obs=y)
    >>> g = temper(0.5)(m.graph(torch.tensor(1.0)))
    >>> g.site("y").meta.attr("scale"), g.site("y").meta.attr("tempered"), g.attrs["beta"]
    (0.5, 1.0, 0.5)
"""

from __future__ import annotations

from ppl.ir import Graph
from ppl.ir.loop import refuse_loops

from .rewriting import Rewriter


class temper:
    """Pass: multiply observation (and, with ``factors=True``, factor) log densities by ``beta``."""

    name = "temper"
    must_precede = {
        "enumerate_discrete": "the log marginal it adds is a prior-role factor that temper "
                              "leaves alone, so the enumerated likelihood would stay untempered",
    }

    def __init__(self, beta: float, factors: bool = False):
        if not float(beta) >= 0.0:
            raise ValueError(f"temper: beta must be a non-negative number, got {beta!r}")
        self.beta = float(beta)
        self.factors = factors

    def __repr__(self) -> str:
        return f"temper({self.beta!r}" + (", factors=True)" if self.factors else ")")

    def __call__(self, graph: Graph) -> Graph:
        refuse_loops(graph, "pass 'temper'")
        kinds = ("observe", "factor") if self.factors else ("observe",)
        rw = Rewriter(graph)
        for node in graph.nodes:
            if node.kind in kinds and node.meta.attr("role") is None:
                base = node.meta.attr("scale")
                base = 1.0 if base is None else base
                meta = node.meta.with_attr("scale", self.beta * base).with_attr("tempered", base)
                rw.copy(node, meta=meta)
            else:
                rw.copy(node)
        return rw.build(attrs={"beta": self.beta})
