"""Enumerated graphs on the fast path: after ``enumerate_discrete`` a 3-component Gaussian
mixture and a 2-state HMM (a Python loop, and a scan whose chain is one
``chain_logsumexp``) lower to the tape (``generated``) and to C (``native``), with the
autograd path's log density and gradient; under NUTS on the native backend they recover the
exact posterior (the conjugate suite's discrete mixture) or the simulated truth within
posterior and Monte Carlo error."""

import warnings

import pytest
import torch

from ppl import infer, model, plate, sample, scan
from ppl.inference import NUTS, FastPathWarning
from ppl.inference.lowering.flat import FlatModel
from ppl.inference.lowering.native import codegen as native_codegen
from ppl.inference.lowering.native import compiler_available
from ppl.inference.lowering.native import fusion as native_fusion
from ppl.inference.results.diagnostics import mcse_mean
from ppl.inference.testing import check_draws, conjugate_cases
from ppl.passes import enumerate_discrete
from ppl.stdlib import Categorical, Dirichlet, HalfNormal, Normal

quiet = pytest.mark.filterwarnings("ignore::ppl.inference.results.summary.ConvergenceWarning")


@model
def mixture3(y):
    weights = sample("weights", Dirichlet(torch.ones(3)))
    loc0 = sample("loc0", Normal(0.0, 5.0))
    gaps = sample("gaps", HalfNormal(torch.full((2,), 3.0)).to_event(1))
    locs = torch.cat([loc0.unsqueeze(-1), loc0.unsqueeze(-1) + torch.cumsum(gaps, -1)], -1)
    sigma = sample("sigma", HalfNormal(2.0))
    with plate("data", len(y)):
        z = sample("z", Categorical(weights))
        sample("y", Normal(locs[z], sigma), obs=y)


def hmm2_prior() -> tuple[torch.Tensor, torch.Tensor]:
    with plate("states", 2):
        trans = sample("trans", Dirichlet(torch.ones(2)))
    mu0 = sample("mu0", Normal(0.0, 3.0))
    gap = sample("gap", HalfNormal(3.0))
    return trans, torch.stack([mu0, mu0 + gap])  # ordered: no label switching


@model
def hmm2(y):
    trans, mu = hmm2_prior()
    z = 0
    for t in range(len(y)):
        z = sample(f"z_{t}", Categorical(trans[z]))
        sample(f"y_{t}", Normal(mu[z], 0.5), obs=y[t])


@model
def hmm2_scan(y):
    trans, mu = hmm2_prior()

    def step(z, y_t):
        z = sample("z", Categorical(trans[z]))
        sample("y", Normal(mu[z], 0.5), obs=y_t)
        return z, None

    scan(step, torch.tensor(0), y)


MIX_TRUTH = {"weights": torch.tensor([0.5, 0.3, 0.2]), "loc0": torch.tensor(-3.0),
             "gaps": torch.tensor([3.0, 3.5]), "sigma": torch.tensor(0.7)}
HMM_TRUTH = {"trans": torch.tensor([[0.9, 0.1], [0.15, 0.85]]), "mu0": torch.tensor(-1.5),
             "gap": torch.tensor(3.0)}


