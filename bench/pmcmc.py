"""Particle MCMC benchmarks: PMMH, particle Gibbs (PGAS) and SMC² on the static
coefficient ``a`` of a 1-D linear-Gaussian state-space model, against the exact posterior
on a grid (prior x Kalman likelihood).

For each method, filter backend and series length ``T``: the median wall seconds of
``--repeats`` runs (seeds 0, 1, ...), the bulk ESS of ``a`` per second (MCMC methods; SMC²:
the Kish ESS of the final parameter weights), the error of the posterior mean in posterior
sds, and (SMC²) ``log Ẑ - log Z``, all of the median-time run. Each method runs on both
filters in the same run (``backend="torch"`` and ``"native"``, the C filter, compiled by a
short warm-up run outside the timing; particle Gibbs' ``filter_backend``) with the time
ratio. Machines here are shared: note the load average printed first.

Run: .venv/bin/python bench/pmcmc.py [--steps 25 100] [--samples 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
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


def run(name: str, method, ys: torch.Tensor, exact, repeats: int) -> float:
    """Print the median-time run of ``repeats`` seeds; returns its seconds."""
    timed = []
    for seed in range(repeats):
        start = time.perf_counter()
        post = infer(ssm, ys, method=method, seed=seed)
        timed.append((time.perf_counter() - start, seed, post))
    seconds, _, post = sorted(timed, key=lambda t: t[0])[len(timed) // 2]
    if name.startswith("SMC2"):
        mean, ess = float(post.mean("a")), float(post.ess)
        extra = f"log Z error {float(post.log_evidence) - exact.log_evidence:+.3f}"
    else:
        draws = post.samples["a"]
        mean, ess = float(draws.mean()), float(ess_bulk(draws))
        extra = f"accept {[round(float(r), 2) for r in post.extra['accept_rate']]}"
    print(f"  {name:<20} {seconds:7.2f} s  ESS {ess:7.1f} ({ess / seconds:7.1f}/s)  "
          f"mean error {(mean - exact.mean) / exact.sd:+.3f} sd  {extra}")
    return seconds


def both_backends(name: str, make, small: dict, ys: torch.Tensor, exact, repeats: int,
                  option: str = "backend") -> None:
    """``make(**{option: backend})``'s method on the torch and the C filter, and the time
    ratio; ``make(**small)`` is a short run that compiles the C filter first (cached)."""
    infer(ssm, ys, method=make(**{option: "native"}, **small), seed=0)
    seconds = {b: run(f"{name} ({b})", make(**{option: b}), ys, exact, repeats)
               for b in ("torch", "native")}
    print(f"  {name}: torch / native time {seconds['torch'] / seconds['native']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[25, 100])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    grid = torch.linspace(-1.0, 1.0, 2001, dtype=torch.float64)
    for steps in args.steps:
        ys = TRUTH.simulate(steps, seed=2)
        exact = TRUTH.grid_posterior(ys, "a", lambda a: torch.full_like(a, -math.log(2.0)),
                                     grid)
        print(f"T = {steps}: exact mean {exact.mean:.4f}, sd {exact.sd:.4f}")
        n, repeats = args.samples, args.repeats
        both_backends("PMMH", functools.partial(PMMH, static=["a"], num_particles=4 * steps,
                                                num_warmup=n // 2, num_samples=n, chains=4),
                      dict(num_warmup=0, num_samples=1, chains=1), ys, exact, repeats)
        both_backends("ParticleGibbs", functools.partial(
            ParticleGibbs, static=["a"], num_particles=20, num_warmup=n // 2, num_samples=n,
            chains=4), dict(num_warmup=0, num_samples=1, chains=1), ys, exact, repeats,
            option="filter_backend")
        both_backends("SMC2", functools.partial(SMC2, static=["a"], num_theta=n,
                                                num_particles=4 * steps),
                      dict(num_theta=2), ys, exact, repeats)


if __name__ == "__main__":
    main()
