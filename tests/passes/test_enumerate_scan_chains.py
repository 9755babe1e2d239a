"""``enumerate_discrete`` on a scan whose carry is its step's discrete site (an HMM): the
chain becomes one ``ppl.chain_logsumexp`` node, never T copies of the step; its log density
is the forward algorithm's and the unrolled Python-loop model's; ``chain_logsumexp`` is the
brute-force sum over paths and ``chain_marginals`` its gradient (the pairwise posterior
marginals); loops that do not qualify are refused naming the pass, the loop and why."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppl import deterministic, factor, model, plate, sample, scan
from ppl.ir import IRError, LogDensity, compile_log_density, parse, print_graph
from ppl.ir.parser import graph_diff
from ppl.passes import enumerate_discrete, posterior_of_enumerated, simplify, unroll
from ppl.passes.chains import chain_logsumexp, chain_marginals
from ppl.passes.rewriting import probe
from ppl.stdlib import Bernoulli, Categorical, Dirichlet, Normal

F64 = torch.float64


@model
def hmm_scan(y, K: int = 2):
    with plate("states", K):
        trans = sample("trans", Dirichlet(torch.ones(K, dtype=F64)))
        mu = sample("mu", Normal(torch.zeros((), dtype=F64), 3.0))

    def step(z, y_t):
        z = sample("z", Categorical(trans[z]))
        sample("y", Normal(mu[z], 1.0), obs=y_t)
        return z, None

    scan(step, torch.tensor(1), y)


@model
def hmm_loop(y, K: int = 2):
    with plate("states", K):
        trans = sample("trans", Dirichlet(torch.ones(K, dtype=F64)))
        mu = sample("mu", Normal(torch.zeros((), dtype=F64), 3.0))
    z = 1
    for t in range(len(y)):
        z = sample(f"z_{t}", Categorical(trans[z]))
        sample(f"y_{t}", Normal(mu[z], 1.0), obs=y[t])


def forward_algorithm(trans, mu, y, start):
    """log p(y | trans, mu) by the forward recursion from state ``start``."""
    log_trans = trans.log()
    emission = torch.distributions.Normal(mu, torch.ones_like(mu)).log_prob(y[:, None])
    alpha = log_trans[start] + emission[0]
    for t in range(1, len(y)):
        alpha = torch.logsumexp(alpha[:, None] + log_trans, 0) + emission[t]
    return torch.logsumexp(alpha, 0)


def params(K: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"trans": torch.rand(K, K, generator=g, dtype=F64).add(0.1).softmax(-1),
            "mu": torch.randn(K, generator=g, dtype=F64) * 2}


def brute_force(F: torch.Tensor, start: int) -> torch.Tensor:
    T, K, _ = F.shape
    terms = [sum(F[t, ([start, *path])[t], path[t]] for t in range(T))
             for path in itertools.product(range(K), repeat=T)]
    return torch.logsumexp(torch.stack(terms), 0)


@pytest.mark.parametrize("K", [2, 3])
def test_scan_hmm_is_the_forward_algorithm_and_the_unrolled_model(K):
    y = torch.randn(200, generator=torch.Generator().manual_seed(0), dtype=F64) * 2
    graph = enumerate_discrete()(hmm_scan.graph(y, K))
    assert not graph.subgraphs and [n.address for n in graph.latent_nodes] == ["trans", "mu"]
    assert sum(n.target == "ppl.chain_logsumexp" for n in graph.nodes) == 1
    assert len(graph.nodes) < 30  # the step once, not 200 copies
    values = params(K, seed=K)
    ones = torch.ones(K, dtype=F64)
    prior = (torch.distributions.Dirichlet(ones).log_prob(values["trans"]).sum()
             + torch.distributions.Normal(0 * ones, 3 * ones).log_prob(values["mu"]).sum())
    expected = forward_algorithm(values["trans"], values["mu"], y, start=1) + prior
    torch.testing.assert_close(LogDensity(graph, values).run(), expected, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(compile_log_density(graph)(values), expected, rtol=1e-12,
                               atol=1e-10)
    unrolled = enumerate_discrete()(hmm_loop.graph(y, K))
    torch.testing.assert_close(LogDensity(graph, values).run(),
                               LogDensity(unrolled, values).run(), rtol=1e-12, atol=1e-10)
    (record,) = graph.attrs["enumerated_chains"]
    assert (record["loop"], record["site"], record["values"], record["length"]) == (
        "step", "z", list(range(K)), 200)


@model
def bernoulli_chain(y):
    stay = sample("stay", Dirichlet(torch.ones(2, dtype=F64)))

    def step(z, y_t):
        z = sample("z", Bernoulli(torch.where(z > 0.5, stay[0], 0.3)))
        sample("y", Normal(2.0 * z - 1.0, 1.0), obs=y_t)
        return z, None

    scan(step, torch.tensor(1.0, dtype=F64), y)


@model
def drifting_chain(y):
    with plate("states", 3):
        trans = sample("trans", Dirichlet(torch.ones(3, dtype=F64)))
        mu = sample("mu", Normal(torch.zeros((), dtype=F64), 3.0))

    def step(z, inputs):
        y_t, t = inputs
        z = sample("z", Categorical(logits=trans[z].log()))
        sample("y", Normal(mu[z] + 0.1 * t, 1.0), obs=y_t)
        factor("penalty", -0.1 * (y_t - mu[z]) ** 2)
        return z, None

    scan(step, torch.tensor(2), (y, torch.arange(len(y), dtype=F64)))


@pytest.mark.parametrize("m", [bernoulli_chain, drifting_chain, hmm_scan])
def test_a_scan_chain_is_its_unrolled_twin_enumerated(m):
    """Step index, several xs, a factor statement, Bernoulli states: the chain's log density
    is that of ``unroll`` then ``enumerate_discrete``."""
    graph = m.graph(torch.randn(9, generator=torch.Generator().manual_seed(5), dtype=F64))
    twin = enumerate_discrete()(unroll()(graph))
    values = {n.address: probe(twin).env[n.name] for n in twin.latent_nodes}
    torch.testing.assert_close(LogDensity(enumerate_discrete()(graph), values).run(),
                               LogDensity(twin, values).run(), rtol=1e-12, atol=1e-12)


def test_a_chain_named_in_sites_is_summed_out_and_an_unnamed_one_is_refused():
    graph = hmm_scan.graph(torch.zeros(5))
    assert enumerate_discrete(["z"])(graph).attrs["enumerated_chains"][0]["site"] == "z"
    with pytest.raises(IRError, match="does not handle loop nodes .scan 'step'"):
        enumerate_discrete(["trans"])(graph)


def test_the_summed_out_graph_prints_and_parses_back():
    graph = enumerate_discrete()(hmm_scan.graph(torch.zeros(6)))
    text = print_graph(graph)
    assert "ppl.chain_logsumexp(" in text
    again = parse(text, data=graph.data)
    assert print_graph(again) == text and graph_diff(graph, again) is None
    values = params(2, seed=0)
    torch.testing.assert_close(LogDensity(again, values).run(), LogDensity(graph, values).run())


@settings(max_examples=40, deadline=None)
@given(K=st.integers(1, 3), T=st.integers(1, 5), start=st.integers(0, 2),
       seed=st.integers(0, 2**16))
def test_chain_logsumexp_is_the_sum_over_paths_and_its_gradient_the_pair_marginals(
        K, T, start, seed):
    start = start % K
    F = torch.randn(T, K, K, generator=torch.Generator().manual_seed(seed), dtype=F64) * 3
    F.requires_grad_(True)
    log_z = chain_logsumexp(F, start)
    torch.testing.assert_close(log_z, brute_force(F.detach(), start), rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(log_z, F)
    marginals = chain_marginals(F.detach(), log_z.detach(), start)
    brute_grad = torch.func.grad(lambda f: brute_force(f, start))(F.detach())
    torch.testing.assert_close(marginals, brute_grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(marginals, grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(marginals.sum((-1, -2)), torch.ones(T, dtype=F64))


@pytest.mark.parametrize("T", [2, 150, 1000])
def test_chain_logsumexp_runs_batches_of_long_chains(T):
    """Batched chains of any length (blocks of about sqrt(T) steps, padded): the forward
    algorithm one step at a time, and the marginals autograd's gradient."""
    F = torch.randn(4, 3, T, 3, 3, generator=torch.Generator().manual_seed(T), dtype=F64) * 2
    F.requires_grad_(True)
    log_z = chain_logsumexp(F, 2)
    assert log_z.shape == (4, 3)
    alpha = F[..., 0, 2, :]
    for t in range(1, T):
        alpha = torch.logsumexp(alpha[..., :, None] + F[..., t, :, :], -2)
    torch.testing.assert_close(log_z, torch.logsumexp(alpha, -1), rtol=1e-12, atol=1e-10)
    (grad,) = torch.autograd.grad(log_z.sum(), F)
    torch.testing.assert_close(chain_marginals(F.detach(), log_z.detach(), 2), grad,
                               rtol=1e-9, atol=1e-12)


