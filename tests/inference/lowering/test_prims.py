"""Primitives and bijectors of the tape against torch: each primitive's value and gradient
(its VJP) equal torch autograd's, in the generated torch code and in C; each bijector's
value and ``log|det J|`` equal ``biject_to``'s."""

import math

import pytest
import torch
from torch.distributions import biject_to

from ppl import factor, model, plate, sample
from ppl.inference.lowering.flat import FlatModel, LatentBlock
from ppl.inference.lowering.native import NativePotential, compiler_available
from ppl.inference.lowering.tape import Lowered, Unsupported, ops, torch_potential
from ppl.inference.lowering.tape import prims as P
from ppl.inference.lowering.tape.bijectors import unconstrain, unconstrained_shape
from ppl.inference.lowering.tape.tape import Tape
from ppl.stdlib import (
    Beta,
    Categorical,
    Dirichlet,
    Gamma,
    HalfNormal,
    ImproperUniform,
    Independent,
    LKJCholesky,
    MixtureSameFamily,
    Normal,
    RelaxedOneHotCategorical,
    TruncatedNormal,
    VonMises,
    Wishart,
    ZeroInflatedNegativeBinomial,
    ZeroInflatedPoisson,
    constraints,
)
from ppl.stdlib import log_densities as ld
from ppl.stdlib._math import log1mexp

BACKENDS = ["generated", pytest.param("native", marks=pytest.mark.skipif(
    not compiler_available(), reason="no C compiler on this machine"))]


def _von_mises_log_i0(k):
    """log I0 as torch's VonMises normalizes: ``log_prob(loc) = k - log(2 pi) - log I0(k)``."""
    zero = torch.zeros_like(k)
    return k - math.log(2 * math.pi) - VonMises(zero, k).log_prob(zero)


def _halves(x):
    n = x.shape[-1] // 2
    return x[..., :n], x[..., n:]


# name: (the function on the tape, the same in torch, positions z to evaluate at)
GRID = torch.linspace(-4.0, 4.0, 12, dtype=torch.float64)
CASES = {
    "log_ndtr": (P.log_ndtr, torch.special.log_ndtr,
                 torch.cat([torch.linspace(-60.0, -15.0, 8), torch.linspace(-3.0, 9.0, 8)])),
    "log1mexp": (lambda u: P.log1mexp(-P.exp(u)), lambda z: log1mexp(-torch.exp(z)), GRID),
    "log_i0": (lambda u: P.log_i0(P.exp(u)), lambda z: _von_mises_log_i0(torch.exp(z)),
               torch.linspace(-5.0, 4.0, 16)),
    "logaddexp": (
        lambda u: u.tape.apply(P.LOGADDEXP, *(u.tape.apply(P.NARROW, u, dim=0, start=s, length=6)
                                              for s in (0, 6))),
        lambda z: torch.logaddexp(*_halves(z)),
        torch.cat([GRID[:6], GRID[6:] * 30.0]),
    ),
}


def _weights(n: int) -> torch.Tensor:
    return torch.linspace(0.5, 1.5, n, dtype=torch.float64)


def _lowered(fn, shape: tuple[int, ...]) -> Lowered:
    """``sum(fn(u) * w)`` on a tape, with its gradient: a potential of ``u`` of ``shape``."""
    tape = Tape()
    u = tape.input("u0", shape)
    out = fn(u)
    log_density = P.sum_all(out * _weights(math.prod(out.shape)).reshape(out.shape))
    (grad,) = tape.gradients(log_density, [u])
    block = LatentBlock("u", 0, math.prod(shape), shape, shape, "u")
    return Lowered(tape, log_density, tape.apply(P.COLUMNS, [grad]), [(u, block)])


