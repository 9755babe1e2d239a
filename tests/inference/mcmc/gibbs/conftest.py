"""Models for the Gibbs tests, their exact posteriors (brute-force enumeration of the discrete
sites, quadrature over the continuous ones) and an MCSE-based check."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from torch.distributions import HalfNormal as HalfNormalTorch
from torch.distributions import Normal as TorchNormal

from ppl import clear_params, deterministic, model, plate, sample
from ppl.inference.results.diagnostics import mcse_mean
from ppl.stdlib import Categorical, Dirichlet, HalfNormal, Normal

MIXTURE_DATA = torch.tensor([-2.7, -2.1, -0.3, 0.6, 1.2, 2.4, 2.9])
MIXTURE_LOCS = torch.tensor([-2.5, 0.0, 2.5])

HMM_DATA = torch.tensor([-1.1, -0.4, 1.2, 0.9])
HMM_INIT = torch.tensor([0.5, 0.5])
HMM_TRANS = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
HMM_LOCS = torch.tensor([-1.5, 1.5])
HMM_SCALE = 0.8


@model
def mixture(x):
    """Three components with known means (no label switching), unknown weights and scale."""
    weights = sample("weights", Dirichlet(torch.full((3,), 2.0)))
    scale = sample("scale", HalfNormal(1.0))
    with plate("data", len(x)):
        z = sample("z", Categorical(weights))
        sample("x", Normal(MIXTURE_LOCS[z], scale), obs=x)
    return deterministic("log_scale", scale.log())


@model
def hmm_known(y):
    """The HMM with its emission means known: every latent is discrete."""
    z = sample("z_0", Categorical(HMM_INIT))
    sample("y_0", Normal(HMM_LOCS[z], HMM_SCALE), obs=y[0])
    for t in range(1, len(y)):
        z = sample(f"z_{t}", Categorical(HMM_TRANS[z]))
        sample(f"y_{t}", Normal(HMM_LOCS[z], HMM_SCALE), obs=y[t])


@model
def hmm(y):
    locs = sample("locs", Normal(HMM_LOCS, 0.5).to_event(1))
    z = sample("z_0", Categorical(HMM_INIT))
    sample("y_0", Normal(locs[z], HMM_SCALE), obs=y[0])
    for t in range(1, len(y)):
        z = sample(f"z_{t}", Categorical(HMM_TRANS[z]))
        sample(f"y_{t}", Normal(locs[z], HMM_SCALE), obs=y[t])


def _grid(lo: float, hi: float, n: int) -> torch.Tensor:
    """Midpoints of ``n`` equal cells of ``(lo, hi)`` (float64)."""
    width = (hi - lo) / n
    return lo + width * (torch.arange(n, dtype=torch.float64) + 0.5)


def mixture_exact() -> dict[str, torch.Tensor]:
    """E[weights], E[scale], P(z_i = k): quadrature over (w_0, w_1, scale), z summed exactly."""
    w0 = _grid(0.0, 1.0, 90).reshape(-1, 1, 1)
    w1 = _grid(0.0, 1.0, 90).reshape(1, -1, 1)
    scale = _grid(0.0, 4.0, 120).reshape(1, 1, -1)
    w2 = (1 - w0 - w1).clamp(min=1e-300)
    inside = (w0 + w1 < 1).double()
    weights = (w0, w1, w2)
    log_joint = (w0 * w1 * w2).log() + inside.log() + HalfNormalTorch(1.0).log_prob(scale)
    resp = []
    for xi in MIXTURE_DATA.double():
        comp = torch.stack(torch.broadcast_tensors(*(
            weights[k].log() + TorchNormal(float(MIXTURE_LOCS[k]), scale).log_prob(xi)
            for k in range(3)
        )))
        total = torch.logsumexp(comp, 0)
        log_joint = log_joint + total
        resp.append((comp - total).exp())  # (3, W0, W1, S)
    post = torch.softmax(log_joint.flatten(), 0).reshape(log_joint.shape)
    return {
        "weights": torch.stack([(post * w).sum() for w in weights]),
        "scale": (post * scale).sum(),
        "z": torch.stack([(post * r).sum((1, 2, 3)) for r in resp]),  # (N, 3)
    }


def hmm_exact() -> dict[str, torch.Tensor]:
    """E[locs], P(z_t = 1): quadrature over (l_0, l_1), the 2^T paths enumerated."""
    l0 = _grid(-5.0, 3.0, 160).reshape(-1, 1)
    l1 = _grid(-3.0, 5.0, 160).reshape(1, -1)
    locs = (l0, l1)
    y = HMM_DATA.double()
    prior = (TorchNormal(HMM_LOCS[0].double(), 0.5).log_prob(l0)
             + TorchNormal(HMM_LOCS[1].double(), 0.5).log_prob(l1))
    paths = list(itertools.product((0, 1), repeat=len(y)))
    terms = []
    for path in paths:
        lp = prior + math.log(HMM_INIT[path[0]])
        for t, k in enumerate(path):
            if t:
                lp = lp + math.log(HMM_TRANS[path[t - 1], k])
            lp = lp + TorchNormal(locs[k], HMM_SCALE).log_prob(y[t])
        terms.append(lp)
    log_joint = torch.stack(terms)  # (paths, L0, L1)
    post = torch.softmax(log_joint.flatten(), 0).reshape(log_joint.shape)
    on = torch.tensor(paths, dtype=torch.float64)  # (paths, T)
    path_probs = post.sum((1, 2))
    return {
        "locs": torch.stack(((post.sum(0) * l0).sum(), (post.sum(0) * l1).sum())),
        **{f"z_{t}": (path_probs * on[:, t]).sum() for t in range(len(y))},
    }


def check_means(draws: torch.Tensor, exact: torch.Tensor, name: str, z_max: float = 4.0) -> None:
    """``|mean - exact| < z_max * MCSE`` elementwise. For 0/1 draws the MCSE is at least the
    standard error of independent draws, ``sqrt(p (1 - p) / n)`` with the exact ``p``, so an
    indicator that happens never to change (MCSE 0) is judged by how likely that is."""
    draws = draws.double()
    exact = torch.as_tensor(exact, dtype=torch.float64)
    mean = draws.mean((0, 1))
    mcse = mcse_mean(draws)
    if ((draws == 0) | (draws == 1)).all():
        n = draws.shape[0] * draws.shape[1]
        mcse = torch.maximum(mcse, (exact * (1 - exact) / n).sqrt())
    z = (mean - exact) / mcse
    assert (z.abs() < z_max).all(), (
        f"{name}: means {mean.tolist()} exact {exact.tolist()} z {z.tolist()}"
    )


@pytest.fixture(scope="session")
def models() -> SimpleNamespace:
    return SimpleNamespace(mixture=mixture, hmm=hmm, hmm_known=hmm_known,
                           mixture_data=MIXTURE_DATA, hmm_data=HMM_DATA,
                           hmm_known_parameters=(HMM_INIT, HMM_TRANS, HMM_LOCS, HMM_SCALE))


@pytest.fixture(scope="session")
def exact() -> SimpleNamespace:
    return SimpleNamespace(mixture=mixture_exact(), hmm=hmm_exact())


@pytest.fixture
def check():
    return check_means


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    clear_params()
    yield
    clear_params()
