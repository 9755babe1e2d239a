"""Where ppl's random draws come from: the private generator of the innermost ``seed`` scope
of the running thread or asyncio task, else torch's global generator.

Scopes are context-local (``contextvars``), so two threads each inside ``seed(0)`` draw the
same numbers as one thread would alone. torch's distributions draw from the global generator
and take no ``generator`` argument, so for the duration of each draw (a :func:`drawing` block)
the global generator is lent the scope's state, under one process-wide lock, and the advanced
state is handed back to the scope afterwards. Code that takes a ``generator`` argument passes
the one :func:`drawing` yields. Draws outside every scope take the lock too, so they never
consume a scope's stream; plain ``torch.randn`` calls made outside ppl are not covered.

    >>> def two() -> torch.Tensor:
    ...     with drawing() as generator:
    ...         return torch.randn(2, generator=generator)
    >>> with seeded(0):
    ...     first = two()
    >>> with seeded(0):
    ...     again = two()
    >>> bool(torch.equal(first, again))
    True
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextvars import ContextVar

import torch

__all__ = [
    "seeded", "forked", "enter_scope", "exit_scope", "drawing", "stream_state",
    "set_stream_state", "current_stream",
]

_SCOPES: ContextVar[tuple[torch.Generator, ...]] = ContextVar("ppl_seed_scopes", default=())
_LOCK = threading.RLock()
_LENDING = threading.local()  # .active: this thread is inside a drawing() block


def _reset_after_fork() -> None:
    global _LOCK, _LENDING
    _LOCK, _LENDING = threading.RLock(), threading.local()


os.register_at_fork(after_in_child=_reset_after_fork)  # a fork mid-draw must not deadlock


def enter_scope(rng_seed: int) -> None:
    """Open a seed scope in the current context: draws inside use a fresh generator seeded
    with ``rng_seed`` (the same stream ``torch.manual_seed(rng_seed)`` starts)."""
    _SCOPES.set((*_SCOPES.get(), torch.Generator().manual_seed(int(rng_seed))))


def exit_scope() -> None:
    """Close the innermost seed scope of the current context."""
    _SCOPES.set(_SCOPES.get()[:-1])


@contextlib.contextmanager
def seeded(rng_seed: int) -> Iterator[None]:
    """A seed scope as a context manager (``ppl.handlers.seed`` is the handler form)."""
    enter_scope(rng_seed)
    try:
        yield
    finally:
        exit_scope()


def _current() -> torch.Generator:
    scopes = _SCOPES.get()
    return scopes[-1] if scopes else torch.default_generator


def current_stream() -> torch.Generator:
    """The generator whose stream draws continue here: tells a forked scope from its parent."""
    return _current()


def stream_state() -> torch.Tensor:
    """The state of the current stream (innermost seed scope, else torch's global generator),
    for checkpoints: :func:`set_stream_state` puts it back, and the draws continue as they
    would have."""
    with _LOCK:
        return _current().get_state()


def set_stream_state(state: torch.Tensor) -> None:
    with _LOCK:
        _current().set_state(state)


@contextlib.contextmanager
def forked() -> Iterator[None]:
    """A scope that continues a copy of the current stream and leaves the stream itself where
    it was: ``torch.random.fork_rng`` for one context (for draws that must not count, such as
    probing a graph for shapes)."""
    with _LOCK:
        scopes = _SCOPES.get()
        state = _current().get_state()
    _SCOPES.set((*scopes, torch.Generator().set_state(state)))
    try:
        yield
    finally:
        exit_scope()


class drawing:
    """Draw random numbers inside this block, from torch's global generator or functions
    given the yielded generator: both continue the current seed scope's stream. Keep the
    block to the draws themselves (it holds a process-wide lock). With ``lend=False``, for
    blocks that pass the yielded generator to every draw, a scope's own generator is yielded
    and the global one is left alone: the same draws, without copying the two states. A
    class, not a generator context manager: it is entered at every sample site."""

    __slots__ = ("_lend", "_lock", "_scope", "_global_state")

    def __init__(self, lend: bool = True) -> None:
        self._lend = lend

    def __enter__(self) -> torch.Generator:
        self._lock, self._scope = _LOCK, None
        self._lock.acquire()
        try:
            scopes = _SCOPES.get()
            lending = getattr(_LENDING, "active", False)
            if scopes and not self._lend and not lending:
                return scopes[-1]
            if scopes and not lending:
                global_state = torch.default_generator.get_state()
                torch.default_generator.set_state(scopes[-1].get_state())
                self._scope, self._global_state = scopes[-1], global_state
                _LENDING.active = True
        except BaseException:
            self._lock.release()
            raise
        return torch.default_generator

    def __exit__(self, *exc: object) -> None:
        try:
            if self._scope is not None:
                _LENDING.active = False
                self._scope.set_state(torch.default_generator.get_state())
                torch.default_generator.set_state(self._global_state)
        finally:
            self._lock.release()
