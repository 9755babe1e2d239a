"""Particle MCMC benchmarks: PMMH, particle Gibbs (PGAS) and SMC² on the static
coefficient ``a`` of a 1-D linear-Gaussian state-space model, against the exact posterior
on a grid (prior x Kalman likelihood).

For each method and series length ``T``: wall seconds, the bulk ESS of ``a`` per second
(MCMC methods; SMC²: the Kish ESS of the final parameter weights), the error of the
posterior mean in posterior sds, and (SMC²) ``log Ẑ - log Z``. Machines here are shared:
note the load average printed first.

Run: .venv/bin/python bench/pmcmc.py [--steps 25 100] [--samples 1000]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

from ppl import infer, model, sample
from ppl.inference import PMMH, SMC2, ParticleGibbs
from ppl.inference.results.diagnostics import ess_bulk
from ppl.inference.testing.sequential import LinearGaussianSSM
from ppl.stdlib import Normal, Uniform

TRUTH = LinearGaussianSSM(a=0.7, q=1.0, r=0.7)


@model
def ssm(ys):
    a = sample("a", Uniform(-1.0, 1.0))
    x = sample("x_0", Normal(0.0, 1.0))
    sample("y_0", Normal(x, 0.7), obs=ys[0])
    for t in range(1, len(ys)):
        x = sample(f"x_{t}", Normal(a * x, 1.0))
        sample(f"y_{t}", Normal(x, 0.7), obs=ys[t])


def run(name: str, method, ys: torch.Tensor, exact) -> None:
    start = time.perf_counter()
    post = infer(ssm, ys, method=method, seed=0)
    seconds = time.perf_counter() - start
    if name == "SMC2":
        mean, ess = float(post.mean("a")), float(post.ess)
        extra = f"log Z error {float(post.log_evidence) - exact.log_evidence:+.3f}"
    else:
        draws = post.samples["a"]
        mean, ess = float(draws.mean()), float(ess_bulk(draws))
        extra = f"accept {[round(float(r), 2) for r in post.extra['accept_rate']]}"
    print(f"  {name:<14} {seconds:7.1f} s  ESS {ess:7.1f} ({ess / seconds:6.1f}/s)  "
          f"mean error {(mean - exact.mean) / exact.sd:+.3f} sd  {extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[25, 100])
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    grid = torch.linspace(-1.0, 1.0, 2001, dtype=torch.float64)
    for steps in args.steps:
        ys = TRUTH.simulate(steps, seed=2)
        exact = TRUTH.grid_posterior(ys, "a", lambda a: torch.full_like(a, -math.log(2.0)),
                                     grid)
        print(f"T = {steps}: exact mean {exact.mean:.4f}, sd {exact.sd:.4f}")
        n = args.samples
        run("PMMH", PMMH(static=["a"], num_particles=4 * steps, num_warmup=n // 2,
                         num_samples=n, chains=4), ys, exact)
        run("ParticleGibbs", ParticleGibbs(static=["a"], num_particles=20, num_warmup=n // 2,
                                           num_samples=n, chains=4), ys, exact)
        run("SMC2", SMC2(static=["a"], num_theta=n, num_particles=4 * steps), ys, exact)


if __name__ == "__main__":
    main()
