"""The public posteriordb posteriors as ppl models, and loaders for their data and gold summaries.

Each model is written from ``<posterior>/model.md`` in the posteriordb test data (the math
only; posteriordb's Stan code is not used). A model's keyword arguments are the
``data.json`` fields it uses, so ``model(**load_data(name, model))`` runs it; derived data
(logs, lags, dummies) is computed inside the model, as Stan's ``transformed data`` does.
Quantities that the reference reports but the sampler does not move directly (``theta`` in
the non-centred eight schools, ``f`` in the GP) are ``deterministic`` sites with the
reference's name. "No explicit prior" is an ``ImproperUniform`` on the parameter's support,
and discrete latents (mixture labels, HMM states) are summed out with ``logsumexp`` and a
``factor``, as in Stan.

    >>> data = load_data("kidiq-kidscore_momiq", POSTERIORS["kidiq-kidscore_momiq"])
    >>> sorted(data), data["mom_iq"].shape
    (['kid_score', 'mom_iq'], torch.Size([434]))
    >>> load_reference("kidiq-kidscore_momiq")[0][:3]
    ('beta[1]', 'beta', (0,))
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution

from ppl import Model, deterministic, factor, model, plate, sample
from ppl.stdlib import (
    Beta,
    Dirichlet,
    Gamma,
    HalfCauchy,
    HalfNormal,
    ImproperUniform,
    Normal,
    Poisson,
    Uniform,
    constraints,
)

# --------------------------------------------------------------------------- models


def _flat(support: constraints.Constraint, *event_shape: int) -> ImproperUniform:
    """The "no explicit prior" density: flat on ``support`` (a vector when given a size)."""
    return ImproperUniform(support, event_shape=event_shape)


def _normal_regression(x: Tensor, y: Tensor, beta_prior: Distribution,
                       sigma_prior: Distribution) -> None:
    """``y ~ Normal(x @ beta, sigma)`` with the given priors on ``beta`` (a vector over the
    columns of ``x``) and ``sigma``: the shared body of the ARM regressions."""
    beta = sample("beta", beta_prior)
    sigma = sample("sigma", sigma_prior)
    with plate("data", len(y)):
        sample("y", Normal(x @ beta, sigma), obs=y)


def _flat_regression(x: Tensor, y: Tensor) -> None:
    """``y ~ Normal(x @ beta, sigma)`` with flat priors on ``beta`` and ``sigma > 0``."""
    _normal_regression(x, y, _flat(constraints.real, x.shape[-1]), _flat(constraints.positive))


def _design(*columns: Tensor) -> Tensor:
    """A design matrix: an intercept column of ones, then ``columns``."""
    return torch.stack([torch.ones_like(columns[0]), *columns], dim=-1)


@model
def eight_schools_noncentered(sigma: Tensor, y: Tensor) -> None:
    """Eight schools, sampling standardized school offsets; ``theta`` is derived."""
    mu = sample("mu", Normal(0.0, 5.0))
    tau = sample("tau", HalfCauchy(5.0))
    with plate("schools", len(y)):
        theta_trans = sample("theta_trans", Normal(0.0, 1.0))
        theta = deterministic("theta", mu + tau * theta_trans)
        sample("y", Normal(theta, sigma), obs=y)


@model
def eight_schools_centered(sigma: Tensor, y: Tensor) -> None:
    """Eight schools, sampling the school effects ``theta`` directly (a funnel in tau)."""
    mu = sample("mu", Normal(0.0, 5.0))
    tau = sample("tau", HalfCauchy(5.0))
    with plate("schools", len(y)):
        theta = sample("theta", Normal(mu, tau))
        sample("y", Normal(theta, sigma), obs=y)


@model
def kidscore_momiq(mom_iq: Tensor, kid_score: Tensor) -> None:
    """Child's score on the mother's (uncentred) IQ; flat prior on the coefficients."""
    _normal_regression(_design(mom_iq), kid_score,
                       _flat(constraints.real, 2), HalfCauchy(2.5))


@model
def logearn_interaction(earn: Tensor, height: Tensor, male: Tensor) -> None:
    """Log earnings on height, sex and their interaction; flat priors."""
    _flat_regression(_design(height, male, height * male), torch.log(earn))


@model
def logmesquite_logvas(weight: Tensor, diam1: Tensor, diam2: Tensor, canopy_height: Tensor,
                       total_height: Tensor, density: Tensor, group: Tensor) -> None:
    """Log leaf weight on log canopy measurements; flat priors."""
    x = _design(torch.log(diam1 * diam2 * canopy_height), torch.log(diam1 * diam2),
                torch.log(diam1 / diam2), torch.log(total_height), torch.log(density), group)
    _flat_regression(x, torch.log(weight))


@model
def nes(partyid7: Tensor, real_ideo: Tensor, race_adj: Tensor, age_discrete: Tensor,
        educ1: Tensor, gender: Tensor, income: Tensor) -> None:
    """Party identification on ideology and demographics, age as dummies; flat priors."""
    age = [(age_discrete == level).to(real_ideo.dtype) for level in (2, 3, 4)]
    _flat_regression(_design(real_ideo, race_adj, *age, educ1, gender, income), partyid7)


@model
def blr(X: Tensor, y: Tensor) -> None:
    """Regression without intercept on large-scale, correlated predictors."""
    beta_prior = Normal(0.0, 10.0).expand([X.shape[-1]]).to_event(1)
    _normal_regression(X, y, beta_prior, HalfNormal(10.0))


@model
def kilpisjarvi(x: Tensor, y: Tensor, pmualpha: float, psalpha: float, pmubeta: float,
                psbeta: float) -> None:
    """Temperature trend on the year shifted by +2000 (extreme intercept-slope correlation)."""
    alpha = sample("alpha", Normal(pmualpha, psalpha))
    beta = sample("beta", Normal(pmubeta, psbeta))
    sigma = sample("sigma", _flat(constraints.positive))
    with plate("data", len(y)):
        sample("y", Normal(alpha + beta * x, sigma), obs=y)


@model
def arK(K: int, y: Tensor) -> None:
    """AR(K) regression of y[t] on its K previous values, given the first K."""
    alpha = sample("alpha", Normal(0.0, 10.0))
    beta = sample("beta", Normal(0.0, 10.0).expand([K]).to_event(1))
    sigma = sample("sigma", HalfCauchy(2.5))
    # lags[i, k - 1] = y[K + i - k]: the value k steps before the (K + i)-th observation.
    lags = torch.stack([y[K - k: len(y) - k] for k in range(1, K + 1)], dim=-1)
    with plate("time", len(y) - K):
        sample("y", Normal(alpha + lags @ beta, sigma), obs=y[K:])


@model
def garch11(y: Tensor, sigma1: float) -> None:
    """GARCH(1,1): constant mean, variance recursion; flat on its constrained support."""
    mu = sample("mu", _flat(constraints.real))
    alpha0 = sample("alpha0", _flat(constraints.positive))
    alpha1 = sample("alpha1", Uniform(0.0, 1.0))
    # Flat on the triangle 0 < beta1 < 1 - alpha1: Uniform's density 1 / (1 - alpha1) is undone
    # by the factor. (ImproperUniform(interval(0, 1 - alpha1)) would say this directly, but the
    # tracer freezes a support bound that is another latent at its traced value.)
    beta1 = sample("beta1", Uniform(0.0, 1.0 - alpha1))
    factor("beta1_flat", torch.log1p(-alpha1))
    # v = s^2 obeys v[t] = c[t] + beta1 v[t-1], with c[0] = sigma1^2 and c[t] = alpha0 +
    # alpha1 (y[t-1] - mu)^2, so v[t] = sum_{j <= t} beta1^(t-j) c[j]: a cumulative sum over
    # time (in log space, where it is stable) instead of a sequential loop.
    c = torch.cat([torch.full_like(y[:1], sigma1**2), alpha0 + alpha1 * (y[:-1] - mu) ** 2])
    t_log_beta1 = torch.arange(len(y), dtype=y.dtype) * torch.log(beta1)
    log_variance = t_log_beta1 + torch.logcumsumexp(torch.log(c) - t_log_beta1, dim=0)
    with plate("time", len(y)):
        sample("y", Normal(mu, torch.exp(0.5 * log_variance)), obs=y)


@model
def gp_pois_regr(x: Tensor, k: Tensor) -> None:
    """Poisson counts with a whitened squared-exponential GP log rate ``f``."""
    rho = sample("rho", Gamma(25.0, 4.0))
    alpha = sample("alpha", HalfNormal(2.0))
    with plate("inputs", len(x)):
        f_tilde = sample("f_tilde", Normal(0.0, 1.0))
    cov = alpha**2 * torch.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * rho**2))
    cov = cov + 1e-10 * torch.eye(len(x), dtype=x.dtype)
    # Far out (a huge rho, say) the covariance is singular in floating point; a NaN factor then
    # rejects the proposal, as Stan rejects it, where cholesky() would raise and end the run.
    chol, info = torch.linalg.cholesky_ex(cov)
    chol = torch.where(info == 0, chol, torch.nan)
    f = deterministic("f", chol @ f_tilde)
    with plate("data", len(x)):
        sample("k", Poisson(torch.exp(f)), obs=k)


@model
def low_dim_gauss_mix(y: Tensor) -> None:
    """Two-component normal mixture, ordered means, component labels summed out."""
    mu = sample("mu", _flat(constraints.ordered, 2))
    factor("mu_prior", Normal(0.0, 2.0).log_prob(mu).sum())
    with plate("components", 2):
        sigma = sample("sigma", HalfNormal(2.0))
    theta = sample("theta", Beta(5.0, 5.0))
    log_weights = torch.stack([torch.log(theta), torch.log1p(-theta)])
    with plate("data", len(y)):
        log_joint = log_weights + Normal(mu, sigma).log_prob(y[:, None])  # (N, component)
        factor("y", torch.logsumexp(log_joint, dim=-1))


@model
def hmm_example(K: int, y: Tensor) -> None:
    """Two-state HMM with unit-variance normal emissions, states summed out."""
    theta1 = sample("theta1", Dirichlet(torch.ones(K, dtype=y.dtype)))
    theta2 = sample("theta2", Dirichlet(torch.ones(K, dtype=y.dtype)))
    mu = sample("mu", _flat(constraints.positive_ordered, K))
    factor("mu_prior", Normal(torch.tensor([3.0, 10.0], dtype=y.dtype), 1.0).log_prob(mu).sum())
    log_transition = torch.log(torch.stack([theta1, theta2]))  # [from, to]
    log_emission = Normal(mu, 1.0).log_prob(y[:, None])  # [time, state]
    # Forward algorithm, no initial-state term: p(y) = sum_k (e_1 M_2 ... M_N)[k] with e_1 the
    # first emission row and M_t[j, k] = Gamma[j, k] p(y[t] | z[t] = k), in log space.
    steps = log_transition + log_emission[1:, None, :]
    log_forward = torch.logsumexp(log_emission[0, :, None] + _log_matrix_product(steps), dim=0)
    factor("y", torch.logsumexp(log_forward, dim=0))


def _log_matrix_product(log_mats: Tensor) -> Tensor:
    """``log(exp(A_1) @ exp(A_2) @ ... @ exp(A_T))`` of a ``(T, K, K)`` stack of log matrices,
    multiplied in adjacent pairs: about log2(T) vectorized rounds instead of T sequential
    steps (a sequential forward loop traces to hundreds of small operations)."""
    while len(log_mats) > 1:
        even = len(log_mats) // 2 * 2
        left, right = log_mats[0:even:2], log_mats[1:even:2]
        pairs = torch.logsumexp(left[:, :, :, None] + right[:, None, :, :], dim=-2)
        log_mats = torch.cat([pairs, log_mats[even:]])
    return log_mats[0]


POSTERIORS: dict[str, Model] = {
    "eight_schools-eight_schools_noncentered": eight_schools_noncentered,
    "eight_schools-eight_schools_centered": eight_schools_centered,
    "kidiq-kidscore_momiq": kidscore_momiq,
    "earnings-logearn_interaction": logearn_interaction,
    "mesquite-logmesquite_logvas": logmesquite_logvas,
    "nes2000-nes": nes,
    "sblrc-blr": blr,
    "kilpisjarvi_mod-kilpisjarvi": kilpisjarvi,
    "arK-arK": arK,
    "garch-garch11": garch11,
    "gp_pois_regr-gp_pois_regr": gp_pois_regr,
    "low_dim_gauss_mix-low_dim_gauss_mix": low_dim_gauss_mix,
    "hmm_example-hmm_example": hmm_example,
}
"""posteriordb posterior name -> the ppl model written from its ``model.md``."""

# --------------------------------------------------------------------------- loaders


VENDORED = Path(__file__).resolve().parent / "data"


def posteriordb_root() -> Path:
    """The posteriordb test data: ``$PPL_POSTERIORDB``, else the first ``shared/posteriordb``
    found walking up from this file (a checkout's own ``shared/`` or the one beside it), else
    the copy of every posterior's ``data.json`` and ``reference.json`` kept beside this file
    (so a clean clone runs the suite)."""
    if "PPL_POSTERIORDB" in os.environ:
        return Path(os.environ["PPL_POSTERIORDB"])
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "posteriordb").is_dir():
            return parent / "shared" / "posteriordb"
    return VENDORED


def _posterior_dir(name: str) -> Path:
    return posteriordb_root() / name


def load_data(name: str, model: Model) -> dict[str, Tensor | int | float]:
    """The ``data.json`` fields that ``model`` takes as arguments: lists (and lists of rows)
    as float64 tensors, integer-valued ones included, scalars as Python numbers (sizes stay
    ints for shapes). float64 because the GP's covariance is near-singular in float32; run
    the models with float64 as torch's default dtype too (the suite's conftest does), so
    that the prior draws the tracer makes match the data."""
    raw = json.loads((_posterior_dir(name) / "data.json").read_text())
    wanted = inspect.signature(model.fn).parameters
    return {key: torch.tensor(value, dtype=torch.float64) if isinstance(value, list) else value
            for key, value in raw.items() if key in wanted}


class RefElement(NamedTuple):
    """One scalar of the reference posterior: its name (``theta[1]``, 1-based as in Stan), the
    ppl site and 0-based index it maps to, its gold mean and sd, and the sd's MCSE."""

    element: str
    site: str
    index: tuple[int, ...]
    mean: float
    sd: float
    mcse_sd: float


_ELEMENT = re.compile(r"^(\w+)(?:\[([\d,]+)\])?$")


def parse_element(element: str) -> tuple[str, tuple[int, ...]]:
    """``"theta[1]"`` -> ``("theta", (0,))``; ``"L[2,1]"`` -> ``("L", (1, 0))``; ``"mu"`` ->
    ``("mu", ())``."""
    match = _ELEMENT.match(element)
    if match is None:
        raise ValueError(f"not a posteriordb element name: {element!r}")
    site, indices = match.groups()
    return site, tuple(int(i) - 1 for i in indices.split(",")) if indices else ()


def load_reference(name: str) -> list[RefElement]:
    """Every element of ``reference.json``'s summary, in posteriordb's element order."""
    ref = json.loads((_posterior_dir(name) / "reference.json").read_text())
    summary = ref["summary"]
    return [RefElement(element, *parse_element(element), summary[element]["mean"],
                       summary[element]["sd"], summary[element]["mcse_sd"])
            for element in ref["element_order"]]
