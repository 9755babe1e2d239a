"""Per-chain random streams for batched kernels.

Every kernel takes its randomness as the first argument of ``step``: either one
``torch.Generator`` (all chains share one stream; draws for ``C`` chains come from one call,
so chain ``c``'s draws depend on the number of chains) or a sequence of generators, one per
chain (row ``c`` of every draw comes from generator ``c`` alone, and a chain only draws when
its own state asks for it, so chain ``c``'s trajectory is the same whatever the other chains
do). :func:`chain_generators` derives the per-chain streams from one seed and the chain index,
which is what makes "chain 0 is identical with 1 or 3 chains" hold.

>>> gens = chain_generators(0, 3)
>>> randn(gens, 3, (2,), dtype=torch.float64).shape
torch.Size([3, 2])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

RNG = torch.Generator | Sequence[torch.Generator]

__all__ = ["RNG", "chain_generators", "randn", "rand", "random_words", "is_per_chain"]


def _seed_for_chain(seed: int, chain: int) -> int:
    """A 64-bit seed for ``chain`` from ``seed``: numpy's SeedSequence hashing keeps the
    streams of neighbouring seeds and chains statistically independent."""
    words = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(chain),)).generate_state(
        2, dtype=np.uint32
    )
    return (int(words[0]) << 32) | int(words[1])


def chain_generators(
    seed: int | torch.Generator, num_chains: int, first_chain: int = 0
) -> list[torch.Generator]:
    """Generators for chains ``first_chain .. first_chain + num_chains - 1``.

    Chain ``c``'s generator depends only on ``seed`` and ``c``. From an int seed it is hashed;
    from a ``torch.Generator`` chain ``c`` takes the ``c``-th 62-bit integer drawn from it (so
    the given generator advances by ``first_chain + num_chains`` draws).
    """
    if isinstance(seed, torch.Generator):
        words = torch.randint(0, 2**62, (first_chain + num_chains,), generator=seed).tolist()
        seeds = words[first_chain:]
    else:
        seeds = [_seed_for_chain(seed, c) for c in range(first_chain, first_chain + num_chains)]
    return [torch.Generator().manual_seed(s) for s in seeds]


def is_per_chain(rng: RNG) -> bool:
    """True when ``rng`` is one generator per chain."""
    return not isinstance(rng, torch.Generator)


def num_rows(rng: RNG, values: Mapping[str, Tensor]) -> int:
    """How many chains a step moves: one per generator, or, under one shared generator, the
    leading dim of the (per-chain) ``values``."""
    return len(rng) if is_per_chain(rng) else next(iter(values.values())).shape[0]


def _draw(
    fill: str,
    rng: RNG,
    num_chains: int,
    event_shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device | str | None,
    rows: Sequence[int] | None,
) -> Tensor:
    draw = torch.randn if fill == "normal" else torch.rand
    if isinstance(rng, torch.Generator):
        return draw((num_chains, *event_shape), generator=rng, dtype=dtype, device=device)
    if len(rng) != num_chains:
        raise ValueError(f"got {len(rng)} generators for {num_chains} chains; pass one per chain")
    if num_chains == 1 and rows is None:  # the same numbers as the general case, one op less
        return draw((1, *event_shape), generator=rng[0], dtype=dtype, device=device)
    if rows is None:
        parts = [draw(event_shape, generator=g, dtype=dtype, device=device) for g in rng]
    else:
        zero = torch.zeros(event_shape, dtype=dtype, device=device)
        wanted = set(rows)
        parts = [
            draw(event_shape, generator=g, dtype=dtype, device=device) if c in wanted else zero
            for c, g in enumerate(rng)
        ]
    return torch.stack(parts)


def randn(
    rng: RNG,
    num_chains: int,
    event_shape: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    rows: Sequence[int] | None = None,
) -> Tensor:
    """Standard normal draws of shape ``(num_chains, *event_shape)``.

    With per-chain generators only the chains in ``rows`` (default: all) draw; the other rows
    are zero and their streams do not advance.
    """
    return _draw("normal", rng, num_chains, event_shape, dtype, device, rows)


def rand(
    rng: RNG,
    num_chains: int,
    event_shape: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    rows: Sequence[int] | None = None,
) -> Tensor:
    """Uniform(0, 1) draws of shape ``(num_chains, *event_shape)``; ``rows`` as in :func:`randn`."""
    return _draw("uniform", rng, num_chains, event_shape, dtype, device, rows)


def random_words(rng: RNG, num_chains: int, n: int) -> Tensor:
    """``(num_chains, n)`` uniform 64-bit words (int64), row ``c`` from chain ``c``'s
    generator. Words are drawn one after another, so ``n`` words in one call are the words of
    several calls that add up to ``n`` (seeds for C code, whatever the calls' sizes)."""
    if isinstance(rng, torch.Generator):
        return torch.empty(num_chains, n, dtype=torch.int64).random_(generator=rng)
    if len(rng) != num_chains:
        raise ValueError(f"got {len(rng)} generators for {num_chains} chains; pass one per chain")
    return torch.stack([torch.empty(n, dtype=torch.int64).random_(generator=g) for g in rng])
