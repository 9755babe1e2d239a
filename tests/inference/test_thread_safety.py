"""Inference from several threads (or asyncio tasks) at once gives what each gives alone: the
handler stack is context-local and each ``seed`` scope draws from its own generator."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from ppl import handlers, infer, model, plate, sample
from ppl.inference import NUTS, Importance
from ppl.stdlib import Bernoulli, Beta, HalfNormal, Normal


@model
def coin(flips):
    p = sample("p", Beta(2.0, 2.0))
    with plate("N", len(flips)):
        sample("x", Bernoulli(p), obs=flips)


@model
def regression(x, y):
    slope = sample("slope", Normal(0.0, 1.0))
    noise = sample("noise", HalfNormal(1.0))
    with plate("N", len(x)):
        sample("y", Normal(slope * x, noise), obs=y)


FLIPS = torch.tensor([1.0, 1.0, 0.0, 1.0])
X = torch.linspace(-1, 1, 8)
Y = 0.5 * X + 0.1 * torch.cos(7 * X)


def in_two_threads(work: Callable[[int], list]) -> list[list]:
    """``work(0)`` and ``work(1)`` run at once, started together."""
    start = threading.Barrier(2)

    def run(which: int) -> list:
        start.wait()
        return work(which)

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(run, [0, 1]))


def importance_runs(which: int, runs: int = 50) -> list[tuple[torch.Tensor, ...]]:
    out = []
    for _ in range(runs):
        if which == 0:
            post = infer(coin, FLIPS, method=Importance(200), seed=0)
        else:
            post = infer(regression, X, Y, method=Importance(200), seed=0)
        out.append((post.log_weights, *post.samples.values()))
    return out


def test_importance_from_two_threads_equals_the_sequential_runs():
    expected = [importance_runs(0, runs=1)[0], importance_runs(1, runs=1)[0]]
    for which, results in enumerate(in_two_threads(importance_runs)):
        assert len(results) == 50
        for result in results:
            for got, want in zip(result, expected[which], strict=True):
                assert torch.equal(got, want)


def nuts_runs(which: int, runs: int = 6) -> list[torch.Tensor]:
    """NUTS on a fresh model each run (its graph traced and lowered anew), seed per run."""
    out = []
    for run in range(runs):
        @model
        def fresh(x, y):
            regression.fn(x, y)

        post = infer(fresh, X, Y, method=NUTS(num_warmup=60, num_samples=40, chains=2),
                     seed=10 * which + run)
        out.append(torch.stack([post.samples["slope"], post.samples["noise"]]))
    return out


@pytest.mark.filterwarnings("ignore::ppl.inference.ConvergenceWarning")  # short runs
def test_nuts_on_fresh_models_from_two_threads_equals_the_sequential_runs():
    expected = [nuts_runs(0), nuts_runs(1)]
    for which, results in enumerate(in_two_threads(nuts_runs)):
        for got, want in zip(results, expected[which], strict=True):
            assert torch.equal(got, want)


def test_a_seed_scope_is_not_disturbed_by_unseeded_draws_in_another_thread():
    def seeded_draws() -> torch.Tensor:
        with handlers.seed(3):
            return torch.stack([sample("x", Normal(0.0, 1.0)) for _ in range(200)])

    def unseeded(_: int) -> None:
        for _ in range(2000):
            sample("z", Normal(0.0, 1.0))

    expected = seeded_draws()
    with ThreadPoolExecutor(1) as pool:
        noise = pool.submit(unseeded, 0)
        got = [seeded_draws() for _ in range(5)]
        noise.result()
    assert all(torch.equal(g, expected) for g in got)


def test_asyncio_tasks_each_see_their_own_handlers():
    async def traced(name: str) -> list[str]:
        with handlers.trace() as tr:
            for i in range(5):
                sample(f"{name}{i}", Normal(0.0, 1.0))
                await asyncio.sleep(0)
        return list(tr.trace)

    async def both() -> list[list[str]]:
        return await asyncio.gather(traced("a"), traced("b"))

    assert asyncio.run(both()) == [[f"a{i}" for i in range(5)], [f"b{i}" for i in range(5)]]
