"""The ``Gibbs`` infer method: block assignment, reproducibility and chain independence, the
posterior of a Gaussian mixture and of an HMM against exact answers (enumeration of the
discrete sites, quadrature over the continuous ones; |z| < 4 with the MCSE), with discrete
sites drawn by Gibbs or enumerated out, and user-assigned kernels."""

from __future__ import annotations

import itertools

import pytest
import torch

from ppl import infer, model, plate, sample
from ppl.errors import ModelError
from ppl.inference.mcmc import NUTS, Slice
from ppl.inference.mcmc.gibbs import Conjugate, DiscreteGibbs, KernelUpdate, SiteProgram
from ppl.inference.mcmc.gibbs.kernel_update import ConditionalFlat
from ppl.inference.mcmc.gibbs.method import Gibbs, assign_blocks
from ppl.ir import LogDensity
from ppl.stdlib import Bernoulli, Categorical, Dirichlet, HalfNormal, Normal, Poisson


def _kinds(blocks):
    return [(sites, type(update).__name__) for sites, update in blocks]


def test_default_assignment(models):
    graph = models.mixture.graph(models.mixture_data)
    _, blocks = assign_blocks(graph)
    assert _kinds(blocks) == [(("z",), "DiscreteGibbs"), (("weights", "scale"), "KernelUpdate")]
    _, blocks = assign_blocks(graph, conjugate=True)
    assert _kinds(blocks) == [(("z",), "DiscreteGibbs"), (("weights",), "Conjugate"),
                              (("scale",), "KernelUpdate")]
    enumerated, blocks = assign_blocks(graph, discrete="enumerate")
    assert [n.address for n in enumerated.latent_nodes] == ["weights", "scale"]
    assert _kinds(blocks) == [(("weights", "scale"), "KernelUpdate")]
    _, blocks = assign_blocks(graph, {"scale": Slice(), ("weights",): NUTS()})
    assert _kinds(blocks) == [(("scale",), "KernelUpdate"), (("weights",), "KernelUpdate"),
                              (("z",), "DiscreteGibbs")]
    assert isinstance(blocks[0][1].kernel, Slice)


@model
def counts():
    n = sample("n", Poisson(3.0))
    sample("y", Normal(n, 1.0), obs=torch.tensor(2.0))


def test_assignment_errors(models):
    graph = models.mixture.graph(models.mixture_data)
    with pytest.raises(ModelError, match="'mu' in updates is not a latent site"):
        assign_blocks(graph, {"mu": NUTS()})
    with pytest.raises(ModelError, match="site 'z' is in two blocks"):
        assign_blocks(graph, {"z": DiscreteGibbs(), ("z", "scale"): NUTS()})
    with pytest.raises(TypeError, match="not an infer method"):
        assign_blocks(graph, {"scale": Gibbs()})
    with pytest.raises(ModelError, match=r"\['n'\] have no finite enumerable support"):
        assign_blocks(counts.graph())
    with pytest.raises(ValueError, match="discrete must be"):
        assign_blocks(graph, discrete="marginalize")


@pytest.mark.filterwarnings("ignore::ppl.inference.ConvergenceWarning")  # 10 draws
def test_same_seed_same_draws_and_chains_independent_of_their_number(models):
    def run(seed, chains):
        method = Gibbs(15, 10, chains=chains)
        return infer(models.mixture, models.mixture_data, method=method, seed=seed)

    a, b, c = run(3, 2), run(3, 3), run(4, 2)
    assert set(a.samples) == {"weights", "scale", "z", "log_scale"}
    assert a.samples["z"].shape == (2, 10, 7) and a.samples["weights"].shape == (2, 10, 3)
    for name in a.samples:
        assert torch.equal(a.samples[name], b.samples[name][:2]), name
    assert not torch.equal(a.samples["scale"], c.samples["scale"])
    torch.testing.assert_close(a.samples["log_scale"], a.samples["scale"].log())
    assert a.info["accept_prob"].shape == (2, 10)
    assert a.extra["tuned"][("weights", "scale")]["step_size"].shape == (2,)
    assert a.diagnostics().max_tree_depth == 10 and "scale" in str(a.summary())


@model
def shifted(y):
    z = sample("z", Bernoulli(0.3))
    x = sample("x", Normal(0.0, 10.0))
    sample("y", Normal(x + 3.0 * z, 0.1), obs=y)


def test_kernel_block_adapts_during_warmup():
    post = infer(shifted, torch.tensor(1.0), method=Gibbs(100, 2, chains=2), seed=0)
    tuned = post.extra["tuned"][("x",)]
    assert not torch.allclose(tuned["step_size"], torch.ones(2, dtype=torch.float64))
    # windows of Stan's schedule ran: the metric follows x's conditional sd (0.1), not 1
    assert (tuned["inverse_mass_matrix"] < 0.2).all(), tuned["inverse_mass_matrix"]


