"""NUTS on the public posteriordb posteriors, checked element by element against the gold
summaries of Stan's 10,000 near-independent reference draws.

For every reference element (``theta[1]``, ``sigma``, ...) the check is

* mean: ``z = (mean - ref_mean) / sqrt(mcse^2 + ref_sd^2 / 10000)``, with ``mcse`` our Monte
  Carlo standard error of the mean (from the ESS) and ``ref_sd / 100`` the reference's, must
  satisfy ``|z| < 4`` (a false alarm about once in 16,000 elements);
* spread: ``sd / ref_sd`` must lie in ``[0.9, 1.1]``.

Each posterior runs with a fixed seed, so a failure is reproducible. With a C compiler (the
native backend) all of them run in the default suite, in about 20 s together; on torch alone
three cheap posteriors do, and the rest are ``slow``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from ppl import infer
from ppl.inference.lowering.flat import FlatModel
from ppl.inference.lowering.native import compiler_available
from ppl.inference.mcmc.methods import NUTS
from ppl.inference.results.diagnostics import mcse_mean, mcse_sd
from ppl.inference.results.posterior import Posterior
from ppl.passes import noncenter

from .models import POSTERIORS, RefElement, load_data, load_reference

Z_MAX = 4.0
REF_DRAWS = 10_000


@dataclass(frozen=True)
class Case:
    """How one posterior is sampled: NUTS run length, extra NUTS settings (``dense_mass``,
    ``target_accept``, ...), graph passes, and whether it is too slow for the default suite
    on torch alone."""

    name: str
    warmup: int = 500
    draws: int = 500
    chains: int = 4
    nuts: dict[str, Any] = field(default_factory=dict)
    passes: tuple[Callable, ...] = ()
    slow: bool = True


CASES = [
    Case("eight_schools-eight_schools_noncentered", slow=False),
    # Uncentred predictors: a dense metric takes out the correlation (the same check passes
    # with the diagonal one, at about twice the cost, too much for the default suite).
    Case("kidiq-kidscore_momiq", nuts={"dense_mass": True}, slow=False),
    Case("arK-arK", nuts={"dense_mass": True}, slow=False),
    # The centred funnel, reparameterized by the noncenter pass, as posteriordb's README asks
    # of a PPL ("get it right, e.g. by reparameterizing automatically"); without the pass see
    # test_centered_funnel_is_not_silently_wrong.
    Case("eight_schools-eight_schools_centered", passes=(noncenter(),)),
    Case("earnings-logearn_interaction", nuts={"dense_mass": True}),
    Case("mesquite-logmesquite_logvas"),
    Case("nes2000-nes"),
    Case("sblrc-blr", draws=1000),
    # corr(alpha, beta) = -0.99998 even after the diagonal metric's whitening: hundreds of
    # leapfrog steps per draw (Stan's reference run needed max_treedepth 15). Stan's dense
    # metric does not help, as its 1e-3 shrinkage swamps the thin direction; target_accept
    # 0.95 mixes far better than 0.8.
    Case("kilpisjarvi_mod-kilpisjarvi", warmup=1000, draws=1000,
         nuts={"target_accept": 0.95, "max_tree_depth": 13}),
    Case("garch-garch11"),
    # Tree depth ~7 per draw; posteriordb's reference run used adapt_delta 0.99.
    Case("gp_pois_regr-gp_pois_regr", warmup=1000, draws=1000, nuts={"target_accept": 0.95}),
    Case("low_dim_gauss_mix-low_dim_gauss_mix"),
    Case("hmm_example-hmm_example"),
]


def run_nuts(case: Case, seed: int = 0) -> Posterior:
    """NUTS draws of ``case``'s posterior, its model given its ``data.json``."""
    model = POSTERIORS[case.name]
    method = NUTS(case.warmup, case.draws, case.chains, **case.nuts)
    return infer(model, method=method, seed=seed, passes=list(case.passes),
                 **load_data(case.name, model))


