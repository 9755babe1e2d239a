"""Which random choices a tensor depends on, tracked through every torch operation.

A non-reparameterized guide draw is wrapped as a :class:`Tracked` tensor naming its site;
every torch function applied to tracked tensors returns tracked tensors naming the union of
their inputs' sites. A cost term (a site's log density) computed in the model or the guide
then says exactly which score-function and enumerated sites lie upstream of it: the
dependency structure Rao-Blackwellization needs, read from the program as it runs rather
than guessed from execution order.

    >>> import torch
    >>> z = track(torch.tensor(1.0), "z")
    >>> sources(torch.exp(z) + torch.tensor(2.0))
    frozenset({'z'})
    >>> sources(torch.tensor(3.0))
    frozenset()
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Tracked", "track", "sources", "untrack"]


class Tracked(torch.Tensor):
    """A tensor that remembers the names of the random sites it was computed from."""

    _sources: frozenset[str]

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        found = _collect(args) | _collect(kwargs)
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        return _wrap(out, found)


def _collect(value: Any) -> frozenset[str]:
    if isinstance(value, Tracked):
        return value._sources
    if isinstance(value, (list, tuple)):
        return frozenset().union(*(_collect(v) for v in value)) if value else frozenset()
    if isinstance(value, dict):
        return _collect(list(value.values()))
    return frozenset()


def _wrap(value: Any, found: frozenset[str]) -> Any:
    if isinstance(value, torch.Tensor):
        if not found:
            return value.as_subclass(torch.Tensor) if isinstance(value, Tracked) else value
        out = value if isinstance(value, Tracked) else value.as_subclass(Tracked)
        out._sources = found
        return out
    if isinstance(value, tuple):
        return tuple(_wrap(v, found) for v in value)
    if isinstance(value, list):
        return [_wrap(v, found) for v in value]
    return value


def track(value: torch.Tensor, name: str) -> Tracked:
    """``value`` marked as depending on site ``name`` (and whatever it depended on already)."""
    return _wrap(value, sources(value) | {name})


def sources(value: Any) -> frozenset[str]:
    """The site names a tensor was computed from (empty for an untracked tensor)."""
    return _collect(value)


def untrack(value: Any) -> Any:
    """A plain tensor (the same storage and autograd history) with no tracking."""
    return value.as_subclass(torch.Tensor) if isinstance(value, Tracked) else value
