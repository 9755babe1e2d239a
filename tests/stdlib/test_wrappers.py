""".to_event, .expand and .mask: shapes and log_prob semantics, on every family."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ppl.stdlib as D
from ppl.stdlib.testing import assert_rebuilds

SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)


@SETTINGS
@given(batch=shapes, extra=shapes, data=st.data())
def test_to_event_and_expand_shapes(batch, extra, data):
    d = D.Normal(torch.zeros(batch), 1.0).expand(extra + batch)
    assert d.batch_shape == extra + batch
    n = data.draw(st.integers(0, len(d.batch_shape)))
    e = d.to_event(n)
    split = len(d.batch_shape) - n
    assert e.batch_shape == d.batch_shape[:split]
    assert e.event_shape == d.batch_shape[split:]
    x = e.sample((2,))
    expected = d.log_prob(x)
    if n:
        expected = expected.sum(tuple(range(-n, 0)))
    torch.testing.assert_close(e.log_prob(x), expected)
    assert_rebuilds(e, x[0])
    if n:
        assert isinstance(e, D.Independent)


def test_to_event_details():
    d = D.Normal(torch.zeros(2, 3), 1.0)
    assert d.to_event(0) is d
    assert d.to_event().event_shape == (2, 3)
    nested = d.to_event(1).to_event(1)
    assert isinstance(nested, D.Independent) and nested.reinterpreted_batch_ndims == 2
    assert isinstance(nested.base_dist, D.Normal)
    assert D.Dirichlet(torch.ones(4, 3)).to_event(1).event_shape == (4, 3)


def test_expand_of_wrappers_and_mixtures():
    mix = D.MixtureSameFamily(D.Categorical(logits=torch.zeros(2)), D.Normal(torch.zeros(2), 1.0))
    cases = [
        D.Normal(torch.zeros(3), 1.0).to_event(1).expand((2,)),
        D.Poisson(torch.ones(3)).mask(torch.tensor([True, False, True])).expand((2, 3)),
        mix.expand((4,)),
        D.OrderedLogistic(torch.zeros(3), torch.tensor([-1.0, 1.0])).expand((2, 3)),
        D.Bernoulli(probs=0.3).expand((5,)),
        D.Wishart(torch.tensor(4.0), covariance_matrix=torch.eye(2)).expand((2,)),
        D.LKJCholesky(3, 1.5).expand((2,)),
    ]
    for d in cases:
        assert d.batch_shape[0] in (2, 4, 5)
        assert type(d).__module__.startswith("ppl.stdlib")
        assert_rebuilds(d)
        assert d.sample((3,)).shape == (3,) + d.batch_shape + d.event_shape


def test_expand_keeps_the_class_and_is_a_view():
    loc = torch.zeros(3)
    d = D.LogNormal(loc, 1.0).expand((4, 3))
    assert type(d) is D.LogNormal and d.loc.shape == (4, 3)
    assert d.loc.data_ptr() == loc.data_ptr()  # expanded, not copied
    with pytest.raises(RuntimeError):
        D.Normal(torch.zeros(3), 1.0).expand((2,))  # torch's rule: only prepend / broadcast 1s


def test_mask_log_prob_semantics():
    mask = torch.tensor([True, False, True])
    base = D.Normal(torch.zeros(3), 1.0)
    d = base.mask(mask)
    x = torch.randn(5, 3)
    lp = d.log_prob(x)
    torch.testing.assert_close(lp[:, mask], base.log_prob(x)[:, mask])
    assert (lp[:, ~mask] == 0).all()
    assert d.batch_shape == (3,) and d.has_rsample
    assert d.rsample((2,)).shape == (2, 3)
    assert d.support is base.support
    # outside the support the masked entries stay 0, not nan or -inf
    p = D.Poisson(torch.ones(2)).mask(torch.tensor([True, False]))
    assert p.log_prob(torch.tensor([1.0, -1.0]))[1].item() == 0.0
    outside = D.Beta(2.0, 2.0).mask(torch.tensor([True, False])).log_prob(torch.tensor(2.0))
    assert outside[1].item() == 0.0  # torch gives nan off the Beta support when not validating


def test_mask_broadcasts_and_combines():
    d = D.Poisson(torch.ones(3)).mask(torch.tensor([[True], [False]]))
    assert d.batch_shape == (2, 3)
    assert d.sample().shape == (2, 3)
    assert (d.log_prob(torch.ones(2, 3))[1] == 0).all()
    assert D.Normal(0.0, 1.0).mask(False).log_prob(torch.tensor(3.0)).item() == 0.0
    both = D.Normal(torch.zeros(2), 1.0).mask(torch.tensor([True, True])).mask(
        torch.tensor([True, False])
    )
    assert isinstance(both.base_dist, D.Normal)
    assert (both.log_prob(torch.zeros(2)) != 0).tolist() == [True, False]
    enum = D.Bernoulli(probs=torch.full((2,), 0.3)).mask(torch.tensor([True, False]))
    assert enum.has_enumerate_support
    assert enum.enumerate_support().shape == (2, 2)
    with pytest.raises(TypeError):
        D.Normal(0.0, 1.0).mask(torch.tensor(1.0))


def test_kl_of_masked_and_independent():
    mask = torch.tensor([True, False, True])
    p, q = D.Normal(torch.zeros(3), 1.0), D.Normal(torch.ones(3), 2.0)
    kl = torch.distributions.kl_divergence(p.mask(mask), q)
    torch.testing.assert_close(kl, torch.where(mask, torch.distributions.kl_divergence(p, q), 0.0))
    kl_event = torch.distributions.kl_divergence(p.to_event(1), q.to_event(1))
    torch.testing.assert_close(kl_event, torch.distributions.kl_divergence(p, q).sum())


def test_to_event_over_mask_sums_only_unmasked():
    mask = torch.tensor([True, False, True])
    d = D.Normal(torch.zeros(3), 1.0).mask(mask).to_event(1)
    x = torch.randn(3)
    expected = D.Normal(0.0, 1.0).log_prob(x)[mask].sum()
    torch.testing.assert_close(d.log_prob(x), expected)
    assert_rebuilds(d, x)


def test_wrappers_of_every_family_are_available():
    for cls in D.FAMILY_CLASSES:
        for method in ("to_event", "mask", "expand", "ppl_args"):
            assert hasattr(cls, method), (cls.__name__, method)