def stepwise(F: torch.Tensor, start: int) -> torch.Tensor:
    """The forward recursion one step at a time, in log space (the reference)."""
    alpha = F[..., 0, start, :]
    for t in range(1, F.shape[-3]):
        alpha = torch.logsumexp(alpha[..., :, None] + F[..., t, :, :], -2)
    return torch.logsumexp(alpha, -1)


@pytest.mark.parametrize(("T", "K", "dtype"), [(1, 3, F64), (37, 2, F64), (300, 3, torch.float32),
                                               (64, 6, F64), (129, 12, torch.float32)])
def test_the_scan_is_the_stepwise_recursion_with_impossible_transitions(T, K, dtype):
    """Value and gradient (autograd, and ``chain_marginals``) of the parallel scan against
    the step-by-step recursion, for few states (exact logsumexps) and many (scaled
    matmuls), float32 and float64, with -inf entries: impossible transitions, and a state
    no path reaches; strong evidence (log factors up to about 60 apart)."""
    g = torch.Generator().manual_seed(T * K)
    F = (torch.randn(3, T, K, K, generator=g, dtype=F64) * 20).to(dtype)
    F[..., 0, 1] = -torch.inf  # state 0 never moves to 1
    F[..., :, K - 1] = -torch.inf  # nor does anything reach the last state
    F.requires_grad_(True)
    log_z = chain_logsumexp(F, 0)
    assert log_z.dtype == dtype and log_z.shape == (3,)
    # the reference's autograd has NaN where a logsumexp sees only -inf: -1e4 is as impossible
    reference = F.detach().double().nan_to_num(neginf=-1e4).requires_grad_(True)
    expected = stepwise(reference, 0)
    tol = {"rtol": 1e-12, "atol": 1e-9} if dtype == F64 else {"rtol": 1e-5, "atol": 1e-3}
    torch.testing.assert_close(log_z.double(), expected, **tol)
    (grad,) = torch.autograd.grad(log_z.sum(), F)
    (expected_grad,) = torch.autograd.grad(expected.sum(), reference)
    assert torch.isfinite(grad).all()
    # float32: the marginals carry log Z's rounding, |log Z| * 6e-8 (about 1e-4 here)
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == F64 else {"rtol": 1e-3, "atol": 1e-3}
    torch.testing.assert_close(grad.double(), expected_grad, **tol)
    torch.testing.assert_close(chain_marginals(F.detach(), log_z.detach(), 0), grad)


