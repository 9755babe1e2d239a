"""Registry of distribution families, filled by ``ppl.stdlib``.

The core never imports the standard library; it looks families up here by name (the graph
IR prints and parses distributions by these names) or by instance (the tracer and the
passes ask what a distribution is: its support, whether it reparameterizes, whether its
support can be enumerated).

    >>> from ppl.registry import family_of, get_family
    >>> import ppl.stdlib as D                      # registers the built-in families
    >>> get_family("Normal").has_rsample
    True
    >>> family_of(D.Normal(0.0, 1.0)).name
    'Normal'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributions import Distribution, constraints

SupportFn = Callable[[Distribution], constraints.Constraint]


@dataclass(frozen=True)
class Family:
    """What the rest of ppl needs to know about one distribution family.

    ``params`` lists the constructor arguments in order: ``cls(**args)`` rebuilds an
    instance from the arguments an instance records in ``dist.ppl_args``. ``support`` is the
    support of a given instance (it may depend on the instance's parameters, e.g. a Uniform
    with a random bound), so it is read from the instance rather than stored here.
    """

    name: str
    cls: type[Distribution]
    params: tuple[str, ...]
    has_rsample: bool
    is_discrete: bool
    enumerable: bool
    torch_class: type[Distribution] | None = None

    def support(self, dist: Distribution) -> constraints.Constraint:
        return dist.support

    def build(self, **args: Any) -> Distribution:
        return self.cls(**args)


_BY_NAME: dict[str, Family] = {}
_BY_CLASS: dict[type, Family] = {}


def register_family(family: Family) -> Family:
    """Add a family; re-registering a name replaces it (a user may override a built-in)."""
    old = _BY_NAME.get(family.name)
    if old is not None:
        _BY_CLASS.pop(old.cls, None)
    _BY_NAME[family.name] = family
    _BY_CLASS[family.cls] = family
    return family


def get_family(name: str) -> Family:
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME)) or "none (import ppl.stdlib to register them)"
        raise KeyError(f"unknown distribution family {name!r}; registered: {known}") from None


def family_of(dist: Distribution) -> Family | None:
    """The registered family of an instance (exact class first, then its bases)."""
    for cls in type(dist).__mro__:
        family = _BY_CLASS.get(cls)
        if family is not None:
            return family
    return None


def families() -> dict[str, Family]:
    return dict(_BY_NAME)


def is_distribution(obj: Any) -> bool:
    return isinstance(obj, torch.distributions.Distribution)
