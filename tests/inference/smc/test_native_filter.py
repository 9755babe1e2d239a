"""The particle filter in C (``SMC(backend="native")``, ``ppl.inference.smc.native``): an
unbiased evidence, Kalman's filtering means, consistent resampling records, reproducible
seeds, the C sampling rules' distributions, and clear refusals and fallbacks."""

import math

import pytest
import torch

from ppl import factor, infer, model, param, sample
from ppl.inference import SMC
from ppl.inference.lowering.native import compiler_available
from ppl.inference.lowering.particles.native import _DRAWS_BASE, C_SAMPLERS
from ppl.inference.smc import DegenerateWeights
from ppl.inference.smc.native import slot_layout
from ppl.inference.testing import LinearGaussianSSM
from ppl.inference.testing.sequential import DiscreteHMM
from ppl.params import clear_params
from ppl.registry import families
from ppl.stdlib import (
    Bernoulli,
    Beta,
    Binomial,
    Categorical,
    Cauchy,
    Chi2,
    Delta,
    Exponential,
    Gamma,
    Geometric,
    Gumbel,
    HalfCauchy,
    HalfNormal,
    InverseGamma,
    Laplace,
    LogNormal,
    NegativeBinomial,
    Normal,
    Pareto,
    Poisson,
    StudentT,
    TruncatedNormal,
    Uniform,
    Weibull,
)

pytestmark = pytest.mark.skipif(not compiler_available(),
                                reason="no C compiler (cc/gcc/clang or $CC): no native backend")

SSM = LinearGaussianSSM(a=0.9, q=0.5, r=1.0)
YS = SSM.simulate(30, seed=3)


def native(num_particles, ys=YS, **settings):
    """The native driver and the engine it runs."""
    method = SMC(num_particles, backend="native", **settings)
    engine = method.engine(SSM.model(), (ys,), {})
    driver, reason = method.driver(engine)
    assert reason is None
    return driver, engine


