"""Batched sampling rules of the families: ``rule(rng, gen, shape, **params) -> draws``.

A rule draws a whole batch at once, the ``shape`` asked for (the particles' leading dim, the
site's batch dims, its event dims) with the family's parameters broadcast against it, from
the primitives of ``rng`` (passed in by the caller, each taking the ``torch.Generator``
``gen``), so this module imports no engine; the family's declaration
(:mod:`ppl.stdlib.families`) names its rule as ``sample=``. Draws are float64 (Categorical's
are int64, as torch's), on the generator's device. A family without a rule is sampled by
its torch class, which the engine reports by name.

    >>> import torch
    >>> from ppl.inference.lowering.particles import rng_ops as rng
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = normal(rng, gen, (4000,), loc=torch.tensor(3.0), scale=2.0)
    >>> x.shape, abs(float(x.mean()) - 3.0) < 0.2, abs(float(x.std()) - 2.0) < 0.2
    (torch.Size([4000]), True, True)
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from ppl.registry import family_of

Rng = ModuleType  # the namespace of random primitives a rule is given
Shape = tuple[int, ...]
Param = Any  # a tensor broadcastable to the draw's shape, or a float

_TINY = torch.finfo(torch.float64).tiny
_EPS = torch.finfo(torch.float64).eps


def _affine(z: torch.Tensor, loc: Param, scale: Param) -> torch.Tensor:
    """``loc + scale * z``, skipping the operations that a literal 0 or 1 makes identities
    (the engine passes scalar constants as floats): one less pass over N particles each."""
    if not (type(scale) is float and scale == 1.0):
        z = scale * z
    return z if type(loc) is float and loc == 0.0 else loc + z


def _probs(probs: Param, logits: Param) -> Param:
    return torch.sigmoid(torch.as_tensor(logits)) if probs is None else probs


def _last_dim_probs(probs: Param, logits: Param) -> torch.Tensor:
    """Normalized probabilities over the last dim (torch's meaning of either argument)."""
    if probs is None:
        return torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=-1)
    probs = torch.as_tensor(probs, dtype=torch.float64)
    return probs / probs.sum(-1, keepdim=True)


# -- continuous, univariate -----------------------------------------------------------------
def normal(rng: Rng, gen: torch.Generator, shape: Shape, loc: Param, scale: Param) -> torch.Tensor:
    return _affine(rng.normal(gen, shape), loc, scale)


def log_normal(rng: Rng, gen: torch.Generator, shape: Shape, loc: Param,
               scale: Param) -> torch.Tensor:
    return torch.exp(normal(rng, gen, shape, loc, scale))


def half_normal(rng: Rng, gen: torch.Generator, shape: Shape, scale: Param) -> torch.Tensor:
    return scale * rng.normal(gen, shape).abs()


def cauchy(rng: Rng, gen: torch.Generator, shape: Shape, loc: Param, scale: Param) -> torch.Tensor:
    return _affine(rng.cauchy(gen, shape), loc, scale)


def half_cauchy(rng: Rng, gen: torch.Generator, shape: Shape, scale: Param) -> torch.Tensor:
    return scale * rng.cauchy(gen, shape).abs()


def student_t(rng: Rng, gen: torch.Generator, shape: Shape, df: Param, loc: Param,
              scale: Param) -> torch.Tensor:
    """``z / sqrt(chi2(df) / df)``, the chi-square as twice a Gamma(df / 2)."""
    chi2 = 2.0 * rng.standard_gamma(gen, shape, 0.5 * torch.as_tensor(df, dtype=torch.float64))
    return _affine(rng.normal(gen, shape) * torch.rsqrt(chi2.clamp_min(_TINY) / df), loc, scale)


def laplace(rng: Rng, gen: torch.Generator, shape: Shape, loc: Param,
            scale: Param) -> torch.Tensor:
    """The inverse CDF at ``u`` uniform on (-1, 1), kept off -1 so no draw is infinite."""
    u = (2.0 * rng.uniform(gen, shape) - 1.0).clamp_min(_EPS - 1.0)
    return _affine(-torch.sign(u) * torch.log1p(-u.abs()), loc, scale)


