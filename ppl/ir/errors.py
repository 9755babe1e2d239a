"""Errors of the graph IR."""

from ppl.errors import ModelError


class IRError(ValueError):
    """A graph is malformed or names something it may not (lint, parse, resolve)."""


class DynamicModelError(ModelError):
    """A model's structure depends on a random value, so it has no static graph.

    It still runs on the trace path (``Importance``, handlers); graph-based methods need a
    static structure.
    """


class PassError(IRError):
    """A pass produced a graph that fails lint; names the pass and the ones before it."""
