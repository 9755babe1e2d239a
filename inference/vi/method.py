"""The ``VI`` infer method: fit a guide by stochastic optimization of an objective program.

Each step evaluates the objective's surrogate (:mod:`.objectives`), takes one optimizer step
on the unconstrained params of a param store of the run's own, then the LR schedule's
step. Gradients can be clipped by norm; with ``tolerance`` the run stops once the mean loss
of the last ``window`` steps changes by less than ``tolerance`` (relative) from the window
before. ``checkpoint_every`` hands a :class:`VICheckpoint` to ``on_checkpoint``; Ctrl-C
raises :class:`TrainingInterrupted` with one; ``VI(..., resume=checkpoint)`` continues to
exactly the losses of the uninterrupted run (params, optimizer, schedule, baselines and
the random stream are all in it; it pickles with ``torch.save``).

The reparameterized ELBO of a location-scale autoguide (AutoNormal, AutoMultivariateNormal,
AutoLowRankMultivariateNormal, AutoDelta) on a model without params trains on the model's
flat potential (:mod:`.fast`): the same params, optimizer, draws and results, with no
autograd graph through the model. Any other run whose guide and model trace to graphs
(networks, constrained params, minibatches: a VAE), with any objective, takes the compiled
step (:mod:`.compiled`): generated code for guide and model under the same objective
program, with no handler run per step. ``res.extra["path"]`` says
which path ran, or why the faster ones were refused; a run left on the general path
though ``fast_path`` (the default) asked for a faster one warns (a :class:`FastPathWarning`
naming why), ``VI(..., fast_path=False)`` takes the general path without one.

    >>> import torch
    >>> from ppl import infer, model, sample
    >>> from ppl.stdlib import Normal
    >>> from ppl.inference.vi import AutoNormal
    >>> @model
    ... def m():
    ...     sample("y", Normal(sample("z", Normal(0.0, 1.0)), 1.0), obs=torch.tensor(2.0))
    >>> res = infer(m, method=VI(AutoNormal(m), steps=300, lr=0.05), seed=0)
    >>> round(float(res.samples["z"].mean()), 1), res.losses.shape
    (1.0, torch.Size([300]))
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ppl.errors import ModelError
from ppl.handlers import block, replay, trace
from ppl.inference.results.summary import Summary, summarize
from ppl.model import Model
from ppl.params import ParamStore
from ppl.randomness import forked, set_stream_state, stream_state
from ppl.subsample import subsample
from ppl.vectorize import batch_ndims, pilot_trace, vectorized_trace

from ..lowering.flat import FastPathWarning
from .compiled import COMPILED, CheckedStep, compiled_objective
from .fast import SLOW, fast_elbo
from .objectives import ELBO, Expectation, Surrogate
from .optim import optimizer_options, stepper

__all__ = ["VI", "VIResult", "VICheckpoint", "TrainingInterrupted", "TrainedGuide"]


@dataclass
class VICheckpoint:
    """A run as it stood after ``step`` steps."""

    step: int
    losses: list[float]
    params: dict[str, Any]
    optimizer: dict[str, Any]
    schedule: dict[str, Any] | None
    objective: dict[str, Any]
    rng_state: Tensor


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``VI``: ``.checkpoint`` resumes the run with ``VI(..., resume=)``."""

    def __init__(self, checkpoint: VICheckpoint):
        super().__init__(f"VI interrupted after {checkpoint.step} steps")
        self.checkpoint = checkpoint


class TrainedGuide:
    """A guide bound to the param store it was trained in: calling it runs the guide with
    those params (so ``Importance(guide=result.guide)`` proposes from the fit)."""

    def __init__(self, guide: Callable, store: ParamStore):
        self.guide, self.store = guide, store

    def __call__(self, *args, **kwargs) -> Any:
        with self.store:
            return self.guide(*args, **kwargs)

    def __repr__(self) -> str:
        return f"TrainedGuide({self.guide!r}, {self.store!r})"


