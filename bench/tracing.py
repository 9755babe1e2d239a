"""How tracing and lowering scale with the length of an unrolled time series.

The AR(1) state-space model ``x_t ~ Normal(0.9 x_{t-1}, 1)``, ``y_t ~ Normal(x_t, 1)`` written
as a Python loop: ``model.graph`` (trace into the IR) and ``FlatModel.from_graph`` (unconstrain
pass, tape, generated code) at several T, medians of several repeats, with the time per step,
which stays flat when the cost is linear in T. Reports the machine.

Run: .venv/bin/python bench/tracing.py [--repeats N] [--steps 1000,10000]
"""

import argparse
import os
import platform
import statistics
import time

import torch

from ppl import model, sample
from ppl.inference.lowering import FlatModel
from ppl.stdlib import Normal


@model
def ar1(y):
    x = torch.zeros(())
    for t in range(len(y)):
        x = sample(f"x_{t}", Normal(0.9 * x, 1.0))
        sample(f"y_{t}", Normal(x, 1.0), obs=y[t])


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=lambda s: [int(t) for t in s.split(",")],
                        default=[1_000, 10_000])
    parser.add_argument("--lower", action="store_true", help="also time FlatModel.from_graph")
    options = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; torch {torch.__version__}, "
          f"python {platform.python_version()}; medians of {options.repeats}")
    print(f"{'T':>8} {'nodes':>8} {'graph s':>9} {'us/step':>8}"
          + (f" {'lower s':>9} {'us/step':>8}" if options.lower else ""))
    for steps in options.steps:
        y = torch.randn(steps)

        def trace(y=y):
            ar1._graphs.clear()  # trace afresh each repeat
            return ar1.graph(y)

        graph = trace()
        traced = median_seconds(trace, options.repeats)
        line = f"{steps:>8} {len(graph.nodes):>8} {traced:>9.2f} {traced / steps * 1e6:>8.0f}"
        if options.lower:
            lowered = median_seconds(lambda g=graph: FlatModel.from_graph(g, "generated"),
                                     options.repeats)
            line += f" {lowered:>9.2f} {lowered / steps * 1e6:>8.0f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
