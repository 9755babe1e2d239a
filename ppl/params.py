"""The param store: learnable tensors kept unconstrained, handed out constrained.

``param("w", init, constraint=positive)`` stores ``transform_to(positive).inv(init)`` the
first time and returns ``transform_to(positive)(stored)`` every time, so an optimizer can
move the stored tensor freely.

    >>> import torch
    >>> from torch.distributions import constraints
    >>> clear_params()
    >>> from ppl.primitives import param
    >>> float(param("s", torch.tensor(2.0), constraint=constraints.positive))
    2.0
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import constraints, transform_to

from .errors import ModelError
from .runtime import DEFAULT_VALUES

_UNCONSTRAINED: dict[str, torch.Tensor] = {}
_CONSTRAINTS: dict[str, constraints.Constraint] = {}


def _init_value(name: str, init: Any, constraint: constraints.Constraint) -> torch.Tensor:
    if init is None:
        raise ModelError(f"param {name!r} has no value in the param store and no init was given")
    value = init() if callable(init) else init
    value = torch.as_tensor(value, dtype=torch.get_default_dtype()).detach().clone()
    ok = constraint.check(value)
    if not bool(torch.all(ok)):
        raise ModelError(
            f"param {name!r}: init {value.tolist() if value.numel() <= 6 else tuple(value.shape)} "
            f"is outside its constraint {constraint}"
        )
    return value


def get_param(
    name: str, init: Any = None, constraint: constraints.Constraint = constraints.real
) -> torch.Tensor:
    """The constrained value of ``name``, creating it from ``init`` on first use."""
    if name not in _UNCONSTRAINED:
        value = _init_value(name, init, constraint)
        _UNCONSTRAINED[name] = transform_to(constraint).inv(value).detach().requires_grad_(True)
        _CONSTRAINTS[name] = constraint
    return transform_to(_CONSTRAINTS[name])(_UNCONSTRAINED[name])


def unconstrained_params() -> dict[str, torch.Tensor]:
    """The leaf tensors an optimizer updates."""
    return dict(_UNCONSTRAINED)


def param_constraints() -> dict[str, constraints.Constraint]:
    return dict(_CONSTRAINTS)


def clear_params() -> None:
    _UNCONSTRAINED.clear()
    _CONSTRAINTS.clear()


DEFAULT_VALUES["param"] = lambda msg: get_param(msg.name, msg.infer.get("init"), msg.fn)


