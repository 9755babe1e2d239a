"""Choosing between the C filter and the torch one, once, when a method starts: the
``backend=`` setting of ``SMC``, ``PMMH``, ``SMC2`` (and particle Gibbs' ``filter_backend``).

"auto" takes C when it can run the model (else torch, with the reason), "native" insists
(an error says why not), "torch" never tries; :func:`backend_report` writes the choice into
a result's ``extra``.

    >>> from ppl.inference.lowering.tape import Unsupported
    >>> def refuse():
    ...     raise Unsupported("Weibull has no C sampling rule (site 'x')")
    >>> choose_backend("auto", refuse, "the torch filter", "SMC")
    ('the torch filter', "the C filter cannot run it: Weibull has no C sampling rule (site 'x')")
    >>> backend_report("auto", None)
    {'backend': 'native'}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ppl.inference.lowering.tape import Unsupported

__all__ = ["BACKENDS", "backend_report", "check_backend", "choose_backend"]

#: The ``backend=`` choices of the methods that can filter in C.
BACKENDS = ("auto", "torch", "native")

_Native, _Torch = TypeVar("_Native"), TypeVar("_Torch")


def choose_backend(backend: str, native: Callable[[], _Native], fallback: _Torch, refused: str
                   ) -> tuple[_Native | _Torch, str | None]:
    """The driver ``backend`` (one of :data:`BACKENDS`) asks for, chosen once: ``native()``
    (which raises ``Unsupported`` when C cannot run it) or ``fallback``, and why torch runs
    under "auto". Under "native" a refusal raises ``ValueError("{refused} in C: why")``."""
    if backend == "torch":
        return fallback, None
    try:
        return native(), None
    except Unsupported as refusal:
        if backend == "native":
            raise ValueError(f"{refused} in C: {refusal}") from None
        return fallback, f"the C filter cannot run it: {refusal}"


def check_backend(owner: str, backend: str, name: str = "backend") -> None:
    """Raise a ``ValueError`` naming ``owner`` and the setting ``name`` unless ``backend``
    is one of ``BACKENDS``."""
    if backend not in BACKENDS:
        raise ValueError(f"{owner}: {name} must be one of {BACKENDS}, got {backend!r}")


def backend_report(backend: str, reason: str | None) -> dict[str, str]:
    """The ``extra`` entries saying which filter ran under ``backend`` given
    :func:`choose_backend`'s reason: ``backend``, and ``backend_reason`` when torch ran
    under "auto"."""
    native = backend != "torch" and reason is None
    return {"backend": "native" if native else "torch",
            **({} if reason is None else {"backend_reason": reason})}
