"""Planar and radial flow layers (Rezende & Mohamed, 2015) as invertible torch transforms.

Both act on vectors (``event_dim=1``) and compute ``log|det J|`` in closed form. Their raw
parameters are unconstrained; each layer maps them to the region where it is invertible:

- planar, ``y = z + û tanh(wᵀz + b)``: ``û = u + (m(wᵀu) - wᵀu) w / |w|²`` with
  ``m(x) = softplus(x + log(e - 1)) - 1``, so ``wᵀû = m(wᵀu) > -1`` and ``u = 0`` is the
  identity. The inverse solves the scalar equation for ``a = wᵀz`` (monotone in ``a``) by
  bisection, then takes one Newton step with gradients on, which gives the implicit-function
  gradient of the root.
- radial, ``y = z + β (z - z₀) / (α + |z - z₀|)``: ``α > 0`` and ``β = -α + softplus(β̂)``, so
  ``β > -α``; ``β̂ = log(e^α - 1)`` is the identity. The inverse is closed form: ``r = |z - z₀|``
  is the positive root of ``r² + (α + β - R) r - α R = 0`` with ``R = |y - z₀|``.

    >>> import torch
    >>> z = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
    >>> layer = PlanarTransform(torch.tensor([1.0, 0.5]), torch.tensor([0.8, -2.0]),
    ...                         torch.tensor(0.1))
    >>> y, log_det = layer.call_and_ladj(z)
    >>> torch.allclose(layer.inv(y), z, atol=1e-5), log_det.shape
    (True, torch.Size([2]))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Transform, constraints

__all__ = ["PlanarTransform", "RadialTransform", "call_and_ladj"]

_PLANAR_SHIFT = math.log(math.e - 1.0)  # softplus(_PLANAR_SHIFT) = 1, so m(0) = 0
_BISECTIONS = 80


def _positive_softplus(x: Tensor) -> Tensor:
    """softplus, never rounded down to 0."""
    return F.softplus(x).clamp_min(torch.finfo(x.dtype).tiny)


def call_and_ladj(transform: Transform, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(y, log|det dy/dx|)`` in one pass where the transform offers it (these layers and
    zuko's transforms do), else its call and its ``log_abs_det_jacobian``."""
    both = getattr(transform, "call_and_ladj", None)
    if both is not None:
        return both(x)
    y = transform(x)
    return y, transform.log_abs_det_jacobian(x, y)


class _VectorBijection(Transform):
    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class PlanarTransform(_VectorBijection):
    """``y = z + û tanh(wᵀz + b)`` from raw ``w`` (D,), ``u`` (D,), ``b`` (scalar).
    ``slack = 1 + wᵀû > 0`` is kept apart so that no step cancels to ``wᵀû = -1``."""

    def __init__(self, w: Tensor, u: Tensor, b: Tensor):
        super().__init__()
        self.w, self.b = w, b
        wu = w @ u
        self.slack = _positive_softplus(wu + _PLANAR_SHIFT)
        self.u_hat = u + (self.slack - 1.0 - wu) * w / (w @ w)

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(z @ self.w + self.b)
        y = z + self.u_hat * h.unsqueeze(-1)
        # 1 + (1 - h²) wᵀû = h² + (1 - h²) slack: two terms that are never negative
        return y, torch.log(h**2 + (1.0 - h**2) * self.slack)

    def _inverse(self, y: Tensor) -> Tensor:
        # wᵀy = a + wᵀû tanh(a + b) with a = wᵀz: strictly increasing in a, and |tanh| < 1
        # brackets the root within |wᵀû| of wᵀy.
        target = y @ self.w
        wu_hat = self.slack - 1.0
        with torch.no_grad():
            reach = wu_hat.abs()
            low, high = target - reach, target + reach
            for _ in range(_BISECTIONS):
                mid = (low + high) / 2
                above = mid + wu_hat * torch.tanh(mid + self.b) > target
                low, high = torch.where(above, low, mid), torch.where(above, mid, high)
            a = (low + high) / 2
        h = torch.tanh(a + self.b)
        a = a - (a + wu_hat * h - target) / (h**2 + (1.0 - h**2) * self.slack)
        return y - self.u_hat * torch.tanh(a + self.b).unsqueeze(-1)


class RadialTransform(_VectorBijection):
    """``y = z + β (z - z₀) / (α + |z - z₀|)`` from ``center`` z₀ (D,), ``alpha`` (> 0) and
    raw ``beta_raw``; ``slack = α + β = softplus(β̂) > 0`` is kept apart, as in the planar
    layer, and every factor of the determinant is a sum of terms that are never negative."""

    def __init__(self, center: Tensor, alpha: Tensor, beta_raw: Tensor):
        super().__init__()
        self.center, self.alpha = center, alpha
        self.slack = _positive_softplus(beta_raw)
        self.beta = self.slack - alpha

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        diff = z - self.center
        r = diff.norm(dim=-1)
        h = 1.0 / (self.alpha + r)
        y = z + (self.beta * h).unsqueeze(-1) * diff
        # det J = (1 + βh)^(D-1) (1 + βh + βh'r), h' = -h²; with β = slack - α:
        # 1 + βh = (r + slack) h and 1 + βh + βh'r = (r² + 2αr + α slack) h²
        dim = z.shape[-1]
        log_det = ((dim - 1) * torch.log((r + self.slack) * h)
                   + torch.log((r**2 + 2 * self.alpha * r + self.alpha * self.slack) * h**2))
        return y, log_det

    def _inverse(self, y: Tensor) -> Tensor:
        diff = y - self.center
        big_r = diff.norm(dim=-1)
        b = self.slack - big_r  # α + β - R
        root = torch.sqrt(b**2 + 4.0 * self.alpha * big_r)
        # the positive root of r² + b r - αR, in the form without cancellation for each sign
        r = torch.where(b >= 0, 2.0 * self.alpha * big_r / (b + root), (root - b) / 2.0)
        return self.center + diff * ((self.alpha + r) / (r + self.slack)).unsqueeze(-1)
