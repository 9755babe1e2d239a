"""``OrderedLogistic``: ordinal regression (Stan's ``ordered_logistic``), values 0..K-1.

With cutpoints c_1 < ... < c_{K-1} and predictor eta, ``P(y <= k) = sigmoid(c_{k+1} - eta)``,
so ``P(y = k) = sigmoid(c_{k+1} - eta) - sigmoid(c_k - eta)`` with c_0 = -inf, c_K = +inf.
It is a Categorical whose logits are computed from (predictor, cutpoints) in log space.

    >>> import torch
    >>> from ppl.stdlib import OrderedLogistic
    >>> d = OrderedLogistic(torch.tensor(0.0), torch.tensor([-1.0, 1.0]))
    >>> d.probs.sum().item(), d.support.upper_bound
    (1.0, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ppl.shapes import broadcast_shapes

from . import constraints
from ._math import log1mexp
from .discrete import Categorical


def ordinal_logits(predictor: torch.Tensor, cutpoints: torch.Tensor) -> torch.Tensor:
    """log P(y = k), k = 0..K-1, stable for any spacing of the cutpoints.

    For a < b: ``log(sigmoid(b) - sigmoid(a)) = b + log(1 - e^(a-b)) - softplus(a) -
    softplus(b)``; the last category is ``log sigmoid(eta - c_{K-1})``.
    """
    upper = cutpoints - predictor.unsqueeze(-1)
    neg_inf = torch.full_like(upper[..., :1], -torch.inf)
    lower = torch.cat([neg_inf, upper[..., :-1]], dim=-1)
    inner = upper + log1mexp(lower - upper) - F.softplus(lower) - F.softplus(upper)
    last = -F.softplus(upper[..., -1:])
    return torch.cat([inner, last], dim=-1)


class OrderedLogistic(Categorical):
    """Ordinal outcome in {0, ..., K-1} given ``predictor`` and K-1 ordered ``cutpoints``."""

    arg_constraints = {"predictor": constraints.real, "cutpoints": constraints.ordered}
    _ppl_params = ("predictor", "cutpoints")
    _ppl_exclusive = ()

    def __init__(
        self,
        predictor: torch.Tensor | float,
        cutpoints: torch.Tensor,
        validate_args: bool | None = False,
    ) -> None:
        cutpoints = torch.as_tensor(cutpoints)
        predictor = torch.as_tensor(predictor, dtype=cutpoints.dtype, device=cutpoints.device)
        if cutpoints.dim() == 0 or cutpoints.shape[-1] == 0:
            raise ValueError("OrderedLogistic needs at least one cutpoint (a vector, last dim)")
        batch_shape = broadcast_shapes(predictor.shape, cutpoints.shape[:-1])
        self.predictor = predictor.expand(batch_shape)
        self.cutpoints = cutpoints.expand(batch_shape + cutpoints.shape[-1:])
        logits = ordinal_logits(self.predictor, self.cutpoints)
        super().__init__(logits=logits, validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> OrderedLogistic:
        new = self._get_checked_instance(OrderedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.predictor = self.predictor.expand(batch_shape)
        new.cutpoints = self.cutpoints.expand(batch_shape + self.cutpoints.shape[-1:])
        return super().expand(batch_shape, _instance=new)
