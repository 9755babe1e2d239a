"""NUTS in C (``inference/native/nuts.c``) on hand-written C potentials.

* Exactness: each transition equals that of a plain-Python port of Stan's recursive
  ``build_tree`` (below: every span kept as its list of points, the checks summed over them)
  run on the same momentum and random stream, for diagonal and dense metrics, divergences
  and the depth cap.
* Correctness in distribution: moments of Gaussians within MCSE-based tolerances, and the
  tree statistics agree with the torch NUTS on the same targets.
* Reproducibility (chain ``c`` is the same in any batch), the depth cap, divergences.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch

from ppl.inference.lowering.native.compiler import Unit, compile_library, compiler_available
from ppl.inference.mcmc import NUTS, sample
from ppl.inference.mcmc.integrators import sample_momentum
from ppl.inference.mcmc.native_nuts import native_nuts_transition, nuts_source
from ppl.inference.results.diagnostics import ess, mcse_mean
from ppl.inference.rng import chain_generators, randn

pytestmark = pytest.mark.skipif(
    not compiler_available(), reason="no C compiler (cc/gcc/clang or $CC): no native backend"
)

F64 = torch.float64


# ------------------------------------------------------------------------------ targets


_PRELUDE = "#include <math.h>\n"


class Target(NamedTuple):
    """A log density three ways: C (``ppl_potential_row``), torch ``(C, D)`` rows, and Python
    floats (the reference's, in the C's order of operations)."""

    c_source: str
    torch_fn: object
    py_fn: object
    dim: int


def _c_array(name: str, values) -> str:
    return f"static const double {name}[] = {{{', '.join(float(v).hex() for v in values)}}};"


def _diag_gaussian(mean: list[float], sd: list[float]) -> Target:
    dim = len(mean)
    source = _PRELUDE + f"""
#define PPL_DIM {dim}
{_c_array("mu", mean)}
{_c_array("sd", sd)}
static double ppl_potential_row(const double *restrict z, double *restrict grad, long row)
{{
    double lp = 0.0;
    for (int i = 0; i < PPL_DIM; i++) {{
        double r = (z[i] - mu[i]) / sd[i];
        lp -= 0.5 * r * r;
        grad[i] = -r / sd[i];
    }}
    return lp;
}}
"""
    mu_t, sd_t = torch.tensor(mean, dtype=F64), torch.tensor(sd, dtype=F64)

    def torch_fn(z):
        r = (z - mu_t) / sd_t
        return -0.5 * (r * r).sum(-1), -r / sd_t

    def py_fn(z):
        lp, grad = 0.0, []
        for zi, m, s in zip(z, mean, sd, strict=True):
            r = (zi - m) / s
            lp -= 0.5 * r * r
            grad.append(-r / s)
        return lp, grad

    return Target(source, torch_fn, py_fn, dim)


def _gaussian(mean: list[float], cov: torch.Tensor) -> Target:
    dim = len(mean)
    prec = torch.linalg.inv(cov.to(F64))
    rows = prec.tolist()
    source = _PRELUDE + f"""
