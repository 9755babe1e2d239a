"""Forward filtering, backward simulation (FFBSi; Godsill, Doucet & West 2004): whole-path
draws from the smoothing distribution ``p(x_{0:K} | y_{0:K})`` of a filtered Markov program.

The filter keeps every step's particles and normalized weights (``keep_history=True``).
A path's last state is drawn from the final weights; going backwards, its state at step
``k`` is drawn from ``W_{k,i} p(x_{k+1} | x_{k,i})``, which needs the program's transition
density between particle sets (:class:`TransitionDensity`, an extension of the particle
protocol). The program must be Markov in its steps' own latents: what step ``k + 1`` reads
(``needed_after(k)``) is drawn at step ``k``. Cost ``O(num_paths * N)`` per step.

    >>> import torch
    >>> history = [StepHistory({"x0": torch.tensor([0.0, 1.0])}, torch.log(torch.tensor(
    ...     [0.5, 0.5], dtype=torch.float64)))]
    >>> class OneStep:
    ...     num_steps = 1
    >>> paths = backward_simulation(OneStep(), history, 4, torch.Generator().manual_seed(0))
    >>> paths["x0"].shape
    torch.Size([4])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from ppl.inference.lowering.particles import ParticleProgram

from .resampling import resample

__all__ = ["TransitionDensity", "StepHistory", "backward_simulation"]


@runtime_checkable
class TransitionDensity(Protocol):
    """A particle program that can score step ``k``'s latents against every particle of the
    step before: ``transition_log_density(k, prev, values)`` with ``prev`` the values of
    ``needed_after(k - 1)``, each ``(N, *shape)``, and ``values`` step ``k``'s latents, each
    ``(M, *shape)``, returns the ``(M, N)`` float64 log densities ``log p(values_m | prev_n)``."""

    def transition_log_density(self, k: int, prev: Mapping[str, Tensor],
                               values: Mapping[str, Tensor]) -> Tensor: ...


class StepHistory(NamedTuple):
    """One filter step's new latents ``(N, *shape)`` and normalized log weights ``(N,)``."""

    values: dict[str, Tensor]
    log_weights: Tensor


def check_markov(program: ParticleProgram, history: Sequence[StepHistory]) -> None:
    """Raise unless backward simulation applies to ``program`` (see the module docstring)."""
    if not isinstance(program, TransitionDensity) and len(history) > 1:
        raise TypeError(f"{type(program).__name__} has no transition_log_density(k, prev, "
                        "values): backward simulation needs the transition density between "
                        "particle sets")
    for k in range(len(history) - 1):
        carried = sorted(set(program.needed_after(k)) - set(history[k].values))
        if carried:
            raise ValueError(f"step {k + 1} reads {carried}, drawn before step {k}: backward "
                             "simulation needs a program that is Markov in its steps' latents")


def backward_simulation(program: ParticleProgram, history: Sequence[StepHistory],
                        num_paths: int, generator: torch.Generator | None = None
                        ) -> dict[str, Tensor]:
    """``num_paths`` smoothing paths: every latent address of every step, ``(num_paths,
    *shape)``, drawn by FFBSi from the filter's ``history``."""
    check_markov(program, history)
    last = history[-1]
    index = resample(last.log_weights, "multinomial", num_paths, generator, "the final weights")
    chosen = {a: v[index] for a, v in last.values.items()}
    paths = dict(chosen)
    for k in range(len(history) - 2, -1, -1):
        step = history[k]
        prev = {a: v for a, v in step.values.items() if a in program.needed_after(k)}
        log_p = program.transition_log_density(k + 1, prev, chosen)
        if tuple(log_p.shape) != (num_paths, step.log_weights.shape[0]):
            raise ValueError(f"transition_log_density(step {k + 1}) returned shape "
                             f"{tuple(log_p.shape)}; expected ({num_paths}, "
                             f"{step.log_weights.shape[0]})")
        index = resample(step.log_weights + log_p, "multinomial", 1, generator,
                         f"backward step {k}")[:, 0]
        chosen = {a: v[index] for a, v in step.values.items()}
        paths.update(chosen)
    return paths