def mixture_data(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    locs = torch.cat([MIX_TRUTH["loc0"].reshape(1),
                      MIX_TRUTH["loc0"] + torch.cumsum(MIX_TRUTH["gaps"], 0)])
    z = torch.multinomial(MIX_TRUTH["weights"], n, replacement=True, generator=g)
    return locs[z] + MIX_TRUTH["sigma"] * torch.randn(n, generator=g)


def hmm_data(steps: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z, ys = 0, []
    for _ in range(steps):
        z = int(torch.multinomial(HMM_TRUTH["trans"][z], 1, generator=g))
        ys.append(HMM_TRUTH["mu0"] + z * HMM_TRUTH["gap"] + 0.5 * torch.randn((), generator=g))
    return torch.stack(ys)


@pytest.mark.parametrize("backend", ["generated", "native", "native-in-parts"])
@pytest.mark.parametrize("case", ["mixture", "hmm", "hmm_scan"])
def test_enumerated_graph_runs_on_the_fast_path_with_autograd_values(case, backend, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path))
    if backend == "native-in-parts":  # a long body: split into functions, short loops, -O1
        monkeypatch.setattr(native_codegen, "PART_LINES", 20)
        monkeypatch.setattr(native_codegen, "LARGE_LINES", 100)
        monkeypatch.setattr(native_fusion, "MAX_FUSED", 3)
    models = {"mixture": lambda: mixture3.graph(mixture_data(40)),
              "hmm": lambda: hmm2.graph(hmm_data(8)),
              "hmm_scan": lambda: hmm2_scan.graph(hmm_data(8))}
    graph = models[case]()
    graph = enumerate_discrete()(graph)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPathWarning)
        fast = FlatModel.from_graph(graph, backend=backend.removesuffix("-in-parts"))
    assert fast.backend == backend.removesuffix("-in-parts") and fast.fallback_reason is None
    if backend == "native-in-parts":
        assert "ppl_part_1(z, grad, row);" in fast.native.source.text
        assert fast.native.source.optimization == "-O1"
    reference = FlatModel.from_graph(graph, backend="autograd")
    z = torch.randn(3, fast.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_p, grad = fast.log_density_and_grad(z)
    expected_log_p, expected_grad = reference.log_density_and_grad(z)
    # the autograd path rounds the model's float32 constants (log 5.0 ...) in float32
    torch.testing.assert_close(log_p, expected_log_p, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-6)


@quiet
def test_enumerated_discrete_mixture_matches_its_exact_posterior_on_native():
    case = conjugate_cases()["discrete_mixture"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPathWarning)
        post = infer(case.model, *case.args, method=NUTS(300, 500, chains=2), seed=0,
                     passes=[enumerate_discrete()])
    assert post.extra["backend"] == "native"
    check_draws(post.samples, case)


def truth_z_scores(post, truth: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """(posterior mean - truth) over the posterior sd and the mean's MCSE, per element: the
    truth lies within a few of these of the mean when the model and sampler are right."""
    out = {}
    for name, value in truth.items():
        draws = post.samples[name].to(torch.float64)
        flat = draws.reshape(draws.shape[0], draws.shape[1], -1)
        mean, sd = flat.mean((0, 1)), flat.std((0, 1))
        mcse = torch.stack([mcse_mean(flat[..., i]) for i in range(flat.shape[-1])])
        out[name] = (mean - value.reshape(-1).to(torch.float64)) / (sd.square()
                                                                      + mcse.square()).sqrt()
    return out


@quiet
@pytest.mark.slow
def test_enumerated_mixture_recovers_the_simulated_truth_on_native():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPathWarning)
        post = infer(mixture3, mixture_data(300), method=NUTS(500, 500, chains=2), seed=0,
                     passes=[enumerate_discrete()])
    assert post.extra["backend"] == "native"
    for name, z in truth_z_scores(post, MIX_TRUTH).items():
        assert z.abs().max() < 4, (name, z)


@quiet
@pytest.mark.parametrize("m, steps", [pytest.param(hmm2, 40, marks=pytest.mark.slow),
                                      (hmm2_scan, 200)], ids=["loop", "scan"])
def test_enumerated_hmm_recovers_the_simulated_truth_on_native(m, steps):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPathWarning)
        post = infer(m, hmm_data(steps), method=NUTS(400, 400, chains=2), seed=0,
                     passes=[enumerate_discrete()])
    assert post.extra["backend"] == "native"
    for name, z in truth_z_scores(post, HMM_TRUTH).items():
        assert z.abs().max() < 4, (name, z)


@pytest.mark.skipif(not compiler_available(), reason="no C compiler on this machine")
def test_a_scan_chain_lowers_to_one_loop_whatever_its_length(tmp_path, monkeypatch):
    """The C of a summed-out scan chain is one forward loop (and one forward-backward for
    the gradient): its length does not grow with T, and the value and gradient are the
    generated (torch) backend's."""
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path))
    sizes = []
    for steps in (50, 1000):
        graph = enumerate_discrete()(hmm2_scan.graph(hmm_data(steps)))
        native = FlatModel.from_graph(graph, backend="native")
        generated = FlatModel.from_graph(graph, backend="generated")
        z = torch.randn(2, native.dim, generator=torch.Generator().manual_seed(2),
                        dtype=torch.float64)
        for got, expected in zip(native.log_density_and_grad(z),
                                 generated.log_density_and_grad(z), strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-9)
        sizes.append(len(native.native.source.text.splitlines()))
    assert sizes[0] == sizes[1] < 1000

