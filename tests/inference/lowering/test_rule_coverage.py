"""Which registered families lack a tape rule and which tape primitives lack a C rule: each
list is explicit and may only shrink (a new family or primitive without a rule fails here,
and a new rule must take its family or primitive off the list); and every family's tape rule,
run on constants, is its ``log_prob``."""

import pytest
import torch
from torch.distributions import Distribution

from ppl.inference.lowering.native.rules import has_rule
from ppl.inference.lowering.tape import ops
from ppl.inference.lowering.tape import prims as P
from ppl.registry import families, family_of
from ppl.shapes import broadcast_shapes
from ppl.stdlib.examples import example_distributions, example_value

KNOWN_WITHOUT_TAPE_RULE: set[str] = set()
KNOWN_PASS_OPS_WITHOUT_TAPE_RULE: set[str] = set()
KNOWN_WITHOUT_C_RULE = {
    "scatter_last",
}


def test_families_without_a_tape_rule_are_the_known_ones():
    missing = {name for name, family in families().items() if family.log_density is None}
    assert missing == KNOWN_WITHOUT_TAPE_RULE


def test_ops_the_passes_emit_without_a_tape_rule_are_the_known_ones():
    """Every op a pass writes into a graph (``ppl.passes._ops.OPS``: the unconstrain pass's
    bijections, enumeration's log-factors and contraction) runs on the tape."""
    from ppl.inference.lowering.tape.build import _BIJECTOR_CALLS, _ENUMERATION_CALLS
    from ppl.passes._ops import OPS

    missing = set(OPS) - set(_BIJECTOR_CALLS) - set(_ENUMERATION_CALLS)
    assert missing == KNOWN_PASS_OPS_WITHOUT_TAPE_RULE


def test_primitives_without_a_c_rule_are_the_known_ones():
    primitives = [v for v in vars(P).values() if isinstance(v, P.Prim)]
    primitives += list(P.COMPARISONS.values())
    assert {prim.name for prim in primitives if not has_rule(prim)} == KNOWN_WITHOUT_C_RULE


class _Wrapped:
    """A wrapped constant distribution as its wrapper's rule sees it: its terms, its family
    and its parameters."""

    def __init__(self, dist: Distribution):
        self.dist = dist
        self.family = family_of(dist)
        self.params = {k: _Wrapped(v) if isinstance(v, Distribution) else v
                       for k, v in dist.ppl_args.items()}

    def log_density(self, value):
        return _terms(self.dist, value)


def _terms(dist: Distribution, value: torch.Tensor) -> list:
    family = family_of(dist)
    params = {k: _Wrapped(v) if isinstance(v, Distribution) else v
              for k, v in dist.ppl_args.items()}
    return family.log_density(ops, value, **params)


def _innermost(dist: Distribution) -> Distribution:
    family = family_of(dist)
    return dist if family.wraps is None else _innermost(dist.ppl_args[family.wraps])


@pytest.mark.parametrize(
    "dist",
    [pytest.param(d, id=f"{name}-{i}")
     for name, ds in example_distributions().items() if families()[name].log_density is not None
     for i, d in enumerate(ds)],
)
def test_every_family_rule_is_log_prob(dist):
    torch.manual_seed(0)
    value = example_value(dist)
    terms = [torch.as_tensor(t, dtype=torch.float64) for t in _terms(dist, value)]
    full = broadcast_shapes(tuple(_innermost(dist).batch_shape), *(tuple(t.shape) for t in terms))
    total = sum(torch.broadcast_to(t, full).sum() for t in terms)
    expected = dist.log_prob(value).sum().to(torch.float64)
    torch.testing.assert_close(torch.as_tensor(total, dtype=torch.float64), expected,
                               rtol=1e-5, atol=1e-5)
