"""The mixin every ppl distribution carries: wrappers as methods, and ``ppl_args``.

Every family in ``ppl.stdlib`` is ``class F(DistributionMixin, <torch or custom class>)``.
The mixin adds what ppl needs on top of torch:

* ``to_event(n)``, ``mask(m)`` and a working ``expand(shape)``, the wrappers of Pyro and
  NumPyro, as methods on every distribution;
* ``ppl_args``: the constructor arguments of this instance (ordered as the family's
  ``params`` in :mod:`ppl.registry`), read from attributes rather than saved at
  construction, because torch's ``expand`` builds instances without calling ``__init__``;
* ``validate_args=False`` by default: the runtime validates parameters at the ``sample``
  site so that its errors can name the site.

    >>> from ppl.stdlib import Normal
    >>> d = Normal(0.0, 1.0).expand([3]).to_event(1)
    >>> d.batch_shape, d.event_shape
    (torch.Size([]), torch.Size([3]))
    >>> sorted(Normal(0.0, 2.0).ppl_args)
    ['loc', 'scale']
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch.distributions import Distribution

from ppl.registry import construction_observer

_SIGNATURES: dict[type, inspect.Signature] = {}


def _chosen_parameterization(dist: Any, args: tuple, kwargs: dict) -> str | None:
    """Which of ``dist._ppl_exclusive`` the constructor was given (e.g. probs or logits)."""
    for name in dist._ppl_exclusive:  # fast path: given by keyword, as usual
        if kwargs.get(name) is not None:
            return name
    bound = _signature(dist).bind_partial(*args, **kwargs).arguments
    return next((k for k in dist._ppl_exclusive if bound.get(k) is not None), None)


_PARAMETERS: dict[type, tuple[list[str], dict[str, Any], bool]] = {}
_ARG_NAMES: dict[tuple[type, str | None], tuple[str, ...]] = {}


def _parameters(dist: Any) -> tuple[list[str], dict[str, Any], bool]:
    """The constructor's positional names, its defaults, and whether it takes no ``*args``
    or ``**kwargs`` (so that binding is zipping), per class: binding runs at every site of a
    traced model."""
    cls = type(dist)
    if cls not in _PARAMETERS:
        params = list(_signature(dist).parameters.values())
        _PARAMETERS[cls] = (
            [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)],
            {p.name: p.default for p in params if p.default is not p.empty},
            all(p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params),
        )
    return _PARAMETERS[cls]


def _signature(dist: Any) -> inspect.Signature:
    """The signature of the constructor behind the mixin's, per class."""
    cls = type(dist)
    sig = _SIGNATURES.get(cls)
    if sig is None:
        sig = _SIGNATURES[cls] = inspect.signature(super(DistributionMixin, dist).__init__)
    return sig


