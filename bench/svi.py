"""Stochastic VI steps per second: ppl side by side with NumPyro and Pyro (when installed).

Mean-field (``AutoNormal``) ADVI of Bayesian logistic regression, N = 5000 rows, D = 25
features (the data of ``bench/nuts.py``: numpy seed 0), one-particle ELBO, Adam at lr 0.01,
float32. The linear predictor is written ``(x @ beta[..., None])[..., 0]`` in every PPL, so
that it broadcasts over ppl's vectorized particles. For each PPL a *cold* run (a fresh guide
and optimizer: tracing and compilation included) and a *warm* run (the steady state, steps
after the first ``--warmup``) are timed; reported are steps/s as medians over ``--repeats``
runs and the ratios ppl / peer, with the training path ppl took (``res.extra["path"]``: the
fast path on the flat potential, or why it was refused). A peer that is not installed is
skipped with a note. A hand-written torch loop computing the same reparameterized ELBO is
plain torch's rate beside them (ppl's fast path runs the potential and the mean-field step in
C where a compiler is available, so it can pass it).

Run: ``.venv/bin/python bench/svi.py [--steps 500] [--warmup 50] [--repeats 3]
[--ppls ppl,torch,numpyro,pyro] [--threads 1]``.

    >>> rate = measure_ppl(logistic_data(200, 3), steps=4, warmup=2)
    >>> rate["warm_steps_per_s"] > 0
    True
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import platform
import statistics
import time

import numpy as np
import torch

from ppl import infer, model, plate, sample
from ppl.inference.vi import ELBO, VI, AutoNormal
from ppl.stdlib import Bernoulli, Normal


def logistic_data(n: int = 5000, d: int = 25, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard normal features; true intercept 0.3 and coefficients ~ Normal(0, 0.5)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    beta = rng.normal(0.0, 0.5, d)
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-(0.3 + x @ beta)))
    return {"x": x.astype(np.float32), "y": y.astype(np.float32)}


@model
def logistic(x, y):
    alpha = sample("alpha", Normal(0.0, 1.0))
    with plate("features", x.shape[1]):
        beta = sample("beta", Normal(0.0, 1.0))
    with plate("data", x.shape[0]):
        sample("y", Bernoulli(logits=alpha + (x @ beta[..., None])[..., 0]), obs=y)


def _rates(total_s: float, warm_s: float, steps: int, warmup: int) -> dict[str, float]:
    return {"cold_steps_per_s": steps / total_s, "warm_steps_per_s": (steps - warmup) / warm_s}


def measure_ppl(data, steps: int, warmup: int) -> dict[str, float | str]:
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    marks: list[float] = []

    def mark(_checkpoint) -> None:
        marks.append(time.perf_counter())

    start = time.perf_counter()
    res = infer(logistic, x, y, seed=0, method=VI(
        AutoNormal(logistic), objective=ELBO(1), steps=steps, lr=0.01, evaluations=1,
        num_samples=10, checkpoint_every=warmup, on_checkpoint=mark))
    end = marks[-1]
    return {**_rates(end - start, end - marks[0], steps, warmup), "path": res.extra["path"]}


def measure_torch(data, steps: int, warmup: int) -> dict[str, float]:
    """The same mean-field reparameterized ELBO written by hand."""
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    d = x.shape[1]
    loc = torch.zeros(d + 1, requires_grad=True)
    log_scale = torch.full((d + 1,), math.log(0.1), requires_grad=True)
    optimizer = torch.optim.Adam([loc, log_scale], lr=0.01)
    prior = torch.distributions.Normal(0.0, 1.0)
    start = time.perf_counter()
    for step in range(steps):
        if step == warmup:
            warm = time.perf_counter()
        optimizer.zero_grad()
        q = torch.distributions.Normal(loc, log_scale.exp())
        z = q.rsample()
        logits = z[0] + x @ z[1:]
        log_lik = torch.distributions.Bernoulli(logits=logits).log_prob(y).sum()
        loss = -(log_lik + prior.log_prob(z).sum() - q.log_prob(z).sum())
        loss.backward()
        optimizer.step()
    end = time.perf_counter()
    return _rates(end - start, end - warm, steps, warmup)


def measure_numpyro(data, steps: int, warmup: int) -> dict[str, float]:
    import jax
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal as NumpyroAutoNormal

    def npmodel(x, y):
        alpha = numpyro.sample("alpha", dist.Normal(0.0, 1.0))
        with numpyro.plate("features", x.shape[1]):
            beta = numpyro.sample("beta", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=alpha + (x @ beta[..., None])[..., 0]), obs=y)

    x, y = jax.numpy.asarray(data["x"]), jax.numpy.asarray(data["y"])
    svi = SVI(npmodel, NumpyroAutoNormal(npmodel), numpyro.optim.Adam(0.01), Trace_ELBO())
    start = time.perf_counter()
    state = svi.init(jax.random.PRNGKey(0), x, y)
    update = jax.jit(svi.update)
    for step in range(steps):
        if step == warmup:
            jax.block_until_ready(state)
            warm = time.perf_counter()
        state, _ = update(state, x, y)
    jax.block_until_ready(state)
    end = time.perf_counter()
    return _rates(end - start, end - warm, steps, warmup)


def measure_pyro(data, steps: int, warmup: int) -> dict[str, float]:
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal as PyroAutoNormal

    def pymodel(x, y):
        alpha = pyro.sample("alpha", dist.Normal(0.0, 1.0))
        with pyro.plate("features", x.shape[1]):
            beta = pyro.sample("beta", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=alpha + (x @ beta[..., None])[..., 0]), obs=y)

    pyro.clear_param_store()
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    svi = SVI(pymodel, PyroAutoNormal(pymodel), pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    start = time.perf_counter()
    for step in range(steps):
        if step == warmup:
            warm = time.perf_counter()
        svi.step(x, y)
    end = time.perf_counter()
    return _rates(end - start, end - warm, steps, warmup)


MEASURES = {"ppl": measure_ppl, "torch": measure_torch, "numpyro": measure_numpyro,
            "pyro": measure_pyro}
MODULES = {"numpyro": "numpyro", "pyro": "pyro"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ppls", default="ppl,torch,numpyro,pyro")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = logistic_data()
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
          f"threads; N=5000 D=25, {args.steps} steps ({args.warmup} warmup), "
          f"median of {args.repeats}")
    results = {}
    for name in args.ppls.split(","):
        module = MODULES.get(name)
        if module and importlib.util.find_spec(module) is None:
            print(f"{name:8s} skipped: not installed (pip install -e '.[bench]')")
            continue
        runs = [MEASURES[name](data, args.steps, args.warmup) for _ in range(args.repeats)]
        results[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]
                         if k != "path"}
        row = results[name]
        path = f"   ({runs[0]['path']})" if "path" in runs[0] else ""
        print(f"{name:8s} cold {row['cold_steps_per_s']:8.1f} steps/s   "
              f"warm {row['warm_steps_per_s']:8.1f} steps/s{path}")
    if "ppl" in results:
        for peer in ("torch", "numpyro", "pyro"):
            if peer in results:
                ratios = [results["ppl"][k] / results[peer][k]
                          for k in ("warm_steps_per_s", "cold_steps_per_s")]
                print(f"ppl / {peer}: warm {ratios[0]:.2f}x, cold {ratios[1]:.2f}x")


if __name__ == "__main__":
    main()
