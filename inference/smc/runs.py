"""The spread of an SMC evidence estimate across independent runs.

One run's ``log_evidence`` is the log of an unbiased estimate ``Zhat`` of ``p(y)``; how far
one run can be trusted is the variance of ``log Zhat`` between runs (for a particle filter it
grows like ``steps / num_particles``: the usual guide to the number of particles is keeping
it near 1). :func:`log_evidence_runs` runs a method once per seed, each run exactly
``infer(..., method=method, seed=s)``; for ``SMC`` the model is traced and lowered once and
only the filter runs again. :class:`EvidenceRuns` holds the runs' estimates, their mean and
variance, and the pooled estimate ``log mean_r Zhat_r`` (unbiased for ``Z`` itself, with the
variance of one run divided by the number of runs).

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> from ppl.inference.smc import SMC
    >>> @model
    ... def walk(ys):
    ...     x = 0.0
    ...     for t in range(len(ys)):
    ...         x = sample(f"x_{t}", Normal(0.9 * x, 1.0))
    ...         sample(f"y_{t}", Normal(x, 1.0), obs=ys[t])
    >>> runs = log_evidence_runs(walk, (torch.zeros(5),), SMC(100), seeds=range(6))
    >>> runs.log_evidences.shape, bool(runs.var > 0)
    (torch.Size([6]), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ppl.handlers import seed as seed_scope
from ppl.infer import infer
from ppl.model import Model

from .method import SMC
from .result import SMCPosterior

__all__ = ["EvidenceRuns", "log_evidence_runs"]


@dataclass(frozen=True)
class EvidenceRuns:
    """Independent runs' ``log_evidences (R,)`` with their ``seeds``; ``runs`` the results."""

    log_evidences: Tensor
    seeds: tuple[int, ...]
    runs: list[SMCPosterior] = field(repr=False)

    @property
    def mean(self) -> float:
        """The mean of ``log Zhat`` (below ``log Z`` on average: Jensen)."""
        return float(self.log_evidences.mean())

    @property
    def var(self) -> float:
        """The sample variance of ``log Zhat`` across the runs."""
        return float(self.log_evidences.var())

    @property
    def pooled(self) -> float:
        """``log`` of the mean of the runs' ``Zhat``: the unbiased estimate of all runs."""
        return float(torch.logsumexp(self.log_evidences, 0)) - math.log(len(self.seeds))


def log_evidence_runs(model: Model | Callable, args: tuple = (), method: Any = None,
                      seeds: Iterable[int] = range(10), kwargs: dict | None = None,
                      passes: Sequence[Callable] = ()) -> EvidenceRuns:
    """One run of ``method`` (default ``SMC()``) on ``model(*args, **kwargs)`` per seed; an
    ``SMC`` method lowers the model once for all of them (see the module docstring)."""
    model = model if isinstance(model, Model) else Model(model)
    method = SMC() if method is None else method
    kwargs, seeds = dict(kwargs or {}), tuple(int(s) for s in seeds)
    if len(seeds) < 2:
        raise ValueError(f"log_evidence_runs needs at least 2 seeds for a variance, got "
                         f"{list(seeds)}")
    if isinstance(method, SMC):
        program = method.engine(model, args, kwargs, passes=passes)
        driver, _ = method.driver(program)
        runs = []
        for s in seeds:
            with seed_scope(s):
                runs.append(driver.run_program(program))
    else:
        runs = [infer(model, *args, method=method, seed=s, passes=passes, **kwargs)
                for s in seeds]
    if not all(hasattr(r, "log_evidence") for r in runs):
        raise TypeError(f"{type(method).__name__} gives no log_evidence to compare across runs")
    return EvidenceRuns(torch.stack([torch.as_tensor(r.log_evidence, dtype=torch.float64)
                                     for r in runs]), seeds, runs)
