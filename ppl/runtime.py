"""The effect-handler stack that every primitive sends its message through.

A primitive (``sample``, ``param``, ``factor``, ``deterministic``) builds a ``Message`` and
calls ``apply_stack``. Handlers on the stack see it from the innermost (most recently
entered) outward in ``process``; if none supplied a value, the default behaviour computes
one (a draw for ``sample``); then the handlers that saw the message run ``postprocess`` in
the opposite order. A handler that sets ``msg.stop`` hides the message from handlers
further out, which is how ``block`` works.

    >>> class Shout(Messenger):
    ...     def postprocess(self, msg):
    ...         print("site", msg.name)
    >>> with Shout():
    ...     apply_stack(Message(kind="deterministic", name="x", value=1.0)).value
    site x
    1.0
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

_STACK: list[Messenger] = []
_INTERNAL_DEPTH = 0


class PlateFrame(NamedTuple):
    """One plate a site sits in: ``dim`` is a negative batch dim, or None when sequential."""

    name: str
    size: int
    dim: int | None
    subsample_size: int


@dataclass
class Message:
    """What a primitive tells the handlers. Mutable on purpose: handlers edit it in place."""

    kind: str
    name: str
    fn: Any = None
    value: Any = None
    is_observed: bool = False
    scale: Any = 1.0
    mask: Any = None
    plates: tuple[PlateFrame, ...] = ()
    infer: dict = field(default_factory=dict)
    intervened: bool = False
    stop: bool = False
    source: str = ""


class Messenger:
    """Base class of effect handlers: a context manager and a decorator.

    Subclasses override ``process(msg)`` (on the way in, before a value exists) and/or
    ``postprocess(msg)`` (on the way out, with the value).
    """

    def __enter__(self) -> Messenger:
        _STACK.append(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if _STACK and _STACK[-1] is self:
            _STACK.pop()
        else:  # an exception unwound past an inner handler: remove this one wherever it is
            for i in range(len(_STACK) - 1, -1, -1):
                if _STACK[i] is self:
                    del _STACK[i:]
                    break

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with self:
                return fn(*args, **kwargs)

        return wrapped

    def process(self, msg: Message) -> None:
        pass

    def postprocess(self, msg: Message) -> None:
        pass


DEFAULT_VALUES: dict[str, Callable[[Message], Any]] = {}
"""Per message kind, how to make a value that no handler supplied (filled by the primitives)."""


CHECKS: dict[str, Callable[[Message], None]] = {}
"""Per message kind, a check of the settled value (filled by the primitives). It runs before
any ``postprocess``, so a bad value is reported by site name before a handler uses it (e.g.
``trace`` computing a log density of an observation that does not fit its plate)."""


def default_process(msg: Message) -> None:
    if msg.value is None and msg.kind in DEFAULT_VALUES:
        with internal():
            msg.value = DEFAULT_VALUES[msg.kind](msg)
    if msg.kind in CHECKS:
        CHECKS[msg.kind](msg)


@contextlib.contextmanager
def internal() -> Iterator[None]:
    """Mark tensor work done by ppl itself (drawing, validation, bookkeeping), which a graph
    tracer must not record as part of the model."""
    global _INTERNAL_DEPTH
    _INTERNAL_DEPTH += 1
    try:
        yield
    finally:
        _INTERNAL_DEPTH -= 1


def in_internal() -> bool:
    return _INTERNAL_DEPTH > 0


def apply_stack(msg: Message) -> Message:
    """Send ``msg`` through the active handlers and return it with its value set."""
    seen = 0
    for handler in reversed(_STACK):
        seen += 1
        handler.process(msg)
        if msg.stop:
            break
    default_process(msg)
    for handler in _STACK[len(_STACK) - seen :]:
        handler.postprocess(msg)
    return msg


def active_handlers() -> tuple[Messenger, ...]:
    return tuple(_STACK)


def caller_location(depth: int = 2) -> str:
    """``file:line`` of the user code that called a primitive (for error messages and IR)."""
    frame = sys._getframe(depth)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"
