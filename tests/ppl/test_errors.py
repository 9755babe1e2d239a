"""Bad input gets an error naming the site and the shapes or values, and leaks no handler."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.distributions import constraints

from ppl import ModelError, ShapeError, handlers, infer, model, param, plate, sample, set_validation
from ppl.inference import Importance
from ppl.runtime import active_handlers
from ppl.stdlib import Bernoulli, Beta, Gamma, HalfCauchy, Normal, Poisson

SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def traced(fn, *args):
    return handlers.trace().get_trace(fn, *args)


def assert_mentions(err, *parts):
    message = str(err.value)
    for part in parts:
        assert part in message, f"{part!r} not in: {message}"


# ----------------------------------------------------------------------------- not a distribution


@pytest.mark.parametrize(
    ("bad", "type_name"),
    [(3.0, "float"), ("normal", "str"), (None, "NoneType"), (Normal, "type")],
)
def test_a_non_distribution_passed_to_sample_names_the_site_and_the_type(bad, type_name):
    with pytest.raises(ModelError) as err:
        traced(lambda: sample("theta", bad))
    assert_mentions(err, "'theta'", type_name, "not a distribution")
    with pytest.raises(ModelError, match="'theta'"):
        sample("theta", bad)  # outside any handler too


# ----------------------------------------------------------------------------- support


@pytest.mark.parametrize(
    ("dist", "value", "shown"),
    [
        (Bernoulli(0.5), 2.0, "2.0"),
        (Poisson(3.0), -1.0, "-1.0"),
        (Poisson(3.0), 1.5, "1.5"),
        (Beta(2.0, 2.0), 1.5, "1.5"),
        (Gamma(2.0, 1.0), -0.5, "-0.5"),
    ],
    ids=["bernoulli-2", "poisson-neg", "poisson-frac", "beta-1.5", "gamma-neg"],
)
def test_an_observed_value_outside_the_support_names_the_site_family_and_value(dist, value, shown):
    with pytest.raises(ModelError) as err:
        traced(lambda: sample("obs_site", dist, obs=value))
    assert_mentions(err, "'obs_site'", type(dist).__name__, "support", shown)


def test_outside_the_support_is_caught_without_any_handler():
    with pytest.raises(ModelError, match=r"'x'.*support.*2\.0"):
        sample("x", Bernoulli(0.5), obs=torch.tensor(2.0))


def test_offending_elements_are_listed_inside_a_plate():
    flips = torch.tensor([0.0, 1.0, 2.0, 1.0])

    def m():
        with plate("data", 4):
            sample("flip", Bernoulli(0.3), obs=flips)

    with pytest.raises(ModelError) as err:
        traced(m)
    assert_mentions(err, "'flip'", "(4,)", "[0.0, 1.0, 2.0, 1.0]", "offending values", "[2.0]")


def test_a_large_bad_value_is_described_by_its_shape():
    data = torch.zeros(100)
    data[17] = -3.0

    def m():
        with plate("data", 100):
            sample("count", Poisson(1.0), obs=data)

    with pytest.raises(ModelError) as err:
        traced(m)
    assert_mentions(err, "'count'", "(100,)", "[-3.0]")


def test_a_conditioned_value_outside_the_support_is_caught():
    @model
    def m():
        return sample("p", Beta(1.0, 1.0))

    with pytest.raises(ModelError, match=r"'p'.*support.*-0\.25"):
        traced(handlers.condition({"p": -0.25})(m))
    with pytest.raises(ModelError, match=r"'p'.*support.*1\.5"):
        m.log_density({"p": 1.5})


# ----------------------------------------------------------------------------- shapes


def test_obs_that_does_not_fit_its_plate_names_site_shapes_and_plate():
    def m():
        with plate("data", 10):
            sample("x", Normal(0.0, 1.0), obs=torch.zeros(5))

    with pytest.raises(ShapeError) as err:
        traced(m)
    assert_mentions(err, "'x'", "(5,)", "(10,)", "'data'", "size 10")


def test_a_parameter_that_does_not_fit_its_plate_names_site_shapes_and_plate():
    def m():
        with plate("data", 4):
            sample("x", Normal(torch.zeros(3), 1.0))

    with pytest.raises(ShapeError) as err:
        traced(m)
    assert_mentions(err, "'x'", "(3,)", "'data'", "size 4", ".to_event")


@SETTINGS
@given(st.integers(2, 12), st.integers(2, 12))
def test_any_mismatched_data_length_is_a_shape_error(size, length):
    if size == length:
        return

    def m():
        with plate("data", size):
            sample("y", Normal(0.0, 1.0), obs=torch.zeros(length))

    with pytest.raises(ShapeError) as err:
        traced(m)
    assert_mentions(err, "'y'", f"({length},)", f"({size},)")
    assert active_handlers() == ()


def test_vector_data_outside_any_plate_suggests_a_plate():
    with pytest.raises(ShapeError) as err:
        traced(lambda: sample("y", Normal(0.0, 1.0), obs=torch.zeros(3)))
    assert_mentions(err, "'y'", "(3,)", "()", "plate")


def test_shape_errors_in_a_vectorized_run_still_name_the_site():
    @model
    def m(data):
        with plate("data", 10):
            sample("y", Normal(0.0, 1.0), obs=data)

    with pytest.raises(ShapeError, match=r"'y'.*\(5,\)"):
        m.sample(torch.zeros(5), num_samples=3)


# ----------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("make", "pname", "shown"),
    [
        (lambda: Normal(0.0, -1.0), "scale", "-1.0"),
        (lambda: Beta(0.0, 1.0), "concentration1", "0.0"),
        (lambda: Beta(1.0, 0.0), "concentration0", "0.0"),
        (lambda: Gamma(2.0, -2.0), "rate", "-2.0"),
        (lambda: Bernoulli(1.5), "probs", "1.5"),
        (lambda: Poisson(-1.0), "rate", "-1.0"),
        (lambda: HalfCauchy(-1.0), "scale", "-1.0"),
        (lambda: Normal(0.0, float("nan")), "scale", "nan"),
    ],
    ids=["normal-scale", "beta-c1", "beta-c0", "gamma-rate", "bern-probs", "poisson-rate",
         "halfcauchy-scale", "normal-nan"],
)
def test_a_parameter_outside_its_constraint_names_site_parameter_and_value(make, pname, shown):
    with pytest.raises(ModelError) as err:
        traced(lambda: sample("theta", make()))
    assert_mentions(err, "'theta'", repr(pname), shown)


def test_offending_parameter_elements_are_listed():
    scale = torch.tensor([1.0, -2.0, 3.0])
    with pytest.raises(ModelError) as err:
        traced(lambda: sample("theta", Normal(0.0, scale)))
    assert_mentions(err, "'theta'", "'scale'", "(3,)", "[1.0, -2.0, 3.0]", "[-2.0]")


def test_param_init_outside_its_constraint_names_param_value_and_constraint():
    with pytest.raises(ModelError) as err:
        traced(lambda: param("sigma", torch.tensor(-1.0), constraint=constraints.positive))
    assert_mentions(err, "'sigma'", "-1.0", "GreaterThan")
    with pytest.raises(ModelError) as err:
        param("probs", torch.tensor([0.2, 0.9]), constraint=constraints.simplex)
    assert_mentions(err, "'probs'", "[0.", "Simplex")


def test_validation_can_be_turned_off():
    set_validation(False)
    traced(lambda: sample("theta", Normal(0.0, -1.0), obs=0.0))
    traced(lambda: sample("flip", Bernoulli(0.5), obs=2.0))
    with pytest.raises(ModelError, match="not a distribution"):
        traced(lambda: sample("theta", 3.0))  # always checked


# ----------------------------------------------------------------------------- no leaks


def bad_model():
    sample("a", Normal(0.0, 1.0))
    with plate("outer", 3), plate("inner", 2):
        for i in plate("seq", 2):
            sample(f"b_{i}", Normal(0.0, -1.0))


def test_an_error_deep_inside_handlers_leaves_the_stack_empty():
    with pytest.raises(ModelError):
        with handlers.trace(), handlers.seed(0), handlers.condition({"a": 0.0}), handlers.block(
            hide=["x"]
        ), handlers.scale(2.0), handlers.mask(True):
            bad_model()
    assert active_handlers() == ()


def test_an_error_in_a_decorated_or_seeded_run_leaves_the_stack_and_rng_clean():
    state = torch.random.get_rng_state()
    with pytest.raises(ModelError):
        handlers.trace()(handlers.seed(1)(bad_model))()
    assert active_handlers() == ()
    assert torch.equal(torch.random.get_rng_state(), state)


def test_errors_in_model_sample_and_infer_leave_the_stack_empty():
    m = model(bad_model)
    with pytest.raises(ModelError):
        m.sample(seed=0)
    assert active_handlers() == ()
    with pytest.raises(ModelError):
        m.sample(seed=0, num_samples=4)
    assert active_handlers() == ()
    with pytest.raises(ModelError):
        infer(m, method=Importance(num_samples=10), seed=0)
    assert active_handlers() == ()


def test_a_handler_left_open_inside_a_block_is_removed_when_the_block_exits():
    with handlers.trace():
        handlers.block().__enter__()  # never exited
    assert active_handlers() == ()


@model
def _mixed_dtype_regression(x, y):
    beta = sample("beta", Normal(torch.zeros(3), 1.0).to_event(1))  # float32 parameters
    with plate("N", x.shape[0]):
        sample("y", Normal(x @ beta, 1.0), obs=y)


def _float64_data():
    return torch.randn(10, 3, dtype=torch.float64), torch.randn(10, dtype=torch.float64)


def test_a_failing_op_while_tracing_names_op_line_dtypes_and_site():
    from ppl.errors import OperationError

    with pytest.raises(OperationError) as caught:
        _mixed_dtype_regression.graph(*_float64_data())
    message = str(caught.value)
    assert "matmul failed at" in message and "test_errors.py" in message
    assert "float64[10, 3], float32[3]" in message and "sites ['beta']" in message
    assert "cast the data" in message


def test_a_failing_op_on_the_trace_path_gets_a_note_with_line_and_last_site():
    with pytest.raises(RuntimeError) as caught:
        infer(_mixed_dtype_regression, *_float64_data(), method=Importance(10), seed=0)
    notes = " ".join(getattr(caught.value, "__notes__", []))
    assert "raised inside the model at" in notes and "test_errors.py" in notes
    assert "after site 'beta'" in notes


@model
def _latent_scale():
    s = sample("s", Normal(0.0, 1.0))
    sample("y", Normal(0.0, s), obs=torch.tensor(0.3))


@pytest.mark.parametrize("seed", range(6))
def test_tracing_does_not_judge_parameters_by_the_one_draw_it_traces_with(seed):
    """Half the prior draws of ``s`` are negative: whether the model traces must not depend
    on which one the tracer got (the log density is -inf there instead)."""
    from ppl.inference.lowering import FlatModel

    _latent_scale._graphs.clear()  # trace afresh, with this seed's draw
    with handlers.seed(rng_seed=seed):
        graph = _latent_scale.graph()
    flat = FlatModel.from_graph(graph)
    log_p, _ = flat.log_density_and_grad(torch.tensor([[-0.5], [0.5]], dtype=torch.float64))
    assert not torch.isfinite(log_p[0]) and torch.isfinite(log_p[1])
