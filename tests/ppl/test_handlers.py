"""Handler laws: what each effect handler does to a model's sites, values and log_joint.

Reference log densities are computed with ``torch.distributions`` directly, not through ppl.
"""

import pytest
import torch
import torch.distributions as td
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppl import ModelError, deterministic, factor, handlers, param, plate, sample
from ppl.runtime import Message, Messenger, PlateFrame, active_handlers, apply_stack
from ppl.stdlib import Normal

SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def chain():
    x = sample("x", Normal(0.0, 1.0))
    y = sample("y", Normal(x, 2.0))
    return x, y


def three():
    z = sample("z", Normal(0.0, 1.0))
    x = sample("x", Normal(z, 1.0))
    y = sample("y", Normal(x, 0.5))
    return z, x, y


def get_trace(fn, *args, **kwargs):
    return handlers.trace().get_trace(fn, *args, **kwargs)


def lp(value, loc, scale):
    return td.Normal(torch.as_tensor(loc), torch.as_tensor(scale)).log_prob(torch.as_tensor(value))


# ----------------------------------------------------------------------------- stack, trace


class Recorder(Messenger):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def process(self, msg):
        self.log.append(("process", self.name))

    def postprocess(self, msg):
        self.log.append(("postprocess", self.name))


def test_process_runs_innermost_first_and_postprocess_outermost_first():
    log = []
    with Recorder("outer", log), Recorder("inner", log):
        apply_stack(Message(kind="deterministic", name="d", value=torch.tensor(1.0)))
    assert log == [("process", "inner"), ("process", "outer"),
                   ("postprocess", "outer"), ("postprocess", "inner")]


def test_stop_hides_the_message_from_outer_handlers_entirely():
    log = []
    with Recorder("outer", log), handlers.block(), Recorder("inner", log):
        value = sample("x", Normal(0.0, 1.0))
    assert log == [("process", "inner"), ("postprocess", "inner")]
    assert value.shape == ()


def test_active_handlers_follow_the_with_blocks():
    assert active_handlers() == ()
    with handlers.trace() as t, handlers.block() as b:
        assert active_handlers() == (t, b)
    assert active_handlers() == ()


def test_trace_records_every_site_in_order_with_kinds_and_return_value():
    def m(data):
        w = param("w", torch.tensor(0.5))
        mu = sample("mu", Normal(w, 1.0))
        with plate("data", len(data)):
            sample("obs", Normal(mu, 1.0), obs=data)
            deterministic("twice", 2 * mu)
        factor("penalty", -mu**2)
        return mu

    data = torch.tensor([0.1, -0.3, 0.7])
    tr = get_trace(m, data)
    assert list(tr) == ["w", "mu", "obs", "twice", "penalty"]
    assert [tr[n].kind for n in tr] == ["param", "sample", "sample", "deterministic", "factor"]
    assert tr["obs"].is_observed and not tr["mu"].is_observed
    assert [s.name for s in tr.latent_sites()] == ["mu"]
    assert [s.name for s in tr.observed_sites()] == ["obs", "penalty"]
    assert tr["w"].log_prob is None and tr["twice"].log_prob is None
    assert tr.return_value is tr["mu"].value
    mu = tr["mu"].value
    expected = lp(mu, 0.5, 1.0) + lp(data, mu, 1.0).sum() - mu**2
    assert torch.allclose(tr.log_joint(), expected)


# ----------------------------------------------------------------------------- condition


def test_condition_marks_observed_and_fixes_the_value():
    with handlers.trace() as handler, handlers.condition({"x": torch.tensor(0.5)}):
        x, y = chain()
    tr = handler.trace
    assert x == 0.5 and tr["x"].value == 0.5
    assert tr["x"].is_observed and not tr["x"].is_latent
    assert not tr["y"].is_observed
    assert tr["y"].fn.loc == 0.5  # downstream sites see the conditioned value
    expected = lp(0.5, 0.0, 1.0) + lp(y, 0.5, 2.0)
    assert torch.allclose(tr.log_joint(), expected)


def test_condition_accepts_a_function_of_the_address_and_python_numbers():
    data = lambda name: 1.5 if name == "y" else None
    tr = get_trace(handlers.condition(data)(chain))
    assert tr["y"].is_observed and tr["y"].value == 1.5 and tr["y"].value.dtype == torch.float32
    assert tr["x"].is_latent