def assert_potential_matches(fn, reference, shape, z: torch.Tensor, backend: str) -> None:
    """The potential of ``fn`` at positions ``z (C, *shape)`` against autograd of
    ``sum(reference(x) * w)`` at each position."""
    lowered = _lowered(fn, shape)
    potential = torch_potential(lowered) if backend == "generated" else \
        NativePotential.from_lowered(lowered)
    log_density, grad = potential(z.reshape(len(z), -1))
    for chain, position in enumerate(z):
        x = position.clone().requires_grad_()
        out = reference(x)
        expected = (out * _weights(out.numel()).reshape(out.shape)).sum()
        (expected_grad,) = torch.autograd.grad(expected, x)
        torch.testing.assert_close(log_density[chain], expected.detach(), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(grad[chain], expected_grad.reshape(-1), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_primitive_matches_torch_autograd(name, backend):
    fn, reference, z = CASES[name]
    z = z.to(torch.float64)
    assert_potential_matches(fn, reference, (z.numel(),), torch.stack([z, z.flip(0)]), backend)


@model
def special_calls():
    x = sample("x", Normal(torch.zeros(3), 1.0).to_event(1))
    factor("f", torch.special.log_ndtr(4.0 * x).sum() + torch.logaddexp(x, 2.0 * x[0]).sum()
           + (torch.clamp(x, -0.5, 0.8) * torch.tensor([1.0, 2.0, 3.0])).sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_calls_of_the_new_rules_stay_on_the_tape(backend):
    flat = FlatModel.from_graph(special_calls.graph(), backend=backend)
    assert flat.backend == backend
    assert_flat_matches(flat)


def assert_flat_matches(flat: FlatModel, tolerance: float = 1e-9) -> None:
    z = 0.7 * torch.randn(4, flat.dim, generator=torch.Generator().manual_seed(3),
                          dtype=torch.float64)
    log_p, grad = flat.log_density_and_grad(z)
    ref_log_p, ref_grad = flat.autograd_log_density_and_grad(z)
    torch.testing.assert_close(log_p, ref_log_p, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(grad, ref_grad, rtol=tolerance, atol=tolerance)


# -- bijectors -------------------------------------------------------------------------------

SUPPORTS = {
    "corr_cholesky": (constraints.corr_cholesky, (4, 4)),
    "corr_cholesky_batched": (constraints.corr_cholesky, (2, 3, 3)),
    "corr_cholesky_2": (constraints.corr_cholesky, (2, 2)),
    "lower_cholesky": (constraints.lower_cholesky, (3, 3)),
    "lower_cholesky_batched": (constraints.lower_cholesky, (2, 3, 3)),
    "positive_definite": (constraints.positive_definite, (3, 3)),
    "positive_definite_batched": (constraints.positive_definite, (2, 2, 2)),
    "mixture_of_positives": (constraints.MixtureSameFamilyConstraint(constraints.positive), (3,)),
}


def _positions(shape: tuple[int, ...], chains: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return 1.5 * torch.randn(chains, *shape, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(SUPPORTS))
def test_bijector_matches_biject_to(name):
    support, shape = SUPPORTS[name]
    u_shape = unconstrained_shape(support, shape)
    assert u_shape == tuple(biject_to(support).inverse_shape(shape))
    tape = Tape()
    u = tape.input("u", u_shape)
    value, log_det = unconstrain(support, u)
    total = sum(P.sum_all(t * torch.ones(u_shape, dtype=torch.float64)) for t in log_det)
    fn = tape.compile([value, total], ["u"], prologue=["C = u.shape[0]"])
    z = _positions(u_shape)
    got_value, got_log_det = fn(z)
    transform = biject_to(support)
    expected = transform(z)
    torch.testing.assert_close(got_value, expected, rtol=1e-12, atol=1e-12)
    expected_log_det = transform.log_abs_det_jacobian(z, expected)
    while expected_log_det.dim() > 1:
        expected_log_det = expected_log_det.sum(-1)
    torch.testing.assert_close(got_log_det, expected_log_det, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(SUPPORTS))
def test_bijector_gradient_matches_autograd(name, backend):
    """A potential of the value and ``log|det J|``: the VJPs through each bijector."""
    support, shape = SUPPORTS[name]
    u_shape = unconstrained_shape(support, shape)

    def on_tape(u):
        value, log_det = unconstrain(support, u)
        total = sum(P.sum_all(t * torch.ones(u_shape, dtype=torch.float64)) for t in log_det)
        return P.reshape(value, (math.prod(shape),)) + total

    def in_torch(x):
        transform = biject_to(support)
        value = transform(x)
        return value.reshape(-1) + transform.log_abs_det_jacobian(x, value).sum()

    assert_potential_matches(on_tape, in_torch, u_shape, _positions(u_shape), backend)


@model
def matrix_supports():
    corr = sample("corr", ImproperUniform(constraints.corr_cholesky, (), (3, 3)))
    with plate("B", 2):
        corrs = sample("corrs", ImproperUniform(constraints.corr_cholesky, (), (4, 4)))
        factors = sample("factors", ImproperUniform(constraints.lower_cholesky, (), (2, 2)))
    weights = torch.arange(9.0).reshape(3, 3) / 9.0
    factor("f", -0.5 * (corr * weights).sum() ** 2 + corrs[:, 3].sum() + factors.sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_matrix_supports_run_on_the_tape(backend):
    flat = FlatModel.from_graph(matrix_supports.graph(), backend=backend)
    assert flat.backend == backend
    assert_flat_matches(flat)


# -- families written with the new primitives and bijectors ----------------------------------

COUNTS = torch.tensor([0.0, 0.0, 3.0, 1.0, 0.0, 7.0])
ANGLES = torch.tensor([0.3, -2.8, 1.2, 3.0])
SPD = torch.tensor([[2.0, 0.3, -0.2], [0.3, 1.5, 0.1], [-0.2, 0.1, 1.0]], dtype=torch.float64)


@model
def truncated_and_circular():
    mu = sample("mu", Normal(0.0, 1.0))
    s = sample("s", HalfNormal(1.0))
    k = sample("k", Gamma(2.0, 1.0))
    sample("tn", TruncatedNormal(mu, 1.0, low=0.0))  # a constant bound, latent parameters
    sample("tn_both", TruncatedNormal(0.0, s, -1.0, 1.5))
    sample("a", VonMises(0.5, 2.0))
    with plate("N", 4):
        sample("y", TruncatedNormal(mu, s, -1.0, 2.0), obs=ANGLES / 3.0)
        sample("y_low", TruncatedNormal(mu, s, low=-3.0), obs=ANGLES)
        sample("theta", VonMises(mu, k), obs=ANGLES)


@model
def zero_inflated():
    gate = sample("gate", Beta(2.0, 2.0))
    rate = sample("rate", Gamma(2.0, 1.0))
    logit = sample("logit", Normal(0.0, 1.0))
    p = sample("p", Beta(2.0, 3.0))
    with plate("N", 6):
        sample("c", ZeroInflatedPoisson(gate, rate), obs=COUNTS)
        sample("d", ZeroInflatedNegativeBinomial(gate, rate, logits=logit), obs=COUNTS)
        sample("e", ZeroInflatedNegativeBinomial(gate, 2.0, probs=p), obs=COUNTS)


@model
def mixtures():
    weights = sample("weights", Dirichlet(torch.ones(3)))
    locs = sample("locs", Normal(torch.tensor([-2.0, 0.0, 2.0]), 1.0).to_event(1))
    sample("x", MixtureSameFamily(Categorical(logits=torch.tensor([0.1, -0.3])),
                                  Normal(torch.tensor([-1.0, 1.0]), 0.7)))
    with plate("N", 4):
        sample("y", MixtureSameFamily(Categorical(probs=weights), Normal(locs, 1.0)), obs=ANGLES)
    vectors = Independent(Normal(torch.stack([locs, -locs]).T, 1.0), 1)
    sample("v", MixtureSameFamily(Categorical(probs=weights), vectors),
           obs=torch.tensor([0.5, -1.0]))


@model
def matrices():
    sample("corr", LKJCholesky(3, 2.0))
    with plate("B", 2):
        sample("corrs", LKJCholesky(4, torch.tensor([0.5, 3.0])))
    cov = sample("cov", Wishart(torch.tensor(5.0, dtype=torch.float64), covariance_matrix=SPD))
    with plate("W", 2):
        sample("covs", Wishart(torch.tensor([4.0, 6.0], dtype=torch.float64),
                               scale_tril=torch.linalg.cholesky(SPD)))
    sample("obs", Normal(cov[0, 1], 1.0), obs=torch.tensor(0.2))
    probs = torch.tensor([0.2, 0.3, 0.5])
    sample("probs", RelaxedOneHotCategorical(torch.tensor(0.8), probs=probs))
    with plate("R", 2):
        sample("relaxed", RelaxedOneHotCategorical(
            torch.tensor(0.5), logits=torch.tensor([[0.1, -0.4, 1.2], [-0.1, 0.4, -1.2]])))


@model
def truncated_by_a_latent():
    low = sample("low", Normal(0.0, 1.0))
    sample("x", TruncatedNormal(0.0, 1.0, low=low))


def test_a_support_bounded_by_a_latent_is_refused():
    with pytest.raises(Unsupported, match="bounds that depend on the position"):
        FlatModel.from_graph(truncated_by_a_latent.graph(), backend="generated")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m", [truncated_and_circular, zero_inflated, mixtures, matrices],
                         ids=lambda m: m.__name__)
def test_families_of_the_new_primitives_run_on_the_tape(m, backend):
    """Against the autograd path, whose float32 constants (as the families' own examples
    have) limit the agreement to about 1e-7."""
    flat = FlatModel.from_graph(m.graph(), backend=backend)
    assert flat.backend == backend
    assert_flat_matches(flat, tolerance=1e-6)


# rules whose latent parameters the tracer cannot pass to the constructor (it validates them):
# the rule on the tape against autograd through ``log_prob``
CORR = torch.linalg.cholesky(torch.tensor([[1.0, 0.4, -0.2], [0.4, 1.0, 0.3], [-0.2, 0.3, 1.0]],
                                          dtype=torch.float64))
SIMPLEX = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)


def _entry(u, i: int):
    return P.reshape(u.tape.apply(P.NARROW, u, dim=0, start=i, length=1), ())


RULE_CASES = {
    "LKJCholesky(concentration)": (
        lambda u: ld.lkj_cholesky(ops, CORR, dim=3, concentration=P.exp(_entry(u, 0))),
        lambda x: LKJCholesky(3, torch.exp(x[0])).log_prob(CORR), 1),
    "Wishart(df)": (
        lambda u: ld.wishart(ops, SPD, 3.0 + P.exp(_entry(u, 0)), covariance_matrix=SPD * 0.5),
        lambda x: Wishart(3.0 + torch.exp(x[0]), covariance_matrix=SPD * 0.5).log_prob(SPD), 1),
    "RelaxedOneHotCategorical(temperature, logits)": (
        lambda u: ld.relaxed_one_hot_categorical(
            ops, SIMPLEX, P.exp(_entry(u, 0)), logits=u.tape.apply(P.NARROW, u, dim=0, start=1,
                                                                   length=3)),
        lambda x: RelaxedOneHotCategorical(torch.exp(x[0]), logits=x[1:]).log_prob(SIMPLEX), 4),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(RULE_CASES))
def test_rule_with_latent_parameters_matches_autograd(name, backend):
    rule, log_prob, size = RULE_CASES[name]
    z = 0.5 * torch.randn(2, size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert_potential_matches(lambda u: sum(P.sum_all(t) for t in rule(u)), log_prob, (size,), z,
                             backend)
