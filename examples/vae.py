"""A variational autoencoder on 8x8 binary shapes: torch modules as ppl params, an amortized
guide, and minibatches from a subsampled plate, trained with ``VI``.

The data set is drawn here, deterministically, no download: 2048 images of bars, boxes,
crosses and diagonals at random places and sizes, each pixel flipped with probability 0.02.
The model is ``z ~ N(0, I_4)``, ``x ~ Bernoulli(logits=decoder(z))`` per pixel; the guide is
``z ~ N(encoder(x))``. Both register their network with ``ppl.module`` and index the images
with the indices of one subsampled plate (``VI`` gives guide and model the same minibatch
each step, and scales its log densities by 2048 / 128). The loss is the negative ELBO of the
whole data set; divided by 2048 it is nats per image: independent fair pixels give
``64 log 2 = 44.4``, the best model that ignores ``z`` (independent pixels at their
frequencies) 24.8. The smoke budget (``--short``: 250 steps) reaches a mean loss over its
last 20 steps below 21.5 nats per image (20.6 measured); the full run (3000 steps) 16.6.

Run: python examples/vae.py [--short]
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from ppl import infer, model, module, plate, sample
from ppl.inference import VI
from ppl.stdlib import Bernoulli, Normal

SIDE, LATENT, HIDDEN = 8, 4, 64
SMOKE_STEPS, SMOKE_LOSS = 250, 21.5
"""The smoke budget and the loss per image (mean of its last 20 steps) it reaches."""


def shapes(n: int = 2048, seed: int = 0, flip: float = 0.02) -> torch.Tensor:
    """``n`` binary images ``(n, SIDE * SIDE)``: a random bar, box outline, plus or diagonal,
    placed and sized at random, with each pixel flipped with probability ``flip``."""
    g = torch.Generator().manual_seed(seed)
    kind = torch.randint(0, 5, (n, 1, 1), generator=g)
    size = torch.randint(3, SIDE, (n, 1, 1), generator=g)
    top = (torch.rand(n, 1, 1, generator=g) * (SIDE - size + 1)).long()
    left = (torch.rand(n, 1, 1, generator=g) * (SIDE - size + 1)).long()
    grid_rows, grid_cols = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    rows, cols = grid_rows - top, grid_cols - left  # (n, SIDE, SIDE), from each shape's corner
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    bar_row, bar_col = rows == size // 2, cols == size // 2
    edge = (rows == 0) | (rows == size - 1) | (cols == 0) | (cols == size - 1)
    drawn = torch.stack([bar_row, bar_col, edge, bar_row | bar_col, rows == cols])
    image = drawn.gather(0, kind[None].expand(1, n, SIDE, SIDE))[0] & inside
    noise = torch.rand(image.shape, generator=g) < flip
    return (image ^ noise).float().reshape(n, SIDE * SIDE)


class Encoder(nn.Module):
    """An image to the mean and scale of its latent code."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(SIDE * SIDE, HIDDEN)
        self.loc = nn.Linear(HIDDEN, LATENT)
        self.scale = nn.Linear(HIDDEN, LATENT)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.hidden(x))
        return self.loc(h), nn.functional.softplus(self.scale(h)) + 1e-3


class Decoder(nn.Module):
    """A latent code to the logits of its image's pixels."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(LATENT, HIDDEN)
        self.logits = nn.Linear(HIDDEN, SIDE * SIDE)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits(torch.tanh(self.hidden(z)))


def vae(encoder: Encoder, decoder: Decoder, batch: int = 128):
    """The model and its amortized guide, both over minibatches of ``batch`` images."""

    @model
    def generative(images):
        module("decoder", decoder)
        with plate("images", len(images), subsample_size=batch) as ind:
            z = sample("z", Normal(torch.zeros(LATENT), 1.0).to_event(1))
            sample("x", Bernoulli(logits=decoder(z)).to_event(1), obs=images[ind])

    def guide(images):
        module("encoder", encoder)
        with plate("images", len(images), subsample_size=batch) as ind:
            loc, scale = encoder(images[ind])
            sample("z", Normal(loc, scale).to_event(1))

    return generative, guide


def networks(seed: int = 0) -> tuple[Encoder, Decoder]:
    """Freshly initialized networks (the same for the same seed)."""
    torch.manual_seed(seed)
    return Encoder(), Decoder()


def train(images: torch.Tensor, steps: int, seed: int = 0, **vi_options):
    """``steps`` of VI (Adam, lr 0.02) from the networks of ``seed``: the ``VIResult``."""
    generative, guide = vae(*networks(seed))
    method = VI(guide, steps=steps, lr=0.02, num_samples=10, evaluations=2, **vi_options)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small run fastest on one thread
    try:
        return infer(generative, images, method=method, seed=seed)
    finally:
        torch.set_num_threads(threads)


def main(short: bool = False) -> None:
    images = shapes()
    steps = SMOKE_STEPS if short else 3000
    result = train(images, steps)
    per_image = result.losses / len(images)
    for step in sorted({0, steps // 4, steps // 2, steps - 1}):
        print(f"step {step + 1:5d}: loss {float(per_image[step]):6.2f} nats per image")
    print(f"mean of the last 20 steps: {float(per_image[-20:].mean()):.2f} nats per image "
          f"(fair pixels: {SIDE * SIDE * math.log(2):.1f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", action="store_true", help="fewer steps (smoke test)")
    main(parser.parse_args().short)
