"""Sampler overhead of the MCMC kernels, separated from the cost of the log density.

Targets (log density and analytic gradient written by hand in torch, no autograd):

* ``normal100``: 100-d standard normal;
* ``logistic25``: Bayesian logistic regression, N = 5000 synthetic rows (fixed seed), D = 25,
  N(0, 1) prior: ``log p = sum_i y_i eta_i - softplus(eta_i) - |beta|^2 / 2``.

For each target and for 1 and 4 batched chains, NUTS runs ``--iterations`` transitions with
the step size and diagonal metric from a short Stan warmup, five times; reported are medians
of: gradient evaluations per second (the chains' own leapfrog steps; lockstep padding not
counted), the density's share of the wall time, and the sampler overhead per leapfrog step
beyond the density call, ``(wall - time inside the density) / lockstep steps``. Rows compare
plain lockstep (``compact=False``), compaction (the default), ``chain_method="sequential"``,
1 vs 2 torch threads, static HMC (the bare integrator loop), and the same for chains whose
step sizes differ by factors of 2 (``eps/2^c``: their trees differ in depth, so lockstep
chains wait for the deepest).

A first table isolates NUTS's own cost on a trivially cheap density (10-d and 30-d standard
normal) at fixed step sizes, i.e. at tree depths 2 to 6: kernel overhead per leapfrog step
(thread CPU time outside the density, per density call; the minimum over repeats, since
other processes only ever add time) and torch calls per leapfrog step (counted with a
``TorchFunctionMode``, the density's own four excluded: a load-independent measure).

Run: ``.venv/bin/python bench/mcmc_kernels.py [--iterations 200] [--repeats 5]
[--overhead-only]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.overrides import TorchFunctionMode

from ppl.inference.mcmc import HMC, NUTS, chain_generators, sample


def normal100():
    def fn(z):
        return -0.5 * (z * z).sum(-1), -z

    return fn, 100


def logistic25(n: int = 5000, d: int = 25):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    beta = torch.randn(d, generator=gen, dtype=torch.float64) * 0.5
    y = torch.bernoulli(torch.sigmoid(x @ beta), generator=gen)

    def fn(b):
        eta = b @ x.T  # (C, N)
        lp = (y * eta - torch.nn.functional.softplus(eta)).sum(-1) - 0.5 * (b * b).sum(-1)
        grad = (y - torch.sigmoid(eta)) @ x - b
        return lp, grad

    return fn, d


class Timed:
    """Wraps a log density, accumulating the time spent inside it (by ``clock``: wall time
    by default) and the call count."""

    def __init__(self, fn, clock=time.perf_counter):
        self.fn, self.clock, self.seconds, self.calls = fn, clock, 0.0, 0

    def __call__(self, z):
        start = self.clock()
        out = self.fn(z)
        self.seconds += self.clock() - start
        self.calls += 1
        return out


def adapted_state(kernel, fn, dim, chains):
    init = torch.randn(chains, dim, generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64) * 0.1
    run = sample(kernel, fn, init, 300, 1, seed=0)
    return run.final_state


def measure(kernel, fn, dim, chains, iterations, repeats, method="batched", spread=False,
            threads=1):
    """Medians over repeats of (useful grads/s, density share, overhead us/step, steps/iter,
    padding fraction). ``spread``: chain c's step size is divided by 2^c, so the chains need
    different tree depths (what lockstep padding and compaction are about)."""
    state = adapted_state(kernel, fn, dim, chains)
    if spread:
        state = state._replace(step_size=state.step_size / 2.0 ** torch.arange(chains))
    torch.set_num_threads(threads)
    rows = []
    for r in range(repeats):
        timed = Timed(fn)
        if method == "sequential":
            parts = [kernel.bind(timed).init(state.position[c : c + 1]) for c in range(chains)]
            parts = [p._replace(step_size=state.step_size[c : c + 1],
                                metric=type(state.metric)(*(m[c : c + 1] for m in state.metric)))
                     for c, p in enumerate(parts)]
        bound = kernel.bind(timed)
        gens = chain_generators(100 + r, chains)
        timed.seconds, timed.calls = 0.0, 0
        useful = 0
        start = time.perf_counter()
        if method == "sequential":
            for c in range(chains):
                s = parts[c]
                for _ in range(iterations):
                    s, info = bound.step(gens[c : c + 1], s)
                    useful += int(info.num_grad_evals.sum())
        else:
            s = state
            for _ in range(iterations):
                s, info = bound.step(gens, s)
                useful += int(info.num_grad_evals.sum())
        wall = time.perf_counter() - start
        steps = timed.calls
        rows.append((useful / wall, timed.seconds / wall, (wall - timed.seconds) / steps * 1e6,
                     useful / (iterations * chains), 1.0 - useful / (steps * chains
                                                                      if method == "batched"
                                                                      else steps)))
    torch.set_num_threads(1)
    return [statistics.median(col) for col in zip(*rows, strict=True)]


class _CountCalls(TorchFunctionMode):
    """Counts torch calls (functions, methods, operators) made while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def nuts_overhead(dim, chains, step_size, iterations, repeats):
    """NUTS on a standard normal with a fixed step size: (kernel overhead in us per leapfrog
    step, torch calls per leapfrog step, leapfrog steps per transition)."""
    fn, _ = normal100()
    z0 = torch.randn(chains, dim, generator=torch.Generator().manual_seed(1),
                     dtype=torch.float64)
    times = []
    for r in range(repeats):
        timed = Timed(fn, clock=time.thread_time)
        kernel = NUTS(timed, step_size=step_size)
        state, gens = kernel.init(z0), chain_generators(100 + r, chains)
        timed.seconds, timed.calls = 0.0, 0
        start = time.thread_time()
        for _ in range(iterations):
            state, _ = kernel.step(gens, state)
        times.append(((time.thread_time() - start - timed.seconds) / timed.calls * 1e6,
                      timed.calls / iterations))
    counted = Timed(fn)
    kernel = NUTS(counted, step_size=step_size)
    state, gens = kernel.init(z0), chain_generators(100, chains)
    counted.calls = 0
    with _CountCalls() as mode:
        for _ in range(iterations):
            state, _ = kernel.step(gens, state)
    overhead = min(t for t, _ in times)
    return overhead, mode.calls / counted.calls - 4, statistics.median(c for _, c in times)