def test_condition_replaces_the_value_of_an_observed_site():
    def m():
        return sample("y", Normal(0.0, 1.0), obs=torch.tensor(1.0))

    tr = get_trace(handlers.condition({"y": torch.tensor(2.0)})(m))
    assert tr["y"].value == 2.0 and tr["y"].is_observed


# ----------------------------------------------------------------------------- substitute


def test_substitute_sets_values_without_observing():
    with handlers.trace() as handler, handlers.substitute({"x": torch.tensor(-1.0)}):
        chain()
    tr = handler.trace
    assert tr["x"].value == -1.0 and tr["x"].is_latent
    assert tr["y"].fn.loc == -1.0
    assert torch.allclose(tr.log_joint(), lp(-1.0, 0.0, 1.0) + lp(tr["y"].value, -1.0, 2.0))


def test_substitute_sets_params_without_touching_the_param_store():
    def m():
        return param("w", torch.tensor(1.0))

    with handlers.substitute({"w": torch.tensor(3.0)}):
        assert m() == 3.0
    assert m() == 1.0


# ----------------------------------------------------------------------------- replay


def test_replay_reproduces_a_traces_latent_values_and_log_joint():
    original = get_trace(three)
    replayed = get_trace(handlers.replay(original)(three))
    for name in ("z", "x", "y"):
        assert torch.equal(replayed[name].value, original[name].value)
    assert torch.equal(replayed.log_joint(), original.log_joint())


def test_replay_keeps_observed_values_and_draws_sites_missing_from_the_trace():
    guide = get_trace(lambda: sample("x", Normal(5.0, 1.0)))

    def m(y):
        x = sample("x", Normal(0.0, 1.0))
        sample("y", Normal(x, 1.0), obs=y)
        return sample("extra", Normal(0.0, 1.0))

    tr = get_trace(handlers.replay(guide)(m), torch.tensor(7.0))
    assert torch.equal(tr["x"].value, guide["x"].value)
    assert tr["y"].value == 7.0
    assert "extra" in tr and tr["extra"].is_latent


def test_replay_does_not_undo_an_intervention():
    original = get_trace(three)
    intervention = handlers.do({"x": torch.tensor(9.0)})
    with handlers.trace() as handler, handlers.replay(original), intervention:
        three()
    tr = handler.trace
    assert tr["x"].value == 9.0 and tr["x"].intervened
    assert tr["y"].fn.loc == 9.0


# ----------------------------------------------------------------------------- block


@pytest.mark.parametrize(
    ("kwargs", "visible"),
    [
        ({}, []),
        ({"hide": ["x"]}, ["y"]),
        ({"expose": ["x"]}, ["x"]),
        ({"hide_fn": lambda msg: msg.name == "y"}, ["x"]),
    ],
    ids=["all", "hide", "expose", "hide_fn"],
)
def test_block_hides_sites_from_outer_handlers_only(kwargs, visible):
    with handlers.trace() as outer, handlers.block(**kwargs), handlers.trace() as inner:
        chain()
    assert list(outer.trace) == visible
    assert list(inner.trace) == ["x", "y"]


def test_blocked_sites_still_run_and_return_values():
    with handlers.trace() as outer, handlers.block():
        x, y = chain()
    assert len(outer.trace) == 0
    assert x.shape == () and y.shape == ()


def test_condition_outside_a_block_does_not_reach_blocked_sites_but_inside_does():
    data = {"x": torch.tensor(3.0)}
    with handlers.trace() as tr, handlers.condition(data), handlers.block(hide=["x"]):
        x, _ = chain()
    assert x != 3.0 and list(tr.trace) == ["y"]

    with handlers.trace() as tr, handlers.block(hide=["x"]), handlers.condition(data):
        x, _ = chain()
    assert x == 3.0 and list(tr.trace) == ["y"]
    assert tr.trace["y"].fn.loc == 3.0


# ----------------------------------------------------------------------------- seed


def test_seed_makes_runs_identical_and_different_seeds_differ():
    with handlers.seed(3):
        a = three()
    with handlers.seed(3):
        b = three()
    with handlers.seed(4):
        c = three()
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_seed_as_decorator_reproduces_every_call():
    seeded = handlers.seed(0)(chain)
    assert torch.equal(torch.stack(seeded()), torch.stack(seeded()))


