"""Exact values for the families torch lacks, against scipy or a hand formula."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import ppl.stdlib as D

SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
pos = st.floats(0.2, 8.0)
unit = st.floats(0.02, 0.98)
K = torch.arange(0, 60, dtype=torch.float64)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


@SETTINGS
@given(pos, pos, st.integers(0, 25))
def test_beta_binomial_matches_scipy(a, b, n):
    d = D.BetaBinomial(t(a), t(b), t(float(n)))
    k = torch.arange(n + 1, dtype=torch.float64)
    ref = stats.betabinom(n, a, b)
    np.testing.assert_allclose(d.log_prob(k).numpy(), ref.logpmf(k.numpy()), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(d.mean.item(), ref.mean(), rtol=1e-9)
    np.testing.assert_allclose(d.variance.item(), ref.var(), rtol=1e-9, atol=1e-12)
    assert torch.equal(d.enumerate_support(), k)


@SETTINGS
@given(unit, pos)
def test_zero_inflated_poisson_formula(gate, rate):
    d = D.ZeroInflatedPoisson(t(gate), t(rate))
    poisson = stats.poisson(rate).pmf(K.numpy())
    expected = (1 - gate) * poisson + gate * (K.numpy() == 0)
    np.testing.assert_allclose(d.log_prob(K).exp().numpy(), expected, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(d.mean.item(), (1 - gate) * rate, rtol=1e-9)
    np.testing.assert_allclose(d.variance.item(), (1 - gate) * rate * (1 + gate * rate), rtol=1e-9)


@SETTINGS
@given(unit, pos, unit, st.booleans())
def test_zero_inflated_negative_binomial_formula(gate, total_count, p, use_logits):
    kw = {"logits": t(math.log(p / (1 - p)))} if use_logits else {"probs": t(p)}
    d = D.ZeroInflatedNegativeBinomial(t(gate), t(total_count), **kw)
    nb = stats.nbinom(total_count, 1 - p).pmf(K.numpy())  # torch's p is the success prob
    expected = (1 - gate) * nb + gate * (K.numpy() == 0)
    np.testing.assert_allclose(d.log_prob(K).exp().numpy(), expected, rtol=1e-7, atol=1e-300)
    nb_mean = total_count * p / (1 - p)
    np.testing.assert_allclose(d.mean.item(), (1 - gate) * nb_mean, rtol=1e-7)
    np.testing.assert_allclose(d.probs.item(), p, rtol=1e-9)


@SETTINGS
@given(pos, pos)
def test_negative_binomial_2_matches_scipy(mean, concentration):
    d = D.NegativeBinomial2(t(mean), t(concentration))
    ref = stats.nbinom(concentration, concentration / (concentration + mean))
    np.testing.assert_allclose(d.log_prob(K).numpy(), ref.logpmf(K.numpy()), rtol=1e-7)
    np.testing.assert_allclose(d.mean.item(), mean)
    np.testing.assert_allclose(d.variance.item(), ref.var(), rtol=1e-9)


@SETTINGS
@given(st.floats(-3, 3), pos, st.floats(-12, 12), st.floats(0.01, 10))
def test_truncated_normal_matches_scipy(loc, scale, a, width):
    # standardized bounds a, a + width, including far tails on both sides
    low, high = loc + a * scale, loc + (a + width) * scale
    d = D.TruncatedNormal(t(loc), t(scale), t(low), t(high))
    ref = stats.truncnorm(a, a + width, loc=loc, scale=scale)
    x = low + (high - low) * torch.linspace(0.001, 0.999, 7, dtype=torch.float64)
    np.testing.assert_allclose(d.log_prob(x).numpy(), ref.logpdf(x.numpy()), rtol=1e-6)
    np.testing.assert_allclose(d.cdf(x).numpy(), ref.cdf(x.numpy()), atol=1e-7)
    np.testing.assert_allclose(d.mean.item(), ref.mean(), rtol=1e-6, atol=1e-6 * scale)
    if width > 0.1 and abs(a) < 8:  # the variance formula cancels badly in far, narrow tails
        np.testing.assert_allclose(d.variance.item(), ref.var(), rtol=1e-4)
    u = torch.tensor([1e-9, 0.1, 0.5, 0.9, 1 - 1e-9], dtype=torch.float64)
    np.testing.assert_allclose(d.icdf(u).numpy(), ref.ppf(u.numpy()), rtol=1e-6, atol=1e-6 * scale)
    assert d.log_prob(t(low - scale)).item() == -math.inf
    assert d.log_prob(t(high + scale)).item() == -math.inf


def test_truncated_normal_float32_far_tail_samples_stay_inside():
    d = D.TruncatedNormal(torch.zeros(3), 1.0, torch.tensor([10.0, -30.0, 5.0]), torch.tensor(
        [11.0, -29.5, math.inf]))
    x = d.rsample((5000,))
    assert torch.isfinite(x).all()
    assert d.support.check(x).all()
    # mean of the far tails: close to the analytic mean
    ref = [stats.truncnorm(10, 11).mean(), stats.truncnorm(-30, -29.5).mean(),
           stats.truncnorm(5, np.inf).mean()]
    np.testing.assert_allclose(x.mean(0).numpy(), ref, rtol=2e-3)


def test_truncated_normal_support_and_defaults():
    c = D.constraints
    assert D.TruncatedNormal(0.0, 1.0).support is c.real
    assert isinstance(D.TruncatedNormal(0.0, 1.0, low=0.0).support, type(c.greater_than(0.0)))
    assert isinstance(D.TruncatedNormal(0.0, 1.0, high=0.0).support, type(c.less_than(0.0)))
    assert isinstance(D.TruncatedNormal(0.0, 1.0, -1.0, 1.0).support, type(c.interval(0.0, 1.0)))
    np.testing.assert_allclose(D.TruncatedNormal(0.0, 1.0, low=0.0).mean.item(),
                               math.sqrt(2 / math.pi), rtol=1e-6)


def _ordered_logistic_probs(eta, cutpoints):
    cdf = [0.0] + [1 / (1 + math.exp(-(c - eta))) for c in cutpoints] + [1.0]
    return np.diff(cdf)


@SETTINGS
@given(st.floats(-6, 6), st.lists(st.floats(0.05, 3.0), min_size=1, max_size=5), st.floats(-4, 4))
def test_ordered_logistic_matches_hand_formula(eta, gaps, start):
    cutpoints = start + np.cumsum([0.0] + gaps[1:]) if len(gaps) > 1 else np.array([start])
    d = D.OrderedLogistic(t(eta), t(cutpoints))
    k = torch.arange(len(cutpoints) + 1, dtype=torch.float64)
    expected = _ordered_logistic_probs(eta, cutpoints)
    np.testing.assert_allclose(d.log_prob(k).exp().numpy(), expected, rtol=1e-9, atol=1e-15)
    assert torch.equal(d.enumerate_support(), k)


def test_ordered_logistic_is_stable_for_extreme_predictors():
    cutpoints = t([-1.0, 0.0, 1.0])
    for eta in (-800.0, -60.0, 60.0, 800.0):
        log_p = D.OrderedLogistic(t(eta), cutpoints).log_prob(torch.arange(4.0).double())
        assert torch.isfinite(log_p).all()
        assert math.isclose(torch.logsumexp(log_p, 0).item(), 0.0, abs_tol=1e-12)
    log_p = D.OrderedLogistic(t(800.0), cutpoints).log_prob(torch.arange(3.0).double())
    gap = math.log1p(-math.exp(-1))  # sigmoid(c - 800) - sigmoid(c - 801) ~ e^(c-800)(1 - e^-1)
    np.testing.assert_allclose(log_p.numpy(), [-801.0, -800.0 + gap, -799.0 + gap], rtol=1e-9)


@SETTINGS
@given(pos, st.integers(1, 6), st.integers(0, 1000))
def test_gaussian_random_walk_is_cumulative_normal(scale, steps, seed):
    x = np.random.default_rng(seed).normal(size=(2, steps)) * 3
    d = D.GaussianRandomWalk(t(scale), steps)
    expected = stats.norm(0, scale).logpdf(np.diff(x, prepend=0.0, axis=-1)).sum(-1)
    np.testing.assert_allclose(d.log_prob(t(x)).numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(d.variance.numpy(), scale**2 * np.arange(1, steps + 1))


def test_delta():
    v = t([[1.0, 2.0], [3.0, 4.0]])
    d = D.Delta(v, log_density=t([0.5, -1.0]), event_dim=1)
    assert d.batch_shape == (2,) and d.event_shape == (2,)
    x = v.clone()
    x[1, 0] = 0.0
    assert d.log_prob(x).tolist() == [0.5, -math.inf]
    assert D.Delta(t(3.0)).log_prob(t(3.0)).item() == 0.0
    assert D.Delta(t(3.0)).support is D.constraints.real
    v_grad = t(2.0).requires_grad_()
    D.Delta(v_grad).rsample().backward()
    assert v_grad.grad.item() == 1.0


def test_improper_uniform():
    d = D.ImproperUniform(D.constraints.positive, (2,), (3,))
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    assert d.support.event_dim == 1
    x = torch.ones(2, 3)
    x[1, 2] = -1.0
    assert d.log_prob(x).tolist() == [0.0, -math.inf]
    assert d.log_prob(torch.ones(5, 2, 3)).shape == (5, 2)
    with pytest.raises(NotImplementedError, match="no sampler.*obs="):
        d.sample()
    with pytest.raises(NotImplementedError, match="no sampler"):
        d.rsample()
    with pytest.raises(ValueError, match="event_dim"):
        D.ImproperUniform(D.constraints.simplex, (), ())
