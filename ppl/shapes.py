"""Shape arithmetic without torch's symbolic-shape machinery.

``torch.broadcast_shapes`` imports ``torch._refs`` (and with it sympy) on first use, which
costs seconds in a fresh process; this plain version is all ppl needs.

    >>> broadcast_shapes((3, 1), (4,), ())
    (3, 4)
"""

from __future__ import annotations

from collections.abc import Sequence


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """The broadcast of ``shapes`` by NumPy's rules; a ``RuntimeError`` naming them (as torch
    raises) if none exists."""
    rank = max((len(s) for s in shapes), default=0)
    result = [1] * rank
    for shape in shapes:
        for i, size in enumerate(shape, start=rank - len(shape)):
            if size != 1 and result[i] not in (1, size):
                raise RuntimeError(
                    f"shapes {[tuple(s) for s in shapes]} cannot be broadcast together"
                )
            if size != 1:
                result[i] = size
    return tuple(result)
