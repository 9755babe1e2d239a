"""Vectorized particle runs never give a silently wrong result: a particle axis that lines up
with a dimension outside every plate (a data vector as long as the particle count, or a
size-1 dim) is caught, and the model runs once per particle instead, exactly."""

import warnings

import pytest
import torch

from ppl import model, plate, sample, vectorize
from ppl.randomness import seeded
from ppl.stdlib import Normal
from ppl.vectorize import (
    _PROBED,
    SequentialRun,
    VectorizationWarning,
    VectorizedRun,
    particle_runs,
    vectorized_trace,
)


@model
def shifted_mean(x, y):
    mu = sample("mu", Normal(0.0, 1.0))
    sample("y", Normal(mu + x, 1.0).to_event(1), obs=y)  # x's dim is in no plate


@model
def plated_mean(x, y):
    mu = sample("mu", Normal(0.0, 1.0))
    with plate("data", len(x)):
        sample("y", Normal(mu + x, 1.0), obs=y)


def exact_log_joint(mu, x, y):
    """log p(mu, y) of either model, per particle."""
    return (Normal(0.0, 1.0).log_prob(mu)
            + Normal(mu[:, None] + x, 1.0).log_prob(y).sum(-1))


@pytest.mark.parametrize("length, particles", [(20, 20), (1, 5)],
                         ids=["as-long-as-the-data", "a-size-1-dim"])
def test_a_particle_axis_met_outside_a_plate_runs_per_particle_exactly(length, particles,
                                                                         monkeypatch):
    monkeypatch.setattr(vectorize, "_WARNED", set())  # each case sees its first warning
    x = torch.linspace(-1.0, 1.0, length)
    y = 0.5 + x
    with pytest.warns(VectorizationWarning, match="does not vectorize"):
        run = particle_runs(shifted_mean, (x, y), {}, particles)
    assert isinstance(run, SequentialRun)
    mu = run.values()["mu"]
    torch.testing.assert_close(run.log_joint(), exact_log_joint(mu, x, y))


def test_a_model_with_its_data_in_a_plate_still_vectorizes_at_the_data_length():
    x = torch.linspace(-1.0, 1.0, 20)
    y = 0.5 + x
    with warnings.catch_warnings():
        warnings.simplefilter("error", VectorizationWarning)
        run = particle_runs(plated_mean, (x, y), {}, 20)
    assert isinstance(run, VectorizedRun)
    torch.testing.assert_close(run.log_joint(), exact_log_joint(run.values()["mu"], x, y))


def test_the_probe_leaves_the_random_stream_where_it_was():
    x = torch.linspace(-1.0, 1.0, 20)
    _PROBED.clear()
    with seeded(3):
        probed = vectorized_trace(plated_mean, (x, x), {}, 20).values()["mu"]
    assert _PROBED  # the particle count equals the plate's size: it was probed
    with seeded(3):
        unprobed = vectorized_trace(plated_mean, (x, x), {}, 20).values()["mu"]
    torch.testing.assert_close(probed, unprobed)
