"""Tracing a ``scan`` model: the step is traced once, so ``model.graph`` costs the same at any T.

The AR(1) state-space model ``x_t ~ Normal(rho x_{t-1}, 1)``, ``y_t ~ Normal(x_t, 1)`` written
with ``ppl.scan`` (and, for comparison, as a Python loop over ``x[t]`` sites): median seconds
of ``model.graph`` (a fresh trace each time: the model's graph cache is cleared), of the
generated log density of the loop graph (one ``for`` over T), and of ``unroll`` (the
reference semantics, linear in T), at several T. Reports the machine.

Run: .venv/bin/python bench/scan.py [--repeats N] [--steps 1000,10000,100000]
"""

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

from ppl.ir import compile_log_density
from ppl.passes import unroll

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequential import ar1_loop, ar1_scan, fresh_graph, median_seconds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=lambda s: [int(t) for t in s.split(",")],
                        default=[1_000, 10_000, 100_000])
    parser.add_argument("--loop-max", type=int, default=10_000,
                        help="largest T at which the Python-loop twin is traced")
    options = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; torch {torch.__version__}, "
          f"python {platform.python_version()}; medians of {options.repeats}")
    print(f"{'T':>8} {'scan graph':>11} {'nodes':>6} {'log density':>12} {'unroll':>9} "
          f"{'loop graph':>11}")
    for T in options.steps:
        print(row(T, options.repeats, options.loop_max))


def row(T: int, repeats: int, loop_max: int) -> str:
    """One line of the table: the timings at T steps."""
    y = torch.randn(T)
    graph = fresh_graph(ar1_scan, y)
    trace_s = median_seconds(lambda: fresh_graph(ar1_scan, y), repeats)
    lp = compile_log_density(graph)
    values = {"rho": torch.tensor(0.5), **{f"x[{t}]": torch.zeros(()) for t in range(T)}}
    lp_s = median_seconds(lambda: lp(values), repeats)
    unroll_s = median_seconds(lambda: unroll()(graph), max(1, repeats // 2))
    loop_s = (median_seconds(lambda: fresh_graph(ar1_loop, y), max(1, repeats // 2))
              if T <= loop_max else float("nan"))
    return (f"{T:>8} {trace_s * 1e3:>9.1f}ms {len(graph):>6} {lp_s * 1e3:>10.1f}ms "
            f"{unroll_s:>8.2f}s {loop_s:>10.2f}s")


if __name__ == "__main__":
    main()