def gumbel(rng: Rng, gen: torch.Generator, shape: Shape, loc: Param, scale: Param) -> torch.Tensor:
    return _affine(-torch.log(rng.exponential(gen, shape)), loc, scale)


def exponential(rng: Rng, gen: torch.Generator, shape: Shape, rate: Param) -> torch.Tensor:
    return rng.exponential(gen, shape) / rate


def gamma(rng: Rng, gen: torch.Generator, shape: Shape, concentration: Param,
          rate: Param) -> torch.Tensor:
    return (rng.standard_gamma(gen, shape, concentration) / rate).clamp_min(_TINY)


def inverse_gamma(rng: Rng, gen: torch.Generator, shape: Shape, concentration: Param,
                  rate: Param) -> torch.Tensor:
    return rate / rng.standard_gamma(gen, shape, concentration).clamp_min(_TINY)


def chi2(rng: Rng, gen: torch.Generator, shape: Shape, df: Param) -> torch.Tensor:
    return gamma(rng, gen, shape, 0.5 * torch.as_tensor(df, dtype=torch.float64), 0.5)


def beta(rng: Rng, gen: torch.Generator, shape: Shape, concentration1: Param,
         concentration0: Param) -> torch.Tensor:
    """``G1 / (G1 + G0)`` of two standard gammas, kept inside the open unit interval."""
    g1 = rng.standard_gamma(gen, shape, concentration1)
    g0 = rng.standard_gamma(gen, shape, concentration0)
    return (g1 / (g1 + g0)).clamp(_TINY, 1.0 - _EPS)


def uniform(rng: Rng, gen: torch.Generator, shape: Shape, low: Param, high: Param) -> torch.Tensor:
    return _affine(rng.uniform(gen, shape), low, high - low)


def weibull(rng: Rng, gen: torch.Generator, shape: Shape, scale: Param,
            concentration: Param) -> torch.Tensor:
    return scale * rng.exponential(gen, shape) ** (1.0 / concentration)


def pareto(rng: Rng, gen: torch.Generator, shape: Shape, scale: Param,
           alpha: Param) -> torch.Tensor:
    return scale * torch.exp(rng.exponential(gen, shape) / alpha)


def truncated_normal(rng: Rng, gen: torch.Generator, shape: Shape, loc: Param, scale: Param,
                     low: Param, high: Param) -> torch.Tensor:
    """The inverse CDF between the standardized bounds, on the mirrored interval when it lies
    right of the mean (where the CDF is near 1 and would lose its precision)."""
    a = (torch.as_tensor(low, dtype=torch.float64) - loc) / scale
    b = (torch.as_tensor(high, dtype=torch.float64) - loc) / scale
    flip = (a + b) > 0.0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    cdf_lo, cdf_hi = torch.special.ndtr(lo), torch.special.ndtr(hi)
    z = torch.special.ndtri(cdf_lo + rng.uniform(gen, shape) * (cdf_hi - cdf_lo))
    z = torch.maximum(torch.minimum(z, hi), lo)
    return _affine(torch.where(flip, -z, z), loc, scale)


# -- discrete ---------------------------------------------------------------------------------
def bernoulli(rng: Rng, gen: torch.Generator, shape: Shape, probs: Param = None,
              logits: Param = None) -> torch.Tensor:
    return (rng.uniform(gen, shape) < _probs(probs, logits)).to(torch.float64)


def binomial(rng: Rng, gen: torch.Generator, shape: Shape, total_count: Param,
             probs: Param = None, logits: Param = None) -> torch.Tensor:
    return rng.binomial(gen, shape, total_count, _probs(probs, logits))


def categorical(rng: Rng, gen: torch.Generator, shape: Shape, probs: Param = None,
                logits: Param = None) -> torch.Tensor:
    """The inverse CDF: the first category whose cumulative probability exceeds ``u``,
    clamped so that rounding in the cumulative sum never gives an index out of range."""
    p = _last_dim_probs(probs, logits)
    cdf = torch.cumsum(p, dim=-1).expand(*shape, p.shape[-1]).contiguous()
    u = rng.uniform(gen, shape).unsqueeze(-1)
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_max(p.shape[-1] - 1)


