"""``@model``: prior sampling, log density, traces, params, deterministic and factor sites."""

import re
from pathlib import Path

import pytest
import torch
import torch.distributions as td
from torch.distributions import constraints

from ppl import (
    DuplicateSiteError,
    Model,
    ModelError,
    clear_params,
    deterministic,
    factor,
    get_param,
    handlers,
    model,
    param,
    plate,
    sample,
)
from ppl.params import param_constraints, unconstrained_params
from ppl.stdlib import Bernoulli, Beta, Gamma, Normal, Poisson


@model
def regression(x, y=None):
    w = sample("w", Normal(0.0, 1.0))
    b = sample("b", Normal(0.0, 2.0))
    s = sample("s", Gamma(2.0, 2.0))
    with plate("data", len(x)):
        mean = deterministic("mean", w * x + b)
        sample("y", Normal(mean, s), obs=y)
    return w


X = torch.tensor([0.0, 1.0, 2.0])
Y = torch.tensor([0.5, 1.4, 2.7])


def test_model_decorator_returns_a_model_that_runs_like_the_function():
    assert isinstance(regression, Model)
    assert regression.__name__ == "regression"
    assert "regression" in repr(regression)
    assert regression(X, Y).shape == ()


def test_sample_returns_one_draw_of_every_sample_and_deterministic_site():
    draws = regression.sample(X, seed=0)
    assert set(draws) == {"w", "b", "s", "mean", "y"}
    assert draws["w"].shape == () and draws["y"].shape == (3,) and draws["mean"].shape == (3,)
    assert torch.allclose(draws["mean"], draws["w"] * X + draws["b"])


def test_sample_keeps_observed_data():
    draws = regression.sample(X, Y, seed=0)
    assert torch.equal(draws["y"], Y)


@pytest.mark.parametrize("num_samples", [1, 5])
def test_vectorized_sample_has_a_leading_dim_per_site(num_samples):
    draws = regression.sample(X, seed=0, num_samples=num_samples)
    assert draws["w"].shape == (num_samples,)
    assert draws["s"].shape == (num_samples,)
    assert draws["y"].shape == (num_samples, 3)
    assert draws["mean"].shape == (num_samples, 3)
    expected_mean = draws["w"][:, None] * X + draws["b"][:, None]
    assert torch.allclose(draws["mean"], expected_mean)


def test_vectorized_sample_repeats_observed_data():
    draws = regression.sample(X, Y, seed=0, num_samples=4)
    assert torch.equal(draws["y"], Y.expand(4, 3))


def test_vectorized_sample_draws_from_the_prior():
    draws = regression.sample(X, seed=1, num_samples=20_000)
    n = 20_000
    # z-scores of prior means: w ~ N(0, 1), s ~ Gamma(2, 2) with mean 1 and sd sqrt(2)/2
    assert abs(float(draws["w"].mean()) / (1.0 / n**0.5)) < 4
    assert abs((float(draws["s"].mean()) - 1.0) / (2**0.5 / 2 / n**0.5)) < 4
    # the particles are independent: no correlation between w and b
    corr = torch.corrcoef(torch.stack([draws["w"], draws["b"]]))[0, 1]
    assert abs(float(corr) * n**0.5) < 4


def test_nested_plates_vectorize_with_the_particle_dim_leftmost():
    @model
    def nested():
        a = sample("a", Normal(0.0, 1.0))
        with plate("i", 3), plate("j", 2):
            sample("c", Normal(a, 1.0))

    draws = nested.sample(seed=0, num_samples=7)
    assert draws["a"].shape == (7,) and draws["c"].shape == (7, 2, 3)


@pytest.mark.parametrize("num_samples", [None, 6])
def test_sample_is_reproducible_with_a_seed(num_samples):
    first = regression.sample(X, seed=3, num_samples=num_samples)
    second = regression.sample(X, seed=3, num_samples=num_samples)
    other = regression.sample(X, seed=4, num_samples=num_samples)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["w"], other["w"])


def test_log_density_equals_a_hand_computed_sum():
    values = {"w": torch.tensor(0.7), "b": torch.tensor(-0.2), "s": torch.tensor(0.9)}
    expected = (
        td.Normal(0.0, 1.0).log_prob(values["w"])
        + td.Normal(0.0, 2.0).log_prob(values["b"])
        + td.Gamma(2.0, 2.0).log_prob(values["s"])
        + td.Normal(values["w"] * X + values["b"], values["s"]).log_prob(Y).sum()
    )
    assert torch.allclose(regression.log_density(values, X, Y), expected)


def test_log_density_with_a_factor_adds_its_log_weight():
    @model
    def penalized():
        x = sample("x", Normal(0.0, 1.0))
        factor("soft", -2.0 * x**2)

    value = torch.tensor(0.3)
    expected = td.Normal(0.0, 1.0).log_prob(value) - 2.0 * value**2
    assert torch.allclose(penalized.log_density({"x": value}), expected)


def test_log_density_missing_latent_is_a_clear_error():
    with pytest.raises(ModelError, match=r"missing \['s'\]") as err:
        regression.log_density({"w": 0.0, "b": 0.0}, X, Y)
    assert "['b', 'w']" in str(err.value)


