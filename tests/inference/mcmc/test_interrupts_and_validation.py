"""Bad run settings are refused by name; Ctrl-C returns the draws made so far, quickly; the
native stream does not depend on how a phase is cut into calls."""

import os
import signal
import threading
import time

import pytest
import torch

from ppl import infer, model, plate, sample
from ppl.inference import NUTS, ConvergenceWarning, SamplingInterrupted
from ppl.inference.lowering import FlatModel
from ppl.inference.lowering.native import compiler_available
from ppl.inference.mcmc import NUTS as NUTSKernel
from ppl.inference.mcmc.native_nuts import NativeNUTS
from ppl.inference.rng import chain_generators
from ppl.stdlib import Bernoulli, Normal


@model
def logistic(x, y):
    w = sample("w", Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
    with plate("N", x.shape[0]):
        sample("y", Bernoulli(logits=x @ w), obs=y)


def _data(n: int, d: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return x, (torch.rand(n, generator=g) < torch.sigmoid(x.sum(-1))).float()


@pytest.mark.parametrize("make, message", [
    (lambda: NUTS(chains=0), "chains must be an integer >= 1"),
    (lambda: NUTS(num_samples=0), "num_samples must be an integer >= 1"),
    (lambda: NUTS(num_warmup=-1), "num_warmup must be an integer >= 0"),
    (lambda: NUTS(target_accept=1.5), "target_accept must lie strictly between 0 and 1"),
    (lambda: NUTS(max_tree_depth=0), "max_tree_depth must be an integer >= 1"),
    (lambda: NUTS(backend="gpu"), "backend must be one of"),
])
def test_bad_settings_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_misspelt_option_is_named_with_the_likely_one():
    with pytest.raises(TypeError, match=r"'num_chains' \(did you mean 'chains'\?\)"):
        NUTS(num_chains=2)


@pytest.mark.skipif(not compiler_available(), reason="needs a C compiler")
def test_a_native_phase_cut_into_calls_draws_what_one_call_draws():
    x, y = _data(50, 3)
    flat = FlatModel.from_graph(logistic.graph(x, y))
    kernel = NativeNUTS.of(NUTSKernel(step_size=0.3), flat.native)
    state = kernel.init(torch.zeros(3, flat.dim, dtype=torch.float64))
    _, _, whole = kernel.steps(chain_generators(1, 3), state, 30)
    gens = chain_generators(1, 3)
    middle, _, first = kernel.steps(gens, state, 10)
    _, _, rest = kernel.steps(gens, middle, 20)
    assert torch.equal(whole, torch.cat([first, rest], dim=1))


@pytest.mark.skipif(not compiler_available(), reason="needs a C compiler")
@pytest.mark.filterwarnings("ignore::ppl.inference.ConvergenceWarning")
def test_the_progress_line_does_not_change_native_draws(capsys):
    x, y = _data(50, 3)
    runs = [infer(logistic, x, y, method=NUTS(100, 100, chains=2, progress_bar=bar), seed=3)
            for bar in (False, True)]
    assert runs[0].extra["backend"] == "native"
    assert torch.equal(runs[0].samples["w"], runs[1].samples["w"])


class _InterruptAfter:
    """Send SIGINT to this process after ``seconds`` (unless cancelled first, on leaving the
    ``with`` block); ``sent`` is the time it was sent."""

    def __init__(self, seconds: float):
        self.sent: float | None = None
        self.timer = threading.Timer(seconds, self._fire)

    def _fire(self) -> None:
        self.sent = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()


@pytest.mark.parametrize("backend", [
    pytest.param("native", marks=pytest.mark.skipif(not compiler_available(),
                                                    reason="needs a C compiler")),
    "generated",
])
def test_ctrl_c_returns_quickly_with_the_draws_made_so_far(backend):
    x, y = _data(2000, 10)
    method = NUTS(num_warmup=20, num_samples=100_000, chains=4, backend=backend,
                  progress_bar=False)
    with pytest.warns(ConvergenceWarning):  # compiles the model, so that Ctrl-C finds it sampling
        infer(logistic, x, y, method=NUTS(5, 5, chains=1, backend=backend), seed=0)
    with _InterruptAfter(3.0) as interrupt, pytest.raises(SamplingInterrupted) as caught:
        infer(logistic, x, y, method=method, seed=0)
    latency = time.perf_counter() - interrupt.sent
    assert latency < 2.0, f"took {latency:.2f} s to stop after Ctrl-C"
    interrupt = caught.value
    kept = interrupt.draws.shape[1]
    assert 0 < kept < 100_000 and interrupt.posterior is not None
    draws = interrupt.posterior.samples["w"]
    assert draws.shape == (4, kept, 10) and torch.isfinite(draws).all()
    assert "interrupted after" in str(interrupt)


class _InterruptAt:
    """A log density that raises KeyboardInterrupt at its ``n``-th call (once)."""

    def __init__(self, fn, n: int):
        self.fn, self.n, self.calls = fn, n, 0

    def __call__(self, z):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.fn(z)


@pytest.mark.parametrize("fraction", [0.2, 0.8])  # of the run's log density calls
def test_resuming_a_checkpoint_gives_the_uninterrupted_draws(fraction, monkeypatch):
    from ppl.inference.mcmc import runner, sample

    monkeypatch.setattr(runner, "_STRETCH_SECONDS", 0.01)  # checkpoints every few iterations
    x, y = _data(40, 3)
    flat = FlatModel.from_graph(logistic.graph(x, y), backend="generated")
    init = torch.zeros(2, flat.dim, dtype=torch.float64)
    whole = sample(NUTSKernel(), flat.potential, init, 150, 150, seed=7)
    interrupt_at = int(fraction * whole.num_fn_calls)
    with pytest.raises(SamplingInterrupted) as caught:
        sample(NUTSKernel(), _InterruptAt(flat.potential, interrupt_at), init, 150, 150, seed=7)
    checkpoint = caught.value.checkpoint
    assert checkpoint is not None and 0 < checkpoint.iteration < 300
    assert (checkpoint.iteration < 150) == (fraction < 0.5)  # in warmup, in sampling
    again = sample(NUTSKernel(), flat.potential, init, 150, 150, seed=123, resume=checkpoint)
    assert torch.equal(again.draws, whole.draws)
    assert torch.equal(again.step_size, whole.step_size)
    assert again.num_grad_evals == whole.num_grad_evals


@pytest.mark.skipif(not compiler_available(), reason="needs a C compiler")
def test_a_native_run_resumed_after_ctrl_c_gives_the_uninterrupted_draws(monkeypatch):
    from ppl.inference.mcmc import runner

    monkeypatch.setattr(runner, "_STRETCH_SECONDS", 0.01)
    report, stretches = runner._report, []

    def interrupt_at_the_fifth_stretch(line, info, tally=None):
        report(line, info, tally)
        stretches.append(info)
        if len(stretches) == 5:
            os.kill(os.getpid(), signal.SIGINT)

    x, y = _data(200, 5)
    method = NUTS(num_warmup=100, num_samples=3000, chains=2, progress_bar=False)
    whole = infer(logistic, x, y, method=method, seed=5)
    monkeypatch.setattr(runner, "_report", interrupt_at_the_fifth_stretch)
    with pytest.raises(SamplingInterrupted) as caught:
        infer(logistic, x, y, method=method, seed=5)
    monkeypatch.setattr(runner, "_report", report)
    checkpoint = caught.value.checkpoint
    assert checkpoint is not None and 0 < checkpoint.iteration < 3100
    resumed = NUTS(num_warmup=100, num_samples=3000, chains=2, progress_bar=False,
                   resume=checkpoint)
    again = infer(logistic, x, y, method=resumed, seed=99)
    assert torch.equal(again.samples["w"], whole.samples["w"])
