"""How tracing and lowering scale with the length of an unrolled time series.

The AR(1) state-space model ``x_t ~ Normal(0.9 x_{t-1}, 1)``, ``y_t ~ Normal(x_t, 1)`` written
as a Python loop, stage by stage: ``model.graph`` (trace into the IR), ``simplify``,
``FlatModel.from_graph`` (unconstrain pass, tape, generated code; ``--lower``, on the backend
``--backend``: ``generated`` by default, ``auto`` emits the native library's C as well) and
the native library's C emission and compilation (``--native``, into a fresh cache directory
so that it really compiles, once), at several T: medians of several repeats of the wall
and the CPU seconds (``time.process_time``, which the other processes of a shared machine
inflate less), with the CPU time per step, which stays flat when the cost is linear in T
(the C compiler runs in a child process, whose CPU time is not counted: read ``cc`` by its
wall time).
Reports the machine and its load (times on a shared machine grow with the load).

Where ``model.graph`` spends its time at T = 10,000 (py-spy, after the tracing2 work, about
145 us per step): the distribution constructors 20-24% (torch's ``broadcast_all`` 13%, the
tracer's deferral of what they derived 6-9%), the two recorded operations 17% (the
operations themselves 4%), per site the node and its distribution spec 14-18%, the prior
draw 11% (lending the seed stream to torch's generator 4%), the parameter checks 5-7% and
the observed value's checks 7%; building and linting the graph 5%, dropping dead calls 3%,
and the cyclic collector's first pass once tracing re-enables it 4-5%.

Run: .venv/bin/python bench/tracing.py [--repeats N] [--steps 1000,10000,100000] [--lower]
[--backend generated|auto] [--native]
"""

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

from ppl import model, sample
from ppl.inference.lowering import FlatModel
from ppl.inference.lowering.native import NativePotential
from ppl.passes import simplify
from ppl.stdlib import Normal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequential import median_times  # noqa: E402


@model
def ar1(y):
    x = torch.zeros(())
    for t in range(len(y)):
        x = sample(f"x_{t}", Normal(0.9 * x, 1.0))
        sample(f"y_{t}", Normal(x, 1.0), obs=y[t])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=lambda s: [int(t) for t in s.split(",")],
                        default=[1_000, 10_000])
    parser.add_argument("--lower", action="store_true", help="also time FlatModel.from_graph")
    parser.add_argument("--backend", default="generated", help="FlatModel.from_graph's backend")
    parser.add_argument("--native", action="store_true",
                        help="also time the C emission and one compilation (not repeated)")
    options = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; torch {torch.__version__}, "
          f"python {platform.python_version()}; medians of {options.repeats}; "
          f"from_graph backend {options.backend}")
    columns = ["graph", "simplify"] + ["from_graph"] * options.lower + ["emit C", "cc"] * (
        options.native)
    print(f"{'T':>8} {'nodes':>8}"
          + "".join(f" {c + ' s':>12} {'cpu s':>7} {'us/step':>7}" for c in columns))
    for steps in options.steps:
        y = torch.randn(steps)

        def trace(y=y):
            ar1._graphs.clear()  # trace afresh each repeat
            return ar1.graph(y)

        graph = trace()
        times = [median_times(trace, options.repeats),
                 median_times(lambda g=graph: simplify()(g), options.repeats)]
        if options.lower:
            times.append(median_times(
                lambda g=graph: FlatModel.from_graph(g, options.backend), options.repeats))
        if options.native:
            lowered = FlatModel.from_graph(graph, "generated")._lowered
            times.append(median_times(lambda low=lowered: NativePotential.from_lowered(low), 1))
            native = NativePotential.from_lowered(lowered)
            with tempfile.TemporaryDirectory() as cache:
                os.environ["PPL_CACHE_DIR"] = cache
                native.bind_inputs([])
                times.append(median_times(native.build, 1))
        print(f"{steps:>8} {len(graph.nodes):>8}"
              + "".join(f" {wall:>12.2f} {cpu:>7.2f} {cpu / steps * 1e6:>7.0f}"
                        for wall, cpu in times), flush=True)


if __name__ == "__main__":
    main()
