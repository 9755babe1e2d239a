"""Lowering ``scan`` models for MCMC: trace, lower and native compile time against T, and the
cost of one gradient.

``FlatModel.from_graph`` vectorizes a loop whose carry is its step's own value
(``ppl.passes.vectorize_loops``), so the tape and the C stay the size of one step. For an
AR(1) and a stochastic-volatility (SV) scan model at several T: median seconds of
``model.graph`` (a fresh trace), ``FlatModel.from_graph`` (vectorize, unconstrain, tape, C
source) and the C compile (a fresh cache directory, so every build is cold); then µs per
log density and gradient (one chain, native) of SV at ``--grad-steps``, beside NumPyro's
jitted ``jax.grad`` of the same scan model's potential when NumPyro is installed.

Run: .venv/bin/python bench/scan_lowering.py [--repeats N] [--steps 1000,10000,100000]
"""

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

from ppl.inference.lowering import FlatModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequential import ar1_scan, fresh_graph, median_seconds, sv_scan  # noqa: E402

F64 = torch.float64


def cold_compile(graph) -> None:
    os.environ["PPL_CACHE_DIR"] = tempfile.mkdtemp(prefix="ppl-bench-")
    FlatModel.from_graph(graph, backend="native").build_native()


def lowering_row(name: str, m, T: int, repeats: int) -> str:
    y = torch.randn(T, dtype=F64)
    graph = fresh_graph(m, y)
    trace_s = median_seconds(lambda: fresh_graph(m, y), repeats)
    lower_s = median_seconds(lambda: FlatModel.from_graph(graph, backend="native"), repeats)
    compile_s = median_seconds(lambda: cold_compile(graph), max(1, repeats // 2))
    tape = len(FlatModel.from_graph(graph, backend="generated")._lowered.tape.instrs)
    return (f"{name:>5} {T:>8} {trace_s * 1e3:>8.1f}ms {lower_s * 1e3:>8.1f}ms "
            f"{compile_s:>8.2f}s {tape:>6}")


def ppl_gradient_us(T: int, repeats: int, calls: int = 2000) -> float:
    flat = FlatModel.from_graph(sv_scan.graph(torch.randn(T, dtype=F64)), backend="native")
    flat.build_native()
    z = 0.1 * torch.randn(1, flat.dim, dtype=F64)
    flat.log_density_and_grad(z)

    def run():
        for _ in range(calls):
            flat.log_density_and_grad(z)

    return median_seconds(run, repeats) / calls * 1e6


def numpyro_gradient_us(T: int, repeats: int, calls: int = 2000) -> float | None:
    try:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist
        from numpyro.contrib.control_flow import scan as np_scan
        from numpyro.infer.util import initialize_model
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)

    def sv_numpyro(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        phi = numpyro.sample("phi", dist.Normal(0.9, 0.05))
        sigma = numpyro.sample("sigma", dist.HalfNormal(0.5))

        def step(h, y_t):
            h = numpyro.sample("h", dist.Normal(mu + phi * (h - mu), sigma))
            numpyro.sample("y", dist.Normal(0.0, jnp.exp(h / 2)), obs=y_t)
            return h, None

        np_scan(step, mu, y)

    y = jnp.asarray(torch.randn(T, dtype=F64).numpy())
    info = initialize_model(jax.random.PRNGKey(0), sv_numpyro, model_args=(y,))
    grad = jax.jit(jax.value_and_grad(info.potential_fn))
    z = info.param_info.z
    jax.block_until_ready(grad(z))

    def run():
        for _ in range(calls):
            out = grad(z)
        jax.block_until_ready(out)

    return median_seconds(run, repeats) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=lambda s: [int(t) for t in s.split(",")],
                        default=[1_000, 10_000, 100_000])
    parser.add_argument("--grad-steps", type=int, default=1_000)
    options = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; torch {torch.__version__}, "
          f"python {platform.python_version()}; medians of {options.repeats}")
    print(f"{'model':>5} {'T':>8} {'trace':>10} {'lower':>10} {'compile':>9} {'tape':>6}")
    for name, m in (("AR(1)", ar1_scan), ("SV", sv_scan)):
        for T in options.steps:
            print(lowering_row(name, m, T, options.repeats))
    T = options.grad_steps
    print(f"SV, T={T}, one chain: ppl native {ppl_gradient_us(T, options.repeats):.1f} us per "
          "log density and gradient")
    peer = numpyro_gradient_us(T, options.repeats)
    print("NumPyro: not installed (skipped)" if peer is None else
          f"NumPyro jit(value_and_grad(potential)): {peer:.1f} us")


if __name__ == "__main__":
    main()