@dataclass
class VIResult:
    """``losses`` per step; ``guide`` (bound to ``params``); ``samples``: draws of the model's
    latent and deterministic sites from the trained guide, ``(num_samples, *shape)``;
    ``log_evidence_bound`` the objective's value at the end (a bound on log p(x): lower for
    ELBO/IWAE/..., upper for CUBO), averaged over repeated evaluations, with its standard
    error; ``checkpoint`` resumes training; ``extra["path"]``: the training path taken
    (``"fast (native potential)"``, ``"compiled (generated guide and model code)"``, with
    ``"; slow from evaluation <n>: <why>"`` if a later check found it stale, or ``"slow: <why
    the fast one was refused>; not compiled: <why>"``)."""

    losses: Tensor
    guide: TrainedGuide
    params: ParamStore
    samples: dict[str, Tensor]
    log_evidence_bound: Tensor
    log_evidence_bound_se: Tensor
    checkpoint: VICheckpoint
    converged: bool
    objective: Expectation
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> Summary:
        """Mean, sd and quantiles of the guide's draws of each site."""
        some = next(iter(self.samples.values()))
        weights = torch.ones(some.shape[0], dtype=some.dtype)
        return summarize(self.samples, weights=weights,
                         notes=[f"{len(self.losses)} steps of {self.objective!r}; "
                                f"bound {float(self.log_evidence_bound):.4g} "
                                f"± {float(self.log_evidence_bound_se):.2g}"])


class _Progress:
    """One line on stderr, redrawn at most twice a second: step, mean recent loss, rate."""

    def __init__(self, total: int, enabled: bool | None):
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = self.last = time.perf_counter()

    def update(self, step: int, losses: list[float]) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.5 and step < self.total):
            return
        self.last = now
        recent = losses[-50:]
        rate = step / max(now - self.start, 1e-9)
        sys.stderr.write(f"\rVI {step}/{self.total} loss {sum(recent) / len(recent):.5g} "
                         f"{rate:.0f} steps/s")
        if step >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


