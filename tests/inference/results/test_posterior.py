"""MCMC results: the infer-method factories, ``Posterior.diagnostics()``, ``summary()``,
convergence warnings (once per result), and ``to_arviz()``."""

import inspect
import math
import sys
import warnings

import pytest
import torch

from ppl import infer, predictive
from ppl.inference import (
    HMC,
    MALA,
    MCMC,
    NUTS,
    RWMH,
    ConvergenceWarning,
    Posterior,
    SamplerDiagnostics,
    Slice,
    mcmc,
)
from ppl.inference.results import diagnostics as diag
from ppl.inference.testing import conjugate_cases

CASE = conjugate_cases()["normal_normal"]
quiet = pytest.mark.filterwarnings("ignore::ppl.inference.results.summary.ConvergenceWarning")


@pytest.fixture(scope="module")
def good_run():
    """A NUTS run long enough to pass every check, and the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = infer(CASE.model, *CASE.args, method=NUTS(300, 500, chains=4), seed=0)
    return post, [w for w in caught if issubclass(w.category, ConvergenceWarning)]


def unmixed_posterior() -> Posterior:
    """Two chains stuck in different places: R-hat far above 1.01."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 200, generator=g) + torch.tensor([[0.0], [3.0]])
    return Posterior({"x": x})


# --------------------------------------------------------------------------- methods


def test_every_kernel_is_an_infer_method_with_its_own_options():
    assert "max_tree_depth" in inspect.signature(NUTS).parameters
    assert "trajectory_length" in inspect.signature(HMC).parameters
    assert "direction" in inspect.signature(Slice).parameters
    assert NUTS(dense_mass=True).kernel.metric == "dense"
    assert NUTS(max_tree_depth=6).kernel.max_tree_depth == 6
    assert isinstance(HMC(num_steps=5).kernel, mcmc.HMC) and HMC(num_steps=5).kernel.num_steps == 5
    assert isinstance(RWMH().kernel, mcmc.RWMH) and isinstance(MALA().kernel, mcmc.MALA)
    assert NUTS(target_accept=0.95).adapt.target_accept == 0.95
    with pytest.raises(TypeError, match="max_tree_depth"):
        HMC(max_tree_depth=3)
    with pytest.raises(ValueError, match="Slice has no step size"):
        Slice(target_accept=0.8)


@quiet
@pytest.mark.parametrize("method", [
    HMC(60, 40, chains=2, num_steps=4), MALA(60, 40, chains=2), RWMH(60, 40, chains=2),
    Slice(60, 40, chains=2), MCMC(mcmc.NUTS(max_tree_depth=4), 60, 40, chains=2, thin=2),
], ids=["HMC", "MALA", "RWMH", "Slice", "MCMC-kernel-thin"])
def test_each_method_runs_through_infer(method):
    post = infer(CASE.model, *CASE.args, method=method, seed=0)
    draws = 20 if method.thin == 2 else 40
    assert post.samples["mu"].shape == (2, draws)
    assert torch.isfinite(post.samples["mu"]).all()
    assert post.extra["kernel"] == type(method.kernel).__name__
    assert post.info["divergent"].shape == (2, draws)


# --------------------------------------------------------------------------- diagnostics


def test_diagnostics_of_a_run_read_its_info(good_run):
    post, _ = good_run
    d = post.diagnostics()
    assert isinstance(d, SamplerDiagnostics)
    assert (d.kernel, d.num_chains, d.num_draws, d.max_tree_depth) == ("NUTS", 4, 500, 10)
    assert d.divergences == tuple(post.info["divergent"].sum(1).tolist())
    assert d.tree_depth_max == tuple(post.info["tree_depth"].amax(1).tolist())
    assert d.tree_depth_mean == pytest.approx(post.info["tree_depth"].double().mean(1).tolist())
    assert d.max_depth_hits == (0, 0, 0, 0)
    assert d.step_size == pytest.approx(post.extra["step_size"].tolist())
    assert d.accept_stat == pytest.approx(post.info["accept_prob"].double().mean(1).tolist())
    assert d.e_bfmi == pytest.approx(diag.e_bfmi(post.info["energy"]).tolist())
    assert all(v > 0.3 for v in d.e_bfmi)
    assert d.num_grad_evals == post.extra["num_grad_evals"] > int(post.info["num_grad_evals"].sum())
    assert d.warmup_time > 0 and d.sampling_time > 0
    text = str(d)
    for word in ("NUTS", "4 chains x 500 draws", "divergences", "e_bfmi", "depth_mean",
                 "gradient evaluations", "sampling"):
        assert word in text
    assert len(text.splitlines()) == 3 + 4 + 2