def test_seed_leaves_the_global_generator_alone():
    """ppl's draws inside a seed scope come from its private generator (they used to borrow
    the global one and restore it; torch calls outside ppl now simply use the global one)."""
    torch.manual_seed(123)
    expected = torch.randn(5)
    torch.manual_seed(123)
    with handlers.seed(7):
        chain()
    assert torch.equal(torch.randn(5), expected)


def test_seed_leaves_the_global_generator_alone_after_an_error():
    state = torch.random.get_rng_state()
    with pytest.raises(RuntimeError, match="boom"), handlers.seed(1):
        chain()
        raise RuntimeError("boom")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert active_handlers() == ()


def test_nested_seeds_are_independent_of_what_surrounds_them():
    with handlers.seed(0):
        inner_alone = handlers.seed(5)(chain)()
    with handlers.seed(1):
        torch.randn(10)
        inner_nested = handlers.seed(5)(chain)()
    assert torch.equal(torch.stack(inner_alone), torch.stack(inner_nested))


# ----------------------------------------------------------------------------- do


def test_do_fixes_the_value_contributes_nothing_and_downstream_sees_it():
    with handlers.trace() as tr, handlers.do({"x": torch.tensor(2.0)}):
        z, x, y = three()
    site = tr.trace["x"]
    assert x == 2.0 and site.intervened and not site.is_observed and not site.is_latent
    assert torch.equal(site.log_prob, torch.zeros(()))
    assert tr.trace["y"].fn.loc == 2.0
    expected = lp(z, 0.0, 1.0) + lp(y, 2.0, 0.5)
    assert torch.allclose(tr.trace.log_joint(), expected)


def test_do_cuts_dependence_on_parents_whereas_condition_adds_the_likelihood():
    value = {"x": torch.tensor(2.0)}
    fixed = {"z": torch.tensor(-1.0), "y": torch.tensor(1.0)}
    tr_do = get_trace(handlers.condition(fixed)(handlers.do(value)(three)))
    tr_cond = get_trace(handlers.condition(fixed)(handlers.condition(value)(three)))
    difference = tr_cond.log_joint() - tr_do.log_joint()
    assert torch.allclose(difference, lp(2.0, -1.0, 1.0))  # exactly log p(x | z)
    # y under do does not depend on z: its distribution is the same for any z
    for z in (-3.0, 0.0, 4.0):
        tr = get_trace(handlers.condition({"z": torch.tensor(z)})(handlers.do(value)(three)))
        assert tr["y"].fn.loc == 2.0


# ----------------------------------------------------------------------------- scale


def vector_model():
    mu = sample("mu", Normal(0.0, 1.0))
    with plate("data", 4):
        sample("x", Normal(mu, 1.0), obs=torch.tensor([0.3, -1.2, 2.0, 0.5]))
    return mu


@SETTINGS
@given(st.floats(min_value=1e-3, max_value=1e3))
def test_scale_multiplies_log_joint_exactly_by_the_factor(c):
    base = get_trace(vector_model)
    scaled = get_trace(handlers.scale(c)(handlers.replay(base)(vector_model)))
    assert torch.allclose(scaled.log_joint(), c * base.log_joint(), rtol=1e-5, atol=1e-6)
    for name in ("mu", "x"):
        assert torch.allclose(scaled[name].log_prob, c * base[name].log_prob, rtol=1e-5, atol=1e-6)


@SETTINGS
@given(st.floats(min_value=0.01, max_value=100.0))
def test_scale_touches_only_the_sites_inside_it(c):
    def m():
        a = sample("a", Normal(0.0, 1.0))
        with handlers.scale(c):
            sample("b", Normal(a, 1.0))
        return a

    base = get_trace(m)
    tr = get_trace(handlers.replay(base)(m))
    lp_a, lp_b = lp(base["a"].value, 0.0, 1.0), lp(base["b"].value, base["a"].value, 1.0)
    assert torch.allclose(tr.log_joint(), lp_a + c * lp_b, rtol=1e-5, atol=1e-5)
    assert tr["a"].scale == 1.0 and tr["b"].scale == c


def test_nested_scales_multiply_and_a_nonpositive_scale_is_refused():
    tr = get_trace(handlers.scale(2.0)(handlers.scale(3.0)(chain)))
    assert tr["x"].scale == 6.0
    assert torch.allclose(tr["x"].log_prob, 6.0 * lp(tr["x"].value, 0.0, 1.0))
    with pytest.raises(ModelError, match="positive"):
        handlers.scale(0.0)
    with pytest.raises(ModelError, match="positive"):
        handlers.scale(torch.tensor([1.0, -1.0]))