@dataclass
class VI:
    """Variational inference with ``guide`` (a ``@model`` with ``param``s over the model's
    latent sites, or an autoguide) and ``objective`` (an :func:`expectation` program)."""

    guide: Callable
    objective: Expectation = field(default_factory=ELBO)
    steps: int = 1000
    optimizer: type[torch.optim.Optimizer] = torch.optim.Adam
    lr: float = 1e-2
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    lr_schedule: Callable[[torch.optim.Optimizer], Any] | None = None
    clip_norm: float | None = None
    tolerance: float | None = None
    window: int = 100
    num_samples: int = 1000
    evaluations: int = 20
    progress: bool | None = False
    checkpoint_every: int | None = None
    on_checkpoint: Callable[[VICheckpoint], None] | None = None
    resume: VICheckpoint | None = None
    fast_path: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.objective, Expectation):
            raise TypeError(f"objective must be an @expectation program (e.g. ELBO()), got "
                            f"{self.objective!r}")
        for name in ("steps", "window", "num_samples", "evaluations"):
            if getattr(self, name) < 1:
                raise ValueError(f"VI: {name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"VI: lr must be positive, got {self.lr}")
        if self.clip_norm is not None and self.clip_norm <= 0:
            raise ValueError(f"VI: clip_norm must be positive, got {self.clip_norm}")
        if self.checkpoint_every is not None and self.on_checkpoint is None:
            raise ValueError("VI: checkpoint_every needs on_checkpoint to receive them")

    def run(self, model: Model, args: tuple, kwargs: dict, *,
            passes: Sequence[Callable] = ()) -> VIResult:
        if passes:
            raise ValueError("VI runs on the trace path and cannot apply graph passes")
        store = ParamStore()
        with store:
            return self._train(model, args, kwargs, store)

    def _train(self, model: Model, args: tuple, kwargs: dict, store: ParamStore) -> VIResult:
        objective = self.objective
        with forked(), torch.no_grad(), block():  # create the params without drawing
            trace().get_trace(self.guide, *args, **kwargs)
            trace().get_trace(model, *args, **kwargs)
            objective.create_params(model, self.guide, *args, **kwargs)
        if not len(store):
            raise ModelError("VI: the guide and model have no params to fit")
        fast, path = (fast_elbo(model, self.guide, objective, args, kwargs) if self.fast_path
                      else (None, SLOW + "VI(fast_path=False)"))
        compiled = None
        if fast is None and self.fast_path:
            compiled, why = compiled_objective(model, self.guide, objective, args, kwargs)
            path = COMPILED if compiled else f"{path}; not compiled: {why}"
            if compiled is None:
                warnings.warn(f"VI: training takes the general (handler) path; {path}",
                              FastPathWarning, stacklevel=4)
        general = lambda: _on_one_subsample(objective, model, self.guide, args, kwargs)  # noqa: E731
        evaluate = CheckedStep(compiled, general) if compiled else general
        backward = fast.backward if fast else lambda: self._backward(evaluate)
        leaves = list(store.unconstrained().values())
        optimizer = self.optimizer(leaves, lr=self.lr, **optimizer_options(
            self.optimizer, self.optimizer_options, leaves))
        update = stepper(optimizer)
        grad_norm = _grad_norm(leaves, fast.gradient if fast else None, self.clip_norm)
        schedule = self.lr_schedule(optimizer) if self.lr_schedule is not None else None
        losses: list[float] = []
        if self.resume is not None:
            losses = self._restore(self.resume, store, optimizer, schedule, objective)
        progress = _Progress(self.steps, self.progress)
        converged = False

        def checkpoint() -> VICheckpoint:
            # deep copies: the optimizer keeps updating its state tensors in place
            return VICheckpoint(len(losses), list(losses), store.state_dict(),
                                copy.deepcopy(optimizer.state_dict()),
                                copy.deepcopy(schedule.state_dict()) if schedule else None,
                                objective.state_dict(), stream_state())

        try:
            while len(losses) < self.steps and not converged:
                losses.append(self._step(backward, update, grad_norm, schedule, leaves, store,
                                         len(losses)))
                progress.update(len(losses), losses)
                converged = self._converged(losses)
                if self.checkpoint_every and len(losses) % self.checkpoint_every == 0:
                    self.on_checkpoint(checkpoint())
        except KeyboardInterrupt:
            raise TrainingInterrupted(checkpoint()) from None
        final = checkpoint()
        if len(store) != len(leaves):
            raise ModelError(f"VI: params {sorted(set(store) - set(store.unconstrained()))} "
                             "appeared after the first step; create every param on each run")
        if fast:
            bound, bound_se = self._evaluate(fast.estimate)
            draws = fast.posterior_draws(self.num_samples)
        else:
            bound, bound_se = self._evaluate(lambda: evaluate().value)
            draws = self._posterior_draws(model, args, kwargs)
        if compiled and evaluate.why:
            path = f"{path}; slow {evaluate.why}"
        return VIResult(torch.tensor(losses), TrainedGuide(self.guide, store), store, draws,
                        bound, bound_se, final, converged, objective, {"path": path})

    def _backward(self, evaluate: Callable[[], Surrogate]) -> float:
        """The objective's surrogate (on handlers or compiled), differentiated by autograd."""
        out = evaluate()
        loss = -out.surrogate if self.objective.maximize else out.surrogate
        loss.backward()
        return float(out.value)

    def _step(self, backward: Callable[[], float], update: Callable[[], None],
              grad_norm: Callable[[], Tensor], schedule, leaves, store, step: int) -> float:
        for leaf in leaves:  # optimizer.zero_grad(), without its profiler record
            leaf.grad = None
        value = backward()
        norm = grad_norm()
        if not (math.isfinite(value) and math.isfinite(float(norm))):
            bad = [n for n, t in store.unconstrained().items()
                   if t.grad is not None and not bool(torch.isfinite(t.grad).all())]
            raise ModelError(f"VI step {step}: objective {value}, non-finite "
                             f"gradients of params {bad}; lower lr or clip_norm")
        if self.clip_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(leaves, self.clip_norm, norm)
        update()
        if schedule is not None:
            schedule.step()
        return -value if self.objective.maximize else value

    def _converged(self, losses: list[float]) -> bool:
        if self.tolerance is None or len(losses) < 2 * self.window:
            return False
        last = sum(losses[-self.window:]) / self.window
        before = sum(losses[-2 * self.window:-self.window]) / self.window
        return abs(last - before) <= self.tolerance * max(1.0, abs(before))

    def _restore(self, ckpt: VICheckpoint, store, optimizer, schedule, objective) -> list[float]:
        if set(ckpt.params["unconstrained"]) != set(store):
            raise ModelError(f"VI resume: the checkpoint has params "
                             f"{sorted(ckpt.params['unconstrained'])}, this run {sorted(store)}")
        store.load_state_dict(ckpt.params)
        # a copy: the optimizer adopts the tensors it is given and updates them in place,
        # which would change the checkpoint (and a second resume from it)
        optimizer.load_state_dict(copy.deepcopy(ckpt.optimizer))
        if (schedule is None) != (ckpt.schedule is None):
            raise ModelError("VI resume: the checkpoint and this run differ in lr_schedule")
        if schedule is not None:
            schedule.load_state_dict(ckpt.schedule)
        objective.load_state_dict(ckpt.objective)
        set_stream_state(ckpt.rng_state)
        return list(ckpt.losses)

    def _evaluate(self, estimate: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
        values = torch.stack([estimate() for _ in range(self.evaluations)])
        se = values.std() / math.sqrt(len(values)) if len(values) > 1 else torch.tensor(0.0)
        return values.mean(), se

    def _posterior_draws(self, model, args, kwargs) -> dict[str, Tensor]:
        """The model's latent and deterministic sites, replayed on the guide's draws."""
        with torch.no_grad(), subsample():  # guide and model draw on one minibatch
            model_pilot = pilot_trace(model, args, kwargs)
            guide_pilot = pilot_trace(self.guide, args, kwargs)
            dim = -(max(batch_ndims(model_pilot), batch_ndims(guide_pilot)) + 1)
            guide_run = vectorized_trace(self.guide, args, kwargs, self.num_samples,
                                         particle_dim=dim, pilot=guide_pilot)
            run = vectorized_trace(replay(guide_run.trace)(model), args, kwargs,
                                   self.num_samples, particle_dim=dim, pilot=model_pilot,
                                   probe=model)
            return {k: v.detach() for k, v in run.values(observed=False).items()}


def _grad_norm(leaves: list[Tensor], flat: Tensor | None,
               clip_norm: float | None) -> Callable[[], Tensor]:
    """What a step checks for finiteness, and clips by: torch's total norm of the leaves'
    grads when clipping. Else only finiteness counts, which a cheaper number has: the norm
    of ``flat``, one buffer that every grad views (the fast path's), or the sum of the
    grads' norms from one foreach kernel (torch's total norm regroups the grads by device
    and dtype and takes a norm of the norms: twice the time on a VAE's ten weights)."""
    if clip_norm is not None or len({(t.device, t.dtype) for t in leaves}) > 1:
        return lambda: _with_grads(leaves, torch.nn.utils.get_total_norm)
    if flat is not None:
        return lambda: torch.linalg.vector_norm(flat)
    return lambda: _with_grads(leaves, lambda grads: torch.stack(torch._foreach_norm(grads)).sum())


def _with_grads(leaves: list[Tensor], norm: Callable[[list[Tensor]], Tensor]) -> Tensor:
    grads = [t.grad for t in leaves if t.grad is not None]
    return norm(grads) if grads else torch.zeros(())


def _on_one_subsample(objective: Expectation, model, guide, args, kwargs) -> Any:
    """The objective evaluated with one minibatch (the indices of each subsampled plate)
    shared by the guide's and the model's plates."""
    with subsample():
        return objective(model, guide, *args, **kwargs)
