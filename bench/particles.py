"""One bootstrap particle-filter step on the particle engine vs a hand-written torch filter.

The 1-D linear-Gaussian model ``x_t = 0.9 x_{t-1} + N(0, 1)``, ``y_t = x_t + N(0, 1)``
(T steps, unrolled into the graph). A filter step is: run the engine's generated step
(draw x_t for N particles, weight by y_t), accumulate log Z, multinomial resampling in
float64, and re-index the live latents; the hand filter does the same in a few torch lines.
Reports the median over repeats of the µs per step at each N and the ratio engine / hand,
with the log-Z error vs the Kalman filter as a check that both filter the same model; then
the propagate-and-weight part alone (``run_step`` vs the hand filter's two lines, no
resampling), the engine's own share of a step.

First, how cutting the schedule scales with T (a chain built with ``GraphBuilder``, CPU time
of this process, per step: flat when linear).

Run: .venv/bin/python bench/particles.py [--repeats 5] [--particles 1000,10000,100000]
     [--schedule-steps 1000,10000,100000]
"""

import argparse
import math
import os
import platform
import statistics
import time

import torch

from ppl import model, sample
from ppl.inference.lowering.particles import ParticleEngine, Schedule
from ppl.ir import GraphBuilder
from ppl.stdlib import Normal

PHI = 0.9


@model
def linear_gaussian(ys):
    x = sample("x_0", Normal(0.0, 1.0))
    sample("y_0", Normal(x, 1.0), obs=ys[0])
    for t in range(1, len(ys)):
        x = sample(f"x_{t}", Normal(PHI * x, 1.0))
        sample(f"y_{t}", Normal(x, 1.0), obs=ys[t])


def chain_graph(num_steps: int):
    b = GraphBuilder("chain")
    x = 0.0
    for t in range(num_steps):
        x = b.add("sample", "Normal", kwargs=(("loc", x), ("scale", 1.0)), address=f"x_{t}")
        b.add("observe", "Normal", args=(0.5,), kwargs=(("loc", x), ("scale", 1.0)),
              address=f"y_{t}")
    b.add("output", "output", args=(None,))
    return b.build()


def schedule_table(lengths: list[int], repeats: int) -> None:
    print(f"{'T':>8} {'schedule s':>11} {'us/step':>8}")
    for num_steps in lengths:
        graph = chain_graph(num_steps)
        times = []
        for _ in range(repeats):
            start = time.process_time()
            Schedule.from_graph(graph)
            times.append(time.process_time() - start)
        seconds = statistics.median(times)
        print(f"{num_steps:>8} {seconds:>11.3f} {seconds / num_steps * 1e6:>8.1f}")


def kalman_log_evidence(ys: torch.Tensor) -> float:
    mean, var, log_z = 0.0, 1.0, 0.0
    for t, y in enumerate(ys.tolist()):
        if t > 0:
            mean, var = PHI * mean, PHI**2 * var + 1.0
        s = var + 1.0
        log_z += -0.5 * (math.log(2 * math.pi * s) + (y - mean) ** 2 / s)
        gain = var / s
        mean, var = mean + gain * (y - mean), (1.0 - gain) * var
    return log_z


def engine_filter(engine: ParticleEngine, num: int, gen: torch.Generator) -> float:
    live, log_z = {}, 0.0
    log_n = math.log(num)
    for k in range(engine.num_steps):
        out = engine.run_step(k, live, num, gen)
        log_w = out.log_weight
        log_z += float(torch.logsumexp(log_w, 0)) - log_n
        ancestors = torch.multinomial(torch.softmax(log_w, 0), num, True, generator=gen)
        keep = engine.needed_after(k)
        live = {a: v[ancestors] for a, v in out.values.items() if a in keep}
    return log_z


def hand_filter(ys: torch.Tensor, num: int, gen: torch.Generator) -> float:
    log_z, log_n = 0.0, math.log(num)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    x = None
    for y in ys.to(torch.float64):
        noise = torch.randn(num, generator=gen, dtype=torch.float64)
        x = noise if x is None else PHI * x + noise
        log_w = -0.5 * (y - x) ** 2 - half_log_2pi
        log_z += float(torch.logsumexp(log_w, 0)) - log_n
        x = x[torch.multinomial(torch.softmax(log_w, 0), num, True, generator=gen)]
    return log_z


def call_us(fn, calls: int, repeats: int) -> float:
    """The median over ``repeats`` of the µs per call of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def per_step_us(fn, steps: int, repeats: int) -> tuple[float, float]:
    """The median µs per step over ``repeats`` runs, and the last run's log Z."""
    times, log_z = [], 0.0
    for seed in range(repeats):
        gen = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        log_z = fn(gen)
        times.append((time.perf_counter() - start) / steps * 1e6)
    return statistics.median(times), log_z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--particles", type=lambda s: [int(n) for n in s.split(",")],
                        default=[1_000, 10_000, 100_000])
    parser.add_argument("--schedule-steps", type=lambda s: [int(n) for n in s.split(",")],
                        default=[1_000, 10_000, 100_000])
    options = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; torch {torch.__version__} (1 thread), "
          f"python {platform.python_version()}; T={options.steps}, medians of "
          f"{options.repeats}")
    schedule_table(options.schedule_steps, min(options.repeats, 3))
    torch.manual_seed(0)
    x, ys = torch.randn(()), []
    for _ in range(options.steps):
        ys.append(float(x + torch.randn(())))
        x = PHI * x + torch.randn(())
    ys = torch.tensor(ys)
    start = time.perf_counter()
    engine = ParticleEngine.from_graph(linear_gaussian.graph(ys))
    print(f"trace + schedule + generate {options.steps} steps: "
          f"{time.perf_counter() - start:.2f} s")
    exact = kalman_log_evidence(ys)
    print(f"{'N':>8} {'engine us/step':>15} {'hand us/step':>13} {'ratio':>6} "
          f"{'engine dlogZ':>13} {'hand dlogZ':>11}")
    for num in options.particles:
        engine_us, engine_z = per_step_us(lambda g, n=num: engine_filter(engine, n, g),
                                          options.steps, options.repeats)
        hand_us, hand_z = per_step_us(lambda g, n=num: hand_filter(ys, n, g),
                                      options.steps, options.repeats)
        print(f"{num:>8} {engine_us:>15.1f} {hand_us:>13.1f} {engine_us / hand_us:>6.2f} "
              f"{engine_z - exact:>13.3f} {hand_z - exact:>11.3f}")
    print(f"propagate and weight only (step {options.steps // 2}, no resampling):")
    print(f"{'N':>8} {'run_step us':>12} {'hand us':>8} {'ratio':>6}")
    k = options.steps // 2
    y = ys[k].to(torch.float64)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    for num in options.particles:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(num, dtype=torch.float64, generator=gen)
        live = {f"x_{k - 1}": x}
        calls = max(10, 200_000 // num)
        engine_us = call_us(lambda n=num, live=live, g=gen: engine.run_step(k, live, n, g), calls,
                            options.repeats)

        def hand(n=num, x=x, gen=gen):
            new = PHI * x + torch.randn(n, generator=gen, dtype=torch.float64)
            return new, -0.5 * (y - new) ** 2 - half_log_2pi

        hand_us = call_us(hand, calls, options.repeats)
        print(f"{num:>8} {engine_us:>12.1f} {hand_us:>8.1f} {engine_us / hand_us:>6.2f}")


if __name__ == "__main__":
    main()
