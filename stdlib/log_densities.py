"""The log density of each family as a tape rule: ``rule(ops, value, **params) -> terms``.

A rule is a pure function of the operations in ``ops`` (the generated potential passes
``ppl.inference.lowering.tape.ops``, whose functions take tape variables and constants
alike), so it lives here, next to the family, without the standard library importing an
engine. The sum of the returned terms, each broadcast to the site's batch shape, is the
family's ``log_prob``; terms that do not depend on the position fold into one constant. A
family's declaration (:mod:`ppl.stdlib.families`) says which value dims its rule sums
itself (``event_dims``) and which parameters it needs unbroadcast (``vector_params``). A
wrapper's distribution parameter reaches its rule as an object whose ``log_density(value)``
gives the wrapped family's terms, and whose ``family`` and ``params`` are the wrapped
declaration and its parameters (``MixtureSameFamily`` reads its weights and its components'
event dims there). With plain tensors for ``ops`` functions, a rule is the family's
``log_prob``:

    >>> import torch
    >>> from ppl.inference.lowering.tape import ops
    >>> terms = normal(ops, torch.tensor(0.5), loc=0.0, scale=torch.tensor(2.0))
    >>> expected = torch.distributions.Normal(0.0, 2.0).log_prob(torch.tensor(0.5))
    >>> torch.isclose(sum(t.sum() for t in terms), expected).item()
    True
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import torch
from torch.distributions.utils import probs_to_logits

from ppl.shapes import broadcast_shapes

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
LOG_2 = math.log(2.0)
LOG_PI = math.log(math.pi)
LOG_2PI = math.log(2 * math.pi)

Ops = ModuleType  # the namespace of tape operations a rule is given
Value = Any  # a tape variable or a constant (tensor or float)


def _standardized(x: Value, loc: Value, scale: Value) -> Value:
    return (x - loc) / scale


# -- continuous, univariate -----------------------------------------------------------------
def normal(ops: Ops, x: Value, loc: Value, scale: Value) -> list:
    return [-0.5 * ops.square(_standardized(x, loc, scale)), -ops.log(scale) - HALF_LOG_2PI]


def half_normal(ops: Ops, x: Value, scale: Value) -> list:
    return normal(ops, x, 0.0, scale) + [LOG_2]


def log_normal(ops: Ops, x: Value, loc: Value, scale: Value) -> list:
    return normal(ops, ops.log(x), loc, scale) + [-ops.log(x)]


def cauchy(ops: Ops, x: Value, loc: Value, scale: Value) -> list:
    return [-ops.log1p(ops.square(_standardized(x, loc, scale))), -ops.log(scale) - LOG_PI]


def half_cauchy(ops: Ops, x: Value, scale: Value) -> list:
    return cauchy(ops, x, 0.0, scale) + [LOG_2]


def student_t(ops: Ops, x: Value, df: Value, loc: Value, scale: Value) -> list:
    z = _standardized(x, loc, scale)
    normalizer = (
        ops.lgamma(0.5 * (df + 1.0)) - ops.lgamma(0.5 * df) - 0.5 * ops.log(df) - 0.5 * LOG_PI
        - ops.log(scale)
    )
    return [-0.5 * (df + 1.0) * ops.log1p(ops.square(z) / df), normalizer]


def laplace(ops: Ops, x: Value, loc: Value, scale: Value) -> list:
    return [-ops.abs(x - loc) / scale, -ops.log(2.0 * scale)]


def gumbel(ops: Ops, x: Value, loc: Value, scale: Value) -> list:
    y = (loc - x) / scale
    return [y - ops.exp(y), -ops.log(scale)]


def exponential(ops: Ops, x: Value, rate: Value) -> list:
    return [ops.log(rate), -rate * x]


def gamma(ops: Ops, x: Value, concentration: Value, rate: Value) -> list:
    return [
        concentration * ops.log(rate),
        (concentration - 1.0) * ops.log(x),
        -rate * x,
        -ops.lgamma(concentration),
    ]


def chi2(ops: Ops, x: Value, df: Value) -> list:
    return gamma(ops, x, 0.5 * df, 0.5)


def inverse_gamma(ops: Ops, x: Value, concentration: Value, rate: Value) -> list:
    return [
        concentration * ops.log(rate),
        -(concentration + 1.0) * ops.log(x),
        -rate / x,
        -ops.lgamma(concentration),
    ]


def weibull(ops: Ops, x: Value, scale: Value, concentration: Value) -> list:
    log_ratio = ops.log(x) - ops.log(scale)
    return [
        ops.log(concentration) - ops.log(scale),
        (concentration - 1.0) * log_ratio,
        -ops.exp(concentration * log_ratio),
    ]


def pareto(ops: Ops, x: Value, scale: Value, alpha: Value) -> list:
    """``log a + a log s - (a + 1) log x``; like torch's, unchecked below ``scale``."""
    return [ops.log(alpha), alpha * ops.log(scale), -(alpha + 1.0) * ops.log(x)]