def one_hot_categorical(rng: Rng, gen: torch.Generator, shape: Shape, probs: Param = None,
                        logits: Param = None) -> torch.Tensor:
    index = categorical(rng, gen, shape[:-1], probs, logits)
    return torch.nn.functional.one_hot(index, shape[-1]).to(torch.float64)


def poisson(rng: Rng, gen: torch.Generator, shape: Shape, rate: Param) -> torch.Tensor:
    return rng.poisson(gen, shape, rate)


def geometric(rng: Rng, gen: torch.Generator, shape: Shape, probs: Param = None,
              logits: Param = None) -> torch.Tensor:
    """The number of failures before the first success, ``floor(log u / log(1 - p))``."""
    u = rng.uniform(gen, shape).clamp_min(_TINY)
    log_fail = (torch.nn.functional.logsigmoid(-torch.as_tensor(logits, dtype=torch.float64))
                if probs is None else torch.log1p(-torch.as_tensor(probs, dtype=torch.float64)))
    return torch.floor(torch.log(u) / log_fail)


def negative_binomial(rng: Rng, gen: torch.Generator, shape: Shape, total_count: Param,
                      probs: Param = None, logits: Param = None) -> torch.Tensor:
    """A Poisson of a Gamma(total_count, (1 - p) / p) rate (the gamma-Poisson mixture)."""
    odds = (torch.exp(torch.as_tensor(logits, dtype=torch.float64)) if probs is None
            else torch.as_tensor(probs, dtype=torch.float64) / (1.0 - probs))
    return rng.poisson(gen, shape, rng.standard_gamma(gen, shape, total_count) * odds)


# -- multivariate -------------------------------------------------------------------------------
def dirichlet(rng: Rng, gen: torch.Generator, shape: Shape, concentration: Param) -> torch.Tensor:
    g = rng.standard_gamma(gen, shape, concentration).clamp_min(_TINY)
    return g / g.sum(-1, keepdim=True)


def multivariate_normal(rng: Rng, gen: torch.Generator, shape: Shape, loc: Param,
                        covariance_matrix: Param = None, precision_matrix: Param = None,
                        scale_tril: Param = None) -> torch.Tensor:
    """``loc + L z`` with ``L`` the Cholesky factor of the covariance (of the inverse of a
    precision matrix)."""
    if scale_tril is None:
        cov = (covariance_matrix if precision_matrix is None
               else torch.linalg.inv(torch.as_tensor(precision_matrix, dtype=torch.float64)))
        scale_tril = torch.linalg.cholesky(torch.as_tensor(cov, dtype=torch.float64))
    z = rng.normal(gen, shape)
    return loc + torch.matmul(scale_tril, z.unsqueeze(-1)).squeeze(-1)


# -- wrappers: the base family's rule at the wrapper's shape --------------------------------
def _base_draws(rng: Rng, gen: torch.Generator, shape: Shape, base: Any) -> torch.Tensor:
    family = family_of(base)
    if family is None or family.sample is None:
        raise NotImplementedError(f"no sampling rule for the wrapped {type(base).__name__}")
    return family.sample(rng, gen, shape, **base.ppl_args)


def independent(rng: Rng, gen: torch.Generator, shape: Shape, base_distribution: Any,
                reinterpreted_batch_ndims: int) -> torch.Tensor:
    return _base_draws(rng, gen, shape, base_distribution)


def masked(rng: Rng, gen: torch.Generator, shape: Shape, base_dist: Any,
           mask: Param) -> torch.Tensor:
    """The base's draws everywhere: the mask only removes terms from the density."""
    return _base_draws(rng, gen, shape, base_dist)


# -- degenerate ---------------------------------------------------------------------------------
def delta(rng: Rng, gen: torch.Generator, shape: Shape, v: Param, log_density: Param = 0.0,
          event_dim: int = 0) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float64, device=gen.device).expand(shape).clone()


__all__ = [name for name, value in dict(globals()).items()
           if callable(value) and not name.startswith("_") and value.__module__ == __name__]
