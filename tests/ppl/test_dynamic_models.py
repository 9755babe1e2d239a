"""Dynamic models (Python control flow on a random value) on the trace path's vectorized
engines: ``Importance`` and ``model.sample(num_samples=)`` run them once per particle, say so
once, and stay exact (the evidence estimate is unbiased for Z itself)."""

import math
import warnings

import pytest
import torch

from ppl import infer, model, sample
from ppl.inference import Importance
from ppl.ir import DynamicModelError
from ppl.stdlib import Beta, Normal
from ppl.vectorize import VectorizationWarning

Y = 0.7


def make_branching():
    """A fresh model per test, so each sees its own first warning: ``y ~ N(+1, 1)`` when
    ``p > 0.5``, else ``N(-1, 1)``, with ``p ~ Beta(2, 2)`` (each branch has probability 1/2)."""

    @model
    def branching(y):
        p = sample("p", Beta(2.0, 2.0))
        if p > 0.5:
            sample("y", Normal(1.0, 1.0), obs=y)
        else:
            sample("y", Normal(-1.0, 1.0), obs=y)

    return branching


def normal_log_pdf(x, mu):
    return -0.5 * (x - mu) ** 2 - 0.5 * math.log(2 * math.pi)


LOG_Z = math.log(0.5 * math.exp(normal_log_pdf(Y, 1.0)) + 0.5 * math.exp(normal_log_pdf(Y, -1.0)))


def test_the_graph_tracer_refuses_it_and_points_to_importance():
    with pytest.raises(DynamicModelError, match="Importance"):
        make_branching().graph(torch.tensor(Y))


def test_importance_runs_per_sample_warns_once_and_its_evidence_is_unbiased():
    branching = make_branching()
    ratios = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in range(30):
            post = infer(branching, torch.tensor(Y), method=Importance(40), seed=seed)
            ratios.append(math.exp(float(post.log_evidence) - LOG_Z))
    said = [w for w in caught if issubclass(w.category, VectorizationWarning)]
    assert len(said) == 1 and "once per particle" in str(said[0].message)
    assert post.samples["p"].shape == (40,)
    ratios = torch.tensor(ratios, dtype=torch.float64)
    assert abs(ratios.mean() - 1.0) < 3 * ratios.std() / math.sqrt(len(ratios))


def test_model_sample_runs_per_draw_with_the_right_branch_frequencies():
    @model
    def branching_latent():
        p = sample("p", Beta(2.0, 2.0))
        return sample("x", Normal(1.0 if p > 0.5 else -1.0, 0.1))

    with pytest.warns(VectorizationWarning, match="branching_latent"):
        draws = branching_latent.sample(seed=0, num_samples=2000)
    assert draws["p"].shape == draws["x"].shape == (2000,)
    upper = draws["p"] > 0.5
    torch.testing.assert_close(draws["x"][upper].mean(), torch.tensor(1.0), atol=0.02, rtol=0)
    torch.testing.assert_close(draws["x"][~upper].mean(), torch.tensor(-1.0), atol=0.02, rtol=0)
    share = upper.double().mean()
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / 2000)