def beta(ops: Ops, x: Value, concentration1: Value, concentration0: Value) -> list:
    a, b = concentration1, concentration0
    return [
        (a - 1.0) * ops.log(x),
        (b - 1.0) * ops.log1p(-x),
        ops.lgamma(a + b) - ops.lgamma(a) - ops.lgamma(b),
    ]


def uniform(ops: Ops, x: Value, low: Value, high: Value) -> list:
    terms = [-ops.log(high - low)]
    if ops.is_var(x):  # a latent's value lies in its support by construction
        return terms
    return terms + [_log_indicator(ops, "le", low, x), _log_indicator(ops, "lt", x, high)]


def _log_indicator(ops: Ops, comparison: str, a: Value, b: Value) -> Value:
    """0 where ``comparison(a, b)`` holds, -inf elsewhere (a support check at run time)."""
    return ops.where(ops.compare(comparison, a, b), 0.0, -math.inf)


def relaxed_bernoulli(
    ops: Ops, x: Value, temperature: Value, probs: Value = None, logits: Value = None
) -> list:
    """A logistic density of ``logit(x)`` (torch's ``LogitRelaxedBernoulli``) and the
    ``log|d logit(x) / dx|`` of the sigmoid that maps it into (0, 1)."""
    if logits is None:
        logits = ops.log(probs) - ops.log1p(-probs)
    log_x, log_rest = ops.log(x), ops.log1p(-x)
    diff = logits - (log_x - log_rest) * temperature
    return [ops.log(temperature), diff - 2.0 * ops.softplus(diff), -log_x, -log_rest]


_FAR = 40.0  # where TruncatedNormal puts an infinite bound, in standard deviations


def _standardized_bound(
    ops: Ops, bound: torch.Tensor, loc: Value, scale: Value, far: float
) -> Value:
    """A constant bound in standard deviations from ``loc``; an infinite one at ``far`` (as
    :class:`~ppl.stdlib.truncated.TruncatedNormal` does, so no inf enters the arithmetic)."""
    finite = torch.isfinite(bound)
    if not bool(finite.any()):
        return far
    standardized = _standardized(torch.where(finite, bound, 0.0), loc, scale)
    return standardized if bool(finite.all()) else ops.where(finite, standardized, far)


def truncated_normal(ops: Ops, x: Value, loc: Value, scale: Value, low: Value, high: Value) -> list:
    """The normal density over the mass ``Phi(b) - Phi(a)`` between the standardized bounds,
    in log space on the side of the mean where the CDF is small (the interval mirrored
    when it lies right of the mean), and a support check for data."""
    if ops.is_var(low) or ops.is_var(high):
        raise ops.Unsupported("TruncatedNormal with bounds that depend on the position")
    low, high = (torch.as_tensor(b, dtype=torch.float64) for b in (low, high))
    a = _standardized_bound(ops, low, loc, scale, -_FAR)
    b = _standardized_bound(ops, high, loc, scale, _FAR)
    flip = ops.compare("gt", a, 0.0)
    lo, hi = ops.where(flip, -b, a), ops.where(flip, -a, b)
    log_hi = ops.log_ndtr(hi)
    log_mass = log_hi + ops.log1mexp(ops.log_ndtr(lo) - log_hi)
    terms = normal(ops, x, loc, scale) + [-log_mass]
    if ops.is_var(x):  # a latent's value lies in its support by construction
        return terms
    return terms + [_log_indicator(ops, "le", low, x), _log_indicator(ops, "le", x, high)]


