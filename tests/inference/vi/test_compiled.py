"""The compiled VI step (``inference/vi/compiled.py``): on the same seed its objective value
and every param's gradient equal the general handler path's (a network's weights, a
constrained param, a subsampled plate's scale, a global latent, score-function sites with
their running baselines; the library's objectives, with one particle and with several, and
a user's program; PIWAE, whose guide term holds the network's weights fixed); a whole run
follows the general path's losses and resumes from a checkpoint; refusals name why and
fall back to the handlers; the generated code reads only the data it uses."""

import pytest
import torch
from torch import nn
from torch.distributions import constraints

from ppl import deterministic, factor, infer, model, module, param, plate, sample
from ppl.errors import ModelError
from ppl.handlers import block, trace
from ppl.inference.lowering.flat import FastPathWarning
from ppl.inference.vi import (
    CUBO,
    ELBO,
    IWAE,
    PIWAE,
    RWS,
    VI,
    VIMCO,
    AutoNormal,
    RenyiELBO,
    expectation,
)
from ppl.inference.vi.compiled import COMPILED, compiled_objective
from ppl.params import current_store
from ppl.randomness import seeded
from ppl.stdlib import Bernoulli, Dirichlet, Gamma, HalfNormal, Normal, Poisson, Uniform
from ppl.subsample import subsample

X = torch.linspace(-1.0, 1.0, 12).reshape(6, 2)
Y = torch.tensor([0.3, -0.1, 0.8, 0.5, -0.4, 0.2])
NET = nn.Linear(2, 1)
START = {k: v.clone() for k, v in NET.state_dict().items()}


@model
def regression(x, y):
    module("net", NET)
    noise = param("noise", torch.tensor(0.5), constraint=constraints.positive)
    bias = sample("bias", Normal(0.0, 1.0))
    with plate("data", len(y), subsample_size=4) as rows:
        offset = sample("offset", Normal(0.0, 0.3))
        sample("y", Normal(NET(x[rows])[..., 0] + bias + offset, noise), obs=y[rows])


def guide(x, y):
    loc = param("bias.loc", torch.tensor(0.0))
    scale = param("bias.scale", torch.tensor(0.5), constraint=constraints.positive)
    sample("bias", Normal(loc, scale))
    offsets = param("offset.loc", torch.zeros(len(y)))
    with plate("data", len(y), subsample_size=4) as rows:
        sample("offset", Normal(offsets[rows], 0.2))


@expectation
def my_elbo(model, guide, *args):
    zs = guide.sample()
    return (model.log_density(zs, *args) - guide.log_density(zs)).mean()


def _value_and_grads(evaluate):
    store = current_store()
    for leaf in store.unconstrained().values():
        leaf.grad = None
    with seeded(3):
        out = evaluate()
    out.surrogate.backward()
    return out.value, {n: t.grad.clone() for n, t in store.unconstrained().items()}


def _assert_steps_agree(model, guide, objective, params, steps=1):
    """Compiled and general evaluations on one seed: equal values and gradients of
    ``params`` (each step from the same running state of the objective)."""
    with torch.no_grad(), block():
        trace().get_trace(guide, X, Y)
        trace().get_trace(model, X, Y)
    step, path = compiled_objective(model, guide, objective, (X, Y), {})
    assert path == COMPILED

    def general():
        with subsample():
            return objective(model, guide, X, Y)

    for _ in range(steps):
        state = objective.state_dict()
        value, grads = _value_and_grads(step.surrogate)
        objective.load_state_dict(state)
        expected, expected_grads = _value_and_grads(general)
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=0)
        assert sorted(grads) == sorted(expected_grads) == sorted(params)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("objective", [ELBO(), ELBO(3), my_elbo, IWAE(4), VIMCO(3), RWS(5),
                                       RenyiELBO(4), CUBO(3), PIWAE(2, 2)],
                         ids=lambda o: o.name)
def test_one_step_equals_the_general_paths_value_and_gradients(objective):
    _assert_steps_agree(regression, guide, objective, [
        "net.weight", "net.bias", "noise", "bias.loc", "bias.scale", "offset.loc"])


@model
def noisy(x, y):
    noise = param("noise", torch.tensor(0.5), constraint=constraints.positive)
    weights = sample("weights", Normal(torch.zeros(2), 1.0).to_event(1))
    with plate("data", len(y), subsample_size=4) as rows:
        mean = x[rows, 0] * weights[..., 0] + x[rows, 1] * weights[..., 1]
        sample("y", Normal(mean, noise), obs=y[rows])


def test_an_autonormal_guide_of_real_sites_compiles_with_the_models_params():
    _assert_steps_agree(noisy, AutoNormal(noisy), ELBO(2),
                        ["auto.weights.loc", "auto.weights.scale", "noise"])


@model
def constrained(x, y):
    noise = sample("noise", HalfNormal(1.0))
    mix = sample("mix", Dirichlet(torch.ones(2)))
    with plate("data", len(y), subsample_size=4) as rows:
        mean = x[rows, 0] * mix[..., :1] + x[rows, 1] * mix[..., 1:]
        sample("y", Normal(mean, noise), obs=y[rows])


