"""A reusable conjugate suite: models with exact posteriors, and an MCSE z-score checker.

Every inference engine is tested on the same cases (DESIGN: "a reusable conjugate suite,
z-scores from MCSE, fixed seeds"). A :class:`ConjugateCase` holds a model, its arguments,
the exact posterior mean and sd of each latent site (and the covariance of a vector site
where it matters), and the exact log evidence ``log p(data)``.

``check_draws(samples, case)`` compares draws ``(chains, draws, *shape)`` with the exact
answer through Monte Carlo standard errors (``ppl.inference.results.diagnostics.mcse_mean``, which
accounts for autocorrelation): for each element the mean's z-score
``(mean(x) - m) / mcse(x)``, and the variance's ``(mean((x - m)^2) - s^2) / mcse((x - m)^2)``
(exact because ``E[(x - m)^2] = s^2`` under the posterior; for a vector site with ``cov``, all
products ``(x_i - m_i)(x_j - m_j)`` against ``cov_ij``). All ``|z|`` must be below ``z_max``
(default 4: a false alarm about once in 16,000 checks). Independent draws (importance
resampling, SMC) can be given as one chain ``(1, N, *shape)``; weighted draws with many
duplicates understate the MCSE.

Cases (``conjugate_cases()``, a fresh dict per call):

* ``normal_normal``: ``mu ~ N(1, 3)``, eight ``y ~ N(mu, 1.5)``;
* ``beta_binomial``: ``p ~ Beta(2, 3)``, four binomial counts;
* ``gamma_poisson``: ``rate ~ Gamma(3, 0.5)``, seven Poisson counts;
* ``mvn_correlated``: ``x ~ MVN(0, 100 I)`` in 4-d, one ``y ~ MVN(x, S)`` with correlations
  ``0.95^|i-j|`` and scales 0.75 to 1.5: a strongly correlated posterior (tag ``correlated``:
  where a dense mass matrix matters);
* ``discrete_mixture``: ``mu ~ N(0, 2)`` and six observations each from ``N(mu, 1)`` or,
  with a latent ``z_i ~ Bernoulli(0.3)``, ``N(mu + 2, 1)``; exact by enumerating the 64
  assignments of ``z`` (``discrete = ("z",)``: gradient-based engines first run the
  ``enumerate_discrete`` pass, and then have no draws of ``z``).

    >>> case = conjugate_cases()["normal_normal"]
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> post = case.posterior["mu"]
    >>> fake = post.mean + post.sd * torch.randn(2, 2000, generator=g, dtype=torch.float64)
    >>> check_draws({"mu": fake}, case)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ppl import model, plate, sample
from ppl.model import Model
from ppl.stdlib import Bernoulli, Beta, Binomial, Gamma, MultivariateNormal, Normal, Poisson

from ..results.diagnostics import mcse_mean

__all__ = ["ExactPosterior", "ConjugateCase", "conjugate_cases", "moment_z_scores", "check_draws"]

_F64 = torch.float64


@dataclass(frozen=True)
class ExactPosterior:
    """Exact posterior moments of one site: ``mean`` and ``sd`` shaped as the site; ``cov``
    ``(K, K)`` over the site's K flattened elements when the correlations are to be checked."""

    mean: Tensor
    sd: Tensor
    cov: Tensor | None = None


@dataclass(frozen=True)
class ConjugateCase:
    """A model with its data and exact answers (see the module docstring)."""

    name: str
    model: Model
    args: tuple
    kwargs: dict
    posterior: dict[str, ExactPosterior]
    log_evidence: float | None = None
    discrete: tuple[str, ...] = ()
    tags: frozenset[str] = field(default_factory=frozenset)


# --------------------------------------------------------------------------- checking