def test_scale_leaves_params_and_deterministic_sites_alone():
    def m():
        param("w", torch.tensor(1.0))
        deterministic("d", torch.tensor(2.0))

    tr = get_trace(handlers.scale(5.0)(m))
    assert tr["w"].scale == 1.0 and tr["d"].scale == 1.0
    assert tr.log_joint() == 0.0


# ----------------------------------------------------------------------------- mask


@SETTINGS
@given(st.lists(st.booleans(), min_size=1, max_size=8))
def test_mask_zeroes_exactly_the_masked_elements(keep):
    keep = torch.tensor(keep)
    data = torch.linspace(-1.0, 1.0, len(keep))

    def m():
        with plate("data", len(keep)):
            sample("x", Normal(0.5, 2.0), obs=data)

    tr = get_trace(handlers.mask(keep)(m))
    full = lp(data, 0.5, 2.0)
    assert torch.equal(tr["x"].log_prob[~keep], torch.zeros(int((~keep).sum())))
    assert torch.allclose(tr["x"].log_prob[keep], full[keep])
    assert torch.allclose(tr.log_joint(), full[keep].sum())


def test_nested_masks_combine_with_and_and_a_false_mask_removes_the_site():
    data = torch.zeros(4)

    def m():
        with plate("data", 4):
            sample("x", Normal(0.0, 1.0), obs=data)

    outer, inner = torch.tensor([1, 1, 0, 0]).bool(), torch.tensor([1, 0, 1, 0]).bool()
    tr = get_trace(handlers.mask(outer)(handlers.mask(inner)(m)))
    assert torch.equal(tr["x"].mask, outer & inner)
    assert torch.equal(tr["x"].log_prob != 0, outer & inner)
    assert get_trace(handlers.mask(False)(m)).log_joint() == 0.0


# ----------------------------------------------------------------------------- plate


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 6))
def test_nested_plates_take_automatic_dims_from_the_right(n_outer, n_inner):
    def m():
        a = sample("a", Normal(0.0, 1.0))
        with plate("outer", n_outer):
            b = sample("b", Normal(a, 1.0))
            with plate("inner", n_inner):
                c = sample("c", Normal(b, 1.0))
        return c

    tr = get_trace(m)
    assert tr["a"].value.shape == ()
    assert tr["b"].value.shape == (n_outer,)
    assert tr["c"].value.shape == (n_inner, n_outer)
    assert tr["c"].fn.batch_shape == (n_inner, n_outer)
    assert tr["c"].plates == (PlateFrame("outer", n_outer, -1, n_outer),
                              PlateFrame("inner", n_inner, -2, n_inner))
    expected = (lp(tr["a"].value, 0.0, 1.0) + lp(tr["b"].value, tr["a"].value, 1.0).sum()
                + lp(tr["c"].value, tr["b"].value, 1.0).sum())
    assert torch.allclose(tr.log_joint(), expected, atol=1e-5)


def test_explicit_plate_dim_and_automatic_dims_skip_it():
    def m():
        with plate("rows", 3, dim=-2):
            with plate("cols", 4):
                return sample("x", Normal(0.0, 1.0))

    tr = get_trace(m)
    assert tr["x"].value.shape == (3, 4)
    assert [f.dim for f in tr["x"].plates] == [-2, -1]

    def lone():
        with plate("rows", 3, dim=-3):
            return sample("x", Normal(0.0, 1.0))

    assert get_trace(lone)["x"].value.shape == (3, 1, 1)


def test_plate_dim_clashes_and_bad_arguments_are_refused():
    with pytest.raises(ModelError, match="already used"), plate("a", 2, dim=-1):
        with plate("b", 3, dim=-1):
            pass
    with pytest.raises(ModelError, match="negative"):
        plate("a", 2, dim=0)
    with pytest.raises(ModelError, match="subsample_size"):
        plate("a", 2, subsample_size=3)


def test_a_plate_of_size_one_still_adds_its_dim():
    with handlers.trace() as tr, plate("data", 1):
        sample("x", Normal(0.0, 1.0), obs=torch.tensor([0.5]))
        sample("z", Normal(0.0, 1.0))
    assert tr.trace["x"].fn.batch_shape == (1,)
    assert tr.trace["z"].value.shape == (1,)