#define PPL_DIM {dim}
{_c_array("mu", mean)}
{_c_array("prec", prec.flatten().tolist())}
static double ppl_potential_row(const double *restrict z, double *restrict grad, long row)
{{
    double d[PPL_DIM], lp = 0.0;
    for (int i = 0; i < PPL_DIM; i++)
        d[i] = z[i] - mu[i];
    for (int i = 0; i < PPL_DIM; i++) {{
        double pd = 0.0;
        for (int j = 0; j < PPL_DIM; j++)
            pd += prec[i * PPL_DIM + j] * d[j];
        lp -= 0.5 * d[i] * pd;
        grad[i] = -pd;
    }}
    return lp;
}}
"""
    mu_t = torch.tensor(mean, dtype=F64)

    def torch_fn(z):
        d = z - mu_t
        pd = (prec * d.unsqueeze(-2)).sum(-1)
        return -0.5 * (d * pd).sum(-1), -pd

    def py_fn(z):
        d = [zi - m for zi, m in zip(z, mean, strict=True)]
        lp, grad = 0.0, []
        for row, di in zip(rows, d, strict=True):
            pd = 0.0
            for a, b in zip(row, d, strict=True):
                pd += a * b
            lp -= 0.5 * di * pd
            grad.append(-pd)
        return lp, grad

    return Target(source, torch_fn, py_fn, dim)


def _funnel() -> Target:
    """Neal's funnel in 2-d: v ~ N(0, 3^2), x | v ~ N(0, exp(v))."""
    source = _PRELUDE + """
#define PPL_DIM 2
static double ppl_potential_row(const double *restrict z, double *restrict grad, long row)
{
    double v = z[0], x = z[1], e = exp(-v);
    grad[0] = -v / 9.0 + 0.5 * x * x * e - 0.5;
    grad[1] = -x * e;
    return -v * v / 18.0 - 0.5 * x * x * e - 0.5 * v;
}
"""

    def torch_fn(z):
        v, x = z[:, 0], z[:, 1]
        e = torch.exp(-v)
        lp = -v * v / 18.0 - 0.5 * x * x * e - 0.5 * v
        return lp, torch.stack((-v / 9.0 + 0.5 * x * x * e - 0.5, -x * e), -1)

    def py_fn(z):
        v, x = z
        e = math.exp(-v)
        return -v * v / 18.0 - 0.5 * x * x * e - 0.5 * v, [-v / 9.0 + 0.5 * x * x * e - 0.5,
                                                            -x * e]

    return Target(source, torch_fn, py_fn, 2)


def _nan_box() -> Target:
    """A standard normal whose density is NaN outside the box |z_i| <= 2."""
    source = _PRELUDE + """
#define PPL_DIM 2
static double ppl_potential_row(const double *restrict z, double *restrict grad, long row)
{
    double lp = 0.0;
    for (int i = 0; i < PPL_DIM; i++) {
        lp -= 0.5 * z[i] * z[i];
        grad[i] = -z[i];
    }
    if (fabs(z[0]) > 2.0 || fabs(z[1]) > 2.0) {
        grad[0] = grad[1] = NAN;
        return NAN;
    }
    return lp;
}
"""

    def torch_fn(z):
        bad = (z.abs() > 2.0).any(-1)
        lp = torch.where(bad, torch.nan, -0.5 * (z * z).sum(-1))
        return lp, torch.where(bad.unsqueeze(-1), torch.nan, -z)

    def py_fn(z):
        if any(abs(x) > 2.0 for x in z):
            return math.nan, [math.nan] * len(z)
        lp = 0.0
        for x in z:
            lp -= 0.5 * x * x
        return lp, [-x for x in z]

    return Target(source, torch_fn, py_fn, 2)


DIAG5_MEAN = [1.0, -1.0, 0.0, 2.0, -3.0]
DIAG5_SD = [0.1, 0.3, 1.0, 3.0, 10.0]
CORR2_MEAN = [0.5, -1.0]
CORR2_COV = torch.tensor([[1.0, 0.9 * 2.0], [0.9 * 2.0, 4.0]], dtype=F64)

TARGETS = {
    "diag5": _diag_gaussian(DIAG5_MEAN, DIAG5_SD),
    "corr2": _gaussian(CORR2_MEAN, CORR2_COV),
    "funnel": _funnel(),
    "nan_box": _nan_box(),
}


@pytest.fixture(scope="module")
def library():
    """``library(name)``: the compiled potential of ``TARGETS[name]`` with the NUTS template."""
    cache: dict[str, ctypes.CDLL] = {}

    def get(name: str) -> ctypes.CDLL:
        if name not in cache:
            cache[name] = compile_library(Unit(TARGETS[name].c_source + nuts_source()))
        return cache[name]

    return get


@dataclass(frozen=True)
class NativeNUTS(NUTS):
    """The torch NUTS kernel with its transition in C (so the runner drives it unchanged)."""

    library: ctypes.CDLL | None = None

    def step(self, rng, state):
        return native_nuts_transition(self.library, rng, state, self.max_tree_depth,
                                      self.divergence_threshold)


def _native(library, name: str, **kwargs) -> NativeNUTS:
    return NativeNUTS(TARGETS[name].torch_fn, library=library(name), **kwargs)


def _init(num_chains: int, dim: int, scale: float = 0.5) -> torch.Tensor:
    return scale * torch.randn(num_chains, dim, generator=torch.Generator().manual_seed(1),
                               dtype=F64)


# ------------------------------------------------------------------------------ reference

_MASK = (1 << 64) - 1