def run(driver, engine, seed):
    return driver.run_program(engine, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("scheme", ["multinomial", "stratified", "systematic", "residual"])
def test_the_evidence_is_unbiased_for_the_kalman_evidence(scheme):
    driver, engine = native(256, resample=scheme)
    exact = SSM.kalman(YS).log_evidence
    ratios = torch.tensor([math.exp(float(run(driver, engine, s).log_evidence) - exact)
                           for s in range(200)], dtype=torch.float64)
    standard_error = float(ratios.std()) / math.sqrt(len(ratios))
    assert abs(float(ratios.mean()) - 1.0) < 3 * standard_error, (ratios.mean(), standard_error)
    assert standard_error < 0.1


def test_the_last_filtering_mean_matches_kalman():
    driver, engine = native(20_000)
    res = run(driver, engine, 0)
    last = f"x_{len(YS) - 1}"
    kalman = SSM.kalman(YS)
    mcse = math.sqrt(kalman.variances[-1] / float(res.ess))
    assert abs(float(res.mean(last)) - kalman.means[-1]) < 5 * mcse
    torch.testing.assert_close(res.extra["filtering_means"][last], res.mean(last))
    means = torch.tensor([float(res.extra["filtering_means"][f"x_{t}"]) for t in range(len(YS))])
    sd = torch.tensor(kalman.variances, dtype=torch.float64).sqrt()
    assert ((means - torch.tensor(kalman.means)).abs() < 10 * sd / math.sqrt(2_000)).all()


def test_ess_history_resampling_flags_and_ancestors_are_consistent():
    n = 500
    driver, engine = native(n)
    res = run(driver, engine, 1)
    ess = res.ess_history
    assert not res.resampled[0] and 0 < res.num_resampled < len(YS)
    assert torch.equal(res.resampled[1:], ess[:-1] < 0.5 * n)
    assert bool(((ess >= 1.0 - 1e-9) & (ess <= n + 1e-9)).all())
    assert float(res.ess) == pytest.approx(float(ess[-1]))
    assert torch.logsumexp(res.log_weights, 0).abs() < 1e-12
    assert float(res.log_evidence) == pytest.approx(float(res.log_evidence_increments.sum()))
    identity = torch.arange(n)
    for k in range(len(YS)):
        row = res.ancestors[k]
        if res.resampled[k]:  # systematic: sorted indices, every one in range
            assert bool((row[1:] >= row[:-1]).all()) and 0 <= int(row.min()) <= int(row.max()) < n
        else:
            assert torch.equal(row, identity)
    assert res.lineage().shape == (len(YS), n)


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_a_run_without_ancestors_is_the_same_run(backend):
    """keep_ancestors=False (a million particles' genealogy is 8 MB a step) changes nothing
    but the record: the same seed gives the same evidence and particles."""
    runs = [infer(SSM.model(), YS, method=SMC(200, keep_ancestors=keep, backend=backend),
                  seed=5) for keep in (True, False)]
    assert runs[0].ancestors.shape == (len(YS), 200) and runs[1].ancestors is None
    assert float(runs[0].log_evidence) == float(runs[1].log_evidence)
    last = f"x_{len(YS) - 1}"
    assert torch.equal(runs[0].samples[last], runs[1].samples[last])
    with pytest.raises(ValueError, match="keep_ancestors=False"):
        runs[1].lineage()


def test_a_seed_reproduces_a_run():
    driver, engine = native(300)
    a, b, c = run(driver, engine, 7), run(driver, engine, 7), run(driver, engine, 8)
    assert torch.equal(a.samples[f"x_{len(YS) - 1}"], b.samples[f"x_{len(YS) - 1}"])
    assert float(a.log_evidence) == float(b.log_evidence) != float(c.log_evidence)
    seeded = [infer(SSM.model(), YS, method=SMC(300), seed=4) for _ in range(2)]
    assert seeded[0].extra["backend"] == "native"
    assert float(seeded[0].log_evidence) == float(seeded[1].log_evidence)


def test_kept_latents_are_carried_through_resampling():
    driver, engine = native(200, keep=("x_3",), ess_threshold=1.0)
    res = run(driver, engine, 0)
    assert set(res.samples) == {"x_3", f"x_{len(YS) - 1}"}
    # resampled at every step: the kept values are the last step's particles' ancestors'
    assert res.samples["x_3"].unique().numel() < 200
    assert slot_layout(engine, frozenset({"x_3"})).slot_of["x_3"] not in {
        slot_layout(engine, frozenset({"x_3"})).slot_of[f"x_{t}"] for t in range(4, len(YS))}


@model
def walk_with_a_param(ys):
    a = param("a", torch.tensor(0.5))
    x = sample("x_0", Normal(0.0, 1.0))
    sample("y_0", Normal(x, 1.0), obs=ys[0])
    for t in range(1, len(ys)):
        x = sample(f"x_{t}", Normal(a * x, 0.5))
        sample(f"y_{t}", Normal(x, 1.0), obs=ys[t])


def test_new_param_values_run_on_the_same_library():
    method = SMC(20_000, backend="native")
    engine = method.engine(walk_with_a_param, (YS,), {})
    clear_params()  # the engine holds its own copy
    driver, _ = method.driver(engine)
    for a in (0.5, 0.9):  # log Zhat's sd is about 0.03 at this N
        engine.set_params({"a": torch.tensor(a)})
        exact = LinearGaussianSSM(a=a, q=0.5, r=1.0).kalman(YS).log_evidence
        assert abs(float(run(driver, engine, 0).log_evidence) - exact) < 0.2


@model
def independent_walks(ys):
    """Three independent copies of SSM, one vector site per step (``to_event``)."""
    x = sample("x_0", Normal(torch.zeros(3), 1.0).to_event(1))
    sample("y_0", Normal(x, 1.0).to_event(1), obs=ys[0])
    for t in range(1, len(ys)):
        x = sample(f"x_{t}", Normal(0.9 * x, 0.5).to_event(1))
        sample(f"y_{t}", Normal(x, 1.0).to_event(1), obs=ys[t])


def test_vector_latents_match_their_kalman_filters():
    ys = torch.stack([SSM.simulate(10, seed=s) for s in range(3)], 1)
    kalman = [SSM.kalman(ys[:, d]) for d in range(3)]
    exact = sum(k.log_evidence for k in kalman)
    runs = [infer(independent_walks, ys, method=SMC(2000, backend="native"), seed=s)
            for s in range(40)]
    ratios = torch.tensor([math.exp(float(r.log_evidence) - exact) for r in runs])
    assert abs(float(ratios.mean()) - 1) < 3 * float(ratios.std()) / math.sqrt(len(runs))
    means = torch.stack([r.mean("x_9") for r in runs]).mean(0)
    sd = torch.tensor([math.sqrt(k.variances[-1]) for k in kalman])
    assert ((means - torch.tensor([k.means[-1] for k in kalman])).abs() < 5 * sd / 200).all()
    assert runs[0].samples["x_9"].shape == (2000, 3)


@model
def one_draw(family):
    sample("x", family)


@pytest.mark.parametrize("family, mean, sd", [
    (Normal(1.0, 2.0), 1.0, 2.0),
    (LogNormal(0.3, 0.5), math.exp(0.3 + 0.125), math.sqrt((math.exp(0.25) - 1)
                                                           * math.exp(0.6 + 0.25))),
    (HalfNormal(2.0), 2.0 * math.sqrt(2 / math.pi), 2.0 * math.sqrt(1 - 2 / math.pi)),
    (Uniform(-1.0, 3.0), 1.0, 4.0 / math.sqrt(12)),
    (Exponential(2.0), 0.5, 0.5),
    (Gumbel(1.0, 2.0), 1.0 + 2.0 * 0.5772156649015329, 2.0 * math.pi / math.sqrt(6)),
    (Laplace(-1.0, 0.5), -1.0, 0.5 * math.sqrt(2)),
], ids=["Normal", "LogNormal", "HalfNormal", "Uniform", "Exponential", "Gumbel", "Laplace"])
def test_the_c_sampling_rules_draw_their_family(family, mean, sd):
    n = 40_000
    res = infer(one_draw, family, method=SMC(n, backend="native"), seed=0)
    draws = res.samples["x"]
    assert abs(float(draws.mean()) - mean) < 5 * sd / math.sqrt(n)
    assert abs(float(draws.std()) - sd) < 0.05 * sd


@pytest.mark.parametrize("family", [Cauchy(1.0, 2.0), HalfCauchy(1.5), Laplace(-1.0, 0.5)],
                         ids=["Cauchy", "HalfCauchy", "Laplace"])
def test_the_c_sampling_rules_hit_their_familys_quartiles(family):
    """Heavy tails have no moments to compare: the draws' CDF at the family's quartiles."""
    n = 40_000
    draws = infer(one_draw, family, method=SMC(n, backend="native"), seed=1).samples["x"]
    for p in (0.25, 0.5, 0.75):
        below = float((draws <= family.icdf(torch.tensor(p))).double().mean())
        assert abs(below - p) < 5 * math.sqrt(p * (1 - p) / n)


def beta_moments(a, b):
    return a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))


