"""Discrete families from torch.distributions, with the ppl mixin.

Families parameterized by ``probs`` or ``logits`` record which one they were given, and
``ppl_args`` returns only that one.

    >>> from ppl.stdlib import Bernoulli
    >>> Bernoulli(logits=0.0).ppl_args
    {'logits': tensor(0.)}
"""

from __future__ import annotations

import torch.distributions as td

from .base import DistributionMixin

_PROBS_OR_LOGITS = ("probs", "logits")


class Bernoulli(DistributionMixin, td.Bernoulli):
    """Bernoulli on {0, 1}; enumerable."""

    _ppl_params = _PROBS_OR_LOGITS
    _ppl_exclusive = _PROBS_OR_LOGITS


class Binomial(DistributionMixin, td.Binomial):
    """Binomial(total_count, probs | logits) on {0, ..., total_count}; enumerable."""

    _ppl_params = ("total_count", *_PROBS_OR_LOGITS)
    _ppl_exclusive = _PROBS_OR_LOGITS


class Categorical(DistributionMixin, td.Categorical):
    """Categorical on {0, ..., K-1} (K = probs.shape[-1]); enumerable."""

    _ppl_params = _PROBS_OR_LOGITS
    _ppl_exclusive = _PROBS_OR_LOGITS


class OneHotCategorical(DistributionMixin, td.OneHotCategorical):
    """Categorical with one-hot vectors as values (event shape (K,)); enumerable."""

    _ppl_params = _PROBS_OR_LOGITS
    _ppl_exclusive = _PROBS_OR_LOGITS


class Multinomial(DistributionMixin, td.Multinomial):
    """Counts of ``total_count`` (a Python int) categorical draws; event shape (K,)."""

    _ppl_params = ("total_count", *_PROBS_OR_LOGITS)
    _ppl_exclusive = _PROBS_OR_LOGITS


class Poisson(DistributionMixin, td.Poisson):
    """Poisson(rate) on the nonnegative integers."""

    _ppl_params = ("rate",)


class Geometric(DistributionMixin, td.Geometric):
    """Number of failures before the first success, success probability ``probs``."""

    _ppl_params = _PROBS_OR_LOGITS
    _ppl_exclusive = _PROBS_OR_LOGITS


class NegativeBinomial(DistributionMixin, td.NegativeBinomial):
    """Successes (probability ``probs``) before ``total_count`` failures (torch's convention).

    Mean ``total_count * probs / (1 - probs)``. For Stan's mean/dispersion form see
    :class:`~ppl.stdlib.counts.NegativeBinomial2`.
    """

    _ppl_params = ("total_count", *_PROBS_OR_LOGITS)
    _ppl_exclusive = _PROBS_OR_LOGITS
