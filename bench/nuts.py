"""NUTS end to end: ppl side by side with NumPyro and Pyro (when installed) on three models.

Models (the same priors, likelihood and data for every PPL; each model is written once, as
a factory over a small namespace of primitives that all three PPLs spell the same way):

* ``eight_schools``: Rubin's eight schools, non-centered (posteriordb
  ``eight_schools_noncentered``; the 8 ``y`` and ``sigma`` values are embedded here);
* ``logistic``: Bayesian logistic regression, N = 5000 rows, D = 25 features, synthetic data
  (numpy seed 0); Normal(0, 1) priors on the coefficients and the intercept;
* ``varying_intercept``: a radon-style varying-intercept regression, 85 groups of uneven size,
  N = 900 (numpy seed 1): ``y ~ Normal(a[group] + b * x, sigma_y)``,
  ``a ~ Normal(mu_a, sigma_a)``, ``sigma_a ~ HalfCauchy(2.5)``, ``sigma_y ~ HalfNormal(2.5)``.

For each model, PPL and chain count (1 and 4) a *cold* run (a fresh model/sampler object, so
tracing and compilation are included) and a *warm* run (the same call again in the same
process) are timed from the inference call until the draws are host tensors. Reported:
wall times, gradient evaluations, bulk ESS (min and median over every scalar latent
parameter, computed for every PPL with ``ppl.inference.results.diagnostics.ess_bulk`` on its draws
converted to torch), ESS/s (min bulk ESS over the run's wall time) and time per gradient
(warm wall time / gradient evaluations), as medians over ``--repeats`` runs; then the ratios
ppl / NumPyro and ppl / Pyro.

Sampler settings, identical where the PPLs allow: NUTS, multinomial sampling, max tree depth
10, target acceptance 0.8, diagonal mass matrix, Stan-style windowed warmup, initial points
uniform(-2, 2) on the unconstrained space. Precision: float64 everywhere by default (ppl
takes float32 data tensors and computes in float64; NumPyro gets ``JAX_ENABLE_X64``, Pyro
float64 data and default dtype; the data values are float32-exact, so all see the same
numbers); ``--float32`` runs the peers in their default float32. Chains:

* ppl: ``NUTS(chains=4)`` in one process (``chain_method="batched"``); with a C compiler the
  model runs on the native backend (NUTS in C, chains spread over the cores), and each cold
  run compiles its C into a fresh, empty cache, so compilation counts as the peers' does;
* NumPyro: ``chain_method="vectorized"`` (vmap: batched in one process), JAX on the CPU;
* Pyro: ``jit_compile=True``; chains run sequentially in this process (one single-chain
  ``MCMC`` after another, as Pyro's own sequential sampler does), never its multiprocessing
  mode.

Before measuring, each PPL samples a 1-d normal once (untimed), so that one-time costs of a
process (lazy imports, JAX backend start-up) do not land on whichever model comes first.

NumPyro 0.22.0 recompiles its sampling loop on every ``MCMC.run`` when the progress bar is
off (``fori_collect`` passes a ``jax.jit`` object made afresh per call as a static argument of
its compiled loop; fixed upstream by numpyro PR #2171, not in 0.22.0). The harness memoizes
``numpyro.util.maybe_jit`` so that the warm run reuses the compiled loop; ``--numpyro-stock``
measures NumPyro unmodified (its warm run then includes a full recompilation). Its 4-chain
warm run still compiles the ``lax.map`` of its initial-point search (a new closure per run).

Gradient evaluations: ppl ``post.extra["num_grad_evals"]`` (log-density rows evaluated,
including initialization, step-size searches and lockstep padding of batched chains);
NumPyro the sum of ``num_steps`` over warmup and sampling iterations (leapfrog steps of
every chain; its step-size searches are not counted); Pyro the number of potential-energy
calls with gradients (counted by a thin ``NUTS`` subclass).

Run: ``.venv/bin/python bench/nuts.py [--quick] [--repeats N] [--models a,b] [--ppls a,b]
[--chains 1,4] [--threads 1] [--float32] [--numpyro-stock] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ppl.inference.results.diagnostics import ess_bulk
from ppl.inference.results.summary import ConvergenceWarning

Data = dict[str, Any]
"""A model's data: numpy arrays (float64 holding float32-exact values, or int64; converted per
PPL) and Python ints (sizes)."""

# --------------------------------------------------------------------------- models and data

EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


def eight_schools(lib: SimpleNamespace) -> Callable:
    """Eight schools, non-centered: theta = mu + tau * theta_trans."""

    def model(sigma, y):
        mu = lib.sample("mu", lib.Normal(0.0, 5.0))
        tau = lib.sample("tau", lib.HalfCauchy(5.0))
        with lib.plate("schools", sigma.shape[0]):
            theta_trans = lib.sample("theta_trans", lib.Normal(0.0, 1.0))
            lib.sample("y", lib.Normal(mu + tau * theta_trans, sigma), obs=y)

    return model


def logistic(lib: SimpleNamespace) -> Callable:
    """Bayesian logistic regression with Normal(0, 1) priors."""

    def model(x, y):
        alpha = lib.sample("alpha", lib.Normal(0.0, 1.0))
        with lib.plate("features", x.shape[1]):
            beta = lib.sample("beta", lib.Normal(0.0, 1.0))
        with lib.plate("data", x.shape[0]):
            lib.sample("y", lib.Bernoulli(logits=alpha + x @ beta), obs=y)

    return model


def varying_intercept(lib: SimpleNamespace) -> Callable:
    """Varying-intercept regression (centered, as the radon models of posteriordb)."""

    def model(group, x, y, num_groups):
        mu_a = lib.sample("mu_a", lib.Normal(0.0, 5.0))
        sigma_a = lib.sample("sigma_a", lib.HalfCauchy(2.5))
        b = lib.sample("b", lib.Normal(0.0, 5.0))
        sigma_y = lib.sample("sigma_y", lib.HalfNormal(2.5))
        with lib.plate("groups", num_groups):
            a = lib.sample("a", lib.Normal(mu_a, sigma_a))
        with lib.plate("data", x.shape[0]):
            lib.sample("y", lib.Normal(a[group] + b * x, sigma_y), obs=y)

    return model


def _float32_exact(values: np.ndarray) -> np.ndarray:
    """float64 values that float32 represents exactly: every PPL and precision sees the same
    numbers."""
    return values.astype(np.float32).astype(np.float64)


def eight_schools_data() -> Data:
    return {"sigma": np.array(EIGHT_SCHOOLS_SIGMA), "y": np.array(EIGHT_SCHOOLS_Y)}


def logistic_data(n: int = 5000, d: int = 25, seed: int = 0) -> Data:
    """Standard normal features; true intercept 0.3 and coefficients ~ Normal(0, 0.5)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    beta = rng.normal(0.0, 0.5, d)
    logits = 0.3 + x @ beta
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-logits))
    return {"x": _float32_exact(x), "y": y.astype(np.float64)}


