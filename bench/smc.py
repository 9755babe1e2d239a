"""SMC benchmarks: the particle-filter driver and tempered SMC on logistic regression.

1. **Bootstrap particle filter**, 1-D linear Gaussian model (T=100 steps), at several
   particle counts: microseconds per step, particle-steps per second and |log Z - Kalman|,
   for ppl's ``ParticleFilter`` running a hand-written particle program (the driver's cost:
   resampling, weights, evidence), ppl's ``SMC`` on the model with the torch driver (the
   particle engine's generated step code; lowered once, outside the timing) and with the C
   filter (``ppl-native``: ``backend="native"``, steps and driver in one C call per run;
   compiled once, outside the timing), a hand-written numpy filter and,
   when installed, Pyro's ``SMCFilter`` (which keeps no evidence estimate; a run its float32
   resampler crashes with an out-of-range index is reported as crashed) and the
   ``particles`` package (``particles.SMC`` on a ``StateSpaceModel``, bootstrap). Every
   filter resamples systematically at every step and keeps no ancestor indices.
2. **Tempered SMC**, logistic regression (N=5000 rows, D=25): wall time, stages, the final
   Kish ESS and ESS per second, the largest error of the posterior mean in posterior sds
   against a long NUTS run; BlackJAX's adaptive tempered SMC (MALA moves, the same particle
   count and target ESS; timed after a compiling run) when ``blackjax`` is installed, else
   skipped.

Medians of ``--repeats`` runs (machines here are shared and noisy).

Run: .venv/bin/python bench/smc.py [--repeats N] [--particles 1000 10000 100000] [--threads T]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ppl import infer, model, plate, sample
from ppl.inference import NUTS
from ppl.inference.lowering.particles import StepOutput
from ppl.inference.mcmc import MALA
from ppl.inference.smc import SMC, ParticleFilter, TemperedSMC
from ppl.inference.testing import LinearGaussianSSM
from ppl.stdlib import Bernoulli, Normal

A, Q, R = 0.9, 0.5, 1.0
EXACT = LinearGaussianSSM(a=A, q=Q, r=R)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class LinearGaussian:
    """x_0 ~ N(0, 1), x_t = A x_{t-1} + N(0, Q^2), y_t = x_t + N(0, R^2); bootstrap."""

    def __init__(self, ys: torch.Tensor):
        self.ys = ys

    @property
    def num_steps(self) -> int:
        return len(self.ys)

    def step_sites(self, k):
        return (f"x_{k}", f"y_{k}")

    def needed_after(self, k):
        return frozenset({f"x_{k}"}) if k < self.num_steps - 1 else frozenset()

    def run_step(self, k, live, n, generator=None):
        noise = torch.randn(n, generator=generator, dtype=torch.float64)
        x = noise if k == 0 else A * live[f"x_{k - 1}"] + Q * noise
        log_w = -0.5 * ((self.ys[k] - x) / R) ** 2 - HALF_LOG_2PI - math.log(R)
        return StepOutput({f"x_{k}": x}, log_w, {f"y_{k}": log_w})


def numpy_filter(ys: np.ndarray, n: int, rng: np.random.Generator) -> float:
    """A hand-written bootstrap filter, systematic resampling every step."""
    x, log_z, log_w = rng.standard_normal(n), 0.0, np.zeros(n)
    for t, y in enumerate(ys):
        if t > 0:
            w = np.exp(log_w - log_w.max())
            cdf = np.cumsum(w / w.sum())
            index = np.minimum(np.searchsorted(cdf, (rng.random() + np.arange(n)) / n), n - 1)
            x = A * x[index] + Q * rng.standard_normal(n)
        log_w = -0.5 * ((y - x) / R) ** 2 - HALF_LOG_2PI - math.log(R)
        top = log_w.max()
        log_z += top + math.log(np.mean(np.exp(log_w - top)))
    return log_z


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def pyro_filter(ys: torch.Tensor, n: int) -> Callable[[], float] | None:
    """A run of Pyro's bootstrap ``SMCFilter`` (the guide proposes from the transition);
    None: Pyro is not installed. Pyro keeps no evidence estimate: it returns NaN."""
    if importlib.util.find_spec("pyro") is None or n > 50_000:
        return None  # pyro 1.9's float32 systematic resampler indexes past n at 100k
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SMCFilter

    class Transition:
        def __init__(self, observe: bool):
            self.observe = observe

        def init(self, state):
            self.t = 0

        def step(self, state, y=None):
            loc = torch.zeros(n, dtype=torch.float64) if self.t == 0 else A * state["x"]
            scale = 1.0 if self.t == 0 else Q
            x = pyro.sample(f"x_{self.t}", dist.Normal(loc, scale))
            if self.observe:  # the model; the guide may not write the state
                state["x"] = x
                pyro.sample(f"y_{self.t}", dist.Normal(x, R), obs=y)
            self.t += 1

    def run() -> float:
        pyro.set_rng_seed(0)
        smc = SMCFilter(Transition(True), Transition(False), num_particles=n,
                        max_plate_nesting=0, ess_threshold=1.0)
        smc.init()
        for y in ys:
            smc.step(y=y)
        return math.nan

    return run


def particles_filter(ys: torch.Tensor, n: int) -> Callable[[], float] | None:
    """A run of the ``particles`` package's bootstrap filter; None: it is not installed."""
    here = str(Path(__file__).resolve().parent)  # bench/particles.py shadows the package
    saved, sys.path[:] = list(sys.path), [p for p in sys.path
                                         if str(Path(p or ".").resolve()) != here]
    try:
        if importlib.util.find_spec("particles") is None:
            return None
        import particles
        from particles import distributions as dists
        from particles import state_space_models as ssms
    finally:
        sys.path[:] = saved

    class LinearGauss(ssms.StateSpaceModel):
        def PX0(self):
            return dists.Normal(loc=0.0, scale=1.0)

        def PX(self, t, xp):
            return dists.Normal(loc=A * xp, scale=Q)

        def PY(self, t, xp, x):
            return dists.Normal(loc=x, scale=R)

    data = ys.numpy()

    def run() -> float:
        np.random.seed(0)
        fk = ssms.Bootstrap(ssm=LinearGauss(), data=data)
        pf = particles.SMC(fk=fk, N=n, resampling="systematic", ESSrmin=1.0)
        pf.run()
        return float(pf.logLt)

    return run


