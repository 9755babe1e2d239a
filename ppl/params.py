"""The param store: learnable tensors kept unconstrained, handed out constrained.

``param("w", init, constraint=positive)`` stores ``transform_to(positive).inv(init)`` the
first time and returns ``transform_to(positive)(stored)`` every time, so an optimizer can
move the stored tensor freely. Params live in a :class:`ParamStore`; ``param`` uses the
*current* one: a process-wide default store, or the store of the innermost ``with store:``
block of this thread or asyncio task, so two runs (or two tests) need not share params.
``state_dict()`` / ``load_state_dict()`` checkpoint and restore a store.

    >>> import torch
    >>> from torch.distributions import constraints
    >>> from ppl.primitives import param
    >>> with ParamStore() as store:
    ...     float(param("s", torch.tensor(2.0), constraint=constraints.positive).detach())
    2.0
    >>> sorted(store), "s" in current_store()
    (['s'], False)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextvars import ContextVar, Token
from typing import Any

import torch
from torch.distributions import constraints, transform_to

from .errors import ModelError
from .runtime import DEFAULT_VALUES

__all__ = [
    "ParamStore", "current_store", "get_param", "unconstrained_params", "param_constraints",
    "clear_params",
]


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


def _same_constraint(a: constraints.Constraint, b: constraints.Constraint) -> bool:
    """Equal as constraints: a pickled ``positive`` comes back as a new object."""
    return a is b or (type(a) is type(b) and repr(a) == repr(b))


class ParamStore:
    """Named learnable tensors: each an unconstrained leaf (what an optimizer moves) and the
    constraint that maps it to the value models see. A context manager: inside ``with
    store:``, ``param`` reads and creates params in ``store``."""

    def __init__(self) -> None:
        self._unconstrained: dict[str, torch.Tensor] = {}
        self._constraints: dict[str, constraints.Constraint] = {}
        self._tokens: list[Token] = []

    def get(self, name: str, init: Any = None,
            constraint: constraints.Constraint = constraints.real) -> torch.Tensor:
        """The constrained value of ``name``, created from ``init`` on first use."""
        if name not in self._unconstrained:
            if isinstance(init, torch.nn.Parameter) and constraint is constraints.real:
                self.adopt(name, init)
            else:
                value = _init_value(name, init, constraint)
                leaf = transform_to(constraint).inv(value).detach().requires_grad_(True)
                self._unconstrained[name] = leaf
                self._constraints[name] = constraint
        return transform_to(self._constraints[name])(self._unconstrained[name])

    def adopt(self, name: str, parameter: torch.nn.Parameter) -> None:
        """Make ``parameter`` itself the (unconstrained, real) leaf of ``name``: a module's
        weight and the store's param are then one tensor, moved by one optimizer. A value
        the store already holds is copied into it first (a restored checkpoint wins)."""
        held = self._unconstrained.get(name)
        if held is not None:
            if held.shape != parameter.shape or not _same_constraint(
                    self._constraints[name], constraints.real):
                raise ModelError(
                    f"param {name!r}: the store holds shape {tuple(held.shape)} under "
                    f"{self._constraints[name]}, the module's parameter has shape "
                    f"{tuple(parameter.shape)} (real); rename the module or clear the store"
                )
            with torch.no_grad():
                parameter.copy_(held)
        self._unconstrained[name] = parameter
        self._constraints[name] = constraints.real

    def leaf(self, name: str) -> torch.Tensor | None:
        """The unconstrained leaf of ``name``, or None when the store has no such param."""
        return self._unconstrained.get(name)

    def unconstrained(self) -> dict[str, torch.Tensor]:
        """The leaf tensors an optimizer updates, by name (in creation order)."""
        return dict(self._unconstrained)

    def constraints(self) -> dict[str, constraints.Constraint]:
        return dict(self._constraints)

    def clear(self) -> None:
        self._unconstrained.clear()
        self._constraints.clear()

    def __contains__(self, name: object) -> bool:
        return name in self._unconstrained

    def __iter__(self) -> Iterator[str]:
        return iter(self._unconstrained)

    def __len__(self) -> int:
        return len(self._unconstrained)

    def state_dict(self) -> dict[str, Any]:
        """A copy of the store (unconstrained values and constraints) that ``torch.save``
        pickles and :meth:`load_state_dict` restores."""
        return {
            "unconstrained": {n: t.detach().clone() for n, t in self._unconstrained.items()},
            "constraints": dict(self._constraints),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set every param of ``state``: an existing leaf is overwritten in place (so an
        optimizer holding it keeps working), a new one is created."""
        values, kinds = state["unconstrained"], state["constraints"]
        if set(values) != set(kinds):
            raise ModelError("param state: names of values and constraints differ")
        for name, value in values.items():
            leaf = self._unconstrained.get(name)
            same = leaf is not None and leaf.shape == value.shape
            if same and _same_constraint(self._constraints[name], kinds[name]):
                with torch.no_grad():
                    leaf.copy_(value)
            else:
                self._unconstrained[name] = value.detach().clone().requires_grad_(True)
                self._constraints[name] = kinds[name]

    def __enter__(self) -> ParamStore:
        self._tokens.append(_CURRENT.set(self))
        return self

    def __exit__(self, *exc) -> None:
        _CURRENT.reset(self._tokens.pop())

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(t.shape)}" for n, t in self._unconstrained.items())
        return f"ParamStore({shapes})"


_DEFAULT = ParamStore()
_CURRENT: ContextVar[ParamStore] = ContextVar("ppl_param_store", default=_DEFAULT)


def current_store() -> ParamStore:
    """The store ``param`` uses here: the innermost ``with store:``, else the default one."""
    return _CURRENT.get()


def get_param(
    name: str, init: Any = None, constraint: constraints.Constraint = constraints.real
) -> torch.Tensor:
    """The constrained value of ``name`` in the current store, created from ``init``."""
    return current_store().get(name, init, constraint)


def unconstrained_params() -> dict[str, torch.Tensor]:
    """The leaf tensors of the current store."""
    return current_store().unconstrained()


def param_constraints() -> dict[str, constraints.Constraint]:
    return current_store().constraints()


def clear_params() -> None:
    """Empty the current store."""
    current_store().clear()


DEFAULT_VALUES["param"] = lambda msg: get_param(msg.name, msg.infer.get("init"), msg.fn)