@pytest.mark.filterwarnings("ignore::ppl.inference.ConvergenceWarning")  # few draws
def test_progress_line_counts_sweeps_without_changing_draws(capsys):
    runs = [infer(shifted, torch.tensor(1.0), method=Gibbs(5, 7, chains=2, progress_bar=bar),
                  seed=0) for bar in (True, False)]
    final = capsys.readouterr().err.split("\r")[-1].split()
    assert final[:4] == ["gibbs:", "sampling", "12/12", "100%"]
    assert final[4] == "divergent" and int(final[5]) >= 0
    for name in runs[0].samples:
        assert torch.equal(runs[0].samples[name], runs[1].samples[name])


@model
def chain_rows():
    with plate("states", 2):
        trans = sample("trans", Dirichlet(torch.ones(2)))
    z0 = sample("z0", Categorical(torch.tensor([0.4, 0.6])))
    z1 = sample("z1", Categorical(trans[z0]))  # a row of a latent table, by a per-chain index
    sample("y", Normal(z1.float(), 1.0), obs=torch.tensor(0.3))


def test_a_block_reading_a_latent_table_row_by_a_per_chain_index_stays_generated():
    flat = ConditionalFlat(chain_rows.graph(), ("trans",))
    assert flat.backend != "autograd", flat.fallback_reason
    z = torch.randn(4, flat.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    data = flat.data({"z0": torch.tensor([0, 1, 0, 1]), "z1": torch.tensor([0, 0, 1, 1])})
    generated = flat.log_density_and_grad(z, data)
    flat._generated = None  # the vmapped autograd reference
    reference = flat.log_density_and_grad(z, data)
    for got, want in zip(generated, reference, strict=True):
        torch.testing.assert_close(got, want)


class FlipMetropolis:
    """A user's update: propose flipping a binary site, accept by the blanket density ratio."""

    def bind(self, graph, sites):
        (self.site,) = sites
        self.program = SiteProgram(graph, {a: lambda d, v: d.log_prob(v)
                                           for a in [sites[0], *graph.descendants(sites[0])]})
        return self

    def init(self, rng, values, num_warmup):
        return values, None

    def step(self, rng, values, state):
        def log_p(vals):
            return sum(self.program(vals).values())

        flipped = {**values, self.site: 1 - values[self.site]}
        log_u = torch.stack([torch.rand((), generator=g) for g in rng]).log()
        accept = log_u < log_p(flipped) - log_p(values)
        new = torch.where(accept, flipped[self.site], values[self.site])
        return {**values, self.site: new}, None, {"accept": accept}


def _hmm_known_exact(graph, y_len):
    paths = list(itertools.product((0, 1), repeat=y_len))
    log_joint = torch.stack([
        LogDensity(graph, {f"z_{t}": torch.tensor(k) for t, k in enumerate(path)}).run()
        for path in paths
    ])
    weights = torch.softmax(log_joint.double(), 0)
    on = torch.tensor(paths, dtype=torch.float64)
    return {f"z_{t}": (weights * on[:, t]).sum() for t in range(y_len)}


def test_discrete_hmm_by_gibbs_and_by_enumeration(models, check):
    """Every latent discrete: Gibbs on a chain of dependent sites (drawn jointly, as one
    chain block); enumeration gives exact probabilities."""
    graph = models.hmm_known.graph(models.hmm_data)
    exact = _hmm_known_exact(graph, len(models.hmm_data))
    post = infer(models.hmm_known, models.hmm_data, method=Gibbs(20, 150, chains=40), seed=0)
    for name, p in exact.items():
        check(post.samples[name], p, name)
    post = infer(models.hmm_known, models.hmm_data,
                 method=Gibbs(0, 50, chains=4, discrete="enumerate"), seed=0)
    for name, p in exact.items():
        torch.testing.assert_close(post.extra["discrete_probs"][name][..., 1].double(),
                                   p.expand(4, 50), rtol=1e-5, atol=1e-6)
        check(post.samples[name], p, name)


def test_user_update_alongside_the_defaults(models, check):
    graph = models.hmm_known.graph(models.hmm_data)
    exact = _hmm_known_exact(graph, len(models.hmm_data))
    method = Gibbs(20, 150, chains=40, updates={"z_2": FlipMetropolis()})
    post = infer(models.hmm_known, models.hmm_data, method=method, seed=1)
    assert _kinds(post.extra["blocks"]) == [(("z_2",), "FlipMetropolis"),
                                            (("z_0", "z_1"), "UnrolledChainGibbs"),
                                            (("z_3",), "DiscreteGibbs")]
    assert post.info["accept"].shape == (40, 150)
    for name, p in exact.items():
        check(post.samples[name], p, name)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["gibbs", "gibbs-conjugate", "enumerate", "slice"])