class DistributionMixin:
    """Adds ``to_event``, ``mask``, ``expand`` and ``ppl_args`` to a torch distribution.

    Class attributes a family sets:

    ``_ppl_params``
        constructor arguments, in order; ``ppl_args`` reads each as an attribute.
    ``_ppl_exclusive``
        alternative parameterizations of which exactly one is given (``probs``/``logits``,
        ``covariance_matrix``/``precision_matrix``/``scale_tril``); ``ppl_args`` keeps only
        the one this instance was built with.
    """

    _ppl_params: ClassVar[tuple[str, ...]] = ()
    _ppl_exclusive: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *args: Any, validate_args: bool | None = False, **kwargs: Any) -> None:
        observer = construction_observer()
        if observer is None:
            super().__init__(*args, validate_args=validate_args, **kwargs)
        else:  # a graph tracer: it records the arguments, and the constructor only if read
            with torch._C.DisableTorchFunction():
                super().__init__(*args, validate_args=validate_args, **kwargs)
        self._ppl_init = (args, kwargs)
        if self._ppl_exclusive and "_ppl_given" not in self.__dict__:
            self._ppl_given = _chosen_parameterization(self, args, kwargs)
        if observer is not None:
            observer(self)

    def ppl_constructor_args(self) -> dict[str, Any] | None:
        """The arguments this instance was constructed with, by name, defaults filled in
        (None when it was built without ``__init__``, e.g. by ``expand``): ``cls(**args)``
        is this distribution, so a graph tracer records them instead of the parameters the
        constructor derived from them."""
        init = self.__dict__.get("_ppl_init")
        if init is None:
            return None
        args, kwargs = init
        names, defaults, plain = _parameters(self)
        if not plain or len(args) > len(names):
            bound = _signature(self).bind(*args, **kwargs)
            bound.apply_defaults()
            return dict(bound.arguments)
        return {**defaults, **dict(zip(names, args, strict=False)), **kwargs}

    # ----------------------------------------------------------------- ppl_args
    @property
    def ppl_args(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this instance: ``cls(**d.ppl_args)``.

        Tensors are the instance's (broadcast, possibly expanded) parameters, so the rebuilt
        distribution has the same batch and event shapes and the same ``log_prob``.
        """
        return {name: getattr(self, name) for name in self.ppl_arg_names()}

    def ppl_arg_names(self) -> tuple[str, ...]:
        """The keys of ``ppl_args``, without reading the values (reading Beta's computes):
        the same for every instance of a class built with the same parameterization, so a
        graph tracer asks at every site.

            >>> from ppl.stdlib import Bernoulli
            >>> Bernoulli(logits=0.0).ppl_arg_names()
            ('logits',)
        """
        cls, given = type(self), self.__dict__.get("_ppl_given")
        names = _ARG_NAMES.get((cls, given))
        if names is not None:
            return names
        if cls.ppl_args is not DistributionMixin.ppl_args:  # a family with its own
            return tuple(self.ppl_args)
        exclusive = self._ppl_exclusive
        if exclusive and given is None:  # built by some path that skipped __init__
            chosen = next((k for k in exclusive if k in self.__dict__), exclusive[-1])
            return tuple(n for n in self._ppl_params if n not in exclusive or n == chosen)
        names = _ARG_NAMES[cls, given] = tuple(
            name for name in self._ppl_params if name not in exclusive or name == given)
        return names

    # ----------------------------------------------------------------- wrappers
    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> Distribution:
        """torch's ``expand``; works although ppl families define their own ``__init__``."""
        new = _instance if _instance is not None else type(self).__new__(type(self))
        new = super().expand(batch_shape, _instance=new)  # type: ignore[misc]
        if "_ppl_given" in self.__dict__:
            new._ppl_given = self._ppl_given
        return new

    def to_event(self, reinterpreted_batch_ndims: int | None = None) -> Distribution:
        """Treat the rightmost ``n`` batch dims as event dims (all of them if ``n`` is None)."""
        from .wrappers import Independent

        n = reinterpreted_batch_ndims
        if n is None:
            n = len(self.batch_shape)
        if n == 0:
            return self  # type: ignore[return-value]
        return Independent(self, n)

    def mask(self, mask: bool | torch.Tensor) -> Distribution:
        """A distribution whose ``log_prob`` is 0 where ``mask`` is False (broadcast to batch)."""
        from .wrappers import Masked

        return Masked(self, mask)


def expand_params(
    dist: Distribution,
    cls: type[Distribution],
    batch_shape: Sequence[int],
    _instance: Any,
    names: Sequence[str],
    event_dims: dict[str, int] | None = None,
    copy: Sequence[str] = (),
) -> Any:
    """``expand`` for a family whose state is the tensor attributes ``names``.

    Each tensor present keeps its rightmost ``event_dims[name]`` dims (default 0) and is
    expanded to ``batch_shape`` on the left; the attributes in ``copy`` and ``_ppl_given``
    are copied as they are. Lazily computed attributes are not carried over.
    """
    new = dist._get_checked_instance(cls, _instance)
    batch_shape = torch.Size(batch_shape)
    event_dims = event_dims or {}
    state = dist.__dict__
    for name in names:
        if name in state:
            value = state[name]
            k = event_dims.get(name, 0)
            new.__dict__[name] = value.expand(batch_shape + value.shape[value.dim() - k :])
    for name in (*copy, "_ppl_given"):
        if name in state:
            new.__dict__[name] = state[name]
    Distribution.__init__(new, batch_shape, dist.event_shape, validate_args=False)
    new._validate_args = dist._validate_args
    return new