def test_log_density_unknown_address_is_a_clear_error():
    with pytest.raises(ModelError, match=r"\['typo'\]"):
        regression.log_density({"w": 0.0, "b": 0.0, "s": 1.0, "typo": 1.0}, X, Y)


def test_boolean_and_list_data_are_accepted_as_observations():
    @model
    def flips_model(flips):
        p = sample("p", Beta(1.0, 1.0))
        with plate("data", len(flips)):
            sample("x", Bernoulli(p), obs=flips)

    bools = torch.tensor([True, False, True])
    values = {"p": torch.tensor(0.3)}
    expected = td.Bernoulli(0.3).log_prob(bools.float()).sum()  # Beta(1, 1) has density 1
    assert torch.allclose(flips_model.log_density(values, bools), expected)
    assert torch.allclose(flips_model.log_density(values, [1, 0, 1]), expected)


def test_trace_records_the_run():
    tr = regression.trace(X, Y)
    assert list(tr) == ["w", "b", "s", "mean", "y"]
    assert tr["y"].is_observed and tr["mean"].kind == "deterministic"
    assert tr.return_value is tr["w"].value
    assert [f.name for f in tr["mean"].plates] == ["data"]


def test_deterministic_sites_appear_in_traces_and_samples():
    tr = regression.trace(X)
    assert "mean" in tr and tr["mean"].log_prob is None
    assert "mean" in regression.sample(X, seed=0)
    assert "mean" in regression.sample(X, seed=0, num_samples=3)


def test_factor_adds_its_log_weight_to_log_joint():
    def m(weight):
        x = sample("x", Normal(0.0, 1.0))
        factor("f", weight)
        return x

    base = handlers.trace().get_trace(m, 0.0)
    weight = torch.tensor([-1.5, 0.25])
    tr = handlers.trace().get_trace(handlers.replay(base)(m), weight)
    assert tr["f"].kind == "factor" and tr["f"].is_observed
    assert torch.allclose(tr.log_joint(), base.log_joint() + weight.sum())


def test_factor_and_deterministic_outside_handlers_return_their_value():
    assert factor("f", 1.5) == 1.5
    assert deterministic("d", 2) == 2.0


# ----------------------------------------------------------------------------- params


def test_param_initializes_the_store_once_and_returns_the_stored_value():
    first = param("w", torch.tensor([1.0, 2.0]))
    assert torch.equal(first, torch.tensor([1.0, 2.0]))
    again = param("w", torch.tensor([9.0, 9.0]))  # init is used only the first time
    assert torch.equal(again, first)
    assert set(unconstrained_params()) == {"w"}
    assert unconstrained_params()["w"].requires_grad


def test_param_with_constraint_is_stored_unconstrained_and_returned_constrained():
    value = param("scale", torch.tensor(2.0), constraint=constraints.positive)
    assert torch.allclose(value, torch.tensor(2.0))
    assert torch.allclose(unconstrained_params()["scale"], torch.log(torch.tensor(2.0)))
    assert param_constraints()["scale"] is constraints.positive
    with torch.no_grad():
        unconstrained_params()["scale"].fill_(-50.0)  # an optimizer may move it anywhere
    assert 0 < float(get_param("scale").detach()) < 1e-20


def test_param_accepts_a_callable_init():
    assert torch.equal(param("z", lambda: torch.zeros(3)), torch.zeros(3))


def test_param_gradients_reach_the_unconstrained_leaf():
    value = param("s", torch.tensor(3.0), constraint=constraints.positive)
    value.backward()
    assert torch.allclose(unconstrained_params()["s"].grad, torch.tensor(3.0))


def test_clear_params_empties_the_store():
    param("w", torch.tensor(1.0))
    clear_params()
    assert unconstrained_params() == {}
    assert param("w", torch.tensor(5.0)) == 5.0


def test_param_without_init_or_stored_value_is_an_error():
    with pytest.raises(ModelError, match="'nope'.*no init"):
        param("nope")


def test_param_sites_are_traced():
    @model
    def m():
        loc = param("loc", torch.tensor(0.5))
        return sample("x", Normal(loc, 1.0))

    tr = m.trace()
    assert tr["loc"].kind == "param" and tr["loc"].value == 0.5 and tr["loc"].log_prob is None
    assert tr["x"].fn.loc == 0.5


# ----------------------------------------------------------------------------- duplicates


def test_duplicate_addresses_raise_naming_both_source_locations():
    @model
    def twice():
        sample("x", Normal(0.0, 1.0))  # first
        sample("x", Poisson(1.0))  # second

    lines = {
        tag: i + 1
        for i, line in enumerate(Path(__file__).read_text().splitlines())
        for tag in ("first", "second")
        if line.endswith(f"# {tag}")
    }
    with pytest.raises(DuplicateSiteError, match="'x'") as err:
        twice.trace()
    message = str(err.value)
    for tag in ("first", "second"):
        assert re.search(rf"test_model\.py:{lines[tag]}\b", message), message


def test_duplicate_between_kinds_names_the_kinds():
    def m():
        sample("a", Normal(0.0, 1.0))
        deterministic("a", torch.tensor(1.0))

    with pytest.raises(DuplicateSiteError, match="sample site.*deterministic site"):
        handlers.trace().get_trace(m)


def test_same_address_in_separate_runs_is_fine():
    regression.trace(X)
    regression.trace(X)