def bench_filter(particles: list[int], repeats: int) -> None:
    ys = EXACT.simulate(100)
    exact = EXACT.kalman(ys).log_evidence
    print("bootstrap PF, linear Gaussian, T=100 (resampling: systematic, every step)")
    print(f"{'particles':>10} {'engine':>10} {'us/step':>10} {'steps*N/s':>12} {'|dlogZ|':>9}"
          f" {'vs numpy':>9}")
    for n in particles:
        filt = ParticleFilter(n, ess_threshold=1.0, keep_ancestors=False)
        program = LinearGaussian(ys)
        graph_smc = SMC(n, ess_threshold=1.0, keep_ancestors=False, backend="torch")
        engine = graph_smc.engine(EXACT.model(), (ys,), {})
        native, _ = SMC(n, ess_threshold=1.0, keep_ancestors=False,
                        backend="native").driver(engine)
        rng = np.random.default_rng(0)
        runs = {
            "ppl": lambda f=filt, p=program: float(
                f.run_program(p, torch.Generator().manual_seed(0)).log_evidence),
            "ppl-graph": lambda m=graph_smc, e=engine: float(
                m.filter.run_program(e, torch.Generator().manual_seed(0)).log_evidence),
            "ppl-native": lambda d=native, e=engine: float(
                d.run_program(e, torch.Generator().manual_seed(0)).log_evidence),
            "numpy": lambda n=n, g=rng: numpy_filter(ys.numpy(), n, g),
            "pyro": pyro_filter(ys, n),
            "particles": particles_filter(ys, n),
        }
        rows, crashes = {}, {}
        for name, fn in runs.items():
            try:
                rows[name] = median_time(fn, repeats) if fn is not None else None
            except IndexError as error:  # pyro's float32 resampler can index past n
                crashes[name] = error
        for name, fn in runs.items():
            if fn is None:
                print(f"{n:>10} {name:>10} skipped (not installed, or pyro above 50k particles)")
                continue
            if name in crashes:
                print(f"{n:>10} {name:>10} crashed: IndexError: {crashes[name]}")
                continue
            seconds, log_z = rows[name]
            per_step = seconds / len(ys)
            print(f"{n:>10} {name:>10} {per_step * 1e6:>10.1f} {n / per_step:>12.3g} "
                  f"{abs(log_z - exact):>9.3f} {seconds / rows['numpy'][0]:>8.2f}x")