@pytest.mark.parametrize("family, mean, sd", [
    (Gamma(2.5, 2.0), 1.25, math.sqrt(2.5) / 2.0),
    (Gamma(0.3, 1.0), 0.3, math.sqrt(0.3)),  # the shape < 1 boost
    (StudentT(5.0, 1.0, 2.0), 1.0, 2.0 * math.sqrt(5.0 / 3.0)),
    (Beta(2.0, 5.0), *beta_moments(2.0, 5.0)),
    (Beta(0.5, 0.5), *beta_moments(0.5, 0.5)),
    (Poisson(3.5), 3.5, math.sqrt(3.5)),  # by inversion
    (Poisson(10.0), 10.0, math.sqrt(10.0)),  # the first rate by transformed rejection
    (Poisson(250.0), 250.0, math.sqrt(250.0)),
    (Bernoulli(0.3), 0.3, math.sqrt(0.21)),
    (Bernoulli(logits=torch.tensor(-1.2)), 1 / (1 + math.exp(1.2)),
     math.sqrt(math.exp(1.2)) / (1 + math.exp(1.2))),
    (Chi2(3.0), 3.0, math.sqrt(6.0)),
    (InverseGamma(5.0, 2.0), 0.5, math.sqrt(4.0 / (16.0 * 3.0))),
    (Weibull(2.0, 1.5), 2.0 * math.gamma(1 + 1 / 1.5),
     2.0 * math.sqrt(math.gamma(1 + 2 / 1.5) - math.gamma(1 + 1 / 1.5) ** 2)),
    (Pareto(1.0, 5.0), 1.25, math.sqrt(5.0 / (16.0 * 3.0))),
    (Geometric(0.3), 0.7 / 0.3, math.sqrt(0.7) / 0.3),
    (Geometric(logits=torch.tensor(0.5)), math.exp(-0.5),  # p = sigmoid(0.5)
     math.sqrt(1 - 1 / (1 + math.exp(-0.5))) * (1 + math.exp(-0.5))),
    (NegativeBinomial(4.0, 0.4), 4.0 * 0.4 / 0.6, math.sqrt(4.0 * 0.4) / 0.6),
    (NegativeBinomial(2.5, logits=torch.tensor(1.0)), 2.5 * math.e,
     math.sqrt(2.5 * math.e * (1 + math.e))),
    (Binomial(10, 0.3), 3.0, math.sqrt(2.1)),  # uniforms only
    (Binomial(1000, 0.02), 20.0, math.sqrt(19.6)),  # order-statistic splits
    (Binomial(501, logits=torch.tensor(0.4)), 501 / (1 + math.exp(-0.4)),
     math.sqrt(501 * math.exp(-0.4)) / (1 + math.exp(-0.4))),
], ids=["Gamma", "Gamma-small-shape", "StudentT", "Beta", "Beta-U", "Poisson-inversion",
        "Poisson-PTRS-edge", "Poisson-PTRS", "Bernoulli", "Bernoulli-logits", "Chi2",
        "InverseGamma", "Weibull", "Pareto", "Geometric", "Geometric-logits",
        "NegativeBinomial", "NegativeBinomial-logits", "Binomial", "Binomial-splits",
        "Binomial-logits"])
