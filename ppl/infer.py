"""``infer``: the single entry point. A method object decides the algorithm.

    >>> from ppl import infer, model, sample
    >>> from ppl.stdlib import Normal
    >>> from ppl.inference import Importance
    >>> @model
    ... def m():
    ...     sample("y", Normal(sample("x", Normal(0.0, 1.0)), 1.0), obs=0.0)
    >>> float(infer(m, method=Importance(num_samples=100), seed=0).log_evidence) < 0
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from .model import Model, _seeded


@runtime_checkable
class InferenceMethod(Protocol):
    """What ``infer(method=...)`` accepts: anything with this ``run``.

    ``passes`` are graph passes the user asked for; a method that lowers the graph IR
    applies them before lowering, one that runs on the trace path must refuse them.
    """

    def run(
        self, model: Model, args: tuple, kwargs: dict, *, passes: Sequence[Callable]
    ) -> Any: ...


def infer(
    model: Model | Callable,
    *args,
    method: InferenceMethod,
    seed: int | None = None,
    passes: Sequence[Callable] = (),
    **kwargs,
) -> Any:
    """Run inference on ``model(*args, **kwargs)`` with ``method``; randomness from ``seed``."""
    if not isinstance(model, Model):
        model = Model(model)
    if not isinstance(method, InferenceMethod):
        raise TypeError(
            f"method must have a run(model, args, kwargs, *, passes) method, got {method!r}"
        )
    with _seeded(seed):
        return method.run(model, args, kwargs, passes=tuple(passes))