@model
def logistic(x, y):
    w = sample("w", Normal(0.0, 1.0).expand((x.shape[1],)).to_event(1))
    with plate("data", x.shape[0]):
        sample("y", Bernoulli(logits=x @ w), obs=y)


def logistic_data(rows: int = 5000, dim: int = 25, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=g)
    w = torch.randn(dim, generator=g) * 0.5
    y = (torch.rand(rows, generator=g) < torch.sigmoid(x @ w)).float()
    return x, y  # float32, the priors' dtype (the potentials run in float64)


def blackjax_tempered(x, y, particles: int, num_moves: int) -> dict | None:
    """BlackJAX's adaptive tempered SMC with MALA moves (fixed step size 0.01: BlackJAX does
    not tune it from the population), timed on its second run (the first compiles):
    seconds, stages, log Z and the posterior mean; None when BlackJAX is not installed."""
    if importlib.util.find_spec("blackjax") is None:
        return None
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.smc import extend_params

    jax.config.update("jax_enable_x64", True)
    xj, yj = jnp.asarray(x.numpy(), jnp.float64), jnp.asarray(y.numpy(), jnp.float64)

    def log_prior(w):
        return -0.5 * jnp.sum(w * w)

    def log_lik(w):
        logits = xj @ w
        return jnp.sum(yj * logits - jnp.logaddexp(0.0, logits))

    smc = blackjax.adaptive_tempered_smc(
        log_prior, log_lik, blackjax.mala.build_kernel(), blackjax.mala.init,
        extend_params({"step_size": 0.01}), blackjax.smc.resampling.systematic, 0.5,
        num_mcmc_steps=num_moves)
    step = jax.jit(smc.step)

    def run(seed: int) -> dict:
        key = jax.random.PRNGKey(seed)
        state = smc.init(jax.random.normal(key, (particles, x.shape[1]), jnp.float64))
        stages, log_z = 0, 0.0
        while float(state.tempering_param) < 1.0:
            key, sub = jax.random.split(key)
            state, info = step(sub, state)
            stages, log_z = stages + 1, log_z + float(info.log_likelihood_increment)
        mean = np.asarray(state.weights @ state.particles)
        return {"stages": stages, "log_z": log_z, "mean": torch.tensor(mean)}

    run(1)  # compiles
    start = time.perf_counter()
    out = run(0)
    return {**out, "seconds": time.perf_counter() - start}


def bench_tempered(particles: int, repeats: int) -> None:
    x, y = logistic_data()
    reference = infer(logistic, x, y, method=NUTS(500, 1000, 4), seed=1).samples["w"]
    ref_mean, ref_sd = reference.mean((0, 1)), reference.std((0, 1))
    method = TemperedSMC(particles, MALA(), num_moves=5, target_cess=0.5)
    seconds, post = median_time(lambda: infer(logistic, x, y, method=method, seed=0), repeats)
    error = ((post.mean("w") - ref_mean) / ref_sd).abs().max()
    ess = float(post.ess)
    print(f"\ntempered SMC, logistic regression 5000 x 25, {particles} particles, MALA x 5, "
          "target CESS 0.5")
    print(f"  ppl: {seconds:.2f} s, {len(post.extra['betas']) - 1} stages, final ESS {ess:.0f},"
          f" ESS/s {ess / seconds:.0f}, max |mean error| {float(error):.3f} posterior sd, "
          f"log Z {float(post.log_evidence):.2f} ({post.extra['backend']} backend)")
    peers = [blackjax_tempered(x, y, particles, 5) for _ in range(repeats)]
    if peers[0] is None:
        print("  blackjax: skipped (not installed)")
        return
    peer = sorted(peers, key=lambda p: p["seconds"])[len(peers) // 2]
    peer_error = ((peer["mean"].to(ref_mean.dtype) - ref_mean) / ref_sd).abs().max()
    print(f"  blackjax: {peer['seconds']:.2f} s (ppl time / blackjax time "
          f"{seconds / peer['seconds']:.2f}), {peer['stages']} stages, max |mean error| "
          f"{float(peer_error):.3f} posterior sd, log Z {peer['log_z']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--particles", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--tempered-particles", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1, as numpy's filter; on a "
                             "loaded machine more threads make small tensor ops slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    bench_filter(args.particles, args.repeats)
    bench_tempered(args.tempered_particles, args.repeats)


if __name__ == "__main__":
    main()
