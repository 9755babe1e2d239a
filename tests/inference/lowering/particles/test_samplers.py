"""Every family's batched sampling rule draws from the family: the registry lists which
families lack a rule (explicitly, a list that may only shrink), and each rule's draws follow
the family (z-scores against the Monte Carlo standard error, fixed seed): the probability
integral transform F(X) is uniform for a continuous family with a CDF, else the mean and
variance match, category frequencies match the probabilities; every draw lies in the support
(torch's ``log_prob`` of it is finite)."""

import math

import pytest
import torch

from ppl.inference.lowering.particles import rng_ops
from ppl.registry import families, family_of
from ppl.stdlib.examples import example_distributions

KNOWN_WITHOUT_SAMPLE_RULE = {
    "BetaBinomial", "GaussianRandomWalk", "ImproperUniform", "LKJCholesky",
    "LowRankMultivariateNormal", "MixtureSameFamily", "Multinomial",
    "NegativeBinomial2", "OrderedLogistic", "RelaxedBernoulli", "RelaxedOneHotCategorical",
    "VonMises", "Wishart", "ZeroInflatedNegativeBinomial", "ZeroInflatedPoisson",
}
NUM_DRAWS = 10_000
Z_LIMIT = 5.0  # per entry, a few dozen entries per family: a false alarm is ~1e-5


def test_families_without_a_sample_rule_are_the_known_ones():
    missing = {name for name, family in families().items() if family.sample is None}
    assert missing == KNOWN_WITHOUT_SAMPLE_RULE


def _draws(dist, seed=0):
    family = family_of(dist)
    shape = (NUM_DRAWS, *dist.batch_shape, *dist.event_shape)
    gen = torch.Generator().manual_seed(seed)
    params = {k: v.to(torch.float64) if torch.is_tensor(v) and v.is_floating_point() else v
              for k, v in dist.ppl_args.items()}
    return family.sample(rng_ops, gen, shape, **params)


def _z(estimate, expected, variance):
    return (estimate - expected) / torch.sqrt(variance / NUM_DRAWS)


CASES = [pytest.param(d, id=f"{name}-{i}")
         for name, ds in example_distributions().items() if families()[name].sample is not None
         for i, d in enumerate(ds)]


@pytest.mark.parametrize("dist", CASES)
def test_rule_draws_have_the_family_moments(dist):
    x = _draws(dist)
    assert tuple(x.shape) == (NUM_DRAWS, *dist.batch_shape, *dist.event_shape)
    assert torch.isfinite(dist.log_prob(x.to(dist.sample().dtype))).all()
    if family_of(dist).name == "Categorical":  # category frequencies vs the probabilities
        k = dist.probs.shape[-1]
        freq = torch.nn.functional.one_hot(x, k).to(torch.float64).mean(0)
        p = dist.probs.to(torch.float64)
        assert _z(freq, p, p * (1 - p)).abs().max() < Z_LIMIT
        return
    if family_of(dist).name == "Delta":
        assert (x == dist.mean).all()
        return
    if not dist.support.is_discrete and _has_cdf(dist):
        _check_probability_integral_transform(dist, x)
    else:
        _check_mean_and_variance(dist, x)


def _has_cdf(dist) -> bool:
    try:
        dist.cdf(dist.mean)
    except NotImplementedError:
        return False
    return True


def _check_probability_integral_transform(dist, x):
    """F(X) is Uniform(0, 1) for a continuous family: its mean 1/2 (variance 1/12) and the
    mean of its square 1/3 (variance 4/45), bounded, so the z-scores hold for heavy tails
    too (a Pareto with a finite variance but no third moment, a Cauchy)."""
    u = dist.cdf(x.to(dist.mean.dtype)).to(torch.float64)
    assert (_z(u.mean(0), 0.5, torch.tensor(1 / 12)).abs() < Z_LIMIT).all()
    assert (_z((u**2).mean(0), 1 / 3, torch.tensor(4 / 45)).abs() < Z_LIMIT).all()


def _check_mean_and_variance(dist, x):
    """The mean's z-score against the family's variance, and the variance's against the
    sample fourth moment, where both moments are finite and positive."""
    mean = dist.mean.to(torch.float64).expand(x.shape[1:])
    var = dist.variance.to(torch.float64).expand(x.shape[1:])
    moments = torch.isfinite(mean) & torch.isfinite(var) & (var > 0)
    assert moments.any(), "a family without a CDF is checked by its moments"
    assert (_z(x.mean(0), mean, var)[moments].abs() < Z_LIMIT).all()
    centered = x - mean
    z_var = _z((centered**2).mean(0), var, ((centered**4).mean(0) - var**2).clamp_min(1e-300))
    assert (z_var[moments].abs() < Z_LIMIT).all()


def test_same_seed_same_draws():
    dist = example_distributions()["Gamma"][1]
    a, b = _draws(dist, seed=3), _draws(dist, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, _draws(dist, seed=4))


def test_truncated_normal_far_in_a_tail_stays_inside_its_bounds():
    from ppl.stdlib import TruncatedNormal

    dist = TruncatedNormal(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(6.0),
                           torch.tensor(math.inf))
    x = _draws(dist)
    assert (x >= 6.0).all() and torch.isfinite(x).all()
    # the mean of a standard normal truncated to [a, inf) is phi(a) / (1 - Phi(a))
    a = torch.tensor(6.0, dtype=torch.float64)
    expected = torch.exp(-0.5 * a**2) / math.sqrt(2 * math.pi) / torch.special.ndtr(-a)
    assert abs(float(x.mean() - expected)) < 0.01
