"""Write your own graph pass: swap every HalfCauchy prior for a HalfNormal.

A pass is any function ``Graph -> Graph``. This one is four lines; ``ppl.passes.run``
composes it with the built-in passes, checks the graph after each one and records the
names. We print the IR before and after, then compare the posterior of eight schools under
both priors with a small self-normalized importance sampler over the graph (latents drawn
from the prior by ``ppl.ir.Generate``, weighted by the likelihood).

Run: python examples/custom_pass.py [--short]
"""

import argparse
import difflib

import torch

from ppl import model, plate, sample
from ppl.ir import Generate, Graph
from ppl.passes import condition, run, simplify
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


def halfcauchy_to_halfnormal(graph: Graph) -> Graph:
    """The user pass: every HalfCauchy(scale) latent becomes a HalfNormal(scale)."""
    nodes = [
        n.replace(target="HalfNormal") if n.kind == "sample" and n.target == "HalfCauchy" else n
        for n in graph.nodes
    ]
    return graph.replace(nodes)


def importance(graph: Graph, num_samples: int, seed: int) -> dict[str, float]:
    """Posterior mean and sd of tau, and log evidence, by prior-proposal importance sampling."""
    torch.manual_seed(seed)
    taus, log_weights = [], []
    for _ in range(num_samples):
        values, log_weight = Generate(graph, {}).run()
        taus.append(values["tau"])
        log_weights.append(log_weight)
    tau, log_w = torch.stack(taus), torch.stack(log_weights)
    w = torch.softmax(log_w, 0)
    mean = (w * tau).sum()
    return {
        "tau mean": float(mean),
        "tau sd": float(((w * (tau - mean) ** 2).sum()).sqrt()),
        "log evidence": float(
            torch.logsumexp(log_w, 0) - torch.log(torch.tensor(float(num_samples)))
        ),
        "ESS": float(1.0 / (w**2).sum()),
    }


def main(short: bool = False) -> None:
    traced = eight_schools.graph(SIGMA)
    centred = run(traced, [condition({"y": Y}), simplify()])
    swapped = run(traced, [condition({"y": Y}), halfcauchy_to_halfnormal, simplify()])
    print("IR with the original prior:")
    print(centred)
    print(f"\nafter passes {swapped.attrs['passes']}:")
    print(swapped)
    print("\nthe difference:")
    for line in difflib.unified_diff(
        str(centred).splitlines(), str(swapped).splitlines(), n=0, lineterm=""
    ):
        if line.startswith(("-  ", "+  ")):
            print(line)

    n = 200 if short else 4_000
    print(f"\nposterior by self-normalized importance sampling ({n} prior draws each):")
    stats = {}
    for label, graph in (("HalfCauchy(5)", centred), ("HalfNormal(5)", swapped)):
        stats[label] = importance(graph, n, seed=0)
        print(f"  tau ~ {label:14s} " + "  ".join(f"{k} {v:7.2f}" for k, v in stats[label].items()))
    sd = [s["tau sd"] for s in stats.values()]
    print(
        f"posterior sd of tau (the between-school spread): {sd[0]:.2f} under the heavy-tailed "
        f"HalfCauchy, {sd[1]:.2f} under the HalfNormal"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", action="store_true", help="fewer samples (smoke test)")
    main(parser.parse_args().short)