def test_plate_broadcasts_parameters_that_already_have_its_size():
    loc = torch.arange(5.0)
    with handlers.trace() as tr, plate("data", 5) as idx:
        sample("x", Normal(loc, 1.0))
    assert torch.equal(idx, torch.arange(5))
    assert tr.trace["x"].fn.batch_shape == (5,)


@SETTINGS
@given(st.integers(2, 50).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))))
def test_subsample_scales_log_density_by_size_over_subsample_size(sizes):
    size, sub = sizes
    data = torch.linspace(-2.0, 2.0, size)

    def m():
        with plate("data", size, subsample_size=sub) as idx:
            sample("x", Normal(0.0, 1.0), obs=data[idx])
        return idx

    tr = get_trace(m)
    idx = tr.return_value
    assert idx.shape == (sub,) and len(set(idx.tolist())) == sub
    assert 0 <= int(idx.min()) and int(idx.max()) < size
    assert tr["x"].scale == pytest.approx(size / sub)
    expected = size / sub * lp(data[idx], 0.0, 1.0).sum()
    assert torch.allclose(tr.log_joint(), expected, rtol=1e-5, atol=1e-5)


def test_subsample_indices_are_reproducible_under_seed():
    def idx():
        with plate("data", 100, subsample_size=10) as i:
            return i

    assert torch.equal(handlers.seed(0)(idx)(), handlers.seed(0)(idx)())


def test_sequential_plate_marks_frames_with_dim_none_and_does_not_vectorize():
    with handlers.trace() as tr:
        for i in plate("steps", 3):
            assert len(active_handlers()) == 2
            sample(f"x_{i}", Normal(0.0, 1.0))
    assert active_handlers() == ()
    assert list(tr.trace) == ["x_0", "x_1", "x_2"]
    for name in tr.trace:
        site = tr.trace[name]
        assert site.value.shape == ()
        assert [(f.name, f.size, f.dim) for f in site.plates] == [("steps", 3, None)]
        assert site.scale == 1.0


def test_sequential_plate_inside_a_vectorized_plate():
    with handlers.trace() as tr, plate("batch", 4):
        for i in plate("steps", 2):
            sample(f"x_{i}", Normal(0.0, 1.0))
    site = tr.trace["x_1"]
    assert site.value.shape == (4,)
    assert [(f.name, f.dim) for f in site.plates] == [("batch", -1), ("steps", None)]


def test_leaving_a_sequential_plate_early_leaves_the_stack_clean():
    for i in plate("steps", 5):
        if i == 2:
            break
    assert active_handlers() == ()


def test_deterministic_sites_get_plate_frames_but_keep_their_value():
    with handlers.trace() as tr, plate("data", 3):
        deterministic("d", torch.tensor(1.0))
    assert tr.trace["d"].value.shape == ()
    assert [f.name for f in tr.trace["d"].plates] == ["data"]


def test_broadcast_expands_sites_to_hand_built_plate_frames():
    class AddFrame(Messenger):
        def process(self, msg):
            msg.plates = (*msg.plates, PlateFrame("hand", 4, -1, 4))

    with handlers.trace() as tr, handlers.broadcast(), AddFrame():
        sample("x", Normal(0.0, 1.0))
    assert tr.trace["x"].value.shape == (4,)


# ----------------------------------------------------------------------------- usage forms


def test_every_handler_works_as_decorator_and_as_context_manager():
    fixed = {"x": torch.tensor(0.25)}
    recorded = get_trace(chain)
    makers = [
        lambda: handlers.condition(fixed),
        lambda: handlers.substitute(fixed),
        lambda: handlers.do(fixed),
        lambda: handlers.seed(0),
        lambda: handlers.scale(2.0),
        lambda: handlers.mask(True),
        lambda: handlers.block(hide=["y"]),
        lambda: handlers.broadcast(),
        lambda: handlers.replay(recorded),
    ]
    for make in makers:
        torch.manual_seed(0)
        as_decorator = get_trace(make()(chain))
        torch.manual_seed(0)
        with handlers.trace() as tr, make():
            chain()
        assert list(as_decorator) == list(tr.trace)
        for name in tr.trace:
            assert torch.equal(as_decorator[name].value, tr.trace[name].value)
        assert torch.equal(as_decorator.log_joint(), tr.trace.log_joint())
        assert active_handlers() == ()


def test_trace_as_decorator_keeps_the_last_runs_trace():
    recorder = handlers.trace()
    traced = recorder(chain)
    x, _ = traced()
    assert torch.equal(recorder.trace["x"].value, x)
