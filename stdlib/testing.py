"""Checks for distribution families, for ppl's tests and for users adding a family.

* ``ks_pvalue`` / ``chi2_pvalue``: goodness of fit of samples to a CDF or to
  ``exp(log_prob)`` over a finite set of values (the rest of the support pooled);
* ``numerical_cdf``: a CDF from ``log_prob`` by quadrature, where scipy has none;
* ``assert_rebuilds``: the ``ppl_args`` contract of :mod:`ppl.registry`.

scipy is needed by the first two (it is a test dependency of ppl, not a runtime one).

    >>> import torch
    >>> from ppl.stdlib import Normal
    >>> from ppl.stdlib.testing import assert_rebuilds, ks_pvalue
    >>> import scipy.stats
    >>> torch.manual_seed(0) and None
    >>> ks_pvalue(Normal(0.0, 1.0).sample((2000,)), scipy.stats.norm().cdf) > 1e-4
    True
    >>> assert_rebuilds(Normal(torch.zeros(2), 1.0).expand([3, 2]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.distributions import Distribution

from ppl.registry import family_of


def ks_pvalue(samples: torch.Tensor, cdf: Callable[[np.ndarray], np.ndarray]) -> float:
    """Kolmogorov-Smirnov p-value of 1-D ``samples`` against the CDF ``cdf`` (numpy in/out)."""
    from scipy import stats

    x = samples.detach().double().flatten().numpy()
    return float(stats.kstest(x, cdf).pvalue)


def numerical_cdf(
    log_prob: Callable[[torch.Tensor], torch.Tensor], low: float, high: float, num: int = 20001
) -> Callable[[np.ndarray], np.ndarray]:
    """CDF on [low, high] by trapezoidal integration of ``exp(log_prob)``, renormalized.

    Renormalizing makes the check insensitive to mass outside [low, high]; test the
    normalizer separately (e.g. that the integral is close to 1).
    """
    grid = torch.linspace(low, high, num, dtype=torch.float64)
    density = log_prob(grid).exp().nan_to_num(0.0).numpy()
    xs = grid.numpy()
    mass = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(xs))])
    mass /= mass[-1]
    return lambda x: np.interp(x, xs, mass)


def chi2_pvalue(
    samples: torch.Tensor,
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    values: Sequence[float] | torch.Tensor,
    min_expected: float = 5.0,
) -> float:
    """Chi-square p-value of discrete ``samples`` against ``exp(log_prob(values))``.

    ``values`` are the support points tested one by one; cells expected to hold fewer
    than ``min_expected`` draws, and everything outside ``values``, are pooled into one
    remainder cell (so ``values`` need not exhaust an infinite support).
    """
    from scipy import stats

    x = samples.detach().double().flatten()
    values = torch.as_tensor(values, dtype=torch.float64)
    n = x.numel()
    probs = log_prob(values).double().exp()
    counts = (x.unsqueeze(-1) == values).sum(0).double()
    keep = probs * n >= min_expected
    observed = counts[keep].tolist()
    expected = (probs[keep] * n).tolist()
    rest_expected = n - sum(expected)
    rest_observed = n - sum(observed)
    if rest_expected > 1e-9 * n or rest_observed > 0:
        observed.append(rest_observed)
        expected.append(max(rest_expected, 1e-12))
    result = stats.chisquare(np.array(observed), np.array(expected) / sum(expected) * n)
    return float(result.pvalue)


def assert_rebuilds(dist: Distribution, value: torch.Tensor | None = None) -> None:
    """``get_family(name).build(**dist.ppl_args)`` has dist's shapes and ``log_prob``.

    Also checks that ``ppl_args`` is ordered as the family's ``params``. ``value`` defaults
    to a draw from ``dist``.
    """
    family = family_of(dist)
    assert family is not None, f"{type(dist).__name__} is not a registered family"
    args = dist.ppl_args  # type: ignore[attr-defined]
    order = [p for p in family.params if p in args]
    assert list(args) == order, f"{family.name}: ppl_args {list(args)} not in order {order}"
    rebuilt = family.build(**args)
    assert type(rebuilt) is type(dist)
    assert rebuilt.batch_shape == dist.batch_shape, (rebuilt.batch_shape, dist.batch_shape)
    assert rebuilt.event_shape == dist.event_shape, (rebuilt.event_shape, dist.event_shape)
    if value is None:
        value = dist.sample()
    expected, actual = dist.log_prob(value), rebuilt.log_prob(value)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, equal_nan=True)
