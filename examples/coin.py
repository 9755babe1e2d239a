"""Is the coin fair? A beta-bernoulli model, its exact posterior, and importance sampling.

Run: python examples/coin.py [--short]
"""

import argparse
import math

import torch

from ppl import infer, model, plate, sample
from ppl.inference import Importance
from ppl.stdlib import Bernoulli, Beta


@model
def coin(flips):
    p = sample("p", Beta(2.0, 2.0))
    with plate("data", len(flips)):
        sample("x", Bernoulli(p), obs=flips)


def main(short: bool = False) -> None:
    flips = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    result = infer(coin, flips, method=Importance(num_samples=2_000 if short else 20_000), seed=0)
    print(result.summary())

    heads, n = int(flips.sum()), len(flips)
    exact_mean = (2 + heads) / (4 + n)
    exact_log_evidence = (
        torch.lgamma(torch.tensor(2.0 + heads)) + torch.lgamma(torch.tensor(2.0 + n - heads))
        - torch.lgamma(torch.tensor(4.0 + n)) - 2 * math.lgamma(2.0) + math.lgamma(4.0)
    )
    print(f"posterior mean of p: {float(result.mean('p')):.4f} (exact {exact_mean:.4f})")
    print(f"log evidence: {float(result.log_evidence):.4f} ± {float(result.log_evidence_se):.4f} "
          f"(exact {float(exact_log_evidence):.4f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", action="store_true", help="fewer samples (smoke test)")
    main(parser.parse_args().short)