@dataclass(frozen=True)
class Comparison:
    """One element's posterior mean and sd against the reference's, each with its MCSE."""

    ref: RefElement
    mean: float
    sd: float
    mcse: float
    mcse_sd: float

    @property
    def z(self) -> float:
        return (self.mean - self.ref.mean) / math.sqrt(self.mcse**2 + self.ref.sd**2 / REF_DRAWS)

    @property
    def z_sd(self) -> float:
        """The sd's z-score: a heavy-tailed element (eight schools' tau) has a noisy sd, and
        its MCSE says how noisy, where a fixed ratio bound would fail it by chance."""
        return (self.sd - self.ref.sd) / math.sqrt(self.mcse_sd**2 + self.ref.mcse_sd**2)

    @property
    def ok(self) -> bool:
        return abs(self.z) < Z_MAX and abs(self.z_sd) < Z_MAX

    def __str__(self) -> str:
        return (f"{self.ref.element}: mean {self.mean:.5g} vs ref {self.ref.mean:.5g} "
                f"(z = {self.z:+.2f}), sd {self.sd:.5g} vs ref {self.ref.sd:.5g} "
                f"(z = {self.z_sd:+.2f})")


def compare(posterior: Posterior, reference: list[RefElement]) -> list[Comparison]:
    """Each reference element's mean, sd and their MCSEs in ``posterior``'s draws."""
    out = []
    for ref in reference:
        draws = posterior.samples[ref.site][(slice(None), slice(None), *ref.index)]
        out.append(Comparison(ref, float(draws.mean()), float(draws.std()),
                              float(mcse_mean(draws)), float(mcse_sd(draws))))
    return out


#: Minutes on torch alone, seconds with the native backend (then in the default suite).
SLOW_ON_TORCH = [] if compiler_available() else [pytest.mark.slow]


@pytest.mark.parametrize("case", [
    pytest.param(case, id=case.name, marks=SLOW_ON_TORCH if case.slow else [])
    for case in CASES
])
def test_nuts_matches_reference(case: Case) -> None:
    start = time.perf_counter()
    posterior = run_nuts(case)
    seconds = time.perf_counter() - start
    comparisons = compare(posterior, load_reference(case.name))
    failed = [c for c in comparisons if not c.ok]
    divergences = int(posterior.info["divergent"].sum())
    assert not failed, (
        f"{case.name} ({case.chains} chains x {case.draws} draws, {seconds:.0f} s, "
        f"{divergences} divergences): {len(failed)} of {len(comparisons)} elements off\n  "
        + "\n  ".join(map(str, failed))
    )


@pytest.mark.parametrize("name", [pytest.param("eight_schools-eight_schools_centered",
                                              marks=SLOW_ON_TORCH)])
def test_centered_funnel_is_not_silently_wrong(name: str) -> None:
    """Plain NUTS on the centred eight schools may be biased by the funnel (small tau
    under-explored), but then it must say so with divergences."""
    posterior = run_nuts(Case(name))
    reference = load_reference(name)
    failed = [c for c in compare(posterior, reference) if not c.ok]
    divergences = int(posterior.info["divergent"].sum())
    assert not failed or divergences > 0, (
        "centred eight schools off the reference with no divergence reported:\n  "
        + "\n  ".join(map(str, failed)))


def test_cases_cover_every_posterior() -> None:
    assert sorted(case.name for case in CASES) == sorted(POSTERIORS)


@pytest.mark.skipif(not compiler_available(), reason="no C compiler on this machine")
@pytest.mark.parametrize("name", sorted(POSTERIORS))
def test_every_posterior_lowers_to_native(name: str) -> None:
    """Every posterior's potential is emitted as C (building it compiles nothing)."""
    model = POSTERIORS[name]
    flat = FlatModel.from_graph(model.graph(**load_data(name, model)))
    assert flat.backend == "native", flat.fallback_reason
