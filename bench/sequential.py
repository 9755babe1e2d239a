"""What the sequential-model benchmarks share (``scan.py``, ``scan_lowering.py``,
``tracing.py``): a median timer, a graph traced afresh, and the scan models they time.

    >>> import torch
    >>> len(fresh_graph(ar1_scan, torch.zeros(5)).nodes) > 0
    True
"""

from __future__ import annotations

import statistics
import time

import torch

from ppl import model, sample, scan
from ppl.stdlib import HalfNormal, Normal


def median_times(fn, repeats: int, inner: int = 1) -> tuple[float, float]:
    """The medians over ``repeats`` of the wall and the CPU seconds (``time.process_time``,
    which the other processes of a shared machine inflate less) one call of ``fn`` takes
    (``inner`` calls timed together, for calls too short to time alone)."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(inner):
            fn()
        walls.append((time.perf_counter() - wall) / inner)
        cpus.append((time.process_time() - cpu) / inner)
    return statistics.median(walls), statistics.median(cpus)


def median_seconds(fn, repeats: int, inner: int = 1) -> float:
    """The median wall seconds of one call of ``fn`` (see :func:`median_times`)."""
    return median_times(fn, repeats, inner)[0]


def fresh_graph(m, y):
    """``m``'s graph traced anew (its cache cleared), so tracing is what is timed."""
    m._graphs.clear()
    return m.graph(y)


@model
def ar1_scan(y):
    """AR(1) with an unknown coefficient, written with ``scan``."""
    rho = sample("rho", Normal(0.0, 1.0))

    def step(x, y_t):
        x = sample("x", Normal(rho * x, 1.0))
        sample("y", Normal(x, 1.0), obs=y_t)
        return x, None

    scan(step, torch.zeros((), dtype=y.dtype), y)


@model
def ar1_loop(y):
    """``ar1_scan``'s twin as a Python loop, with the scan's addresses ``x[t]``."""
    rho = sample("rho", Normal(0.0, 1.0))
    x = torch.zeros(())
    for t in range(len(y)):
        x = sample(f"x[{t}]", Normal(rho * x, 1.0))
        sample(f"y[{t}]", Normal(x, 1.0), obs=y[t])


@model
def sv_scan(y):
    """Stochastic volatility: a mean-reverting log-variance ``h`` behind zero-mean returns."""
    mu = sample("mu", Normal(0.0, 1.0))
    phi = sample("phi", Normal(0.9, 0.05))
    sigma = sample("sigma", HalfNormal(0.5))

    def step(h, y_t):
        h = sample("h", Normal(mu + phi * (h - mu), sigma))
        sample("y", Normal(0.0, torch.exp(h / 2)), obs=y_t)
        return h, None

    scan(step, mu, y)