def varying_intercept_data(n: int = 900, groups: int = 85, seed: int = 1) -> Data:
    """Uneven group sizes (Dirichlet(1) shares, every group at least once), a binary
    covariate ("floor") and radon-like true values mu_a 1.4, sigma_a 0.3, b -0.6, sigma_y 0.75."""
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(np.ones(groups))
    group = np.concatenate([np.arange(groups), rng.choice(groups, n - groups, p=shares)])
    rng.shuffle(group)
    x = (rng.random(n) < 0.2).astype(np.float64)
    a = 1.4 + 0.3 * rng.standard_normal(groups)
    y = a[group] - 0.6 * x + 0.75 * rng.standard_normal(n)
    return {"group": group.astype(np.int64), "x": x, "y": _float32_exact(y), "num_groups": groups}


@dataclass(frozen=True)
class Benchmark:
    """A model factory (primitives namespace -> model function), its data, and the latent
    sites whose draws enter the ESS (the same names in every PPL)."""

    name: str
    build: Callable[[SimpleNamespace], Callable]
    data: Callable[[], Data]
    params: tuple[str, ...]


def standard_normal(lib: SimpleNamespace) -> Callable:
    """A 1-d standard normal, no data: the untimed warm-up run of each PPL."""

    def model():
        lib.sample("x", lib.Normal(0.0, 1.0))

    return model


