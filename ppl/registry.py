"""Registry of distribution families, filled by ``ppl.stdlib``: one declaration per family.

The core never imports the standard library; it looks families up here by class (the tracer
and the passes ask what a distribution is: its support, whether it reparameterizes, whether
its support can be enumerated) or by name (the graph IR prints and parses distributions by
these names). A :class:`Family` holds every rule the engines use for its class: the
log density written in tape operations, the loc-scale parameters of the noncentering pass,
the conjugate update of the Gibbs sampler.

    >>> from ppl.registry import family_of, get_family
    >>> import ppl.stdlib as D                      # registers the built-in families
    >>> get_family("Normal").reparameterized, get_family(D.Normal).loc_scale
    (True, ('loc', 'scale'))
    >>> family_of(D.Normal(0.0, 1.0)).name
    'Normal'
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributions import Distribution, constraints

SupportFn = Callable[[Distribution], constraints.Constraint]
LogDensityRule = Callable[..., list]
SampleRule = Callable[..., torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class Family:
    """Everything ppl knows about one distribution family, declared in one place.

    ``params`` lists the constructor arguments in order: ``cls(**args)`` rebuilds an
    instance from the arguments an instance records in ``dist.ppl_args``. ``support`` is the
    support of a given instance (it may depend on the instance's parameters, e.g. a Uniform
    with a random bound), so it is read from the instance rather than stored here.

    ``reparameterized``, ``discrete``, ``enumerable``: the flags of the class (instances of
    wrappers may differ; read the instance). ``torch_class``: the torch family it extends.

    ``log_density(ops, value, **params) -> terms``: the tape rule, written against the
    operations of ``ops`` (passed in by the caller, so the rule imports no engine); the sum
    of the terms, each broadcast to the site's batch shape, is ``log_prob(value)``. It may
    raise ``ops.Unsupported`` for a parameterization it cannot express. ``event_dims``: the
    value dims the rule sums itself (or a function of the parameters giving them);
    ``vector_params``: parameters that carry dims the value lacks or must keep their event
    dims (the caller passes them as they are);
    ``wraps``: the parameter holding the wrapped distribution of a wrapper, whose event
    dims it shares. ``support_bounds``: the ``(low, high)`` parameter names that bound the
    support (a latent's support is fixed while they are constants; a latent bound is read
    by an interval's bijector). ``loc_scale``: the ``(loc, scale)`` parameter names when
    ``F(loc, scale)`` is ``loc + scale * F(0, 1)`` (the noncentering pass), else None.
    ``conjugate``: the conjugate-prior rule of the Gibbs ``Conjugate`` update, else None.
    ``sample(rng, gen, shape, **params) -> draws``: the batched sampling rule, written
    against the random primitives of ``rng`` that draw from the ``torch.Generator`` ``gen``
    (the particle engine passes ``ppl.inference.lowering.particles.rng_ops``), else None.
    """

    name: str
    cls: type[Distribution]
    params: tuple[str, ...]
    reparameterized: bool = False
    discrete: bool = False
    enumerable: bool = False
    torch_class: type[Distribution] | None = None
    log_density: LogDensityRule | None = None
    event_dims: int | Callable[..., int] = 0
    vector_params: tuple[str, ...] = ()
    wraps: str | None = None
    support_bounds: tuple[str, str] | None = None
    loc_scale: tuple[str, str] | None = None
    conjugate: Any = None
    sample: SampleRule | None = None

    def support(self, dist: Distribution) -> constraints.Constraint:
        return dist.support

    def build(self, **args: Any) -> Distribution:
        return self.cls(**args)


_BY_NAME: dict[str, Family] = {}
_BY_CLASS: dict[type, Family] = {}


def register_family(family: Family) -> Family:
    """Add a family; re-registering a class or a name replaces it (a user may override a
    built-in)."""
    for old in (_BY_NAME.get(family.name), _BY_CLASS.get(family.cls)):
        if old is not None:
            _BY_CLASS.pop(old.cls, None)
            _BY_NAME.pop(old.name, None)
    _BY_NAME[family.name] = family
    _BY_CLASS[family.cls] = family
    return family


def get_family(key: str | type[Distribution]) -> Family:
    """The family registered for a class (or one of its bases), or under a name."""
    if isinstance(key, type):
        for cls in key.__mro__:
            family = _BY_CLASS.get(cls)
            if family is not None:
                return family
        raise KeyError(f"no distribution family registered for class {key.__qualname__}")
    try:
        return _BY_NAME[key]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME)) or "none (import ppl.stdlib to register them)"
        raise KeyError(f"unknown distribution family {key!r}; registered: {known}") from None


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


# -- constraints by name ------------------------------------------------------------------
# The graph IR prints a constraint as its registered name, with the constructor arguments of
# a parameterized one (``interval(0.0, 1.0)``), and parses it back through this table (never
# by ``getattr``). torch's constraints are registered here; ``ppl.stdlib`` adds its own.

_RESERVED_CONSTRAINT_NAMES = frozenset(
    {"None", "True", "False", "inf", "nan", "tensor", "slice", "torch"}
)


@dataclass(frozen=True)
class ConstraintEntry:
    """A named constraint: a singleton ``obj``, or a ``factory`` whose instances are of type
    ``cls`` and are rebuilt as ``factory(*(getattr(c, p) for p in params))``."""

    name: str
    obj: constraints.Constraint | None = None
    factory: Callable[..., constraints.Constraint] | None = None
    cls: type | None = None
    params: tuple[str, ...] = ()


_CONSTRAINTS: dict[str, ConstraintEntry] = {}


def register_constraint(
    name: str,
    obj_or_factory: constraints.Constraint | Callable[..., constraints.Constraint],
    params: tuple[str, ...] = (),
    cls: type | None = None,
) -> ConstraintEntry:
    """Name a constraint for the graph IR's text form.

    ``register_constraint("ordered", ordered)`` names a singleton;
    ``register_constraint("interval", constraints.interval, ("lower_bound", "upper_bound"))``
    names a factory: ``params`` are the attribute names an instance keeps its constructor
    arguments under (in constructor order), ``cls`` the instances' type (the factory itself
    when it is a class). Re-registering a name replaces it.
    """
    if not name.isidentifier() or name in _RESERVED_CONSTRAINT_NAMES:
        raise ValueError(f"constraint name {name!r} must be an identifier and not reserved")
    if isinstance(obj_or_factory, constraints.Constraint):
        entry = ConstraintEntry(name, obj=obj_or_factory)
    else:
        cls = cls or (obj_or_factory if isinstance(obj_or_factory, type) else None)
        if cls is None:
            raise TypeError(f"constraint factory {name!r}: pass cls=, the type of its instances")
        entry = ConstraintEntry(name, factory=obj_or_factory, cls=cls, params=tuple(params))
    _CONSTRAINTS[name] = entry
    return entry


def constraint_names() -> list[str]:
    return sorted(_CONSTRAINTS)


def make_constraint(name: str, *args: Any) -> constraints.Constraint:
    """The constraint called ``name`` (a factory's instance for ``args``)."""
    entry = _CONSTRAINTS.get(name)
    if entry is None:
        raise KeyError(f"unknown constraint {name!r}; registered: {', '.join(constraint_names())}")
    if entry.obj is not None:
        if args:
            raise TypeError(f"constraint {name!r} takes no arguments, got {len(args)}")
        return entry.obj
    if len(args) != len(entry.params):
        raise TypeError(f"constraint {name!r} takes arguments {entry.params}, got {len(args)}")
    return entry.factory(*args)


def _same_args(a: tuple, b: tuple) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        x_is, y_is = isinstance(x, constraints.Constraint), isinstance(y, constraints.Constraint)
        if x_is or y_is:
            if not (x_is and y_is):
                return False
            if x is not y and describe_constraint(x) != describe_constraint(y):
                return False
        elif isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


def describe_constraint(c: constraints.Constraint) -> tuple[str, tuple]:
    """``(name, args)`` with ``make_constraint(name, *args)`` equivalent to ``c``.

    A fresh instance equal to a named singleton gets the singleton's name
    (``greater_than(0.0)`` is ``positive``), so the description is canonical.
    """
    for entry in _CONSTRAINTS.values():
        if entry.obj is c:
            return entry.name, ()
    if type(c) is constraints._Dependent:
        return "dependent", ()
    for entry in _CONSTRAINTS.values():
        if entry.cls is not None and type(c) is entry.cls:
            args = tuple(getattr(c, p) for p in entry.params)
            for single in _CONSTRAINTS.values():
                if single.obj is not None and type(single.obj) is type(c):
                    own = tuple(getattr(single.obj, p, None) for p in entry.params)
                    if _same_args(own, args):
                        return single.name, ()
            return entry.name, args
    for entry in _CONSTRAINTS.values():  # an unnamed copy of a parameter-free singleton
        if entry.obj is not None and type(entry.obj) is type(c) and vars(entry.obj) == vars(c):
            return entry.name, ()
    raise KeyError(
        f"constraint {c!r} has no registered name; register it with "
        "ppl.registry.register_constraint(name, obj_or_factory)"
    )


def _register_torch_constraints() -> None:
    c = constraints
    for name in ("real", "real_vector", "positive", "nonnegative", "unit_interval", "boolean",
                 "one_hot", "nonnegative_integer", "positive_integer", "simplex",
                 "lower_triangular", "lower_cholesky", "corr_cholesky", "square", "symmetric",
                 "positive_semidefinite", "positive_definite", "dependent"):
        register_constraint(name, getattr(c, name))
    for name, params in (
        ("greater_than", ("lower_bound",)),
        ("greater_than_eq", ("lower_bound",)),
        ("less_than", ("upper_bound",)),
        ("interval", ("lower_bound", "upper_bound")),
        ("half_open_interval", ("lower_bound", "upper_bound")),
        ("integer_interval", ("lower_bound", "upper_bound")),
        ("independent", ("base_constraint", "reinterpreted_batch_ndims")),
        ("multinomial", ("upper_bound",)),
        ("cat", ("cseq", "dim", "lengths")),
        ("stack", ("cseq", "dim")),
    ):
        register_constraint(name, getattr(c, name), params)
    register_constraint("integer_greater_than", c._IntegerGreaterThan, ("lower_bound",))
    register_constraint("integer_less_than", c._IntegerLessThan, ("upper_bound",))
    register_constraint("mixture_same_family", c.MixtureSameFamilyConstraint, ("base_constraint",))


_register_torch_constraints()


# -- watching constructions --------------------------------------------------------------
_CONSTRUCTION_OBSERVER: ContextVar[Callable[[Any], None] | None] = ContextVar(
    "ppl_construction_observer", default=None)


@contextlib.contextmanager
def observing_construction(observer: Callable[[Any], None] | None) -> Iterator[None]:
    """Hand every ppl distribution constructed in this block to ``observer`` (a graph
    tracer), its constructor having run with torch function modes off (see
    ``ppl.stdlib.base.DistributionMixin.__init__``): the tracer records the constructor's
    arguments, and replays the constructor only if what it derived is read."""
    token = _CONSTRUCTION_OBSERVER.set(observer)
    try:
        yield
    finally:
        _CONSTRUCTION_OBSERVER.reset(token)


def construction_observer() -> Callable[[Any], None] | None:
    return _CONSTRUCTION_OBSERVER.get()
