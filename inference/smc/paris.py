"""PaRIS (Olsson & Westerborn 2017): online smoothing of an additive functional
``S_K = sum_{k <= K} h_k(x_{k-1}, x_k)`` of a filtered Markov program, ``E[S_K | y_{0:K}]``.

Each particle ``i`` of step ``k`` carries a statistic ``tau_k^i``, an estimate of
``E[S_k | x_k = xi_k^i, y_{0:k}]``. When step ``k`` is filtered, each particle draws
``num_backward`` indices ``J`` of step ``k - 1``'s particles from the backward kernel
``∝ W_{k-1}^l p(xi_k^i | xi_{k-1}^l)`` and averages ``tau_{k-1}^J + h_k(xi_{k-1}^J, xi_k^i)``;
``sum_i W_k^i tau_k^i`` estimates ``E[S_k | y_{0:k}]``. Only the last step's particles and
statistics are kept, so memory is linear in the particles whatever the number of steps, and
the estimate is consistent for any fixed ``num_backward >= 2`` (with 1 it degenerates like
the filter's paths). The backward kernel is sampled exactly from the program's transition
density between the two particle sets (``transition_log_density``, the smoothing protocol
of :mod:`.smoothing`): ``O(N^2)`` density evaluations per step, batched.

``h(k, prev, current)`` gets the step's new latents ``current`` ``{address: (M, *shape)}`` and
the previous step's ``prev`` (None at step 0) and returns ``(M, *shape)`` terms (any trailing
shape: a vector of functionals is smoothed at once).

    >>> import torch
    >>> from ppl import infer, model, sample
    >>> from ppl.stdlib import Normal
    >>> from ppl.inference.smc import SMC
    >>> @model
    ... def walk(ys):
    ...     x = 0.0
    ...     for t in range(len(ys)):
    ...         x = sample(f"x_{t}", Normal(0.9 * x, 1.0))
    ...         sample(f"y_{t}", Normal(x, 1.0), obs=ys[t])
    >>> total = AdditiveSmoother(lambda k, prev, cur: cur[f"x_{k}"])
    >>> post = infer(walk, torch.zeros(4), method=SMC(200, additive=total), seed=0)
    >>> post.extra["additive"].shape, len(post.extra["additive_online"])
    (torch.Size([]), 4)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ppl.inference.mcmc.base import check_count

from .smoothing import TransitionDensity

__all__ = ["AdditiveSmoother", "ParisRun"]

AdditiveTerm = Callable[[int, Mapping[str, Tensor] | None, Mapping[str, Tensor]], Tensor]


@dataclass(frozen=True)
class AdditiveSmoother:
    """The particle filter's PaRIS hook (``SMC(..., additive=AdditiveSmoother(h))``): the
    additive functional's terms ``h`` and ``num_backward`` draws per particle and step."""

    h: AdditiveTerm
    num_backward: int = 2

    def __post_init__(self) -> None:
        if not callable(self.h):
            raise TypeError(f"AdditiveSmoother: h must be a function h(k, prev, current), "
                            f"got {self.h!r}")
        check_count("AdditiveSmoother", "num_backward", self.num_backward, 1)

    def start(self, program: Any) -> ParisRun:
        if program.num_steps > 1 and not isinstance(program, TransitionDensity):
            raise TypeError(f"AdditiveSmoother: {type(program).__name__} has no "
                            "transition_log_density(k, prev, values); PaRIS samples the "
                            "backward kernel from it")
        return ParisRun(self, program)


@dataclass
class ParisRun:
    """One filter run's PaRIS state: the last step's particles, weights and statistics, and
    the online estimates so far."""

    settings: AdditiveSmoother
    program: Any
    values: dict[str, Tensor] | None = None
    log_weights: Tensor | None = None
    tau: Tensor | None = None
    online: list[Tensor] = field(default_factory=list)

    def update(self, k: int, values: Mapping[str, Tensor], log_weights: Tensor,
               generator: torch.Generator) -> None:
        """Fold in step ``k``: its new latents ``values`` ``(N, *shape)`` and normalized
        ``log_weights`` after the step's weighting."""
        if not values:
            raise ValueError(f"AdditiveSmoother: step {k} draws no latent; PaRIS needs every "
                             "step to draw the state it smooths")
        if k == 0:
            tau = self._term(k, None, values)
        else:
            tau = self._backward(k, values, generator)
        self.values, self.log_weights, self.tau = dict(values), log_weights, tau
        w = torch.exp(log_weights).reshape(-1, *([1] * (tau.dim() - 1)))
        self.online.append((w * tau).sum(0))

    def report(self) -> dict[str, Any]:
        return {"additive": self.online[-1], "additive_online": self.online}

    def _backward(self, k: int, values: Mapping[str, Tensor], generator: torch.Generator
                  ) -> Tensor:
        reads = self.program.needed_after(k - 1)
        carried = sorted(set(reads) - set(self.values))
        if carried:
            raise ValueError(f"AdditiveSmoother: step {k} reads {carried}, drawn before step "
                             f"{k - 1}; PaRIS needs a program Markov in its steps' latents")
        prev = {a: v for a, v in self.values.items() if a in reads}
        log_p = self.program.transition_log_density(k, prev, values)  # (M, N)
        m, draws = log_p.shape[0], self.settings.num_backward
        probs = torch.softmax(self.log_weights[None, :] + log_p, dim=1)
        if not torch.isfinite(probs).all():
            raise ValueError(f"AdditiveSmoother: step {k}: some particle has zero transition "
                             "density from every particle of the step before")
        index = torch.multinomial(probs, draws, replacement=True, generator=generator)  # (M, Ñ)
        flat = index.reshape(-1)
        terms = self._term(k, {a: v[flat] for a, v in self.values.items()},
                           {a: v.repeat_interleave(draws, dim=0) for a, v in values.items()})
        tau = self.tau[flat] + terms
        return tau.reshape(m, draws, *tau.shape[1:]).mean(1)

    def _term(self, k: int, prev: Mapping[str, Tensor] | None,
              current: Mapping[str, Tensor]) -> Tensor:
        rows = next(iter(current.values())).shape[0]
        term = torch.as_tensor(self.settings.h(k, prev, current), dtype=torch.float64)
        if term.dim() == 0 or term.shape[0] != rows:
            raise ValueError(f"AdditiveSmoother: h at step {k} returned shape "
                             f"{tuple(term.shape)}; expected ({rows}, ...), one term per "
                             "particle")
        return term