class _Xoshiro:
    """xoshiro256** seeded by splitmix64, as in nuts.c."""

    def __init__(self, seed: int):
        self.s = []
        for _ in range(4):
            seed = (seed + 0x9E3779B97F4A7C15) & _MASK
            z = seed
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def _rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & _MASK

    def uniform(self) -> float:
        s = self.s
        result = (self._rotl((s[1] * 5) & _MASK, 7) * 9) & _MASK
        t = (s[1] << 17) & _MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return (result >> 11) * 2.0**-53


class _Point(NamedTuple):
    z: list
    p: list
    g: list
    v: list  # M^{-1} p
    lp: float
    h: float


def _dot(a, b) -> float:
    s = 0.0
    for x, y in zip(a, b, strict=True):
        s += x * y
    return s


def _log_sum_exp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def reference_transition(py_fn, z0, p0, eps, inv_mass, seed, max_depth, threshold, counts):
    """Stan's NUTS transition, recursively on lists of points; draws in nuts.c's order.
    ``counts`` tallies which U-turn checks ended trees (to see the extra checks matter)."""
    dense = isinstance(inv_mass[0], list)
    rng = _Xoshiro(seed)

    def velocity(p):
        return [_dot(row, p) for row in inv_mass] if dense else [
            m * q for m, q in zip(inv_mass, p, strict=True)]

    lp0, g0 = py_fn(z0)
    v0 = velocity(p0)
    h0 = -lp0 + 0.5 * _dot(p0, v0)
    stats = {"steps": 0, "metro": 0.0, "divergent": False}

    def leapfrog(x: _Point, e: float) -> _Point:
        half = 0.5 * e
        p = [q + half * g for q, g in zip(x.p, x.g, strict=True)]
        z = [zi + e * vi for zi, vi in zip(x.z, velocity(p), strict=True)]
        lp, g = py_fn(z)
        p = [q + half * gi for q, gi in zip(p, g, strict=True)]
        v = velocity(p)
        h = -lp + 0.5 * _dot(p, v)
        return _Point(z, p, g, v, lp, math.inf if math.isnan(h) else h)

    def no_uturn(a: _Point, b: _Point, points) -> bool:
        rho = [sum(col) for col in zip(*(x.p for x in points), strict=True)]
        return _dot(a.v, rho) > 0.0 and _dot(b.v, rho) > 0.0

    def join_ok(a: list, b: list) -> bool:
        """The span ``a + b`` (build order), and each extended by the other's nearest point."""
        if not no_uturn(a[0], b[-1], a + b):
            counts["whole"] += 1
            return False
        if not no_uturn(a[0], b[0], a + b[:1]) or not no_uturn(a[-1], b[-1], a[-1:] + b):
            counts["extra"] += 1
            return False
        return True

    def build(start: _Point, depth: int, e: float):
        """``(points, pick, log_w)`` of 2^depth steps from ``start``, or None if rejected."""
        if depth == 0:
            x = leapfrog(start, e)
            stats["steps"] += 1
            stats["metro"] += 1.0 if x.h <= h0 else math.exp(h0 - x.h)
            if x.h - h0 > threshold:
                stats["divergent"] = True
                return None
            return [x], x, h0 - x.h
        first = build(start, depth - 1, e)
        if first is None:
            return None
        second = build(first[0][-1], depth - 1, e)
        if second is None or not join_ok(first[0], second[0]):
            return None
        log_w = _log_sum_exp(first[2], second[2])
        pick = second[1] if rng.uniform() < math.exp(second[2] - log_w) else first[1]
        return first[0] + second[0], pick, log_w

    trajectory = [_Point(list(z0), list(p0), g0, v0, lp0, h0)]  # in time order
    chosen, log_w, depth = trajectory[0], 0.0, 0
    while depth < max_depth:
        forward = rng.uniform() < 0.5
        sub = build(trajectory[-1] if forward else trajectory[0], depth, eps if forward else -eps)
        if sub is None:
            break
        depth += 1
        points, pick, log_w_sub = sub
        if log_w_sub > log_w or rng.uniform() < math.exp(log_w_sub - log_w):
            chosen = pick
        log_w = _log_sum_exp(log_w, log_w_sub)
        ok = join_ok(trajectory if forward else trajectory[::-1], points)
        trajectory = trajectory + points if forward else points[::-1] + trajectory
        if not ok:
            break
    steps = stats["steps"]
    return (chosen.z, chosen.lp, chosen.g, stats["metro"] / steps, stats["divergent"],
            chosen.h, steps, depth)


