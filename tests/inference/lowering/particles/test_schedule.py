"""Schedules cut by hand-checked rules on small graphs, user partitions validated with errors
that name the sites, and cutting a T=10,000 chain in well under a second (linear time)."""

import time

import pytest
import torch

from ppl import model, param, sample
from ppl.inference.lowering.particles import Schedule, ScheduleError
from ppl.ir import GraphBuilder
from ppl.stdlib import HalfNormal, Normal


@model
def ssm(ys):
    x = sample("x_0", Normal(0.0, 1.0))
    sample("y_0", Normal(x, 1.0), obs=ys[0])
    for t in range(1, len(ys)):
        x = sample(f"x_{t}", Normal(0.9 * x, 1.0))
        sample(f"y_{t}", Normal(x, 1.0), obs=ys[t])


@model
def shared_scale(ys):
    """A global scale every observation reads, a latent nothing observes, a param."""
    s = sample("s", HalfNormal(1.0))
    shift = param("shift", torch.tensor(0.0))
    x = sample("x_0", Normal(shift, 1.0))
    sample("y_0", Normal(x, s), obs=ys[0])
    x = sample("x_1", Normal(x, 1.0))
    sample("unobserved", Normal(x, 1.0))
    sample("y_1", Normal(x, s), obs=ys[1])


def test_each_observation_opens_a_step_with_its_new_ancestors():
    s = Schedule.from_graph(ssm.graph(torch.zeros(4)))
    assert [s.step_sites(k) for k in range(s.num_steps)] == [
        ("x_0", "y_0"), ("x_1", "y_1"), ("x_2", "y_2"), ("x_3", "y_3")]
    assert [s.steps[k].reads for k in range(4)] == [(), ("x_0",), ("x_1",), ("x_2",)]
    assert [s.needed_after(k) for k in range(4)] == [
        frozenset({"x_0"}), frozenset({"x_1"}), frozenset({"x_2"}), frozenset()]
    assert s.steps[2].latents == ("x_2",) and s.steps[2].observed == ("y_2",)


def test_a_global_latent_is_drawn_first_and_live_until_its_last_reader():
    s = Schedule.from_graph(shared_scale.graph(torch.zeros(2)))
    assert s.step_sites(0) == ("s", "x_0", "y_0")
    assert s.step_sites(1) == ("x_1", "unobserved", "y_1")  # the unobserved one goes last
    assert s.steps[1].reads == ("s", "x_0")
    assert s.needed_after(0) == {"s", "x_0"} and s.needed_after(1) == frozenset()
    assert s.step_of("unobserved") == 1


def test_a_model_without_observations_is_one_step():
    @model
    def prior():
        a = sample("a", Normal(0.0, 1.0))
        sample("b", Normal(a, 1.0))

    s = Schedule.from_graph(prior.graph())
    assert s.num_steps == 1 and s.step_sites(0) == ("a", "b")


def test_a_user_partition_is_kept_and_validated():
    g = ssm.graph(torch.zeros(3))
    s = Schedule.from_graph(g, [["x_0", "x_1", "y_0", "y_1"], ["x_2", "y_2"]])
    assert s.step_sites(0) == ("x_0", "y_0", "x_1", "y_1") and s.steps[1].reads == ("x_1",)
    with pytest.raises(ScheduleError, match=r"'x_1' is in partition groups 0 and 1"):
        Schedule.from_graph(g, [["x_0", "y_0", "x_1"], ["x_1", "y_1", "x_2", "y_2"]])
    with pytest.raises(ScheduleError, match=r"'y_0' \(partition group 0\) reads latent 'x_0', "
                                            r"which group 1 draws later"):
        Schedule.from_graph(g, [["y_0"], ["x_0", "x_1", "y_1", "x_2", "y_2"]])
    with pytest.raises(ScheduleError, match=r"names 'x_9', which is not a site"):
        Schedule.from_graph(g, [["x_0", "y_0", "x_9"]])
    with pytest.raises(ScheduleError, match=r"leaves out sites \['x_2', 'y_2'\]"):
        Schedule.from_graph(g, [["x_0", "y_0", "x_1", "y_1"]])
    with pytest.raises(ScheduleError, match=r"list of address groups"):
        Schedule.from_graph(g, ["x_0", "y_0"])


def test_a_param_is_not_schedulable():
    g = shared_scale.graph(torch.zeros(2))
    with pytest.raises(ScheduleError, match=r"'shift', a param site"):
        Schedule.from_graph(g, [["shift"]])


def _chain_graph(num_steps: int):
    b = GraphBuilder("chain")
    x = 0.0
    for t in range(num_steps):
        x = b.add("sample", "Normal", kwargs=(("loc", x), ("scale", 1.0)), address=f"x_{t}")
        b.add("observe", "Normal", args=(0.5,), kwargs=(("loc", x), ("scale", 1.0)),
              address=f"y_{t}")
    b.add("output", "output", args=(None,))
    return b.build()


def _scheduling_time(num_steps: int) -> float:
    """The best of three CPU times (this process's, the machine may be shared) to cut a chain."""
    g = _chain_graph(num_steps)
    times = []
    for _ in range(3):
        start = time.process_time()
        Schedule.from_graph(g)
        times.append(time.process_time() - start)
    return min(times)


def test_cutting_a_long_chain_is_linear_time():
    s = Schedule.from_graph(_chain_graph(10_000))
    assert s.num_steps == 10_000 and s.steps[-1].reads == ("x_9998",)
    # A ratio, not an absolute time: four times the steps must cost far less than the
    # sixteen times a quadratic cut would.
    small, large = _scheduling_time(2_000), _scheduling_time(8_000)
    assert large / small < 8.0, f"2,000 steps: {small:.3f} s, 8,000 steps: {large:.3f} s"