def von_mises(ops: Ops, x: Value, loc: Value, concentration: Value) -> list:
    return [concentration * ops.cos(x - loc), -LOG_2PI - ops.log_i0(concentration)]


# -- discrete -------------------------------------------------------------------------------
def bernoulli(ops: Ops, x: Value, probs: Value = None, logits: Value = None) -> list:
    if logits is None:
        return [x * ops.log(probs), (1.0 - x) * ops.log1p(-probs)]
    return [x * logits, -ops.softplus(logits)]


def binomial(
    ops: Ops, x: Value, total_count: Value, probs: Value = None, logits: Value = None
) -> list:
    if ops.is_var(total_count) or ops.is_var(x):
        raise ops.Unsupported("Binomial with a batched count")
    log_choose = (
        ops.lgamma(total_count + 1.0) - ops.lgamma(x + 1.0) - ops.lgamma(total_count - x + 1.0)
    )
    if logits is None:
        return [log_choose, x * ops.log(probs), (total_count - x) * ops.log1p(-probs)]
    return [log_choose, x * logits, -total_count * ops.softplus(logits)]


def _log_beta(ops: Ops, a: Value, b: Value) -> Value:
    return ops.lgamma(a) + ops.lgamma(b) - ops.lgamma(a + b)


def beta_binomial(
    ops: Ops, x: Value, concentration1: Value, concentration0: Value, total_count: Value
) -> list:
    if ops.is_var(total_count) or ops.is_var(x):
        raise ops.Unsupported("BetaBinomial with a batched count")
    a, b, n = concentration1, concentration0, total_count
    log_choose = ops.lgamma(n + 1.0) - ops.lgamma(x + 1.0) - ops.lgamma(n - x + 1.0)
    return [log_choose, _log_beta(ops, x + a, n - x + b), -_log_beta(ops, a, b)]


def poisson(ops: Ops, x: Value, rate: Value) -> list:
    return [x * ops.log(rate), -rate, -ops.lgamma(x + 1.0)]


def geometric(ops: Ops, x: Value, probs: Value = None, logits: Value = None) -> list:
    if logits is None:
        return [x * ops.log1p(-probs), ops.log(probs)]
    return [x * ops.logsigmoid(-logits), ops.logsigmoid(logits)]


def negative_binomial(
    ops: Ops, x: Value, total_count: Value, probs: Value = None, logits: Value = None
) -> list:
    """``r log(1 - p) + x log p`` and the normalizer ``log C(x + r - 1, x)``."""
    r = total_count
    normalizer = ops.lgamma(r + x) - ops.lgamma(x + 1.0) - ops.lgamma(r)
    if logits is None:
        return [r * ops.log1p(-probs), x * ops.log(probs), normalizer]
    return [r * ops.logsigmoid(-logits), x * ops.logsigmoid(logits), normalizer]


def negative_binomial2(ops: Ops, x: Value, mean: Value, concentration: Value) -> list:
    phi = concentration
    log_total = ops.log(mean + phi)
    return [
        ops.lgamma(x + phi) - ops.lgamma(phi) - ops.lgamma(x + 1.0),
        phi * (ops.log(phi) - log_total),
        x * (ops.log(mean) - log_total),
    ]