def density_threads(fn, dim, chains, threads, calls=300):
    torch.set_num_threads(threads)
    z = torch.randn(chains, dim, dtype=torch.float64) * 0.1
    for _ in range(20):
        fn(z)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn(z)
        times.append((time.perf_counter() - start) / calls * 1e6)
    torch.set_num_threads(1)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the NUTS overhead table on a cheap density")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'NUTS, standard normal':<22} {'eps':>5} {'chains':>6} {'steps/iter':>10} "
          f"{'overhead us/step':>17} {'torch calls/step':>17}")
    for dim in (10, 30):
        for step_size in (1.0, 0.5, 0.2, 0.05):
            iterations = max(20, round(args.iterations * step_size))
            for chains in (1, 4):
                over, calls, steps = nuts_overhead(dim, chains, step_size, iterations,
                                                   args.repeats)
                print(f"{f'D = {dim}':<22} {step_size:>5} {chains:>6} {steps:>10.1f} "
                      f"{over:>17.1f} {calls:>17.1f}", flush=True)
    if args.overhead_only:
        return
    print()
    header = (f"{'target':<11} {'config':<26} {'grads/s':>9} {'density%':>9} "
              f"{'overhead us/step':>17} {'steps/iter':>10} {'padding%':>9}")
    print(header)
    print("-" * len(header))
    for name, (fn, dim) in (("normal100", normal100()), ("logistic25", logistic25())):
        configs = [
            ("NUTS 1 chain", NUTS(), 1, "batched", False, 1),
            ("NUTS 1 chain, 2 threads", NUTS(), 1, "batched", False, 2),
            ("NUTS 4 chains lockstep", NUTS(compact=False), 4, "batched", False, 1),
            ("NUTS 4 chains compact", NUTS(compact=True), 4, "batched", False, 1),
            ("NUTS 4 sequential", NUTS(), 4, "sequential", False, 1),
            ("NUTS 4 eps/2^c lockstep", NUTS(compact=False), 4, "batched", True, 1),
            ("NUTS 4 eps/2^c compact", NUTS(compact=True), 4, "batched", True, 1),
            ("NUTS 4 eps/2^c sequential", NUTS(), 4, "sequential", True, 1),
            ("HMC 10 steps 1 chain", HMC(num_steps=10), 1, "batched", False, 1),
            ("HMC 10 steps 4 chains", HMC(num_steps=10), 4, "batched", False, 1),
        ]
        for label, kernel, chains, method, spread, threads in configs:
            iters = args.iterations if isinstance(kernel, NUTS) else max(20, args.iterations // 4)
            g, share, over, spi, pad = measure(kernel, fn, dim, chains, iters, args.repeats,
                                               method, spread, threads)
            print(f"{name:<11} {label:<26} {g:>9.0f} {100 * share:>8.1f}% {over:>17.1f} "
                  f"{spi:>10.1f} {100 * pad:>8.1f}%", flush=True)
        for chains in (1, 4):
            one, two = (density_threads(fn, dim, chains, t) for t in (1, 2))
            print(f"{name:<11} density alone, {chains} chain(s): {one:.1f} us with 1 thread, "
                  f"{two:.1f} us with 2 threads", flush=True)


if __name__ == "__main__":
    main()
