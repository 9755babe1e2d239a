"""Bayesian linear regression on synthetic data: prior predictive and importance sampling.

The posterior of (intercept, slope, noise) is compared with the values that generated the
data. Run: python examples/linear_regression.py [--short]
"""

import argparse

import torch

from ppl import infer, model, plate, sample
from ppl.inference import Importance
from ppl.stdlib import HalfNormal, Normal


@model
def regression(x, y=None):
    intercept = sample("intercept", Normal(0.0, 10.0))
    slope = sample("slope", Normal(0.0, 10.0))
    noise = sample("noise", HalfNormal(2.0))
    with plate("data", len(x)):
        return sample("y", Normal(intercept + slope * x, noise), obs=y)


def main(short: bool = False) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.linspace(-2, 2, 20)
    y = 1.0 + 0.5 * x + 0.3 * torch.randn(20, generator=generator)

    prior = regression.sample(x, seed=0, num_samples=1000)
    print(f"prior predictive sd of y: {float(prior['y'].std()):.2f}")

    # A guide near the posterior makes importance sampling efficient in 3 dimensions.
    @model
    def guide(x, y=None):
        sample("intercept", Normal(1.0, 0.2))
        sample("slope", Normal(0.5, 0.2))
        sample("noise", HalfNormal(0.6))

    result = infer(regression, x, y=y, seed=0,
                   method=Importance(num_samples=5_000 if short else 50_000, guide=guide))
    print(result.summary())
    print("true values: intercept 1.0, slope 0.5, noise 0.3")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", action="store_true", help="fewer samples (smoke test)")
    main(parser.parse_args().short)