WARM_UP = Benchmark("warm_up", standard_normal, dict, ("x",))
BENCHMARKS = {b.name: b for b in (
    Benchmark("eight_schools", eight_schools, eight_schools_data, ("mu", "tau", "theta_trans")),
    Benchmark("logistic", logistic, logistic_data, ("alpha", "beta")),
    Benchmark("varying_intercept", varying_intercept, varying_intercept_data,
              ("mu_a", "sigma_a", "b", "sigma_y", "a")),
)}

# --------------------------------------------------------------------------- PPL adapters


@dataclass(frozen=True)
class RunConfig:
    chains: int
    num_warmup: int
    num_samples: int
    threads: int
    x64: bool = True  # the peers' precision (ppl always computes in float64)


@dataclass
class Draws:
    """One run's result: draws ``(chains, draws, *shape)`` per ESS site, gradient count."""

    samples: dict[str, torch.Tensor]
    grad_evals: int


Sampler = Callable[[int], Draws]
"""Runs inference with a seed and returns the draws; calling it again is the warm run."""


class Adapter:
    """How one PPL runs a :class:`Benchmark`: its primitives, data conversion and sampler."""

    name = ""
    modules: tuple[str, ...] = ()  # import names, all needed
    distributions: tuple[str, ...] = ()  # pip names, for the versions line
    settings = ""
    _warm = False

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def namespace(self) -> SimpleNamespace:
        """sample, plate and the distributions the models use."""
        raise NotImplementedError

    def convert(self, data: Data, x64: bool) -> Data:
        """numpy arrays -> this PPL's arrays, floats in float64 or float32 (untimed)."""
        raise NotImplementedError

    def sampler(self, bench: Benchmark, data: Data, config: RunConfig) -> Sampler:
        """A fresh sampler (building it is part of the cold, end-to-end time)."""
        raise NotImplementedError

    def warm_up(self, config: RunConfig) -> None:
        """Sample :data:`WARM_UP` once per process (untimed): one-time costs of the library."""
        if not self._warm:
            config = RunConfig(1, 20, 20, config.threads, config.x64)
            self.sampler(WARM_UP, self.convert({}, config.x64), config)(0)
            self._warm = True


def _floats(data: Data, x64: bool) -> Data:
    """Float arrays in float64 or float32; other values unchanged."""
    dtype = np.float64 if x64 else np.float32
    return {k: v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
            for k, v in data.items()}


def _torch_data(data: Data, x64: bool) -> Data:
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in _floats(data, x64).items()}


