"""Tempered SMC on a public posteriordb posterior, element by element against the gold
summaries (the same check as NUTS's in ``test_posteriordb``: mean z-score from our MCSE and
the reference's, sd ratio in [0.9, 1.1]). Independent runs' resampled particles are the
chains, so the MCSE sees the spread between runs."""

from __future__ import annotations

import pytest
import torch

from ppl import infer
from ppl.inference import mcmc
from ppl.inference.results.posterior import Posterior
from ppl.inference.smc import TemperedSMC

from .models import POSTERIORS, load_data, load_reference
from .test_posteriordb import compare

RUNS = 4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["eight_schools-eight_schools_noncentered"])
def test_tempered_smc_matches_reference(name: str) -> None:
    model = POSTERIORS[name]
    method = TemperedSMC(1000, mcmc.HMC(num_steps=8), num_moves=8)
    runs = [infer(model, method=method, seed=seed, **load_data(name, model))
            for seed in range(RUNS)]
    draws = [r.resample(generator=torch.Generator().manual_seed(i)) for i, r in enumerate(runs)]
    chains = Posterior(samples={k: torch.stack([d[k] for d in draws]) for k in draws[0]})
    comparisons = compare(chains, load_reference(name))
    failed = [c for c in comparisons if not c.ok]
    stages = [len(r.extra["betas"]) - 1 for r in runs]
    assert not failed, (f"{name} ({RUNS} runs of 1000 particles, {stages} stages): "
                        f"{len(failed)} of {len(comparisons)} elements off\n  "
                        + "\n  ".join(map(str, failed)))
