"""Constraints, their names, and bijectors: round trips and log|det J| against autograd."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.autograd.functional import jacobian
from torch.distributions import biject_to, transform_to

import ppl.stdlib as D
from ppl.stdlib import constraints as C
from ppl.stdlib.examples import example_distributions

SETTINGS = settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
CONTINUOUS_CASES = [
    pytest.param(d, id=f"{name}-{i}")
    for name, ds in example_distributions().items()
    for i, d in enumerate(ds)
    if not d.support.is_discrete
]


@pytest.mark.parametrize("d", CONTINUOUS_CASES)
def test_biject_to_support_maps_into_support_and_back(d):
    t = biject_to(d.support)
    shape = d.batch_shape + d.event_shape
    x = torch.randn(t.inverse_shape(shape))
    y = t(x)
    assert y.shape == shape
    assert d.support.check(y).all()
    if not isinstance(d, D.Delta):  # a point mass: -inf off its point
        assert torch.isfinite(d.log_prob(y)).all()
    torch.testing.assert_close(t.inv(y), x, atol=2e-3, rtol=2e-3)
    assert torch.isfinite(t.log_abs_det_jacobian(x, y)).all()


def _interval_bounds():
    low = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    return C.interval(low, torch.tensor([1.0, 5.0, 2.5], dtype=torch.float64))


# constraint, unconstrained size, coordinates of y that the Jacobian is taken over
JACOBIAN_CASES = {
    "ordered": (C.ordered, 4, lambda y: y),
    "positive_ordered": (C.positive_ordered, 4, lambda y: y),
    "simplex": (C.simplex, 3, lambda y: y[:-1]),
    "corr_cholesky": (C.corr_cholesky, 3, lambda y: y[tuple(torch.tril_indices(3, 3, -1))]),
    "lower_cholesky": (C.lower_cholesky, 6, lambda y: y[tuple(torch.tril_indices(3, 3))]),
    "positive_definite": (C.positive_definite, 6, lambda y: y[tuple(torch.tril_indices(3, 3))]),
    "interval-tensor-bounds": (_interval_bounds(), 3, lambda y: y),
    "greater_than-tensor-bound": (C.greater_than(torch.tensor([1.0, -2.0]).double()), 2,
                                  lambda y: y),
}


@pytest.mark.parametrize("name", sorted(JACOBIAN_CASES))
@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_log_abs_det_jacobian_matches_autograd(name, seed):
    constraint, size, coords = JACOBIAN_CASES[name]
    t = biject_to(constraint)
    x = torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = t(x)
    assert constraint.check(y).all()
    torch.testing.assert_close(t.inv(y), x)
    jac = jacobian(lambda v: coords(t(v)), x)
    expected = torch.linalg.slogdet(jac).logabsdet
    actual = t.log_abs_det_jacobian(x, y).sum()  # elementwise transforms give one term each
    torch.testing.assert_close(actual, expected)


def test_ordered_constraints_check():
    assert C.ordered.check(torch.tensor([-1.0, 0.0, 3.0]))
    assert not C.ordered.check(torch.tensor([0.0, 0.0, 3.0]))
    assert not C.positive_ordered.check(torch.tensor([-1.0, 0.0, 3.0]))
    assert C.positive_ordered.check(torch.tensor([0.5, 1.0]))
    assert C.ordered.check(torch.tensor([[1.0, 2.0], [2.0, 1.0]])).tolist() == [True, False]
    assert transform_to(C.ordered) == biject_to(C.ordered)


def test_biject_to_batched_ordered_and_interval():
    lo, hi = torch.zeros(4, 1), torch.linspace(1, 4, 4).unsqueeze(-1)
    t = biject_to(C.interval(lo, hi))
    y = t(torch.randn(4, 3) * 5)
    assert C.interval(lo, hi).check(y).all()
    y = biject_to(C.ordered)(torch.randn(5, 2, 4))
    assert C.ordered.check(y).all() and y.shape == (5, 2, 4)


def test_ordered_constraints_are_named_in_the_registry():
    assert C.describe_constraint(C.ordered) == ("ordered", ())
    assert C.describe_constraint(C.positive_ordered) == ("positive_ordered", ())
    assert C.make_constraint("ordered") is C.ordered
    assert {"ordered", "positive_ordered"} <= set(C.constraint_names())


def test_every_example_support_and_arg_constraint_has_a_name():
    for ds in example_distributions().values():
        for d in ds:
            found = [d.support] + [
                c for c in d.arg_constraints.values() if not C.is_dependent(c)
            ]
            for c in found:
                name, args = C.describe_constraint(c)
                assert type(C.make_constraint(name, *args)) is type(c)


def test_mixture_of_parameter_dependent_supports_has_no_bijector():
    mix = D.MixtureSameFamily(
        D.Categorical(logits=torch.zeros(2)), D.Uniform(torch.zeros(2), torch.tensor([1.0, 3.0]))
    )
    with pytest.raises(NotImplementedError, match="union"):
        biject_to(mix.support)
    gamma_mix = D.MixtureSameFamily(
        D.Categorical(logits=torch.zeros(2)), D.Gamma(torch.ones(2), torch.ones(2))
    )
    assert (biject_to(gamma_mix.support)(torch.randn(5)) > 0).all()
