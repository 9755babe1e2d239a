"""The effect-handler stack that every primitive sends its message through.

A primitive (``sample``, ``param``, ``factor``, ``deterministic``) builds a ``Message`` and
calls ``apply_stack``. Handlers on the stack see it from the innermost (most recently
entered) outward in ``process``; if none supplied a value, the default behaviour computes
one (a draw for ``sample``); then the handlers that saw the message run ``postprocess`` in
the opposite order. A handler that sets ``msg.stop`` hides the message from handlers
further out, which is how ``block`` works. The stack is context-local (``contextvars``): each
thread, and each asyncio task, sees only the handlers it entered itself.

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
import linecache
import os
import sys
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

# Immutable tuples: entering a handler sets a new one, so a context never sees another's edits.
_STACK: ContextVar[tuple[Messenger, ...]] = ContextVar("ppl_handler_stack", default=())
_INTERNAL_DEPTH: ContextVar[int] = ContextVar("ppl_internal_depth", default=0)


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
        _STACK.set((*_STACK.get(), self))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        stack = _STACK.get()
        # Usually the innermost; if an exception unwound past inner handlers, this one and
        # everything entered after it go.
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is self:
                _STACK.set(stack[:i])
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


class internal:
    """Mark tensor work done by ppl itself (drawing, validation, bookkeeping), which a graph
    tracer must not record as part of the model. Under a torch function mode (a tracer) the
    work also bypasses the mode: each operation dispatched to it costs microseconds. A class,
    not a generator context manager: it is entered several times per site. A nested block
    (an observed value's support check inside its shape check's) leaves the mode as the
    outer one set it: a mode passes internal work through anyway (``in_internal``)."""

    __slots__ = ("_token", "_unwatched")

    def __enter__(self) -> None:
        depth = _INTERNAL_DEPTH.get()
        self._token = _INTERNAL_DEPTH.set(depth + 1)
        self._unwatched = None if depth else unwatched()
        if self._unwatched is not None:
            self._unwatched.__enter__()

    def __exit__(self, *exc: object) -> None:
        try:
            if self._unwatched is not None:
                self._unwatched.__exit__(*exc)
        finally:
            _INTERNAL_DEPTH.reset(self._token)


def unwatched() -> contextlib.AbstractContextManager:
    """Torch operations in this block skip any torch function mode (a tracer's)."""
    if torch._C._len_torch_function_stack():
        return torch._C.DisableTorchFunction()
    return contextlib.nullcontext()


def in_internal() -> bool:
    return _INTERNAL_DEPTH.get() > 0


def apply_stack(msg: Message) -> Message:
    """Send ``msg`` through the active handlers and return it with its value set."""
    stack = _STACK.get()
    seen = 0
    for handler in reversed(stack):
        seen += 1
        handler.process(msg)
        if msg.stop:
            break
    default_process(msg)
    for handler in stack[len(stack) - seen :]:
        handler.postprocess(msg)
    return msg


def active_handlers() -> tuple[Messenger, ...]:
    return _STACK.get()


_LIBRARY_DIRS = (os.path.dirname(os.path.abspath(__file__)),
                 os.path.dirname(os.path.abspath(torch.__file__)))


@functools.cache
def is_library_file(filename: str) -> bool:
    """Whether code in ``filename`` is ppl's or torch's (not the user's model)."""
    return os.path.abspath(filename).startswith(_LIBRARY_DIRS)


@functools.lru_cache(maxsize=4096)
def source_location(filename: str, lineno: int) -> str:
    """``file:line (source line)``, as errors and the IR show where user code is (kept per
    line: a graph tracer asks for every operation, mostly on the few lines of a loop)."""
    return f"{filename}:{lineno} ({linecache.getline(filename, lineno).strip()})"


def caller_location(depth: int = 2) -> str:
    """``file:line`` of the user code that called a primitive (for error messages and IR)."""
    frame = sys._getframe(depth)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"
