"""``temper``: observation log densities scaled by beta, prior terms untouched."""

import pytest
import torch

from ppl.ir import LogDensity, compile_log_density
from ppl.passes import run, temper, unconstrain


def test_likelihood_is_scaled_linearly(zoo):
    graph = zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y)
    values = {"mu": torch.tensor(1.0), "tau": torch.tensor(2.0), "theta": torch.randn(8)}
    lp0, lp1 = (LogDensity(temper(b)(graph), values).run() for b in (0.0, 1.0))
    torch.testing.assert_close(lp1, LogDensity(graph, values).run())
    lp = LogDensity(temper(0.3)(graph), values).run()
    torch.testing.assert_close(lp, lp0 + 0.3 * (lp1 - lp0))
    torch.testing.assert_close(compile_log_density(temper(0.3)(graph))(values), lp)


def test_existing_scales_multiply_and_prior_roles_are_skipped(zoo):
    graph = run(
        zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y), [unconstrain(), temper(0.5), temper(0.5)]
    )
    assert graph.site("y").meta.attr("scale") == 0.25
    assert graph.site("tau").meta.attr("scale") is None  # a constrained latent, not an observation
    assert graph.site("tau__log_abs_det_jacobian").meta.attr("scale") is None


def test_factors_only_on_request(zoo):
    from ppl import factor, model, sample
    from ppl.stdlib import Normal

    @model
    def m():
        x = sample("x", Normal(0.0, 1.0))
        factor("f", -(x**2))

    values = {"x": torch.tensor(2.0)}
    assert LogDensity(temper(0.5)(m.graph()), values).run() == LogDensity(m.graph(), values).run()
    torch.testing.assert_close(
        LogDensity(temper(0.5, factors=True)(m.graph()), values).run(),
        Normal(0.0, 1.0).log_prob(torch.tensor(2.0)) - 2.0,
    )
    with pytest.raises(ValueError, match="non-negative"):
        temper(-1.0)
