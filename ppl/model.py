"""``@model``: turn a Python function that calls the primitives into a ``Model``.

    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m():
    ...     return sample("x", Normal(0.0, 1.0))
    >>> sorted(m.sample(seed=0))
    ['x']
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch

from .errors import ModelError
from .handlers import condition, seed, trace
from .scan import unstack_steps
from .trace import Trace
from .vectorize import particle_runs


class Model:
    """A probabilistic program. Calling it runs the function (under whatever handlers)."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self._graphs: dict = {}
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<ppl.Model {self.fn.__qualname__}>"

    def trace(self, *args, **kwargs) -> Trace:
        """Run once and record every site."""
        return trace().get_trace(self.fn, *args, **kwargs)

    def sample(
        self, *args, seed: int | None = None, num_samples: int | None = None, **kwargs
    ) -> dict[str, torch.Tensor]:
        """Draw from the prior (observed sites keep their data): address -> value.

        With ``num_samples``, all draws are made in one vectorized run (one run per draw, said
        once, for a model that does not vectorize) and each value has a leading dimension of
        that size.
        """
        with _seeded(seed):
            if num_samples is None:
                return self.trace(*args, **kwargs).values()
            return particle_runs(self.fn, args, kwargs, num_samples).values()

    def log_density(self, values: dict[str, Any], *args, **kwargs) -> torch.Tensor:
        """Joint log density of a full assignment of the latent sites (via the trace path).
        A scan's body site may be given per step (``x[t]``) or stacked over its steps
        (``x`` of shape ``(T, ...)``, as MCMC reports it)."""
        tr = trace().get_trace(condition(values)(self.fn), *args, **kwargs)
        per_step = unstack_steps(values, tr.sites)
        if per_step.keys() != values.keys():
            values = per_step
            tr = trace().get_trace(condition(values)(self.fn), *args, **kwargs)
        missing = [s.name for s in tr.latent_sites()]
        if missing:
            raise ModelError(
                f"log_density needs a value for every latent site; missing {missing} "
                f"(given: {sorted(values)})"
            )
        unknown = sorted(set(values) - set(tr.sites))
        if unknown:
            raise ModelError(
                f"log_density got values for {unknown}, which are not sites of {self!r}"
            )
        return tr.log_joint()

    def graph(self, *args, **kwargs):
        """The graph IR of this model traced with these arguments (see ``ppl.ir``).

        Graphs are cached by the shapes and dtypes of tensor arguments (and the values of
        the others); a cached graph is rebound to the new data. A model whose trace read
        data values (Python control flow on data) is re-traced every time.
        """
        from .ir import trace_graph

        key = _signature_key(args, kwargs)
        cached = self._graphs.get(key) if key is not None else None
        if cached is not None:
            bindings = _input_bindings(cached, self.fn, args, kwargs)
            return cached.replace(data={**cached.data, **bindings})
        graph = trace_graph(self, *args, **kwargs)
        if key is not None and not graph.attrs.get("reads_data"):
            self._graphs[key] = graph
        return graph


def _signature_key(args: tuple, kwargs: dict) -> tuple | None:
    """Hashable description of the arguments: tensors by shape and dtype, the rest by value."""

    def describe(value: Any):
        if isinstance(value, torch.Tensor):
            return ("tensor", tuple(value.shape), value.dtype)
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, tuple(describe(v) for v in value))
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError

    try:
        return (
            tuple(describe(a) for a in args),
            tuple(sorted((k, describe(v)) for k, v in kwargs.items())),
        )
    except TypeError:
        return None


def _input_bindings(graph, fn: Callable, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
    """The graph's input names bound to the tensors of a new call with the same signature."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    out = {}
    for pname, value in bound.arguments.items():
        if isinstance(value, torch.Tensor):
            tensors = [value]
        else:
            items = value if isinstance(value, (list, tuple)) else ()
            tensors = [v for v in items if isinstance(v, torch.Tensor)]
        for i, tensor in enumerate(tensors):
            name = pname if isinstance(value, torch.Tensor) else f"{pname}_{i}"
            if name in graph:
                out[name] = tensor
    return out


class _seeded:
    """``seed(s)`` when ``s`` is given, else nothing."""

    def __init__(self, rng_seed: int | None):
        self.handler = seed(rng_seed) if rng_seed is not None else None

    def __enter__(self) -> None:
        if self.handler is not None:
            self.handler.__enter__()

    def __exit__(self, *exc) -> None:
        if self.handler is not None:
            self.handler.__exit__(*exc)


def model(fn: Callable) -> Model:
    """Decorator: make ``fn`` a ``Model``."""
    return Model(fn)
