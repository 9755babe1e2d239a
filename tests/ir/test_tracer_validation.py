"""Tracing checks the parameters that depend on no random site: a bad literal or data
argument fails at ``model.graph`` naming the site, the parameter, its value and the
constraint, even where the constructor broadcast it against a latent; parameters computed
from latents are left to the log density, which checks them at every point."""

import pytest
import torch

from ppl import ModelError, model, plate, sample
from ppl.stdlib import Beta, Exponential, Gamma, Normal


@model
def negative_scale():
    x = sample("x", Normal(0.0, 1.0))
    sample("y", Normal(x, -1.0))


@model
def negative_concentration():
    x = sample("x", Exponential(1.0))
    sample("g", Gamma(-2.0, rate=x))


@model
def negative_in_a_plate():
    x = sample("x", Exponential(1.0))
    with plate("p", 2):
        sample("b", Beta(x, torch.tensor([1.0, -1.0])))


@model
def negative_data(scale):
    x = sample("x", Normal(0.0, 1.0))
    with plate("p", 2):
        sample("y", Normal(x, scale))


@pytest.mark.parametrize("traced, args, message", [
    (negative_scale, (), r"site 'y': parameter 'scale' of Normal must satisfy GreaterThan"
                         r"\(lower_bound=0.0\), got tensor of shape \(\) = -1.0"),
    (negative_concentration, (), r"site 'g': parameter 'concentration' of Gamma must satisfy "
                                 r"GreaterThan\(lower_bound=0.0\), got .* = -2.0"),
    (negative_in_a_plate, (), r"site 'b': parameter 'concentration0' of Beta must satisfy "
                              r"GreaterThan\(lower_bound=0.0\), got tensor of shape \(2,\) = "
                              r"\[1.0, -1.0\]"),
    (negative_data, (torch.tensor([1.0, -3.0]),), r"site 'y': parameter 'scale' .* -3.0"),
])
def test_a_bad_literal_or_data_parameter_fails_at_trace_time(traced, args, message):
    with pytest.raises(ModelError, match=message):
        traced.graph(*args)


@model
def series(n):
    x = torch.zeros(())
    for t in range(n):
        x = sample(f"x_{t}", Normal(0.9 * x, 1.0))  # one literal scale, checked once
    sample("last", Normal(0.0, 2.0 + x - x))


def test_valid_literals_trace_as_before():
    graph = series.graph(5)
    assert [n.address for n in graph.nodes if n.kind == "sample"][-1] == "last"


@model
def scale_from_a_latent():
    x = sample("x", Normal(0.0, 1.0))
    sample("y", Normal(0.0, x - 100.0))  # negative at the trace's draw


def test_a_parameter_computed_from_a_latent_is_left_to_the_log_density():
    graph = scale_from_a_latent.graph()
    assert graph.site("y").kind == "sample"