def test_the_c_rejection_and_discrete_rules_draw_their_family(family, mean, sd):
    """The mean within 5 standard errors, the sd within 5 of its own (``sqrt((m4 - s^4) /
    n) / (2 s)``, from the family's draws by torch: fourth moments are tail-heavy) and the
    deciles' frequencies within 5 binomial errors of torch's draws' (both samples' errors)."""
    n = 40_000
    res = infer(one_draw, family, method=SMC(n, backend="native"), seed=2)
    draws = res.samples["x"]
    torch.manual_seed(0)
    reference = family.sample((n,)).to(torch.float64)
    assert abs(float(draws.mean()) - mean) < 5 * sd / math.sqrt(n)
    m4 = float(((reference - mean) ** 4).mean())
    sd_error = math.sqrt(max(m4 - sd**4, 0.0) / n) / (2 * sd)
    assert abs(float(draws.std()) - sd) < 5 * sd_error + 1e-12
    for p in (0.1, 0.3, 0.5, 0.7, 0.9):
        cut = float(reference.quantile(p))
        ours, theirs = (float((x <= cut).double().mean()) for x in (draws, reference))
        spread = math.sqrt(theirs * (1 - theirs) * 2 / n)
        assert abs(ours - theirs) < 5 * spread + 1e-12, (p, ours, theirs)
    if isinstance(family, (Poisson, Bernoulli, Geometric, NegativeBinomial, Binomial)):
        assert torch.equal(draws, draws.round()) and bool((draws >= 0).all())


@pytest.mark.parametrize("family", [Categorical(torch.tensor([0.2, 0.5, 0.0, 0.3])),
                                    Categorical(logits=torch.tensor([0.0, 1.0, -1.0]))],
                         ids=["probs", "logits"])