class PplAdapter(Adapter):
    name = "ppl"
    modules = distributions = ("ppl",)
    settings = "ppl: NUTS(chains=C), chain_method='batched' (C chains in one process)"

    def namespace(self) -> SimpleNamespace:
        from ppl import plate, sample
        from ppl.stdlib import Bernoulli, HalfCauchy, HalfNormal, Normal

        return SimpleNamespace(sample=sample, plate=plate, Normal=Normal, HalfCauchy=HalfCauchy,
                               HalfNormal=HalfNormal, Bernoulli=Bernoulli)

    def convert(self, data: Data, x64: bool) -> Data:
        # float32 tensors, as torch users pass them (float64 data would meet the float32
        # priors in ``x @ beta`` while tracing); ppl's lowering computes in float64.
        return _torch_data(data, x64=False)

    def method(self, bench: Benchmark, config: RunConfig):
        """The ``infer`` method: NUTS with the run's settings."""
        from ppl.inference.mcmc.methods import NUTS

        return NUTS(num_warmup=config.num_warmup, num_samples=config.num_samples,
                    chains=config.chains)

    def sampler(self, bench: Benchmark, data: Data, config: RunConfig) -> Sampler:
        from ppl import infer, model

        # An empty cache of compiled models, so the cold run pays for compiling its C (as
        # the peers' cold runs pay for JIT compilation); the warm run reuses the library.
        os.environ["PPL_CACHE_DIR"] = tempfile.mkdtemp(prefix="ppl-bench-")

        ppl_model = model(bench.build(self.namespace()))  # a new Model: no cached graph
        method = self.method(bench, config)
        method.options["num_threads"] = config.threads

        def run(seed: int) -> Draws:
            post = infer(ppl_model, method=method, seed=seed, **data)
            return Draws({k: post.samples[k] for k in bench.params},
                         int(post.extra["num_grad_evals"]))

        return run


def _memoize_numpyro_jit() -> None:
    """Make ``numpyro.util.maybe_jit`` return the same ``jax.jit`` object for the same
    function and options, so that ``fori_collect`` (which passes such an object as a static
    argument of its compiled loop) reuses the loop compiled by a previous ``MCMC.run``."""
    import numpyro.util

    maybe_jit = getattr(numpyro.util, "maybe_jit", None)  # absent: a NumPyro this does not fit
    if maybe_jit is not None and not hasattr(maybe_jit, "cache_info"):
        numpyro.util.maybe_jit = functools.cache(maybe_jit)


