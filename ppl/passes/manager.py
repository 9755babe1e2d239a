"""Run passes over a graph: each one in order, checked after each, named when one fails.

A pass is any callable ``Graph -> Graph`` (a function, or a small object with
``__call__`` and a ``name``). ``run`` lints the graph after every pass that changed it and
raises ``PassError`` naming the pass that raised or broke the graph and the passes before it;
it records the names of the applied passes in ``graph.attrs["passes"]``. ``run_report``
also returns a :class:`PassResult` per pass, saying whether it changed the graph.

Ordering contracts are checks, not prose: a pass class declares ``must_precede``, the passes
it has to run before (with the reason), and ``run`` refuses a pass whose successor has
already been applied to the graph (``temper`` after ``enumerate_discrete`` would leave the
enumerated likelihood untempered).

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import HalfCauchy, Normal
    >>> from ppl.passes import condition, simplify, unconstrain
    >>> @model
    ... def m():
    ...     s = sample("s", HalfCauchy(1.0))
    ...     sample("y", Normal(0.0, s))
    >>> g, results = run_report(m.graph(), [condition({"y": torch.tensor(0.5)}), unconstrain(),
    ...                                     condition({})])
    >>> g.attrs["passes"], [n.address for n in g.latent_nodes]
    (['condition', 'unconstrain', 'condition'], ['s__unconstrained'])
    >>> [(r.name, r.changed) for r in results]
    [('condition', True), ('unconstrain', True), ('condition', False)]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import FunctionType
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ppl.ir import Graph, lint
from ppl.ir.errors import PassError
from ppl.ir.parser import graph_diff
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


class PassResult(NamedTuple):
    """What one pass did: its name, the graph it returned, and whether that graph differs
    from its input (structurally: nodes, targets, arguments, metadata and graph attributes)."""

    name: str
    graph: Graph
    changed: bool


def _ordering_violation(p: Callable, applied: Sequence[str]) -> str | None:
    """Why ``p`` may not run after the passes ``applied`` so far (None when it may)."""
    for later, reason in getattr(p, "must_precede", {}).items():
        if later in applied:
            return (f"{pass_name(p)!r} must run before {later!r}, which was already applied "
                    f"({reason}); put {pass_name(p)!r} first")
    return None


def run_report(graph: Graph, passes: Sequence[Callable[[Graph], Graph]]
               ) -> tuple[Graph, list[PassResult]]:
    """Apply ``passes`` in order; the final graph and one :class:`PassResult` per pass. A
    ``PassError`` names the first pass that fails, breaks the graph or is out of order."""
    applied: list[str] = list(graph.attrs.get("passes", ()))
    done: list[str] = []
    results: list[PassResult] = []
    for i, p in enumerate(passes):
        name = pass_name(p)
        shown = "" if isinstance(p, FunctionType) else f"{p!r}; "
        where = (
            f"pass {name!r} ({shown}number {i + 1} of {len(passes)}, after "
            f"{', '.join(repr(d) for d in done) if done else 'no other pass'})"
        )
        violation = _ordering_violation(p, applied)
        if violation is not None:
            raise PassError(f"{where} is out of order: {violation}")
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
        changed = out is not graph and graph_diff(graph, out) is not None
        if changed:
            try:
                check(out)
            except Exception as e:
                raise PassError(f"{where} produced a broken graph: {e}") from e
        done.append(name)
        applied.append(name)
        graph = out.replace(attrs={**out.attrs, "passes": list(applied)})
        results.append(PassResult(name, graph, changed))
    return graph, results


def run(graph: Graph, passes: Sequence[Callable[[Graph], Graph]]) -> Graph:
    """Apply ``passes`` in order (see :func:`run_report`); the final graph."""
    return run_report(graph, passes)[0]


def apply_user_passes(model: Any, args: tuple, kwargs: dict, passes: Sequence[Callable]) -> Graph:
    """Trace ``model(*args, **kwargs)`` into its graph and run ``passes`` over it."""
    return run(model.graph(*args, **kwargs), passes)
