"""SMC proposals on the 1-D linear-Gaussian model: the variance of log Zhat across seeds and
the time per filter run, for the bootstrap filter, the auxiliary filter (look-ahead at the
prior mean), the locally optimal proposal and the fully adapted filter (both), each at the
same particle count, through ``SMC`` on the model's graph: the engine is built once per
method and run by the driver ``SMC.driver`` picks, as ``infer`` does (the C filter where it
applies; the auxiliary filter is torch-only, so its rows measure the torch driver). The
``driver`` column says which ran.

``variance x time`` is the work-normalized figure: halving it means the same accuracy in
half the time. Two regimes: observations as noisy as the dynamics (``r = 1, q = 0.5``) and
informative observations (``r = 0.25, q = 1``), where the prior proposes badly.

Run: .venv/bin/python bench/proposals.py [--seeds 50] [--steps 50] [--particles 100 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from ppl.inference import SMC
from ppl.inference.testing import LinearGaussianSSM

METHODS = {
    "bootstrap": dict(),
    "auxiliary": dict(auxiliary=True),
    "optimal": dict(proposal="optimal"),
    "fully adapted": dict(proposal="optimal", auxiliary=True),
}
REGIMES = {"r=1, q=0.5": LinearGaussianSSM(a=0.9, q=0.5, r=1.0),
           "r=0.25, q=1": LinearGaussianSSM(a=0.9, q=1.0, r=0.25)}


def measure(ssm: LinearGaussianSSM, ys: torch.Tensor, method: SMC, seeds: int
            ) -> tuple[float, float, float, str]:
    """(variance of log Zhat, mean log Zhat - log Z, median seconds per run, the backend)."""
    engine = method.engine(ssm.model(), (ys,))
    driver, _ = method.driver(engine)  # what SMC.run uses: C when it applies
    res = driver.run_program(engine, torch.Generator().manual_seed(0))  # warm
    backend = res.extra.get("backend", "torch")
    log_zs, times = [], []
    for seed in range(seeds):
        start = time.perf_counter()
        res = driver.run_program(engine, torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - start)
        log_zs.append(float(res.log_evidence))
    values = torch.tensor(log_zs, dtype=torch.float64)
    error = float(values.mean()) - ssm.kalman(ys).log_evidence
    return float(values.var()), error, statistics.median(times), backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--particles", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cpus, T={args.steps}, "
          f"{args.seeds} seeds")
    for regime, ssm in REGIMES.items():
        ys = ssm.simulate(args.steps, seed=1)
        for n in args.particles:
            print(f"\n{regime}, N={n}")
            print(f"{'method':>14} {'var log Z':>10} {'bias':>8} {'ms/run':>8} "
                  f"{'var x time':>11} {'driver':>7}")
            for name, settings in METHODS.items():
                var, bias, seconds, backend = measure(ssm, ys, SMC(n, **settings), args.seeds)
                print(f"{name:>14} {var:10.4f} {bias:8.3f} {1e3 * seconds:8.2f} "
                      f"{var * seconds * 1e3:11.4f} {backend:>7}")


if __name__ == "__main__":
    main()
