"""Where a particle method's randomness comes from: one ``torch.Generator`` per run, seeded
once from the current seed scope (``infer(..., seed=)``), so the run's draws do not depend
on what else draws from the scope while it runs.

    >>> from ppl.randomness import seeded
    >>> with seeded(0):
    ...     a = run_generator().initial_seed()
    >>> with seeded(0):
    ...     b = run_generator().initial_seed()
    >>> a == b
    True
"""

from __future__ import annotations

import torch

from ppl.randomness import drawing

__all__ = ["run_generator"]


def run_generator() -> torch.Generator:
    """A fresh CPU generator seeded by one draw from the current seed scope's stream."""
    with drawing() as current:
        seed = int(torch.randint(0, 2**62, (), generator=current).item())
    return torch.Generator().manual_seed(seed)
