"""``unroll``: write every loop node (``ppl.scan``) out step by step.

The unrolled twin is the reference semantics of a loop: body site ``x`` becomes the sites
``x[0] .. x[T-1]``, each recording ``(loop, t)`` in its ``steps`` attr (see
``ppl.ir.loop.unroll_graph``). Passes and engines that do not handle loop nodes run after
it; ``FlatModel.from_graph`` applies it to the loops that ``vectorize_loops`` leaves (those
whose carry recurs on itself), warning once per loop.

    >>> import torch
    >>> from ppl import model, sample, scan
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def walk():
    ...     def step(x, _):
    ...         x = sample("x", Normal(x, 1.0))
    ...         return x, None
    ...     scan(step, torch.tensor(0.0), length=2)
    >>> [n.address for n in unroll()(walk.graph()).latent_nodes]
    ['x[0]', 'x[1]']
"""

from __future__ import annotations

from ppl.ir import Graph
from ppl.ir.loop import unroll_graph


class unroll:
    """The pass: ``unroll()(graph)`` is the graph with its loops unrolled."""

    name = "unroll"

    def __call__(self, graph: Graph) -> Graph:
        return unroll_graph(graph)

    def __repr__(self) -> str:
        return "unroll()"