def _zero_inflated(ops: Ops, x: Value, gate: Value, base: list) -> list:
    """``gate`` mixed with a point mass at 0: ``log(gate + (1 - gate) p(0))`` at zeros,
    ``log(1 - gate) + log p(x)`` elsewhere."""
    if ops.is_var(x):
        raise ops.Unsupported("a zero-inflated family with a batched value")
    log_p = sum(base[1:], base[0])
    log_not_gate = ops.log1p(-gate)
    inflated = ops.logaddexp(ops.log(gate), log_not_gate + log_p)
    return [ops.where(torch.as_tensor(x) == 0, inflated, log_not_gate + log_p)]


def zero_inflated_poisson(ops: Ops, x: Value, gate: Value, rate: Value) -> list:
    return _zero_inflated(ops, x, gate, poisson(ops, x, rate))


def zero_inflated_negative_binomial(
    ops: Ops, x: Value, gate: Value, total_count: Value, probs: Value = None,
    logits: Value = None,
) -> list:
    return _zero_inflated(ops, x, gate, negative_binomial(ops, x, total_count, probs, logits))


def categorical(ops: Ops, x: Value, probs: Value = None, logits: Value = None) -> list:
    if ops.is_var(x) and x.dtype.is_floating_point:
        raise ops.Unsupported("Categorical with a batched value")
    if logits is not None:
        return [ops.take_last(ops.log_softmax(logits), x)]
    return [ops.take_last(ops.log(probs), x), -ops.log(ops.sum_last(probs))]


def one_hot_categorical(ops: Ops, x: Value, probs: Value = None, logits: Value = None) -> list:
    """``sum(x log p)`` over the one-hot last dim, ``p`` normalized as torch does."""
    if logits is not None:
        return [ops.sum_last(x * ops.log_softmax(logits))]
    return [ops.sum_last(x * ops.log(probs)), -ops.log(ops.sum_last(probs))]


def multinomial(
    ops: Ops, x: Value, total_count: Value, probs: Value = None, logits: Value = None
) -> list:
    """``lgamma(n + 1) - sum lgamma(x + 1) + sum x log p`` (the counts sum to ``n``)."""
    log_choose = ops.lgamma(total_count + 1.0) - ops.sum_last(ops.lgamma(x + 1.0))
    if logits is not None:
        return [log_choose, ops.sum_last(x * ops.log_softmax(logits))]
    return [
        log_choose,
        ops.sum_last(x * ops.log(probs)),
        -total_count * ops.log(ops.sum_last(probs)),
    ]


def ordered_logistic(ops: Ops, x: Value, predictor: Value, cutpoints: Value) -> list:
    """``log P(y = k)`` from the cutpoints (as :func:`ppl.stdlib.ordinal.ordinal_logits`:
    ``log(sigmoid(b) - sigmoid(a)) = b + log(1 - e^(a-b)) - softplus(a) - softplus(b)``
    between neighbours, log-sigmoid tails), read at the observed category."""
    if ops.is_var(x) and x.dtype.is_floating_point:
        raise ops.Unsupported("OrderedLogistic with a batched value")
    k = ops.shape_of(cutpoints)[-1]
    upper = cutpoints - ops.reshape(predictor, (*ops.shape_of(predictor), 1))
    categories = [ops.logsigmoid(ops.narrow(upper, -1, 0, 1))]
    if k > 1:
        a, b = ops.narrow(upper, -1, 0, k - 1), ops.narrow(upper, -1, 1, k - 1)
        categories.append(b + ops.log(-ops.expm1(a - b)) - ops.softplus(a) - ops.softplus(b))
    categories.append(-ops.softplus(ops.narrow(upper, -1, k - 1, 1)))
    return [ops.take_last(ops.cat(categories, -1), x)]


