"""Log densities written in tape primitives.

``LOG_PROBS[family](value, **params)`` returns a list of terms whose sum, each broadcast to the
site's shape, is the family's ``log_prob``; terms that do not depend on the position fold
into one build-time constant. (The unconstraining bijectors live in :mod:`.bijectors`.)

    >>> import torch
    >>> terms = LOG_PROBS["Normal"](torch.tensor(0.5), loc=0.0, scale=torch.tensor(2.0))
    >>> expected = torch.distributions.Normal(0.0, 2.0).log_prob(torch.tensor(0.5))
    >>> torch.isclose(sum(t.sum() for t in terms), expected).item()
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ppl.shapes import broadcast_shapes

from .prims import (
    ABS,
    COMPARISONS,
    GATHER,
    LOG_SOFTMAX,
    MATMUL,
    SUM,
    TAKE_LAST,
    lgamma,
    log,
    log1p,
    softplus,
    square,
    where,
)
from .tape import Unsupported, Value, is_var, shape_of

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
LOG_2 = math.log(2.0)
LOG_PI = math.log(math.pi)

__all__ = [
    "EVENT_DIMS",
    "LOG_PROBS",
    "VECTOR_PARAMETER_FAMILIES",
]


def _standardized(x: Value, loc: Value, scale: Value) -> Value:
    return (x - loc) / scale


def normal(x, loc, scale):
    return [-0.5 * square(_standardized(x, loc, scale)), -log(scale) - HALF_LOG_2PI]


def half_normal(x, scale):
    return normal(x, 0.0, scale) + [LOG_2]


def log_normal(x, loc, scale):
    return normal(log(x), loc, scale) + [-log(x)]


def cauchy(x, loc, scale):
    return [-log1p(square(_standardized(x, loc, scale))), -log(scale) - LOG_PI]


def half_cauchy(x, scale):
    return cauchy(x, 0.0, scale) + [LOG_2]


def student_t(x, df, loc, scale):
    z = _standardized(x, loc, scale)
    normalizer = (
        lgamma(0.5 * (df + 1.0)) - lgamma(0.5 * df) - 0.5 * log(df) - 0.5 * LOG_PI - log(scale)
    )
    return [-0.5 * (df + 1.0) * log1p(square(z) / df), normalizer]


def laplace(x, loc, scale):
    return [-_abs(x - loc) / scale, -log(2.0 * scale)]


def exponential(x, rate):
    return [log(rate), -rate * x]


def gamma(x, concentration, rate):
    return [
        concentration * log(rate),
        (concentration - 1.0) * log(x),
        -rate * x,
        -lgamma(concentration),
    ]


def inverse_gamma(x, concentration, rate):
    return [
        concentration * log(rate),
        -(concentration + 1.0) * log(x),
        -rate / x,
        -lgamma(concentration),
    ]


def beta(x, concentration1, concentration0):
    a, b = concentration1, concentration0
    return [(a - 1.0) * log(x), (b - 1.0) * log1p(-x), lgamma(a + b) - lgamma(a) - lgamma(b)]


def uniform(x, low, high):
    terms = [-log(high - low)]
    if is_var(x):  # a latent's value lies in its support by construction
        return terms
    return terms + [
        _log_indicator(COMPARISONS["le"], low, x),
        _log_indicator(COMPARISONS["lt"], x, high),
    ]


def _log_indicator(comparison, a: Value, b: Value) -> Value:
    """0 where ``comparison(a, b)`` holds, -inf elsewhere (a support check at run time)."""
    tape = next(v.tape for v in (a, b) if is_var(v))
    return where(tape.apply(comparison, a, b), 0.0, -math.inf)


def bernoulli(x, probs=None, logits=None):
    if logits is None:
        return [x * log(probs), (1.0 - x) * log1p(-probs)]
    return [x * logits, -softplus(logits)]


def binomial(x, total_count, probs=None, logits=None):
    if is_var(total_count) or is_var(x):
        raise Unsupported("Binomial with a batched count")
    log_choose = lgamma(total_count + 1.0) - lgamma(x + 1.0) - lgamma(total_count - x + 1.0)
    if logits is None:
        return [log_choose, x * log(probs), (total_count - x) * log1p(-probs)]
    return [log_choose, x * logits, -total_count * softplus(logits)]


def poisson(x, rate):
    return [x * log(rate), -rate, -lgamma(x + 1.0)]


def categorical(x, probs=None, logits=None):
    if is_var(x) and x.dtype.is_floating_point:
        raise Unsupported("Categorical with a batched value")
    if logits is not None:
        log_p = logits.tape.apply(LOG_SOFTMAX, logits, dim=-1) if is_var(logits) else (
            torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), -1))
    else:
        log_p = log(probs)
    terms = [_take_last(log_p, x)]
    if logits is None:
        total = (probs.tape.apply(SUM, probs, dims=(-1,), keepdim=False) if is_var(probs)
                 else torch.as_tensor(probs, dtype=torch.float64).sum(-1))
        terms.append(-log(total))
    return terms


def _take_last(table: Value, index: Value) -> Value:
    """``table[..., index]`` for an integer ``index`` over the last dim: a gather of fixed
    positions for a constant index, a per-chain gather for per-chain data."""
    if is_var(index):
        return index.tape.apply(TAKE_LAST, table, index)
    shape = shape_of(table)
    batch = broadcast_shapes(shape[:-1], tuple(index.shape))
    flat = torch.arange(math.prod(shape)).reshape(shape).expand(*batch, shape[-1])
    positions = torch.gather(flat, -1, index.long().expand(batch).unsqueeze(-1)).squeeze(-1)
    return table.tape.apply(GATHER, table, positions=positions)


def multivariate_normal(x, loc, scale_tril=None, covariance_matrix=None, precision_matrix=None):
    matrix = next(m for m in (scale_tril, covariance_matrix, precision_matrix) if m is not None)
    if is_var(matrix):
        raise Unsupported("MultivariateNormal with a batched covariance")
    if scale_tril is None:
        cov = covariance_matrix if precision_matrix is None else torch.linalg.inv(precision_matrix)
        scale_tril = torch.linalg.cholesky(cov)
    precision_factor = torch.linalg.inv(scale_tril).mT.contiguous()  # w = (x - loc) @ L^{-T}
    diff = x - loc
    tape = diff.tape
    w = tape.apply(MATMUL, diff, precision_factor)
    k = scale_tril.shape[-1]
    log_norm = -torch.diagonal(scale_tril, dim1=-2, dim2=-1).log().sum(-1) - k * HALF_LOG_2PI
    return [-0.5 * tape.apply(SUM, w * w, dims=(-1,), keepdim=False), log_norm]


def dirichlet(x, concentration):
    """``sum((a - 1) log x) + lgamma(sum a) - sum lgamma(a)`` over the last (event) dim; the
    first term vanishes for a flat Dirichlet (constant ``a`` of ones)."""
    weight = concentration - 1.0
    terms = [lgamma(_sum_last(concentration)) - _sum_last(lgamma(concentration))]
    if is_var(weight) or bool((torch.as_tensor(weight) != 0).any()):
        terms.append(_sum_last(weight * log(x)))
    return terms


def _sum_last(x: Value) -> Value:
    return x.tape.apply(SUM, x, dims=(-1,)) if is_var(x) else torch.as_tensor(x).sum(-1)


def improper_uniform(x, **_):
    return []


def _abs(x: Value) -> Value:
    return x.tape.apply(ABS, x) if is_var(x) else torch.abs(torch.as_tensor(x))


LOG_PROBS: dict[str, Callable[..., list]] = {
    "Normal": normal,
    "HalfNormal": half_normal,
    "LogNormal": log_normal,
    "Cauchy": cauchy,
    "HalfCauchy": half_cauchy,
    "StudentT": student_t,
    "Laplace": laplace,
    "Exponential": exponential,
    "Gamma": gamma,
    "InverseGamma": inverse_gamma,
    "Beta": beta,
    "Uniform": uniform,
    "Bernoulli": bernoulli,
    "Binomial": binomial,
    "Poisson": poisson,
    "Categorical": categorical,
    "MultivariateNormal": multivariate_normal,
    "Dirichlet": dirichlet,
    "ImproperUniform": improper_uniform,
}
# value dims a family's log density sums itself
EVENT_DIMS = {"MultivariateNormal": 1, "Dirichlet": 1}
# families whose parameters carry dimensions the value does not (a probability vector...),
# or whose vector parameters must keep their event dimension (Dirichlet's concentration)
VECTOR_PARAMETER_FAMILIES = {"MultivariateNormal", "Categorical", "Dirichlet"}