def moment_z_scores(draws: Tensor, exact: ExactPosterior) -> dict[str, Tensor]:
    """MCSE z-scores of draws ``(chains, draws, *shape)`` against ``exact``.

    ``mean``: per element, shape ``shape``. ``var``: per element (second central moment about
    the exact mean), or with ``cov`` ``second``: ``(K, K)`` for every product of centered
    elements (symmetric; the diagonal is the variance).
    """
    x = draws.detach().to(_F64)
    mean = exact.mean.to(_F64)
    out = {"mean": (x.mean((0, 1)) - mean) / mcse_mean(x)}
    centered = (x - mean).reshape(*x.shape[:2], -1)
    if exact.cov is None:
        sq = centered.square()
        var = exact.sd.to(_F64).reshape(-1).square()
        out["var"] = ((sq.mean((0, 1)) - var) / mcse_mean(sq)).reshape(mean.shape)
    else:
        prod = (centered.unsqueeze(-1) * centered.unsqueeze(-2))
        out["second"] = (prod.mean((0, 1)) - exact.cov.to(_F64)) / mcse_mean(prod)
    return out


def check_draws(samples: Mapping[str, Tensor], case: ConjugateCase, z_max: float = 4.0,
                sites: Iterable[str] | None = None) -> None:
    """Raise ``AssertionError`` naming the site, statistic and z-scores when any ``|z|`` of
    :func:`moment_z_scores` reaches ``z_max``. ``sites``: those to check (default: every
    site with an exact answer; a missing one is an error unless it is in ``case.discrete``)."""
    names = list(sites) if sites is not None else [
        s for s in case.posterior if s in samples or s not in case.discrete]
    failures = []
    for name in names:
        if name not in samples:
            raise AssertionError(f"{case.name}: no draws of site {name!r} (have {sorted(samples)})")
        exact = case.posterior[name]
        x = samples[name]
        for stat, z in moment_z_scores(x, exact).items():
            if not bool((z.abs() < z_max).all()):
                est = x.detach().to(_F64).mean((0, 1)) if stat == "mean" else \
                    x.detach().to(_F64).reshape(-1, *x.shape[2:]).std(0)
                want = exact.mean if stat == "mean" else exact.sd
                failures.append(f"{name} {stat}: z = {z.tolist()}; estimate "
                                f"{'mean' if stat == 'mean' else 'sd'} {est.tolist()}, exact "
                                f"{want.tolist()}")
    if failures:
        raise AssertionError(f"{case.name}: |z| >= {z_max}:\n  " + "\n  ".join(failures))


# --------------------------------------------------------------------------- cases


def _t(*values: float) -> Tensor:
    return torch.tensor(values)


def _normal_normal() -> ConjugateCase:
    m0, s0, sigma = 1.0, 3.0, 1.5
    ys = _t(2.1, 0.4, 1.9, 3.2, 2.6, 1.1, 2.4, 1.7)

    @model
    def normal_normal(y):
        mu = sample("mu", Normal(m0, s0))
        with plate("data", len(y)):
            sample("y", Normal(mu, sigma), obs=y)

    y, n = ys.to(_F64), len(ys)
    precision = 1 / s0**2 + n / sigma**2
    mean = (m0 / s0**2 + y.sum() / sigma**2) / precision
    marginal = torch.distributions.MultivariateNormal(
        torch.full((n,), m0, dtype=_F64), sigma**2 * torch.eye(n, dtype=_F64) + s0**2)
    return ConjugateCase("normal_normal", normal_normal, (ys,), {},
                         {"mu": ExactPosterior(mean, torch.tensor(precision**-0.5, dtype=_F64))},
                         float(marginal.log_prob(y)))


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _beta_binomial() -> ConjugateCase:
    a, b = 2.0, 3.0
    totals, counts = _t(10, 12, 8, 15), _t(3, 5, 2, 6)

    @model
    def beta_binomial(n, k):
        p = sample("p", Beta(a, b))
        with plate("groups", len(k)):
            sample("k", Binomial(n, p), obs=k)

    a1, b1 = a + float(counts.sum()), b + float((totals - counts).sum())
    log_choose = sum(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                     for n, k in zip(totals.tolist(), counts.tolist(), strict=True))
    sd = math.sqrt(a1 * b1 / ((a1 + b1) ** 2 * (a1 + b1 + 1)))
    return ConjugateCase("beta_binomial", beta_binomial, (totals, counts), {},
                         {"p": ExactPosterior(torch.tensor(a1 / (a1 + b1), dtype=_F64),
                                              torch.tensor(sd, dtype=_F64))},
                         log_choose + _lbeta(a1, b1) - _lbeta(a, b))