# -- multivariate ---------------------------------------------------------------------------
def multivariate_normal(
    ops: Ops,
    x: Value,
    loc: Value,
    scale_tril: Value = None,
    covariance_matrix: Value = None,
    precision_matrix: Value = None,
) -> list:
    matrix = next(m for m in (scale_tril, covariance_matrix, precision_matrix) if m is not None)
    if ops.is_var(matrix):
        return _mvn_latent_matrix(ops, x - loc, scale_tril, covariance_matrix, precision_matrix)
    scale_tril, covariance_matrix, precision_matrix = (
        None if m is None else _one_matrix(ops, m)
        for m in (scale_tril, covariance_matrix, precision_matrix)
    )
    if scale_tril is None:
        cov = covariance_matrix if precision_matrix is None else torch.linalg.inv(precision_matrix)
        scale_tril = torch.linalg.cholesky(cov)
    precision_factor = torch.linalg.inv(scale_tril).mT.contiguous()  # w = (x - loc) @ L^{-T}
    diff = x - loc  # as rows of a matrix: matmul takes per-chain ranks 1 and 2
    k, shape = scale_tril.shape[-1], ops.shape_of(diff)
    rows = ops.reshape(diff, (math.prod(shape[:-1]), k)) if len(shape) > 2 else diff
    w = ops.reshape(ops.matmul(rows, precision_factor), shape)
    log_norm = -torch.diagonal(scale_tril, dim1=-2, dim2=-1).log().sum(-1) - k * HALF_LOG_2PI
    return [-0.5 * ops.sum_last(w * w), log_norm]


def _mvn_latent_matrix(
    ops: Ops, diff: Value, scale_tril: Value, covariance_matrix: Value, precision_matrix: Value
) -> list:
    """The MultivariateNormal terms for one per-chain matrix (e.g. an LKJ factor scaled by
    latent sds) shared by every row of ``diff = x - loc``: with ``L`` the scale's Cholesky
    factor, the rows ``w = diff L^-T`` (one triangular solve) and ``-sum log diag L``; a
    precision's factor ``F`` (``P = F F^T``) gives ``w = diff F`` and ``+sum log diag F``."""
    scale_tril, covariance_matrix, precision_matrix = (
        None if m is None else ops.broadcast_source(m)
        for m in (scale_tril, covariance_matrix, precision_matrix)
    )
    matrix = next(m for m in (scale_tril, covariance_matrix, precision_matrix) if m is not None)
    if len(ops.shape_of(matrix)) != 2:
        raise ops.Unsupported(
            f"MultivariateNormal with a batch of latent matrices (per-chain shape "
            f"{ops.shape_of(matrix)}); one latent matrix shared by the batch has a rule"
        )
    k, shape = ops.shape_of(matrix)[-1], ops.shape_of(diff)
    rows = ops.reshape(diff, (math.prod(shape[:-1]), k))
    if precision_matrix is not None:
        factor = ops.cholesky(precision_matrix)
        w, log_det = ops.matmul(rows, factor), ops.sum_last(ops.log(ops.diagonal(factor)))
    else:
        factor = scale_tril if scale_tril is not None else ops.cholesky(covariance_matrix)
        w = ops.solve_triangular(ops.transpose(factor), rows, upper=True, left=False)
        log_det = -ops.sum_last(ops.log(ops.diagonal(factor)))
    w = ops.reshape(w, shape)
    return [-0.5 * ops.sum_last(w * w), log_det - k * HALF_LOG_2PI]


def _one_matrix(ops: Ops, matrix: torch.Tensor) -> torch.Tensor:
    """The matrix of a constant batch of equal matrices (one broadcast to the batch)."""
    matrix = torch.as_tensor(matrix)
    flat = matrix.reshape(-1, *matrix.shape[-2:])
    if not bool((flat == flat[0]).all()):
        raise ops.Unsupported("MultivariateNormal with a batch of different covariances")
    return flat[0]


def low_rank_multivariate_normal(
    ops: Ops, x: Value, loc: Value, cov_factor: Value, cov_diag: Value
) -> list:
    """A MultivariateNormal with covariance ``W W^T + diag(D)`` (both constant)."""
    if ops.is_var(cov_factor) or ops.is_var(cov_diag):
        raise ops.Unsupported("LowRankMultivariateNormal with a batched covariance")
    cov = cov_factor @ cov_factor.mT + torch.diag_embed(torch.as_tensor(cov_diag))
    return multivariate_normal(ops, x, loc, covariance_matrix=cov)