class NumPyroAdapter(Adapter):
    name = "numpyro"
    modules = ("numpyro", "jax")
    distributions = ("numpyro", "jax", "jaxlib")
    stock = False  # True: leave NumPyro's per-run recompilation alone (--numpyro-stock)

    @property
    def settings(self) -> str:
        return ("numpyro: NUTS, MCMC(num_chains=C, chain_method='vectorized', progress_bar=False), "
                "JAX on the CPU; warmup iterations collected too, to sum their num_steps; "
                + ("stock (warm runs recompile)" if self.stock
                   else "maybe_jit memoized (warm runs reuse the compiled loop)"))

    def namespace(self) -> SimpleNamespace:
        import numpyro
        import numpyro.distributions as dist

        return SimpleNamespace(sample=numpyro.sample, plate=numpyro.plate, Normal=dist.Normal,
                               HalfCauchy=dist.HalfCauchy, HalfNormal=dist.HalfNormal,
                               Bernoulli=dist.Bernoulli)

    def convert(self, data: Data, x64: bool) -> Data:
        import jax
        import jax.numpy as jnp

        assert jax.config.jax_enable_x64 == x64, "configure_backends() must run before jax use"
        return {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v
                for k, v in _floats(data, x64).items()}

    def kernel(self, bench: Benchmark, model: Callable):
        """The NUTS kernel of ``model`` (NumPyro's defaults: init_to_uniform)."""
        from numpyro.infer import NUTS

        return NUTS(model)

    def sampler(self, bench: Benchmark, data: Data, config: RunConfig) -> Sampler:
        import jax
        from numpyro.infer import MCMC

        if not self.stock:
            _memoize_numpyro_jit()
        warmup, total = config.num_warmup, config.num_warmup + config.num_samples
        mcmc = MCMC(self.kernel(bench, bench.build(self.namespace())), num_warmup=warmup,
                    num_samples=config.num_samples, num_chains=config.chains,
                    chain_method="vectorized", progress_bar=False)

        def run(seed: int) -> Draws:
            # A plain run() collects only the sampling iterations. Widening the collection
            # window to the warmup too (NumPyro's own hook, also used by MCMC.warmup) keeps the
            # single compiled loop of a plain run() and makes num_steps cover the whole run.
            mcmc._set_collection_params(0, total, total)
            mcmc.run(jax.random.PRNGKey(seed), extra_fields=("num_steps",), **data)
            samples = mcmc.get_samples(group_by_chain=True)
            steps = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"])
            assert steps.shape == (config.chains, total), steps.shape
            draws = {k: torch.from_numpy(np.array(samples[k][:, warmup:])) for k in bench.params}
            return Draws(draws, int(steps.sum()))

        return run


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default float dtype inside the block (Pyro's priors and inits follow it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _counting_nuts(nuts: type) -> type:
    """Pyro's NUTS, counting gradient evaluations: calls of the potential energy whose inputs
    require grad (one per ``potential_grad``, i.e. per leapfrog step, initial point and
    step-size search step)."""

    class CountingNUTS(nuts):
        grad_evals = 0

        @property
        def potential_fn(self):
            return self._counted_potential_fn

        @potential_fn.setter
        def potential_fn(self, fn):
            def counted(params):
                if any(v.requires_grad for v in params.values()):
                    self.grad_evals += 1
                return fn(params)

            self._counted_potential_fn = None if fn is None else counted

    return CountingNUTS


class PyroAdapter(Adapter):
    name = "pyro"
    modules = ("pyro",)
    distributions = ("pyro-ppl",)
    settings = ("pyro: NUTS(jit_compile=True); C chains one after another in this process "
                "(C single-chain MCMC runs; no multiprocessing)")

    def namespace(self) -> SimpleNamespace:
        import pyro
        import pyro.distributions as dist

        return SimpleNamespace(sample=pyro.sample, plate=pyro.plate, Normal=dist.Normal,
                               HalfCauchy=dist.HalfCauchy, HalfNormal=dist.HalfNormal,
                               Bernoulli=dist.Bernoulli)

    def convert(self, data: Data, x64: bool) -> Data:
        return _torch_data(data, x64)

    def sampler(self, bench: Benchmark, data: Data, config: RunConfig) -> Sampler:
        import pyro
        from pyro.infer import MCMC, NUTS

        model = bench.build(self.namespace())
        counting_nuts = _counting_nuts(NUTS)

        def run(seed: int) -> Draws:
            with default_dtype(torch.float64 if config.x64 else torch.float32):
                return run_chains(seed)

        def run_chains(seed: int) -> Draws:
            pyro.set_rng_seed(seed)
            chains, grad_evals = [], 0
            for _ in range(config.chains):
                # One kernel per chain: Pyro re-initializes (and re-traces for the JIT) per
                # chain anyway, and its MCMC refuses a kernel whose potential_fn is set.
                kernel = counting_nuts(model, jit_compile=True, ignore_jit_warnings=True)
                mcmc = MCMC(kernel, num_samples=config.num_samples,
                            warmup_steps=config.num_warmup, num_chains=1, disable_progbar=True)
                mcmc.run(**data)
                chains.append(mcmc.get_samples(group_by_chain=True))
                grad_evals += kernel.grad_evals
            draws = {k: torch.cat([c[k] for c in chains]) for k in bench.params}
            return Draws(draws, grad_evals)

        return run


ADAPTERS = {a.name: a for a in (PplAdapter(), NumPyroAdapter(), PyroAdapter())}

# --------------------------------------------------------------------------- measurement


@dataclass
class Run:
    """One timed run: wall seconds, gradient evaluations, min and median bulk ESS."""

    seconds: float
    grad_evals: int
    ess_min: float
    ess_median: float


@dataclass
class Row:
    """Medians over the repeats for one (model, chains, PPL)."""

    model: str
    chains: int
    ppl: str
    e2e_s: float = math.nan
    warm_s: float = math.nan
    grad_evals: float = math.nan
    ess_min: float = math.nan
    ess_median: float = math.nan
    ess_per_s_e2e: float = math.nan
    ess_per_s_warm: float = math.nan
    us_per_grad: float = math.nan
    runs: list[dict] = field(default_factory=list)
    error: str | None = None


def bulk_ess(samples: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Min and median bulk ESS over every scalar element of the draws. An element whose draws
    are all equal (chains that never moved: ``ess_bulk`` gives nan) or not finite counts as 0."""
    values = torch.cat([ess_bulk(v).reshape(-1) for v in samples.values()]).nan_to_num(0.0)
    return float(values.min()), float(values.median())


def measure_once(adapter: Adapter, bench: Benchmark, data: Data, config: RunConfig,
                 seed: int) -> tuple[Run, Run]:
    """(cold, warm): a fresh sampler's first run, then the same run again. The clock stops
    when the draws are in hand; the ESS is computed afterwards."""
    adapter.warm_up(config)
    start = time.perf_counter()
    sampler = adapter.sampler(bench, data, config)
    draws = sampler(seed)
    cold = Run(time.perf_counter() - start, draws.grad_evals, *bulk_ess(draws.samples))
    start = time.perf_counter()
    draws = sampler(seed)
    warm = Run(time.perf_counter() - start, draws.grad_evals, *bulk_ess(draws.samples))
    return cold, warm


def summarize_runs(row: Row, pairs: Sequence[tuple[Run, Run]]) -> Row:
    med = statistics.median
    colds, warms = [c for c, _ in pairs], [w for _, w in pairs]
    row.e2e_s = med(r.seconds for r in colds)
    row.warm_s = med(r.seconds for r in warms)
    row.grad_evals = med(r.grad_evals for r in warms)
    row.ess_min = med(r.ess_min for r in colds)
    row.ess_median = med(r.ess_median for r in colds)
    row.ess_per_s_e2e = med(r.ess_min / r.seconds for r in colds)
    row.ess_per_s_warm = med(r.ess_min / r.seconds for r in warms)
    row.us_per_grad = med(1e6 * r.seconds / r.grad_evals for r in warms)
    row.runs = [{"cold": asdict(c), "warm": asdict(w)} for c, w in pairs]
    return row


def run_benchmarks(models: Sequence[str], ppls: Sequence[str], chain_counts: Sequence[int],
                   num_warmup: int, num_samples: int, threads: int, repeats: int,
                   seed: int, x64: bool = True, log=sys.stderr) -> list[Row]:
    """Every (model, chains, PPL); the repeats are interleaved across the PPLs so that slow
    drifts of a shared machine's load hit them alike."""
    rows = []
    for name in models:
        bench = BENCHMARKS[name]
        raw = bench.data()
        data = {p: ADAPTERS[p].convert(raw, x64) for p in ppls}
        for chains in chain_counts:
            config = RunConfig(chains, num_warmup, num_samples, threads, x64)
            pairs: dict[str, list[tuple[Run, Run]]] = {p: [] for p in ppls}
            errors: dict[str, str] = {}
            for r in range(repeats):
                for p in ppls:
                    if p in errors:
                        continue
                    try:
                        pairs[p].append(measure_once(ADAPTERS[p], bench, data[p], config,
                                                     seed + r))
                    except Exception as exc:  # noqa: BLE001 - reported in the table, run goes on
                        errors[p] = f"{type(exc).__name__}: {exc}"
                        traceback.print_exc(file=log)
                        continue
                    cold, warm = pairs[p][-1]
                    print(f"  {name} {chains} chain(s) {p} repeat {r + 1}/{repeats}: "
                          f"cold {cold.seconds:.1f} s, warm {warm.seconds:.1f} s, "
                          f"{warm.grad_evals} grads, min ESS {cold.ess_min:.0f}", file=log,
                          flush=True)
            for p in ppls:
                row = Row(name, chains, p)
                if p in errors:
                    row.error = errors[p]
                else:
                    summarize_runs(row, pairs[p])
                rows.append(row)
    return rows


PEERS = ("numpyro", "pyro")  # what ppl is compared with (bench/gallery.py adds its fallback)


def ratios(rows: Sequence[Row]) -> list[dict]:
    """ppl / peer for each (model, chains) and peer present: times (e2e, warm, per gradient;
    above 1 means ppl is slower) and ESS/s (below 1 means ppl is less efficient)."""
    by_key = {(r.model, r.chains, r.ppl): r for r in rows if r.error is None}
    out = []
    for (model, chains, name), ours in by_key.items():
        if name != "ppl":
            continue
        for peer in PEERS:
            theirs = by_key.get((model, chains, peer))
            if theirs is None:
                continue
            out.append({"model": model, "chains": chains, "peer": peer,
                        "e2e_time": ours.e2e_s / theirs.e2e_s,
                        "warm_time": ours.warm_s / theirs.warm_s,
                        "ess_per_s_e2e": ours.ess_per_s_e2e / theirs.ess_per_s_e2e,
                        "ess_per_s_warm": ours.ess_per_s_warm / theirs.ess_per_s_warm,
                        "time_per_grad": ours.us_per_grad / theirs.us_per_grad})
    return out

# --------------------------------------------------------------------------- report


def configure_backends(threads: int, x64: bool) -> None:
    """torch threads; JAX on the CPU, in float64 if ``x64``, with one XLA thread when
    ``threads == 1`` (XLA has no exact thread-count knob otherwise). Runs before jax is
    imported (it reads these variables then)."""
    assert "jax" not in sys.modules, "configure_backends() must run before jax is imported"
    torch.set_num_threads(threads)
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["JAX_ENABLE_X64"] = "1" if x64 else "0"
    if threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


def machine_info(ppls: Sequence[str]) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {"python": platform.python_version()}
    for dist in ("torch", "numpy", *(d for p in ppls for d in ADAPTERS[p].distributions)):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable,
            "load_average": load, "torch_threads": torch.get_num_threads(), "versions": versions}


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


RESULT_COLUMNS = (  # header, Row attribute, width, decimals
    ("model", "model", 24, None), ("chains", "chains", 6, None), ("ppl", "ppl", 7, None),
    ("e2e s", "e2e_s", 8, 2), ("warm s", "warm_s", 8, 2), ("grads", "grad_evals", 8, 0),
    ("ESS min", "ess_min", 8, 0), ("ESS med", "ess_median", 8, 0),
    ("ESS/s e2e", "ess_per_s_e2e", 10, 1), ("ESS/s warm", "ess_per_s_warm", 10, 1),
    ("us/grad", "us_per_grad", 8, 1),
)
RATIO_COLUMNS = (
    ("model", "model", 24, None), ("chains", "chains", 6, None), ("vs", "peer", 7, None),
    ("e2e time", "e2e_time", 9, 2), ("warm time", "warm_time", 9, 2),
    ("ESS/s e2e", "ess_per_s_e2e", 10, 2), ("ESS/s warm", "ess_per_s_warm", 10, 2),
    ("time/grad", "time_per_grad", 9, 2),
)


def format_table(columns, records: Sequence[dict]) -> str:
    """Fixed-width table: text columns left-aligned, numbers right-aligned."""
    def cell(value, width, digits):
        if digits is None:
            return f"{value!s:<{width}}" if isinstance(value, str) else f"{value:>{width}}"
        return f"{_fmt(value, digits):>{width}}"

    header = " ".join(f"{h:<{w}}" if d is None and h != "chains" else f"{h:>{w}}"
                      for h, _, w, d in columns)
    lines = [header, "-" * len(header)]
    for rec in records:
        line = " ".join(cell(rec[key], w, d) for _, key, w, d in columns)
        if rec.get("error"):
            line += f"  FAILED: {rec['error'][:80]}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def report(rows: Sequence[Row], ratio_rows: Sequence[dict], machine: dict, settings: dict,
           ppls: Sequence[str]) -> str:
    v = machine["versions"]
    lines = [
        f"machine: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"load average {', '.join(f'{x:.2f}' for x in machine['load_average'] or ())}",
        "versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"settings: {settings['num_warmup']} warmup + {settings['num_samples']} samples per "
        f"chain, {settings['threads']} thread(s), peers in "
        f"{'float32' if settings['float32'] else 'float64'}, seeds {settings['seed']}.."
        f"{settings['seed'] + settings['repeats'] - 1}, medians over {settings['repeats']} "
        "repeat(s)",
        *(f"  {ADAPTERS[p].settings}" for p in ppls),
        "",
        "e2e: fresh sampler, tracing/compilation included; warm: the same run again. ESS: bulk, "
        "over all scalar latents (e2e run); ESS/s: min ESS / wall s; grads: warm run; "
        "us/grad: warm s / grads.",
        format_table(RESULT_COLUMNS, [asdict(r) for r in rows]),
    ]
    if ratio_rows:
        lines += ["", "ratios ppl / peer (times above 1: ppl slower; ESS/s below 1: ppl less "
                      "efficient)", format_table(RATIO_COLUMNS, ratio_rows)]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    def names(choices):
        def parse(text: str) -> list[str]:
            items = [s.strip() for s in text.split(",") if s.strip()]
            bad = sorted(set(items) - set(choices))
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {sorted(choices)}")
            return items
        return parse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="100 warmup + 100 samples (smoke runs; ESS and times not meaningful)")
    parser.add_argument("--num-warmup", type=int, help="warmup iterations (default 1000)")
    parser.add_argument("--num-samples", type=int, help="kept iterations (default 1000)")
    parser.add_argument("--repeats", type=int, default=1, help="report medians over N runs")
    parser.add_argument("--models", type=names(BENCHMARKS), default=list(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--ppls", type=names(ADAPTERS), default=None,
                        help="comma-separated subset of ppl,numpyro,pyro (default: the installed)")
    parser.add_argument("--chains", type=lambda s: [int(c) for c in s.split(",")], default=[1, 4],
                        help="chain counts (default 1,4)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 also pins XLA to one thread (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first repeat")
    parser.add_argument("--float32", action="store_true",
                        help="run the peers in float32 (default float64, as ppl computes)")
    parser.add_argument("--numpyro-stock", action="store_true",
                        help="do not memoize numpyro.util.maybe_jit (warm runs then recompile)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    quick = 100 if args.quick else 1000
    args.num_warmup = quick if args.num_warmup is None else args.num_warmup
    args.num_samples = quick if args.num_samples is None else args.num_samples
    return args


def main(argv: Sequence[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    configure_backends(args.threads, x64=not args.float32)
    # The bench reports ESS itself; short --quick runs would print a warning per run.
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    ADAPTERS["numpyro"].stock = args.numpyro_stock
    requested = args.ppls or list(ADAPTERS)
    ppls = [p for p in requested if ADAPTERS[p].available()]
    for p in sorted(set(requested) - set(ppls)):
        print(f"{p}: not installed, skipped (pip install -e '.[bench]')", file=sys.stderr)
    settings = {k: getattr(args, k) for k in ("num_warmup", "num_samples", "repeats", "threads",
                                              "seed", "models", "chains", "float32",
                                              "numpyro_stock")}
    rows = run_benchmarks(args.models, ppls, args.chains, args.num_warmup, args.num_samples,
                          args.threads, args.repeats, args.seed, x64=not args.float32)
    ratio_rows = ratios(rows)
    machine = machine_info(ppls)
    print(report(rows, ratio_rows, machine, settings, ppls), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine,
                       "settings": {**settings, "ppls": {p: ADAPTERS[p].settings for p in ppls}},
                       "results": [asdict(r) for r in rows], "ratios": ratio_rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