def _gamma_poisson() -> ConjugateCase:
    shape, rate = 3.0, 0.5
    ys = _t(4, 7, 3, 5, 6, 2, 5)

    @model
    def gamma_poisson(y):
        lam = sample("rate", Gamma(shape, rate))
        with plate("data", len(y)):
            sample("y", Poisson(lam), obs=y)

    total, n = float(ys.sum()), len(ys)
    a1, b1 = shape + total, rate + n
    log_evidence = (shape * math.log(rate) - math.lgamma(shape) + math.lgamma(a1)
                    - a1 * math.log(b1) - sum(math.lgamma(v + 1) for v in ys.tolist()))
    return ConjugateCase("gamma_poisson", gamma_poisson, (ys,), {},
                         {"rate": ExactPosterior(torch.tensor(a1 / b1, dtype=_F64),
                                                 torch.tensor(math.sqrt(a1) / b1, dtype=_F64))},
                         log_evidence)


def _mvn_correlated() -> ConjugateCase:
    dim, prior_sd = 4, 10.0
    scales = torch.tensor([1.0, 1.5, 1.0, 0.75], dtype=_F64)
    idx = torch.arange(dim)
    noise_cov = 0.95 ** (idx[:, None] - idx[None, :]).abs().to(_F64) * scales[:, None] * scales
    y = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=_F64)
    noise_tril, prior = torch.linalg.cholesky(noise_cov).float(), torch.full((dim,), prior_sd)

    @model
    def mvn_correlated(obs):
        x = sample("x", Normal(torch.zeros(dim), prior).to_event(1))
        sample("y", MultivariateNormal(x, scale_tril=noise_tril), obs=obs)

    prior_precision = torch.eye(dim, dtype=_F64) / prior_sd**2
    cov = torch.linalg.inv(prior_precision + torch.linalg.inv(noise_cov))
    mean = cov @ torch.linalg.solve(noise_cov, y)
    marginal = torch.distributions.MultivariateNormal(
        torch.zeros(dim, dtype=_F64), noise_cov + prior_sd**2 * torch.eye(dim, dtype=_F64))
    return ConjugateCase("mvn_correlated", mvn_correlated, (y.float(),), {},
                         {"x": ExactPosterior(mean, cov.diagonal().sqrt(), cov)},
                         float(marginal.log_prob(y)), tags=frozenset({"correlated"}))


def _discrete_mixture() -> ConjugateCase:
    s0, shift, weight = 2.0, 2.0, 0.3
    ys = _t(0.3, 2.5, -0.4, 1.1, 3.0, 0.8)

    @model
    def discrete_mixture(y):
        mu = sample("mu", Normal(0.0, s0))
        with plate("data", len(y)):
            z = sample("z", Bernoulli(weight))
            sample("y", Normal(mu + shift * z, 1.0), obs=y)

    # Given z, y - shift z ~ N(mu, 1): normal-normal with a N(0, s0^2) prior.
    n = len(ys)
    zs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=_F64)  # (2^n, n)
    resid = ys.to(_F64) - shift * zs
    marginal = torch.distributions.MultivariateNormal(
        torch.zeros(n, dtype=_F64), torch.eye(n, dtype=_F64) + s0**2)
    log_prior_z = (zs * math.log(weight) + (1 - zs) * math.log(1 - weight)).sum(-1)
    log_joint = log_prior_z + marginal.log_prob(resid)  # log p(z, y), one per assignment
    w = torch.softmax(log_joint, 0)
    precision = 1 / s0**2 + n
    means, var = resid.sum(-1) / precision, 1 / precision
    mu_mean = (w * means).sum()
    mu_var = (w * (var + means.square())).sum() - mu_mean.square()
    p_z = (w.unsqueeze(-1) * zs).sum(0)
    return ConjugateCase(
        "discrete_mixture", discrete_mixture, (ys,), {},
        {"mu": ExactPosterior(mu_mean, mu_var.sqrt()),
         "z": ExactPosterior(p_z, (p_z * (1 - p_z)).sqrt())},
        float(torch.logsumexp(log_joint, 0)), discrete=("z",))


def conjugate_cases() -> dict[str, ConjugateCase]:
    """Name -> case, freshly built (each case's model and data are its own objects)."""
    cases = [_normal_normal(), _beta_binomial(), _gamma_poisson(), _mvn_correlated(),
             _discrete_mixture()]
    return {case.name: case for case in cases}
