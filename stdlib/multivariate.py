"""Multivariate families and mixtures from torch.distributions, with the ppl mixin.

    >>> import torch
    >>> from ppl.stdlib import MultivariateNormal
    >>> d = MultivariateNormal(torch.zeros(2), scale_tril=torch.eye(2))
    >>> list(d.ppl_args)
    ['loc', 'scale_tril']
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.distributions as td

from . import constraints
from .base import DistributionMixin

_MATRIX = ("covariance_matrix", "precision_matrix", "scale_tril")


class Dirichlet(DistributionMixin, td.Dirichlet):
    """Dirichlet(concentration) on the simplex (event shape (K,))."""

    _ppl_params = ("concentration",)


class MultivariateNormal(DistributionMixin, td.MultivariateNormal):
    """Multivariate normal given one of covariance_matrix, precision_matrix, scale_tril."""

    _ppl_params = ("loc", *_MATRIX)
    _ppl_exclusive = _MATRIX


class LowRankMultivariateNormal(DistributionMixin, td.LowRankMultivariateNormal):
    """Multivariate normal with covariance ``cov_factor @ cov_factor.T + diag(cov_diag)``."""

    _ppl_params = ("loc", "cov_factor", "cov_diag")


class LKJCholesky(DistributionMixin, td.LKJCholesky):
    """LKJ prior on the Cholesky factor of a ``dim`` x ``dim`` correlation matrix.

    Sampled by the onion method; no rsample. torch (2.x) draws row k (k >= 2) of the factor
    with squared norm ~ Beta(k - 1/2, .) instead of Beta(k/2, .) (Lewandowski et al. 2009,
    sec. 3.2), which makes the correlations of later rows too large (for dim=3, eta=1:
    E[r_20^2] = 0.30 instead of 0.25) while ``log_prob`` is right. The Beta is corrected
    here, so samples agree with ``log_prob`` (exchangeable Beta marginals, tested).
    """

    _ppl_params = ("dim", "concentration")

    def __init__(
        self,
        dim: int,
        concentration: torch.Tensor | float = 1.0,
        validate_args: bool | None = False,
    ) -> None:
        super().__init__(dim, concentration, validate_args=validate_args)
        beta = self._beta
        rows = torch.arange(dim, dtype=beta.concentration1.dtype, device=beta.concentration1.device)
        conc1 = (0.5 * rows).clamp(min=0.5)  # row k: k/2 (row 0 is unused)
        self._beta = td.Beta(conc1.expand_as(beta.concentration1), beta.concentration0)


class Wishart(DistributionMixin, td.Wishart):
    """Wishart(df, one of covariance_matrix, precision_matrix, scale_tril); mean ``df * cov``.

    torch checks ``df > dim - 1`` in ``__init__`` whatever ``validate_args`` says.
    ``rsample`` is replaced: torch 2.x flags every *valid* draw as singular (a missing
    negation), warns on each call and redraws them; here only draws that are not positive
    definite are redrawn, and a warning is raised only if some still are.
    """

    _ppl_params = ("df", *_MATRIX)
    _ppl_exclusive = _MATRIX

    def rsample(
        self, sample_shape: Sequence[int] = torch.Size(), max_try_correction: int = 10
    ) -> torch.Tensor:
        sample_shape = torch.Size(sample_shape)
        sample = self._bartlett_sampling(sample_shape)
        for _ in range(max_try_correction):
            singular = ~self.support.check(sample)
            if not singular.any():
                return sample
            redraw = self._bartlett_sampling(sample_shape)
            sample = torch.where(singular[..., None, None], redraw, sample)
        if (~self.support.check(sample)).any():
            warnings.warn(
                f"Wishart: singular samples remain after {max_try_correction} redraws; "
                "df is probably too close to dim - 1",
                stacklevel=2,
            )
        return sample


class RelaxedOneHotCategorical(DistributionMixin, td.RelaxedOneHotCategorical):
    """Concrete / Gumbel-softmax on the simplex, a relaxation of OneHotCategorical.

    ``temperature`` is added to torch's ``arg_constraints`` so the runtime validates it.
    """

    arg_constraints = {
        "temperature": constraints.positive,
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
    }
    _ppl_params = ("temperature", "probs", "logits")
    _ppl_exclusive = ("probs", "logits")


class MixtureSameFamily(DistributionMixin, td.MixtureSameFamily):
    """Mixture over the rightmost batch dim of ``component_distribution``.

    ``mixture_distribution`` is a Categorical over that dim. No rsample (as in torch).
    """

    _ppl_params = ("mixture_distribution", "component_distribution")
