"""Run passes over a graph: each one in order, checked after each, named when one fails.

A pass is any callable ``Graph -> Graph`` (a function, or a small object with
``__call__`` and a ``name``). ``run`` lints the graph after every pass and raises
``PassError`` naming the pass that raised or broke the graph and the passes before it; it
records the names of the applied passes in ``graph.attrs["passes"]``.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import HalfCauchy, Normal
    >>> from ppl.passes import condition, unconstrain
    >>> @model
    ... def m():
    ...     s = sample("s", HalfCauchy(1.0))
    ...     sample("y", Normal(0.0, s))
    >>> g = run(m.graph(), [condition({"y": torch.tensor(0.5)}), unconstrain()])
    >>> g.attrs["passes"], [n.address for n in g.latent_nodes]
    (['condition', 'unconstrain'], ['s__unconstrained'])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import FunctionType
from typing import Any, Protocol, runtime_checkable

from ppl.ir import Graph, lint
from ppl.ir.errors import PassError
from ppl.registry import get_family


@runtime_checkable
class Pass(Protocol):
    """The extension interface: a graph in, a new graph out (the input is left untouched)."""

    def __call__(self, graph: Graph) -> Graph: ...


def pass_name(p: Callable) -> str:
    """A pass's ``name`` attribute, else its function or class name."""
    name = getattr(p, "name", None) or getattr(p, "__name__", None) or type(p).__name__
    return str(name)


def check(graph: Graph) -> None:
    """Lint, and check that every random node names a registered distribution family."""
    lint(graph)
    for node in graph.nodes:
        if node.kind in ("sample", "observe"):
            get_family(node.target)


def run(graph: Graph, passes: Sequence[Callable[[Graph], Graph]]) -> Graph:
    """Apply ``passes`` in order; a ``PassError`` names the first one that fails."""
    applied: list[str] = list(graph.attrs.get("passes", ()))
    done: list[str] = []
    for i, p in enumerate(passes):
        name = pass_name(p)
        shown = "" if isinstance(p, FunctionType) else f"{p!r}; "
        where = (
            f"pass {name!r} ({shown}number {i + 1} of {len(passes)}, after "
            f"{', '.join(repr(d) for d in done) if done else 'no other pass'})"
        )
        try:
            out = p(graph)
        except PassError as e:
            raise PassError(f"{where} failed: {e}") from e
        except Exception as e:
            raise PassError(f"{where} raised {type(e).__name__}: {e}") from e
        if not isinstance(out, Graph):
            raise PassError(
                f"{where} returned {type(out).__name__}, not a Graph; a pass must return "
                "the new graph"
            )
        try:
            check(out)
        except Exception as e:
            raise PassError(f"{where} produced a broken graph: {e}") from e
        done.append(name)
        applied.append(name)
        graph = out.replace(attrs={**out.attrs, "passes": list(applied)})
    return graph


def apply_user_passes(model: Any, args: tuple, kwargs: dict, passes: Sequence[Callable]) -> Graph:
    """Trace ``model(*args, **kwargs)`` into its graph and run ``passes`` over it."""
    return run(model.graph(*args, **kwargs), passes)
