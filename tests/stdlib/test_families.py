"""Contract of every registered family: registry flags, ppl_args rebuild, shapes, arguments."""

import ast
from pathlib import Path

import pytest
import torch

import ppl.stdlib as D
from ppl.registry import families, family_of, get_family
from ppl.stdlib.examples import example_distributions, example_value
from ppl.stdlib.testing import assert_rebuilds

EXAMPLES = example_distributions()
CASES = [
    pytest.param(d, id=f"{name}-{i}") for name, ds in EXAMPLES.items() for i, d in enumerate(ds)
]
WRAPPERS = {"Independent", "Masked", "MixtureSameFamily"}


def test_every_family_is_registered_exported_and_has_examples():
    names = set(families())
    assert names == set(EXAMPLES)
    for name in names:
        family = get_family(name)
        assert getattr(D, name) is family.cls
        assert name in D.__all__
        assert family.params == family.cls._ppl_params


@pytest.mark.parametrize("d", CASES)
def test_rebuild_from_ppl_args(d):
    assert_rebuilds(d, example_value(d))


@pytest.mark.parametrize("d", CASES)
def test_flags_match_instances(d):
    family = family_of(d)
    if family.name in WRAPPERS:
        return  # instance-dependent, registered as False
    assert family.reparameterized == d.has_rsample
    assert family.discrete == d.support.is_discrete
    assert family.enumerable == d.has_enumerate_support


@pytest.mark.parametrize("d", CASES)
def test_sample_and_log_prob_shapes(d):
    x = example_value(d)
    assert x.shape == d.batch_shape + d.event_shape
    assert d.log_prob(x).shape == d.batch_shape
    assert torch.isfinite(d.log_prob(x)).all()
    assert d.support.check(x).all()
    if not isinstance(d, D.ImproperUniform):
        assert d.sample((2, 3)).shape == (2, 3) + d.batch_shape + d.event_shape


@pytest.mark.parametrize("d", CASES)
def test_arg_constraints_hold_for_valid_parameters(d):
    for name, value in d.ppl_args.items():
        constraint = d.arg_constraints.get(name)
        if constraint is None or D.constraints.is_dependent(constraint):
            continue
        if isinstance(value, torch.Tensor):
            assert constraint.check(value).all(), (name, value, constraint)


@pytest.mark.parametrize(
    "name", ["Bernoulli", "Binomial", "Categorical", "OneHotCategorical", "BetaBinomial",
             "OrderedLogistic"],
)
def test_enumerable_families_enumerate_their_support(name):
    for d in EXAMPLES[name]:
        n = getattr(d, "total_count", None)
        if isinstance(n, torch.Tensor) and n.min() != n.max():
            with pytest.raises(NotImplementedError):
                d.enumerate_support()  # as in torch: needs one total_count
            continue
        values = d.enumerate_support(expand=True)
        assert values.shape[1:] == d.batch_shape + d.event_shape
        total = d.log_prob(values).exp().sum(0)
        torch.testing.assert_close(total, torch.ones(d.batch_shape), atol=1e-5, rtol=0)
        compact = d.enumerate_support(expand=False)
        assert compact.shape[1:] == (1,) * len(d.batch_shape) + d.event_shape


def test_validate_args_is_off_by_default_and_can_be_turned_on():
    D.Normal(0.0, -1.0)  # the runtime validates at the sample site instead
    D.LogNormal(0.0, -1.0)
    D.BetaBinomial(-1.0, 1.0, 3)
    with pytest.raises(ValueError):
        D.Normal(0.0, -1.0, validate_args=True)
    with pytest.raises(ValueError):
        D.TruncatedNormal(0.0, -1.0, validate_args=True)


@pytest.mark.parametrize(
    "d, expected",
    [
        (lambda: D.Bernoulli(probs=torch.tensor([0.2, 0.7])), "probs"),
        (lambda: D.Categorical(logits=torch.zeros(3)), "logits"),
        (lambda: D.OneHotCategorical(probs=torch.ones(3) / 3), "probs"),
        (lambda: D.Multinomial(3, logits=torch.zeros(3)), "logits"),
        (lambda: D.Geometric(logits=torch.tensor(0.3)), "logits"),
        (lambda: D.MultivariateNormal(torch.zeros(2), torch.eye(2)), "covariance_matrix"),
        (lambda: D.MultivariateNormal(torch.zeros(2), scale_tril=torch.eye(2)), "scale_tril"),
        (lambda: D.Wishart(torch.tensor(3.0), precision_matrix=torch.eye(2)), "precision_matrix"),
        (lambda: D.ZeroInflatedNegativeBinomial(0.1, 2.0, logits=0.3), "logits"),
    ],
)
def test_ppl_args_keep_only_the_given_parameterization(d, expected):
    d = d()
    for attr in ("probs", "logits", "covariance_matrix", "precision_matrix", "scale_tril"):
        getattr(d, attr, None)  # computes the lazy alternatives into __dict__
    alternatives = {"probs", "logits", "covariance_matrix", "precision_matrix", "scale_tril"}
    assert set(d.ppl_args) & alternatives == {expected}
    e = d.expand((2,) + tuple(d.batch_shape))
    assert set(e.ppl_args) & alternatives == {expected}
    assert_rebuilds(e)


def test_stdlib_imports_only_the_registry_and_shapes_from_ppl():
    root = Path(D.__file__).parent
    for path in root.glob("*.py"):
        allowed = {"ppl.registry", "ppl.shapes"}  # both import nothing else from ppl
        if path.name == "reference_models.py":
            allowed.add("ppl")  # models written in the language need its public API
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                if module.startswith("ppl"):
                    assert module in allowed, f"{path.name} imports {module}"