REFERENCE_CASES = {
    # name: (target, step size, inverse mass (None: identity), dense, max depth, chains)
    "diag5-diag-metric": ("diag5", 0.7, [s * s for s in DIAG5_SD], False, 10, 3),
    "corr2-identity": ("corr2", 0.35, None, False, 10, 3),
    "corr2-dense-metric": ("corr2", 0.9, CORR2_COV, True, 10, 3),
    "funnel-divergent": ("funnel", 1.2, None, False, 10, 3),
    "nan-box": ("nan_box", 0.9, None, False, 10, 3),
    "depth-cap": ("corr2", 0.005, None, False, 3, 2),
}


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_transitions_match_python_reference(library, case):
    name, eps, inv_mass, dense, max_depth, num_chains = REFERENCE_CASES[case]
    target = TARGETS[name]
    kernel = _native(library, name, step_size=eps, max_tree_depth=max_depth,
                     metric="dense" if dense else "diag",
                     inverse_mass_matrix=None if inv_mass is None else torch.as_tensor(
                         inv_mass, dtype=F64))
    state = kernel.init(_init(num_chains, target.dim))
    gens = chain_generators(7, num_chains)
    inv = state.metric.inverse_mass.tolist()
    counts = {"whole": 0, "extra": 0}
    totals = {"divergent": 0, "capped": 0}
    for _ in range(25):
        # The same momentum and seeds as the transition will draw, from copies of the streams.
        copies = [torch.Generator().set_state(g.get_state()) for g in gens]
        xi = randn(copies, num_chains, (target.dim + 1,), dtype=F64)
        p0 = sample_momentum(state.metric, xi[:, : target.dim]).tolist()
        seeds = [s & _MASK for s in xi[:, target.dim].contiguous().view(torch.int64).tolist()]
        new, info = kernel.step(gens, state)
        for c in range(num_chains):
            z, lp, g, accept, divergent, energy, steps, depth = reference_transition(
                target.py_fn, state.position[c].tolist(), p0[c], eps, inv[c], seeds[c],
                max_depth, kernel.divergence_threshold, counts)
            assert (int(info.num_grad_evals[c]), int(info.tree_depth[c])) == (steps, depth)
            assert bool(info.divergent[c]) == divergent
            close = dict(rtol=1e-9, atol=1e-12)
            assert torch.allclose(new.position[c], torch.tensor(z, dtype=F64), **close)
            assert torch.allclose(new.grad[c], torch.tensor(g, dtype=F64), **close)
            for got, want in ((new.log_density[c], lp), (info.energy[c], energy),
                              (info.accept_prob[c], accept)):
                assert math.isclose(float(got), want, rel_tol=1e-9, abs_tol=1e-12)
            totals["divergent"] += divergent
            totals["capped"] += depth == max_depth
        state = new
    # The cases exercise what they are named for.
    if "divergent" in case or "nan" in case:
        assert totals["divergent"] > 0
    if case == "depth-cap":
        assert totals["capped"] == 25 * num_chains
    if case == "corr2-identity":
        assert counts["extra"] > 0, counts  # Stan's extra checks end some trees


# ------------------------------------------------------------------------------ statistics


