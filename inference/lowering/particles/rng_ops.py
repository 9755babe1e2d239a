"""The random primitives a family's sampling rule is written with (the ``rng`` of
``Family.sample``): each draws a whole batch from one ``torch.Generator`` in one call.

A rule in :mod:`ppl.stdlib.samplers` receives this module as ``rng`` and the generator as
``gen``; every draw is float64 on the generator's device (``torch.default_generator`` is the
CPU's), so the same seed gives the same draws whatever the batch holds, and the N rows of a
site cost one generator call instead of one per row.

    >>> import torch
    >>> gen = torch.Generator().manual_seed(0)
    >>> a = normal(gen, (1000, 2))
    >>> b = normal(torch.Generator().manual_seed(0), (1000, 2))
    >>> a.shape, a.dtype, bool((a == b).all())
    (torch.Size([1000, 2]), torch.float64, True)
"""

from __future__ import annotations

import torch

__all__ = ["cauchy", "exponential", "normal", "poisson", "binomial", "standard_gamma",
           "uniform"]

Shape = tuple[int, ...]
_FLOAT = torch.float64


def normal(gen: torch.Generator, shape: Shape) -> torch.Tensor:
    """Standard normal draws."""
    return torch.randn(shape, generator=gen, dtype=_FLOAT, device=gen.device)


def uniform(gen: torch.Generator, shape: Shape) -> torch.Tensor:
    """Uniform draws on [0, 1)."""
    return torch.rand(shape, generator=gen, dtype=_FLOAT, device=gen.device)


def exponential(gen: torch.Generator, shape: Shape) -> torch.Tensor:
    """Exponential(1) draws (strictly positive)."""
    return torch.empty(shape, dtype=_FLOAT, device=gen.device).exponential_(generator=gen)


def cauchy(gen: torch.Generator, shape: Shape) -> torch.Tensor:
    """Standard Cauchy draws."""
    return torch.empty(shape, dtype=_FLOAT, device=gen.device).cauchy_(generator=gen)


def _full(value: torch.Tensor | float, shape: Shape, gen: torch.Generator) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=_FLOAT, device=gen.device)
    return value.expand(shape).contiguous()


def standard_gamma(gen: torch.Generator, shape: Shape,
                   concentration: torch.Tensor | float) -> torch.Tensor:
    """Gamma(concentration, 1) draws of ``shape`` (the concentration broadcast to it)."""
    return torch._standard_gamma(_full(concentration, shape, gen), generator=gen)


def poisson(gen: torch.Generator, shape: Shape, rate: torch.Tensor | float) -> torch.Tensor:
    """Poisson(rate) counts of ``shape`` as float64."""
    return torch.poisson(_full(rate, shape, gen), generator=gen)


def binomial(gen: torch.Generator, shape: Shape, total_count: torch.Tensor | float,
             probs: torch.Tensor | float) -> torch.Tensor:
    """Binomial(total_count, probs) counts of ``shape`` as float64."""
    return torch.binomial(_full(total_count, shape, gen), _full(probs, shape, gen),
                          generator=gen)