def test_chain_logsumexp_vmaps_and_differentiates_under_torch_func():
    F = torch.randn(4, 20, 3, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    grads = torch.func.vmap(torch.func.grad(lambda f: chain_logsumexp(f, 1)))(F)
    for i in range(4):
        torch.testing.assert_close(grads[i], chain_marginals(F[i], chain_logsumexp(F[i], 1), 1))


# -- what does not qualify ----------------------------------------------------------------------
def refused(step, init=torch.tensor(0), T: int = 4) -> str:
    @model
    def m(y):
        trans = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
        scan(lambda z, y_t: step(trans, z, y_t), init, y)

    with pytest.raises(IRError) as info:
        enumerate_discrete()(m.graph(torch.zeros(T)))
    message = str(info.value)
    assert "enumerate_discrete" in message and "scan" in message
    return message


def test_a_second_latent_in_the_step_is_refused_naming_it():
    def step(trans, z, y_t):
        z = sample("z", Categorical(trans[z]))
        x = sample("x", Normal(0.0, 1.0))
        sample("y", Normal(z + x, 1.0), obs=y_t)
        return z, None

    assert "latent site 'x'" in refused(step)


def test_a_carry_other_than_the_discrete_site_is_refused():
    def step(trans, z, y_t):
        w = sample("w", Categorical(trans[z]))
        sample("y", Normal(w, 1.0), obs=y_t)
        return 1 - w, None

    assert "carry is not exactly the value of its discrete site 'w'" in refused(step)


def test_an_init_outside_the_support_is_refused():
    def step(trans, z, y_t):
        z = sample("z", Categorical(trans[z.clamp(0, 1)]))
        sample("y", Normal(z, 1.0), obs=y_t)
        return z, None

    assert "not one of site 'z'" in refused(step, init=torch.tensor(5))


def test_a_deterministic_site_in_the_step_is_refused():
    def step(trans, z, y_t):
        z = sample("z", Categorical(trans[z]))
        deterministic("twice", 2 * z)
        sample("y", Normal(z, 1.0), obs=y_t)
        return z, None

    assert "deterministic site 'twice'" in refused(step)


def test_a_step_reading_a_discrete_site_outside_the_loop_is_refused():
    @model
    def m(y):
        wide = sample("wide", Bernoulli(torch.tensor(0.4)))
        trans = torch.tensor([[0.9, 0.1], [0.2, 0.8]])

        def step(z, y_t):
            z = sample("z", Categorical(trans[z]))
            sample("y", Normal(z, 0.5 + wide), obs=y_t)
            return z, None

        scan(step, torch.tensor(0), y)

    with pytest.raises(IRError, match="depends on the discrete site 'wide' outside the loop"):
        enumerate_discrete()(m.graph(torch.zeros(3)))


def test_the_loops_values_read_outside_are_refused():
    @model
    def m(y):
        trans = torch.tensor([[0.9, 0.1], [0.2, 0.8]])

        def step(z, y_t):
            z = sample("z", Categorical(trans[z]))
            sample("y", Normal(z, 1.0), obs=y_t)
            return z, z

        _, zs = scan(step, torch.tensor(0), y)
        sample("total", Normal(zs.sum(), 1.0), obs=torch.tensor(1.0))

    with pytest.raises(IRError, match="reads its values"):
        enumerate_discrete()(m.graph(torch.zeros(3)))


def test_a_continuous_loop_is_still_refused_naming_the_pass():
    @model
    def walk():
        scan(lambda x, _: (sample("x", Normal(x, 1.0)), None), torch.tensor(0.0), length=3)

    with pytest.raises(IRError, match="pass 'enumerate_discrete'.*scan '_lambda_'"):
        enumerate_discrete()(walk.graph())


def test_posterior_of_a_scan_chain_is_the_unrolled_models_per_step():
    y = torch.randn(12, generator=torch.Generator().manual_seed(4), dtype=F64) * 2
    values = params(3, seed=1)
    graph = simplify()(enumerate_discrete()(hmm_scan.graph(y, 3)))
    probs = posterior_of_enumerated(graph, values)["z"]
    assert probs.shape == (12, 3)
    unrolled = posterior_of_enumerated(enumerate_discrete()(hmm_loop.graph(y, 3)), values)
    torch.testing.assert_close(probs, torch.stack([unrolled[f"z_{t}"] for t in range(12)]),
                               rtol=1e-10, atol=1e-12)