def _z_scores(draws: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> tuple:
    """Standardized errors of the means (MCSE) and of the sds (``1 / sqrt(2 ESS)`` of the
    squares, Gaussian)."""
    z_mean = (draws.mean(dim=(0, 1)) - mean) / mcse_mean(draws)
    ess_sq = ess((draws - mean) ** 2)
    ratio = draws.reshape(-1, draws.shape[-1]).std(dim=0) / sd
    return z_mean, (ratio - 1.0) * torch.sqrt(2.0 * ess_sq)


@pytest.mark.parametrize("metric", ["identity", "diag"])
def test_moments_anisotropic_gaussian(library, metric):
    # Identity metric: the step is limited by the smallest scale, trees run ~2^8 steps.
    inv = None if metric == "identity" else torch.tensor(DIAG5_SD, dtype=F64) ** 2
    eps = 0.12 if metric == "identity" else 0.8
    kernel = _native(library, "diag5", step_size=eps, inverse_mass_matrix=inv)
    run = sample(kernel, None, _init(4, 5) + torch.tensor(DIAG5_MEAN, dtype=F64), 0, 1000,
                 seed=11, adapt=False)
    z_mean, z_sd = _z_scores(run.draws, torch.tensor(DIAG5_MEAN, dtype=F64),
                             torch.tensor(DIAG5_SD, dtype=F64))
    assert (z_mean.abs() < 4).all() and (z_sd.abs() < 4).all(), (z_mean, z_sd)
    assert run.num_divergent == 0


@pytest.mark.parametrize("metric", ["diag", "dense"])
def test_moments_correlated_gaussian(library, metric):
    inv = CORR2_COV if metric == "dense" else None
    kernel = _native(library, "corr2", step_size=0.9 if metric == "dense" else 0.3,
                     metric=metric, inverse_mass_matrix=inv)
    run = sample(kernel, None, _init(4, 2), 0, 1500, seed=12, adapt=False)
    mean = torch.tensor(CORR2_MEAN, dtype=F64)
    z_mean, z_sd = _z_scores(run.draws, mean, CORR2_COV.diagonal().sqrt())
    assert (z_mean.abs() < 4).all() and (z_sd.abs() < 4).all(), (z_mean, z_sd)
    # The covariance: E[(x - mu_x)(y - mu_y)] = 1.8.
    prod = ((run.draws - mean).prod(-1)).unsqueeze(-1)
    z_cov = (prod.mean() - CORR2_COV[0, 1]) / mcse_mean(prod)[0]
    assert abs(float(z_cov)) < 4


@pytest.mark.parametrize("name, eps, inv", [("corr2", 0.3, None),
                                            ("diag5", 0.9, [s * s for s in DIAG5_SD])])
def test_tree_statistics_agree_with_torch_nuts(library, name, eps, inv):
    inv = None if inv is None else torch.tensor(inv, dtype=F64)
    settings = dict(step_size=eps, inverse_mass_matrix=inv, max_tree_depth=8)
    init = _init(4, TARGETS[name].dim)
    runs = [sample(kernel, None, init, 0, 400, seed=13, adapt=False)
            for kernel in (NUTS(TARGETS[name].torch_fn, **settings),
                           _native(library, name, **settings))]
    for field in ("num_grad_evals", "tree_depth", "accept_prob"):
        a, b = (getattr(run.info, field).to(F64).unsqueeze(-1) for run in runs)
        z = (a.mean() - b.mean()) / torch.sqrt(mcse_mean(a) ** 2 + mcse_mean(b) ** 2)
        assert abs(float(z)) < 4, (field, a.mean(), b.mean())
    # The distribution of depths, depth by depth.
    depth_torch, depth_native = (run.info.tree_depth for run in runs)
    for d in range(1, 9):
        a, b = ((x == d).to(F64).unsqueeze(-1) for x in (depth_torch, depth_native))
        se = torch.sqrt(mcse_mean(a) ** 2 + mcse_mean(b) ** 2).clamp(min=0.01)
        assert abs(float(a.mean() - b.mean()) / float(se)) < 4, d


def test_end_to_end_with_adaptation(library):
    run = sample(_native(library, "corr2", metric="dense"), None, _init(2, 2), 300, 300,
                 seed=14)
    assert torch.isfinite(run.draws).all() and run.num_divergent == 0
    z_mean, _ = _z_scores(run.draws, torch.tensor(CORR2_MEAN, dtype=F64),
                          CORR2_COV.diagonal().sqrt())
    assert (z_mean.abs() < 4).all()
    assert (run.step_size > 0.3).all()  # the dense metric lets the step grow


# ------------------------------------------------------------------------------ contract


def test_state_and_info_match_torch_nuts(library):
    kernel = _native(library, "corr2", step_size=0.3)
    state = kernel.init(_init(3, 2))
    new, info = kernel.step(chain_generators(0, 3), state)
    ref_new, ref_info = NUTS(TARGETS["corr2"].torch_fn, step_size=0.3).step(
        chain_generators(0, 3), state)
    for got, want in zip((*new[:4], *info), (*ref_new[:4], *ref_info), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
    assert new.metric is state.metric
    # The log density and gradient returned are those of the returned position.
    lp, g = TARGETS["corr2"].torch_fn(new.position)
    assert torch.allclose(lp, new.log_density) and torch.allclose(g, new.grad)


def test_reproducible_and_independent_of_the_batch(library):
    kernel = _native(library, "diag5", step_size=0.8,
                     inverse_mass_matrix=torch.tensor(DIAG5_SD, dtype=F64) ** 2)
    init = _init(4, 5)
    runs = [sample(kernel, None, init[:n], 0, 50, seed=5, adapt=False) for n in (4, 4, 1)]
    assert torch.equal(runs[0].draws, runs[1].draws)
    for a, b in zip(runs[0].info, runs[1].info, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(runs[2].draws[0], runs[0].draws[0])
    assert torch.equal(runs[2].info.num_grad_evals[0], runs[0].info.num_grad_evals[0])
    assert not torch.equal(runs[0].draws[0], runs[0].draws[1])


def test_tree_depth_cap_and_step_counts(library):
    capped = sample(_native(library, "diag5", step_size=1e-3, max_tree_depth=3), None,
                    _init(3, 5), 0, 20, seed=0, adapt=False)
    assert (capped.info.tree_depth == 3).all() and (capped.info.num_grad_evals == 7).all()
    run = sample(_native(library, "corr2", step_size=0.3, max_tree_depth=4), None,
                 _init(3, 2), 0, 200, seed=0, adapt=False)
    depth, steps = run.info.tree_depth, run.info.num_grad_evals
    assert (depth <= 4).all() and (depth >= 1).all()
    assert ((2**depth - 1 <= steps) & (steps <= 2 ** (depth + 1) - 1)).all()
    assert (depth == 4).any()


def test_divergences(library):
    init = torch.tensor([[0.0, 1.0], [1.0, -1.0], [-1.0, 0.5], [2.0, 0.0]], dtype=F64)
    run = sample(_native(library, "funnel", step_size=1.5), None, init, 0, 50, seed=1,
                 adapt=False)
    assert run.info.divergent.dtype == torch.bool and run.num_divergent > 0
    assert torch.isfinite(run.draws).all() and torch.isfinite(run.info.energy).all()
    # NaN outside the box: trajectories leaving it diverge; the chains stay inside.
    boxed = sample(_native(library, "nan_box", step_size=1.0), None,
                   torch.zeros(3, 2, dtype=F64), 0, 200, seed=2, adapt=False)
    assert boxed.num_divergent > 0
    assert (boxed.draws.abs() <= 2.0).all() and torch.isfinite(boxed.info.energy).all()
    assert ((boxed.info.accept_prob >= 0) & (boxed.info.accept_prob <= 1)).all()


@pytest.mark.skipif(not compiler_available(), reason="needs a C compiler")
def test_each_native_chain_reads_its_own_data_row():
    """Chains bound to different data rows (``FlatModel.bind(rows=)``, as particle Gibbs and
    PMMH bind them) sample their own conjugate posteriors in C, not row 0's."""
    from ppl import model, plate
    from ppl import sample as site
    from ppl.inference.lowering.flat import FlatModel
    from ppl.inference.mcmc.methods import build_kernel
    from ppl.inference.results.diagnostics import mcse_mean as mcse
    from ppl.stdlib import Normal

    @model
    def normal_mean(y):
        mu = site("mu", Normal(0.0, 10.0))
        with plate("data", len(y)):
            site("y", Normal(mu, 1.0), obs=y)

    base = torch.tensor([0.3, -0.4, 1.1, 0.2])
    flat = FlatModel.from_graph(normal_mean.graph(base), backend="native", rows=("y",))
    rows = base + 5.0 * torch.arange(3.0)[:, None]
    flat.bind(rows={"y": rows})
    kernel = build_kernel(NUTS(), flat)
    assert type(kernel).__name__ == "NativeNUTS"
    result = sample(kernel, kernel.log_density_fn, torch.zeros(3, 1, dtype=torch.float64),
                    300, 600, seed=0)
    draws = result.draws[..., 0]
    exact = rows.sum(-1) / (4 + 0.01)  # the posterior mean of mu under each chain's row
    for c in range(3):
        z = (draws[c].mean() - exact[c]) / mcse(draws[c].unsqueeze(0))
        assert abs(float(z)) < 5, (c, float(draws[c].mean()), float(exact[c]))