def dirichlet(ops: Ops, x: Value, concentration: Value) -> list:
    """``sum((a - 1) log x) + lgamma(sum a) - sum lgamma(a)`` over the last (event) dim; the
    first term vanishes for a flat Dirichlet (constant ``a`` of ones)."""
    weight = concentration - 1.0
    terms = [ops.lgamma(ops.sum_last(concentration)) - ops.sum_last(ops.lgamma(concentration))]
    if ops.is_var(weight) or bool((torch.as_tensor(weight) != 0).any()):
        terms.append(ops.sum_last(weight * ops.log(x)))
    return terms


def gaussian_random_walk(ops: Ops, x: Value, scale: Value, num_steps: int) -> list:
    """Normal(0, scale) increments of the path along the last dim, starting from 0."""
    if num_steps == 1:
        steps = x
    else:
        rest = ops.narrow(x, -1, 1, num_steps - 1) - ops.narrow(x, -1, 0, num_steps - 1)
        steps = ops.cat([ops.narrow(x, -1, 0, 1), rest], -1)
    return [
        -0.5 * ops.sum_last(ops.square(steps)) / ops.square(scale),
        -num_steps * (ops.log(scale) + HALF_LOG_2PI),
    ]


def _mvlgamma(ops: Ops, a: Value, p: int) -> Value:
    """``torch.mvlgamma(a, p)``: ``p (p - 1) / 4 log pi + sum_i lgamma(a - i / 2)``."""
    return p * (p - 1) / 4 * LOG_PI + sum((ops.lgamma(a - 0.5 * i) for i in range(p)), 0.0)


def lkj_cholesky(ops: Ops, x: Value, dim: int, concentration: Value) -> list:
    """``sum_i (2 (eta - 1) + dim - i - 1) log L_ii`` over the diagonal below the first
    entry, and the normalizer of Lewandowski, Kurowicka and Joe (as torch writes it)."""
    eta = concentration
    diagonal = ops.narrow(ops.diagonal(x), -1, 1, dim - 1)
    order = torch.arange(dim - 2, -1, -1, dtype=torch.float64)  # dim - i for i = 2..dim
    eta_last = ops.reshape(eta, (*ops.shape_of(eta), 1))
    unnormalized = ops.sum_last((2.0 * (eta_last - 1.0) + order) * ops.log(diagonal))
    dm1 = dim - 1
    alpha = eta + 0.5 * dm1
    normalizer = 0.5 * dm1 * LOG_PI + _mvlgamma(ops, alpha - 0.5, dm1) - ops.lgamma(alpha) * dm1
    return [unnormalized, -normalizer]


def wishart(
    ops: Ops, x: Value, df: Value, covariance_matrix: Value = None,
    precision_matrix: Value = None, scale_tril: Value = None,
) -> list:
    """torch's Wishart density of ``x`` given a constant scale: ``-df (p/2 log 2 + log|L|)
    - mvlgamma(df/2, p) + (df - p - 1)/2 log|x| - tr(S^-1 x)/2``."""
    matrix = next(m for m in (scale_tril, covariance_matrix, precision_matrix) if m is not None)
    if ops.is_var(matrix):
        raise ops.Unsupported("Wishart with a batched scale")
    if scale_tril is None:
        cov = covariance_matrix if precision_matrix is None else torch.linalg.inv(precision_matrix)
        scale_tril = torch.linalg.cholesky(cov)
    p = ops.shape_of(x)[-1]
    log_det_scale = torch.diagonal(scale_tril, dim1=-2, dim2=-1).log().sum(-1)
    inverse_scale = torch.cholesky_inverse(scale_tril)
    if ops.is_var(x):
        log_det_x = 2.0 * ops.sum_last(ops.cholesky_log_diagonal(x))
    else:
        log_det_x = torch.linalg.slogdet(torch.as_tensor(x, dtype=torch.float64)).logabsdet
    trace = ops.sum_last(ops.sum_last(x * inverse_scale.mT))
    return [
        -df * (0.5 * p * LOG_2 + log_det_scale),
        -_mvlgamma(ops, 0.5 * df, p),
        0.5 * (df - p - 1.0) * log_det_x,
        -0.5 * trace,
    ]


