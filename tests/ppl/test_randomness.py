"""``drawing``: a block that is not lent the global generator (``lend=False``) draws what a
lending one does and leaves the stream in the same place."""

import torch

from ppl.randomness import drawing, seeded


def _two_blocks(lend: bool) -> tuple[torch.Tensor, torch.Tensor]:
    with seeded(0):
        with drawing(lend=lend) as generator:
            first = torch.randn(3, generator=generator)
        with drawing() as generator:
            after = torch.randn(3, generator=generator)
    return first, after


def test_a_block_that_is_not_lent_draws_the_same_stream():
    torch.manual_seed(5)
    global_before = torch.random.get_rng_state()
    mine, lent = _two_blocks(lend=False), _two_blocks(lend=True)
    for a, b in zip(mine, lent, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), global_before)


def test_inside_a_lending_block_the_lent_generator_is_yielded():
    with seeded(0), drawing() as outer, drawing(lend=False) as inner:
        assert inner is outer is torch.default_generator