@pytest.mark.parametrize("objective", [ELBO(2), IWAE(3), RWS(3)], ids=lambda o: o.name)
def test_an_autonormal_guide_of_constrained_sites_maps_its_draws_as_the_general_path(
        objective):
    _assert_steps_agree(constrained, AutoNormal(constrained), objective,
                        ["auto.noise.loc", "auto.noise.scale", "auto.mix.loc", "auto.mix.scale"])


def test_the_generated_code_reads_only_the_data_it_uses():
    step, path = _compile(noisy, AutoNormal(noisy))
    assert path == COMPILED
    guide_source, model_source = step.draw.source, step.score.source
    assert "_data[" not in guide_source  # the autoguide reads none of its arguments
    assert [line.split(" = ")[0].strip() for line in model_source.splitlines()
            if "= _data[" in line] == ["v_x", "v_y"]


@model
def mixture(x, y):
    bias = sample("bias", Normal(0.0, 1.0))
    with plate("data", len(y), subsample_size=4) as rows:
        c = sample("c", Bernoulli(0.5))
        sample("y", Normal(bias + 2.0 * c - 1.0, 1.0), obs=y[rows])


def mixture_guide(estimator):
    def guide(x, y):
        sample("bias", Normal(param("bias.loc", torch.tensor(0.0)), 0.5))
        probs = param("c.probs", torch.full((len(y),), 0.5),
                      constraint=constraints.unit_interval)
        with plate("data", len(y), subsample_size=4) as rows:
            sample("c", Bernoulli(probs[rows]), infer={"estimator": estimator, "baseline": 0.5})
    return guide


@pytest.mark.parametrize(("estimator", "objective"), [
    ("score", ELBO()), ("score", ELBO(3)), ("score", IWAE(3)), ("score", VIMCO(3)),
    ("enumerate", ELBO()), ("enumerate", ELBO(3)), ("mvd", ELBO()), ("mvd", ELBO(3))],
    ids=lambda o: repr(o))
def test_discrete_sites_give_the_general_paths_gradients(estimator, objective):
    """Score-function sites (with their running baselines), enumerated ones and measure-
    valued derivatives (whose re-runs replay the compiled guide)."""
    _assert_steps_agree(mixture, mixture_guide(estimator), objective, ["bias.loc", "c.probs"],
                        steps=2)  # the second step's running baselines are the first's


@model
def assorted(x, y):
    s = sample("s", Gamma(2.0, 2.0))
    w = sample("w", Dirichlet(torch.ones(3)))
    for i in plate("steps", 2):
        sample(f"a_{i}", Normal(0.0, s))
    deterministic("twice", s * 2.0)
    factor("near", -(w[..., 0] - 0.3) ** 2)
    with plate("data", len(y)):  # the plate expands the global s: traced as an expand
        sample("y", Normal(s, 1.0), obs=y)


def assorted_guide(x, y):
    rate = param("rate", torch.tensor(2.0), constraint=constraints.positive)
    sample("s", Gamma(2.0, rate))
    sample("w", Dirichlet(param("conc", torch.ones(3), constraint=constraints.positive)))
    for i in plate("steps", 2):
        sample(f"a_{i}", Normal(param(f"loc_{i}", torch.tensor(0.0)), 1.0))


@pytest.mark.parametrize("objective", [ELBO(), ELBO(3), IWAE(4)], ids=repr)
def test_implicit_reparameterization_sequential_plates_factors_and_expanded_globals(objective):
    _assert_steps_agree(assorted, assorted_guide, objective, ["conc", "loc_0", "loc_1", "rate"])


def test_a_run_follows_the_general_paths_losses_and_resumes():
    def run(**options):
        NET.load_state_dict(START)  # training moves the module's weights in place
        return infer(regression, X, Y, seed=1, method=VI(guide, steps=12, lr=0.05,
                                                        evaluations=2, num_samples=5,
                                                        **options))

    compiled, general = run(), run(fast_path=False)
    assert compiled.extra["path"] == COMPILED
    torch.testing.assert_close(compiled.losses, general.losses, rtol=1e-5, atol=1e-5)
    for name, value in general.params.unconstrained().items():
        torch.testing.assert_close(compiled.params.unconstrained()[name], value)
    checkpoints = []
    run(checkpoint_every=6, on_checkpoint=checkpoints.append)
    resumed = run(resume=checkpoints[0])
    torch.testing.assert_close(resumed.losses, compiled.losses, rtol=0, atol=0)


@model
def dynamic(x, y):
    bias = sample("bias", Normal(0.0, 1.0))
    sample("offset", Normal(0.0, 1.0).expand([len(y)]).to_event(1))
    shift = 1.0 if float(bias) > 0 else -1.0
    with plate("data", len(y)):
        sample("y", Normal(bias + shift, 1.0), obs=y)


@model
def coin(x, y):
    c = sample("c", Bernoulli(0.5))
    with plate("data", len(y)):
        sample("y", Normal(c, 1.0), obs=y)


def learned_guide(x, y):
    probs = param("p", torch.tensor(0.5), constraint=constraints.unit_interval)
    sample("c", Bernoulli(probs), infer={"estimator": "score", "baseline": "learned"})