def test_the_c_categorical_rule_draws_each_category_at_its_probability(family):
    n = 40_000
    draws = infer(one_draw, family, method=SMC(n, backend="native"), seed=3).samples["x"]
    assert draws.dtype == torch.int64
    frequencies = torch.bincount(draws, minlength=family.probs.numel()).double() / n
    probs = family.probs.double()
    assert ((frequencies - probs).abs() <= 5 * torch.sqrt(probs * (1 - probs) / n)).all()


def test_a_discrete_hmm_filters_in_c_with_an_unbiased_evidence():
    """Categorical states, their transition rows and emission means picked by the state
    (``index_select``) in C: the evidence against the forward algorithm, and the last
    filtering marginal."""
    hmm = DiscreteHMM()
    ys = hmm.simulate(30, seed=1)
    exact, marginals = hmm.forward(ys)
    method = SMC(500, backend="native")
    engine = method.engine(hmm.model(), (ys,), {})
    driver, _ = method.driver(engine)
    runs = [run(driver, engine, s) for s in range(100)]
    ratios = torch.tensor([math.exp(float(r.log_evidence) - exact) for r in runs])
    assert abs(float(ratios.mean()) - 1) < 3 * float(ratios.std()) / math.sqrt(len(runs))
    mean = torch.stack([r.extra["filtering_means"]["z_29"] for r in runs]).mean()
    assert abs(float(mean) - float(marginals[-1, 1])) < 0.01
    assert runs[0].samples["z_29"].dtype == torch.int64


def test_a_c_delta_draws_its_value():
    res = infer(one_draw, Delta(torch.tensor(2.5)), method=SMC(100, backend="native"), seed=0)
    assert bool((res.samples["x"] == 2.5).all())


#: Families with a torch sampling rule but no C one (a list that may only shrink): a model
#: drawing one filters on torch, by name.
KNOWN_WITHOUT_C_RULE = {"Dirichlet", "MultivariateNormal", "OneHotCategorical", "TruncatedNormal"}


def test_families_without_a_c_sampling_rule_are_the_known_ones():
    missing = {name for name, family in families().items() if family.sample is not None
               and family.sample not in C_SAMPLERS and family.sample not in _DRAWS_BASE}
    assert missing == KNOWN_WITHOUT_C_RULE


@model
def truncated_walk(ys):
    x = sample("x_0", TruncatedNormal(0.0, 1.0, -1.0, 2.0))
    for t in range(len(ys)):
        x = sample(f"x_{t + 1}", Normal(x, 1.0))
        sample(f"y_{t}", Normal(x, 1.0), obs=ys[t])


def test_native_on_a_family_without_a_c_sampling_rule_names_the_site():
    with pytest.raises(ValueError,
                       match=r"TruncatedNormal has no C sampling rule \(site 'x_0'\)"):
        infer(truncated_walk, torch.zeros(3), method=SMC(100, backend="native"), seed=0)


def test_auto_falls_back_to_torch_and_says_why():
    res = infer(truncated_walk, torch.zeros(3), method=SMC(100), seed=0)
    assert res.extra["backend"] == "torch" and "TruncatedNormal" in res.extra["backend_reason"]
    res = infer(SSM.model(), YS, method=SMC(100, auxiliary=True), seed=0)
    assert res.extra["backend"] == "torch" and "auxiliary" in res.extra["backend_reason"]
    res = infer(SSM.model(), YS, method=SMC(100, backend="torch"), seed=0)
    assert res.extra["backend"] == "torch" and "backend_reason" not in res.extra
    with pytest.raises(ValueError, match="keep_history"):
        infer(SSM.model(), YS, method=SMC(100, backend="native", keep_history=True), seed=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        SMC(100, backend="cuda")


@model
def impossible(ys):
    x = sample("x_0", Normal(0.0, 1.0))
    sample("y_0", Normal(x, 1.0), obs=ys[0])
    factor("void", torch.log(x * 0.0))


def test_weights_that_are_all_zero_raise_naming_the_step():
    with pytest.raises(DegenerateWeights, match=r"step 1: every particle has weight zero .*'void'"):
        infer(impossible, torch.zeros(1), method=SMC(100, backend="native"), seed=0)