def relaxed_one_hot_categorical(
    ops: Ops, x: Value, temperature: Value, probs: Value = None, logits: Value = None
) -> list:
    """torch's ``ExpRelaxedCategorical`` density of ``log x`` and the ``-sum log x`` of the
    exponential that maps it onto the simplex (the logits' normalization cancels)."""
    if logits is None:  # torch's logits of normalized probabilities, for constant ones
        logits = ops.log(probs) if ops.is_var(probs) else probs_to_logits(
            probs / torch.as_tensor(probs).sum(-1, keepdim=True))
    k = ops.shape_of(x)[-1]
    log_x = ops.log(x)
    score = logits - log_x * temperature
    return [
        ops.sum_last(score) - k * ops.logsumexp(score, -1),
        math.lgamma(k) + (k - 1) * ops.log(temperature),
        -ops.sum_last(log_x),
    ]


# -- degenerate, improper and wrappers ------------------------------------------------------
def delta(ops: Ops, x: Value, v: Value, log_density: Value, event_dim: int) -> list:
    """``log_density`` where ``x == v`` in every event entry, -inf elsewhere."""
    indicator = ops.where(ops.compare("eq", x, v), 0.0, -math.inf)
    for _ in range(event_dim):
        indicator = ops.sum_last(indicator)
    return [indicator, log_density]


def improper_uniform(ops: Ops, x: Value, **_: Any) -> list:
    return []


def independent(ops: Ops, x: Value, base_distribution: Any, reinterpreted_batch_ndims: int) -> list:
    """The base's terms: the potential sums the reinterpreted dims with all the others."""
    return base_distribution.log_density(x)


def masked(ops: Ops, x: Value, base_dist: Any, mask: Value) -> list:
    if ops.is_var(mask):
        raise ops.Unsupported("Masked with a mask that depends on the position")
    return [ops.where(mask, term, 0.0) for term in base_dist.log_density(x)]


def event_ndims(dist: Any) -> int:
    """The event dims of a wrapped distribution (its ``len(event_shape)``): a family's own,
    plus the dims ``Independent`` reinterprets."""
    family, params = dist.family, dist.params
    if "reinterpreted_batch_ndims" in params:
        return params["reinterpreted_batch_ndims"] + event_ndims(params[family.wraps])
    if family.wraps is not None:
        return event_ndims(params[family.wraps])
    return family.event_dims(**params) if callable(family.event_dims) else family.event_dims


def mixture_event_dims(component_distribution: Any, **_: Any) -> int:
    return event_ndims(component_distribution)


def mixture_same_family(
    ops: Ops, x: Value, mixture_distribution: Any, component_distribution: Any
) -> list:
    """``logsumexp_k(log w_k + log p_k(x))`` over the components (the last batch dim of
    ``component_distribution``), each component's terms summed over its event dims."""
    k = event_ndims(component_distribution)
    shape = ops.shape_of(x)
    at_components = ops.reshape(x, (*shape[: len(shape) - k], 1, *shape[len(shape) - k:]))
    terms = component_distribution.log_density(at_components)
    full = broadcast_shapes(ops.shape_of(at_components), *(ops.shape_of(t) for t in terms))
    log_p = sum((ops.broadcast_to(t, full) for t in terms), 0.0)
    for _ in range(k):
        log_p = ops.sum_last(log_p)
    weights = mixture_distribution.params
    if weights.get("logits") is not None:
        log_w = ops.log_softmax(weights["logits"])
    else:
        probs = weights["probs"]
        total = ops.sum_last(probs)
        log_w = ops.log(probs) - ops.log(ops.reshape(total, (*ops.shape_of(total), 1)))
    return [ops.logsumexp(log_p + log_w, -1)]
