"""Eight schools (Rubin 1981): prior predictive checks, importance sampling, and the graph IR.

Run: python examples/eight_schools.py [--short]
"""

import argparse

import torch

from ppl import infer, model, plate, sample
from ppl.inference import Importance
from ppl.stdlib import HalfCauchy, Normal

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


@model
def eight_schools(sigma, y=None):
    mu = sample("mu", Normal(0.0, 5.0))
    tau = sample("tau", HalfCauchy(5.0))
    with plate("schools", len(sigma)):
        theta = sample("theta", Normal(mu, tau))
        sample("y", Normal(theta, sigma), obs=y)


def main(short: bool = False) -> None:
    prior = eight_schools.sample(SIGMA, seed=0, num_samples=2_000)
    spread = prior["y"].abs().quantile(0.9)
    print(f"prior predictive: 90% of |y| below {float(spread):.1f} "
          f"(observed max {float(Y.abs().max()):.0f})")

    result = infer(eight_schools, SIGMA, y=Y, seed=0,
                   method=Importance(num_samples=5_000 if short else 100_000))
    print(result.summary())
    print(f"log evidence {float(result.log_evidence):.3f} ± {float(result.log_evidence_se):.3f}; "
          f"importance ESS {float(result.ess):.0f} of {result.num_samples}")

    graph = eight_schools.graph(SIGMA, y=Y)
    print(f"\nthe graph IR ({len(graph)} nodes):")
    print(graph)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", action="store_true", help="fewer samples (smoke test)")
    main(parser.parse_args().short)