def bias_guide(x, y):
    sample("bias", Normal(param("loc", torch.tensor(0.0)), 1.0))


def _compile(model, guide, y=Y, objective=None):
    """Guide and model of ``y`` compiled (the params of both created first, as VI does)."""
    with torch.no_grad(), block():
        for fn in (guide, model):
            trace().get_trace(fn, X, y)
    return compiled_objective(model, guide, objective or ELBO(), (X, y), {})


def _refusal(model, guide, y=Y, objective=None):
    step, why = _compile(model, guide, y, objective)
    assert step is None
    return why


@expectation
def elsewhere(model, guide, *args):
    zs = guide.sample()
    return (model.log_density(zs, args[0] * 2.0, args[1]) - guide.log_density(zs)).mean()


def test_refusals_name_why():
    assert "evaluates the model at other arguments" in _refusal(regression, guide,
                                                                objective=elsewhere)
    assert _refusal(regression, bias_guide) == (
        "the guide does not propose the model's latent sites ['offset']")
    assert _refusal(coin, learned_guide) == "the guide site 'c' has a learned baseline"
    assert _refusal(dynamic, guide).startswith("it does not trace to a graph (DynamicModelError")


def test_a_model_whose_graph_goes_stale_is_refused():
    calls = [0]

    @model
    def counting(x, y):
        calls[0] += 1
        bias = sample("bias", Normal(0.0, 1.0))
        with plate("data", len(y), subsample_size=4) as rows:
            sample("offset", Normal(0.0, 0.3))
            sample("y", Normal(bias + float(calls[0]), 1.0), obs=y[rows])

    res = infer(counting, X, Y, seed=0, method=VI(guide, steps=2, evaluations=1))
    assert "compiled step gives" in res.extra["path"] and "general path gives" in res.extra["path"]


def test_observed_minibatches_are_checked_against_their_support():
    counts = torch.tensor([1.0, 2.0, 0.0, 3.0, 0.5, 1.0])  # 0.5 is no count

    @model
    def poisson(x, y):
        rate = sample("rate", Normal(0.0, 1.0))
        with plate("data", len(y), subsample_size=2) as rows:
            sample("y", Poisson(rate.exp()), obs=y[rows])

    @model
    def bounded(x, y):
        low = sample("low", Normal(0.0, 1.0))
        with plate("data", len(y), subsample_size=2) as rows:
            sample("y", Uniform(low - 10.0, low.detach() + 3.0), obs=y[rows])

    def guide_of(name):
        return lambda x, y: sample(name, Normal(param("loc", torch.tensor(0.0)), 1.0))

    # a fixed support: the whole data at the first step (which the check runs)
    rate_guide = guide_of("rate")
    with torch.no_grad(), block():
        trace().get_trace(rate_guide, X, counts)
    step, why = compiled_objective(poisson, rate_guide, ELBO(), (X, counts), {})
    assert "site 'y': value outside the support" in why and "[0.5]" in why
    # a support of the parameters: each minibatch at its step
    inside_but_one = torch.tensor([0.5, 0.2, 1.0, 0.1, 0.3, 9.0])
    low_guide = guide_of("low")
    with torch.no_grad(), block():
        trace().get_trace(low_guide, X, inside_but_one)
    for rng_seed in range(20):  # a seed whose tracing and check draw minibatches inside
        with seeded(rng_seed):
            step, path = compiled_objective(bounded, low_guide, ELBO(), (X, inside_but_one), {})
        if step is not None:
            break
    assert path == COMPILED
    with pytest.raises(ModelError, match="site 'y': value outside the support"):
        for _ in range(50):
            step.surrogate()


def test_a_python_value_that_changes_after_tracing_hands_the_run_to_the_general_path():
    weight = {"likelihood": 1.0}  # an annealing factor that a callback moves
    checkpoints = []

    @model
    def annealed(x, y):
        bias = sample("bias", Normal(0.0, 1.0))
        with plate("data", len(y)):
            factor("y", weight["likelihood"] * Normal(bias, 1.0).log_prob(y))

    def anneal(checkpoint):
        weight["likelihood"] = 0.5
        checkpoints.append(checkpoint)

    def run(start=1.0, **options):
        weight["likelihood"] = start
        return infer(annealed, X, Y, seed=0, method=VI(
            bias_guide, steps=30, evaluations=1, checkpoint_every=5, on_checkpoint=anneal,
            **options))

    with pytest.warns(FastPathWarning, match="no longer agrees with the general path"):
        checked = run()
    assert checked.extra["path"].startswith(f"{COMPILED}; slow from evaluation 10: ")
    general = run(fast_path=False)
    torch.testing.assert_close(checked.losses[:5], general.losses[:5])
    assert not torch.allclose(checked.losses[5:9], general.losses[5:9])  # stale until the check
    # from the 10th step on the run is the general path's: resumed there, it is the same
    resumed = run(start=0.5, fast_path=False, resume=checkpoints[1])
    torch.testing.assert_close(resumed.losses, checked.losses, rtol=0, atol=0)
