"""Log densities and unconstraining bijectors written in tape primitives.

``LOG_PROBS[family](value, **params)`` returns a list of terms whose sum, each broadcast to the
site's shape, is the family's ``log_prob``; terms that do not depend on the position fold
into one build-time constant. ``unconstrain(support, u)`` maps an unconstrained ``u`` into a
support exactly as ``torch.distributions.biject_to(support)`` does and returns the value and
its ``log|det J|`` terms, so the flat parameterization matches the autograd path.

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
from torch.distributions import biject_to, constraints

from ppl.shapes import broadcast_shapes

from .prims import (
    ABS,
    COMPARISONS,
    GATHER,
    LOG_SOFTMAX,
    MATMUL,
    SUM,
    exp,
    lgamma,
    log,
    log1p,
    logsigmoid,
    sigmoid,
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
    "unconstrain",
    "unconstrained_shape",
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
    if is_var(x):
        raise Unsupported("Categorical with a batched value")
    log_p = logits.tape.apply(LOG_SOFTMAX, logits, dim=-1) if logits is not None else log(probs)
    terms = [_take_last(log_p, x)]
    if logits is None:
        terms.append(-log(probs.tape.apply(SUM, probs, dims=(-1,), keepdim=False)))
    return terms


def _take_last(table: Value, index: torch.Tensor) -> Value:
    """``table[..., index]`` for an integer ``index`` over the last dim, as a gather."""
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
    "ImproperUniform": improper_uniform,
}
EVENT_DIMS = {"MultivariateNormal": 1}  # value dims a family's log density sums itself
# families whose parameters carry dimensions the value does not (a probability vector...)
VECTOR_PARAMETER_FAMILIES = {"MultivariateNormal", "Categorical"}


ELEMENTWISE_SUPPORTS = (
    type(constraints.real),
    constraints.greater_than,
    constraints.greater_than_eq,
    constraints.less_than,
    constraints.interval,
    constraints.half_open_interval,
)


def base_support(support: constraints.Constraint) -> constraints.Constraint:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support


def unconstrained_shape(support: constraints.Constraint, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of the unconstrained block for a value of ``shape`` (elementwise bijectors
    keep it; asking torch's ``inverse_shape`` would import its symbolic-shape stack)."""
    if isinstance(base_support(support), ELEMENTWISE_SUPPORTS):
        return tuple(shape)
    return tuple(biject_to(support).inverse_shape(shape))


def unconstrain(
    support: constraints.Constraint, u: Value, bounds: tuple | None = None
) -> tuple[Value, list]:
    """``(biject_to(support)(u), log|det J| terms)``; ``bounds`` overrides an interval's
    ``(low, high)`` when they are batched values (e.g. ``Uniform`` with random bounds)."""
    support = base_support(support)
    if isinstance(support, type(constraints.real)):
        return u, []
    if isinstance(support, (constraints.greater_than, constraints.greater_than_eq)):
        return _shifted(support.lower_bound, exp(u), 1.0), [u]
    if isinstance(support, constraints.less_than):
        return _shifted(support.upper_bound, exp(u), -1.0), [u]
    if isinstance(support, (constraints.interval, constraints.half_open_interval)):
        low, high = bounds if bounds is not None else (support.lower_bound, support.upper_bound)
        width = high - low
        value = low + width * sigmoid(u)
        return value, [log(width), logsigmoid(u), logsigmoid(-u)]
    raise Unsupported(f"no generated bijector for support {support}")


def _shifted(bound, positive: Value, sign: float) -> Value:
    if isinstance(bound, (int, float)) and bound == 0 and sign > 0:
        return positive
    return bound + sign * positive