def test_mixture_matches_exact_posterior(models, exact, check, variant):
    method = {
        "gibbs": Gibbs(300, 1000),
        "gibbs-conjugate": Gibbs(300, 1000, conjugate=True),
        "enumerate": Gibbs(300, 1000, discrete="enumerate"),
        "slice": Gibbs(300, 1000, updates={"scale": Slice(), "weights": KernelUpdate(NUTS())}),
    }[variant]
    post = infer(models.mixture, models.mixture_data, method=method, seed=5)
    ref = exact.mixture
    check(post.samples["weights"], ref["weights"], "weights")
    check(post.samples["scale"], ref["scale"], "scale")
    check(torch.nn.functional.one_hot(post.samples["z"], 3), ref["z"], "z")
    if variant == "enumerate":  # Rao-Blackwellized: the probabilities' own mean
        check(post.extra["discrete_probs"]["z"], ref["z"], "P(z)")
    if variant == "gibbs-conjugate":
        assert any(isinstance(u, Conjugate) for _, u in post.extra["blocks"])


@pytest.mark.slow
@pytest.mark.parametrize("discrete", ["gibbs", "enumerate"])
def test_hmm_matches_exact_posterior(models, exact, check, discrete):
    post = infer(models.hmm, models.hmm_data, method=Gibbs(300, 1000, discrete=discrete), seed=6)
    ref = exact.hmm
    check(post.samples["locs"], ref["locs"], "locs")
    for t in range(len(models.hmm_data)):
        check(post.samples[f"z_{t}"], ref[f"z_{t}"], f"z_{t}")


@model
def two_blocks(y):
    loc = sample("loc", Normal(0.0, 5.0))
    with plate("groups", 3):
        scale = sample("scale", HalfNormal(2.0))
    with plate("data", 3):
        sample("y", Normal(loc, scale), obs=y)


def test_gibbs_block_values_come_from_the_tape():
    graph = two_blocks.graph(torch.tensor([0.3, -1.0, 2.0]))
    flat = ConditionalFlat(graph, ("scale",))
    assert flat.backend != "autograd", flat.fallback_reason
    data = flat.data({"loc": torch.tensor([0.5, -0.5])})
    z = torch.randn(2, flat.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    values = flat.values(z, data)
    assert "values_fn" not in vars(flat.flat)
    torch.testing.assert_close(values["scale"], torch.exp(z))


def test_block_potential_is_generated_with_other_blocks_per_chain():
    """A block's conditional density, given each chain's own values of the other blocks, is
    the generated potential (not autograd), and equals the autograd reference."""
    graph = two_blocks.graph(torch.tensor([0.3, -1.0, 2.0]))
    flat = ConditionalFlat(graph, ("loc",))
    assert flat.backend != "autograd", flat.fallback_reason
    gen = torch.Generator().manual_seed(0)
    data = flat.data({"scale": torch.rand(4, 3, generator=gen) + 0.5})
    z = torch.randn(8, flat.dim, generator=gen, dtype=torch.float64)  # two rows per chain
    log_p, grad = flat.log_density_and_grad(z, data)
    generated, flat._generated = flat._generated, None
    ref_log_p, ref_grad = flat.log_density_and_grad(z, data)
    flat._generated = generated
    torch.testing.assert_close(log_p, ref_log_p)
    torch.testing.assert_close(grad, ref_grad)


@pytest.mark.parametrize("name", ["mixture", "hmm"])
def test_block_potential_indexes_by_the_discrete_sites_of_each_chain(models, name):
    """Mixture locations and HMM emissions picked by each chain's own assignments (per-chain
    integer inputs) stay on the generated potential and equal the autograd reference."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # float64 prior draws while tracing
    try:
        model_fn = getattr(models, name)
        data = getattr(models, f"{name}_data").double()
        graph = model_fn.graph(data)
        _, blocks = assign_blocks(graph)
        sites = next(s for s, update in blocks if isinstance(update, KernelUpdate))
        flat = ConditionalFlat(graph, sites)
        assert flat.backend != "autograd", flat.fallback_reason
        draws = [model_fn.sample(data, seed=s) for s in range(3)]
        values = {k: torch.stack([torch.as_tensor(d[k]) for d in draws]) for k in draws[0]}
        gen = torch.Generator().manual_seed(1)
        z = torch.randn(6, flat.dim, generator=gen, dtype=torch.float64)
        log_p, grad = flat.log_density_and_grad(z, flat.data(values))
        generated, flat._generated = flat._generated, None
        ref_log_p, ref_grad = flat.log_density_and_grad(z, flat.data(values))
        flat._generated = generated
    finally:
        torch.set_default_dtype(previous)
    # the models' constants are float32 tensors, which the reference computes with
    torch.testing.assert_close(log_p, ref_log_p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
