"""Cost of the graph IR: time to trace, and the generated log density vs the trace path.

Models: eight schools and a 100-step linear-Gaussian state-space model. Reports medians of
several repeats (machines here are shared and noisy) and the machine.

Run: .venv/bin/python bench/ir.py [--repeats N]
"""

import argparse
import platform
import sys
from pathlib import Path

import torch

from ppl import model, plate, sample
from ppl.ir import compile_log_density, trace_graph
from ppl.stdlib import HalfCauchy, HalfNormal, Normal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequential import median_seconds  # noqa: E402

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


@model
def eight_schools(sigma, y=None):
    mu = sample("mu", Normal(0.0, 5.0))
    tau = sample("tau", HalfCauchy(5.0))
    with plate("schools", len(sigma)):
        theta = sample("theta", Normal(mu, tau))
        sample("y", Normal(theta, sigma), obs=y)


@model
def state_space(y):
    q = sample("q", HalfNormal(1.0))
    x = torch.zeros(())
    for t in range(len(y)):
        x = sample(f"x_{t}", Normal(0.9 * x, q))
        sample(f"y_{t}", Normal(x, 0.5), obs=y[t])


def report(name, m, args, kwargs, repeats):
    trace_s = median_seconds(lambda: trace_graph(m, *args, **kwargs), repeats)
    graph = trace_graph(m, *args, **kwargs)
    draw = m.sample(*args, seed=0, **kwargs)
    latents = {s.name: draw[s.name] for s in m.trace(*args, **kwargs).latent_sites()}
    generated = compile_log_density(graph)
    assert torch.allclose(generated(latents), m.log_density(latents, *args, **kwargs))
    gen_s = median_seconds(lambda: generated(latents), repeats, inner=50)
    path_s = median_seconds(lambda: m.log_density(latents, *args, **kwargs), repeats, inner=20)
    print(f"{name:14s} {len(graph):6d} {trace_s * 1e3:10.2f} {path_s * 1e6:14.1f} "
          f"{gen_s * 1e6:14.1f} {path_s / gen_s:8.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch thread(s), "
          f"torch {torch.__version__}, python {platform.python_version()}")
    print(f"{'model':14s} {'nodes':>6s} {'trace ms':>10s} "
          f"{'trace-path us':>14s} {'generated us':>14s} {'speedup':>9s}")
    report("eight_schools", eight_schools, (SIGMA,), {"y": Y}, repeats)
    y = torch.cumsum(torch.randn(100, generator=torch.Generator().manual_seed(0)), 0)
    report("state_space100", state_space, (y,), {}, repeats)


if __name__ == "__main__":
    main()
