"""Checks that turn bad model input into errors naming the site, the shapes and the values.

Distributions are built without torch's own argument validation (it cannot know the site),
and checked here when they reach a ``sample`` site instead. ``set_validation(False)`` turns
the checks off for speed once a model is known to be right. Values batched by
``torch.func.vmap`` are not checked (a check branches on the values, which vmap cannot do;
``predictive`` runs models under vmap with values that were checked when they were drawn).

    >>> set_validation(True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch.distributions import Distribution

from .errors import ModelError
from .runtime import internal

_ENABLED = True
Keep = Callable[[Distribution, str, torch.Tensor], bool]
"""``keep(dist, name, value)``: whether to check parameter ``name`` of ``dist`` now."""

# Which parameter values to check now: the graph tracer defers the ones computed from random
# sites, since the one draw it traces with says nothing about the model (the log density
# checks them at every point instead).
_CHECKED: ContextVar[Keep | None] = ContextVar("ppl_checked", default=None)


@contextmanager
def checking_only(keep: Keep) -> Iterator[None]:
    """Check only the parameters for which ``keep(dist, name, value)`` is true, inside the
    block."""
    token = _CHECKED.set(keep)
    try:
        yield
    finally:
        _CHECKED.reset(token)


def set_validation(enabled: bool) -> None:
    global _ENABLED
    _ENABLED = bool(enabled)


def validation_enabled() -> bool:
    return _ENABLED


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() <= 6:
            return f"tensor of shape {tuple(value.shape)} = {value.tolist()}"
        return f"tensor of shape {tuple(value.shape)}"
    return repr(value)


def check_distribution(site: str, dist: Any) -> None:
    with internal():
        _check_distribution(site, dist)


def _check_distribution(site: str, dist: Any) -> None:
    """The object given to ``sample`` is a distribution whose parameters meet their constraints."""
    if not isinstance(dist, Distribution):
        raise ModelError(
            f"sample site {site!r} was given {type(dist).__name__} ({dist!r}), not a "
            "distribution; pass e.g. Normal(0., 1.) from ppl.stdlib"
        )
    if not _ENABLED:
        return
    inner = getattr(dist, "base_dist", None)
    if isinstance(inner, Distribution):
        _check_distribution(site, inner)
    keep = _CHECKED.get()
    for pname, constraint in dist.arg_constraints.items():
        # A parameter is an attribute, or a plain property reading one kept elsewhere (Beta's
        # concentrations live in an inner Dirichlet); a lazy one not computed yet is skipped.
        stored = pname in dist.__dict__ or isinstance(getattr(type(dist), pname, None), property)
        if not stored or isinstance(constraint, torch.distributions.constraints._Dependent):
            continue
        value = getattr(dist, pname)
        if not isinstance(value, torch.Tensor) or value.is_complex():
            continue
        if (keep is not None and not keep(dist, pname, value)) or _is_vmapped(value):
            continue
        ok = constraint.check(value)
        if not _all_true(ok):
            bad = value[~ok] if ok.shape == value.shape else value
            raise ModelError(
                f"sample site {site!r}: parameter {pname!r} of {type(dist).__name__} must satisfy "
                f"{constraint}, got {_describe(value)}; offending values: {_describe(bad)}"
            )


def check_in_support(site: str, dist: Distribution, value: torch.Tensor) -> None:
    """An observed or given value lies in the distribution's support."""
    if not _ENABLED:
        return
    with internal():
        _check_in_support(site, dist, value)


_is_vmapped: Callable[[torch.Tensor], bool] = torch._C._functorch.is_batchedtensor


def _all_true(ok: torch.Tensor) -> bool:
    """Whether every element of a check's result is true: one element (most sites' scalar
    parameters) is read as it is, without a reduction."""
    return bool(ok) if ok.numel() == 1 else bool(torch.all(ok))


def _check_in_support(site: str, dist: Distribution, value: torch.Tensor) -> None:
    if _is_vmapped(value):
        return
    try:
        ok = dist.support.check(value)
    except (RuntimeError, ValueError) as err:
        raise ModelError(
            f"sample site {site!r}: value of shape {tuple(value.shape)} does not fit "
            f"{type(dist).__name__} with batch shape {tuple(dist.batch_shape)} and event shape "
            f"{tuple(dist.event_shape)}: {err}"
        ) from None
    if not _all_true(ok):
        bad = value[~ok] if ok.shape == value.shape else value
        raise ModelError(
            f"sample site {site!r}: value outside the support {dist.support} of "
            f"{type(dist).__name__}: {_describe(value)}; offending values: {_describe(bad)}"
        )
