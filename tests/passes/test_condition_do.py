"""``condition`` and ``do`` on the graph mean what the runtime handlers mean."""

import pytest
import torch

from ppl import Model, handlers
from ppl.ir import IRError, LogDensity, compile_log_density
from ppl.passes import condition, do, simplify


def runtime_log_density(m, handler, values, *args, **kwargs):
    return Model(handler(m.fn)).log_density(values, *args, **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_condition_matches_runtime_handler(zoo, seed):
    m, sigma = zoo.eight_schools, zoo.SIGMA
    draw = m.sample(sigma, seed=seed)
    data = {"y": zoo.Y, "theta": draw["theta"]}
    g = condition(data)(m.graph(sigma))
    assert {n.address for n in g.latent_nodes} == {"mu", "tau"}
    rest = {"mu": draw["mu"], "tau": draw["tau"]}
    expected = runtime_log_density(m, handlers.condition(data), rest, sigma)
    torch.testing.assert_close(LogDensity(g, rest).run(), expected)
    torch.testing.assert_close(compile_log_density(g)(rest), expected)


def test_condition_value_feeds_downstream(zoo):
    g = condition({"theta": torch.arange(8.0)})(zoo.eight_schools.graph(zoo.SIGMA))
    interp = LogDensity(g, {"mu": torch.tensor(0.0), "tau": torch.tensor(1.0), "y": zoo.Y})
    interp.run()
    torch.testing.assert_close(
        interp.env[g.site("theta_scaled").name], torch.arange(8.0) / zoo.SIGMA
    )


def test_condition_errors_name_the_site(zoo):
    g = zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y)
    with pytest.raises(IRError, match="'y' is a observe node"):
        condition({"y": zoo.Y})(g)
    with pytest.raises(IRError, match="no site 'nope'"):
        condition({"nope": 1.0})(g)
    with pytest.raises(IRError, match=r"'theta'.*shape \(3,\).*\(8,\)"):
        condition({"theta": torch.zeros(3)})(g)


@pytest.mark.parametrize("seed", [0, 1])
def test_do_matches_runtime_handler(zoo, seed):
    m, sigma = zoo.eight_schools, zoo.SIGMA
    draw = m.sample(sigma, seed=seed)
    fixed = {"tau": torch.tensor(2.5)}
    g = do(fixed)(m.graph(sigma, y=zoo.Y))
    assert not g.has_site("tau") and g.attrs["intervened"] == ["tau"]
    rest = {"mu": draw["mu"], "theta": draw["theta"]}
    expected = runtime_log_density(m, handlers.do(fixed), rest, sigma, y=zoo.Y)
    torch.testing.assert_close(LogDensity(g, rest).run(), expected)
    torch.testing.assert_close(compile_log_density(simplify()(g))(rest), expected)


def test_do_cuts_parents_and_feeds_children(zoo):
    g = do({"theta": torch.ones(8)})(zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y))
    interp = LogDensity(g, {"mu": torch.tensor(0.3), "tau": torch.tensor(1.2)})
    lp = interp.run()
    # no term for theta: only mu, tau and y | theta = 1
    from ppl.stdlib import HalfCauchy, Normal

    expected = (
        Normal(0.0, 5.0).log_prob(torch.tensor(0.3))
        + HalfCauchy(5.0).log_prob(torch.tensor(1.2))
        + Normal(torch.ones(8), zoo.SIGMA).log_prob(zoo.Y).sum()
    )
    torch.testing.assert_close(lp, expected)
    torch.testing.assert_close(interp.env[g.site("theta_scaled").name], 1.0 / zoo.SIGMA)
    assert len(simplify()(g)) < len(g)  # the cut parents are dead code


def test_do_errors_name_the_site(zoo):
    g = zoo.eight_schools.graph(zoo.SIGMA)
    with pytest.raises(IRError, match="no site 'nope'"):
        do({"nope": 1.0})(g)
    with pytest.raises(IRError, match="'theta_scaled' is a call node"):
        do({"theta_scaled": 1.0})(g)