def test_sampler_warnings_for_divergences_low_e_bfmi_and_saturated_trees():
    g = torch.Generator().manual_seed(0)
    energy = torch.randn(2, 400, generator=g, dtype=torch.float64).cumsum(1)  # a random walk
    info = {"divergent": torch.zeros(2, 400, dtype=torch.bool),
            "tree_depth": torch.full((2, 400), 3), "energy": torch.randn(2, 400, generator=g)}
    nuts = {"kernel": "NUTS", "max_tree_depth": 10}
    assert SamplerDiagnostics.from_run(info, nuts).warnings() == []
    info["divergent"][1, 7] = True
    info["tree_depth"][0, :5] = 10
    info["energy"] = energy
    d = SamplerDiagnostics.from_run(info, nuts)
    assert d.divergences == (0, 1) and d.max_depth_hits == (5, 0) and max(d.e_bfmi) < 0.3
    text = d.warnings()
    assert len(text) == 3
    assert "1 of 800 transitions after warmup were divergent" in text[0]
    assert "E-BFMI below 0.3 (chain 0" in text[1]
    assert "5 of 800 transitions stopped at the maximum tree depth 10" in text[2]
    assert len(d.warnings(max_depth_fraction=0.01)) == 2
    # E-BFMI means nothing for a random walk's energy (-log density): neither shown nor checked.
    assert SamplerDiagnostics.from_run(info, {"kernel": "RWMH"}).e_bfmi is None


def test_diagnostics_tolerate_missing_fields():
    d = Posterior({"x": torch.zeros(2, 10)}, info={"accept_prob": torch.ones(2, 10)}).diagnostics()
    assert d.divergences is None and d.e_bfmi is None and d.accept_stat == (1.0, 1.0)
    assert "accept_stat" in str(d) and d.warnings() == []


# --------------------------------------------------------------------------- warnings, summary


def test_a_good_run_warns_nothing(good_run):
    post, caught = good_run
    assert caught == []
    assert post.convergence_warnings() == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        post.summary()


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_chains_of_non_finite_draws_warn_naming_the_site(bad):
    g = torch.Generator().manual_seed(1)
    fine = torch.randn(4, 500, generator=g)
    scale = torch.randn(4, 500, 2, generator=g)
    scale[..., 1] = bad  # every draw of one element: the other checks see only nan
    post = Posterior({"mu": fine, "scale": scale})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post.warn()
    messages = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    assert len(messages) == 1, messages
    assert "non-finite draws" in messages[0] and "'scale'" in messages[0]
    assert "scale[1] (2000 of 2000)" in messages[0] and "mu" not in messages[0]
    assert post.summary().nonfinite == {"scale[1]": 2000}


def test_convergence_warnings_are_issued_once_per_result():
    post = unmixed_posterior()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post.warn()
    assert [str(w.message) for w in caught] == post.convergence_warnings()
    assert all(w.category is ConvergenceWarning for w in caught)
    assert "r_hat > 1.01" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        post.warn()
        table = post.summary()  # already warned: nothing more
    assert any(note.startswith("Warning: r_hat > 1.01") for note in table.notes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unmixed_posterior().summary()  # a fresh result warns on its first summary
    assert len(caught) == len(post.convergence_warnings())


@quiet
def test_a_short_run_warns_at_the_end_of_infer():
    with pytest.warns(ConvergenceWarning, match="ess_bulk|ess_tail|r_hat"):
        infer(CASE.model, *CASE.args, method=RWMH(20, 20, chains=2), seed=0)


def test_summary_table(good_run):
    post, _ = good_run
    table = post.summary()
    assert table.columns == ["mean", "sd", "5%", "50%", "95%", "mcse_mean", "ess_bulk",
                             "ess_tail", "r_hat"]
    assert list(table) == ["mu"] and table.num_chains == 4 and table.num_draws == 500
    assert table.notes == ["Number of divergences: 0 of 2000 transitions"]
    assert "mu" in str(table) and "Number of divergences" in str(table)
    assert post.summary(prob=(0.25, 0.75)).columns[2:4] == ["25%", "75%"]


# --------------------------------------------------------------------------- ArviZ


def test_to_arviz(good_run):
    az = pytest.importorskip("arviz")
    post, _ = good_run
    pred = predictive(CASE.model, post, *CASE.args, seed=0)
    data = post.to_arviz(posterior_predictive={"y": pred["y"]})
    assert isinstance(data, az.InferenceData)
    assert dict(data.posterior["mu"].sizes) == {"chain": 4, "draw": 500}
    assert torch.equal(torch.as_tensor(data.posterior["mu"].values), post.samples["mu"])
    stats = data.sample_stats
    for name in ("diverging", "tree_depth", "energy", "step_size", "acceptance_rate", "n_steps"):
        assert stats[name].shape == (4, 500), name
    assert stats["diverging"].dtype == bool
    torch.testing.assert_close(torch.as_tensor(data.observed_data["y"].values), CASE.args[0])
    assert data.posterior_predictive["y"].shape == (4, 500, 8)
    assert float(az.summary(data, var_names=["mu"])["r_hat"].iloc[0]) < 1.01


def test_to_arviz_without_arviz_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)  # makes `import arviz` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'ppl\[arviz\]'"):
        Posterior({"x": torch.zeros(2, 10)}).to_arviz()
