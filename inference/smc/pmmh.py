"""``PMMH``: particle marginal Metropolis-Hastings for the static parameters of a
state-space model (Andrieu, Doucet & Holenstein 2010).

A random walk on the unconstrained static parameters ``z`` whose acceptance ratio uses a
particle filter's evidence estimate in place of the likelihood: the target is ``p(z) Ẑ(y |
theta(z))`` with the log-Jacobian of each constraint in ``p(z)``. The estimate of the
current point is kept until a proposal is accepted, which makes the chain exact for the
posterior of ``theta`` whatever the number of particles (fewer particles: a noisier
estimate and a stickier chain). The walk is the ``RWMH`` kernel of ``ppl.inference.mcmc``
run by its runner: Stan's windowed warmup adapts its scale to the kernel's 0.234 acceptance
(``target_accept`` to change) and its metric to the posterior variance. All chains'
filters run in one engine call per step (``chains * num_particles`` rows), in C when the
engine allows (``backend``: :func:`~.native_blocks.block_filters`, chosen once per run; the
proposal's ``theta`` is a run-time input of the compiled filter), else on torch, with
``extra["backend"]`` and ``extra["backend_reason"]`` saying which and why.

    >>> import torch
    >>> from ppl import infer, model, sample
    >>> from ppl.stdlib import Normal, Uniform
    >>> @model
    ... def ssm(ys):
    ...     a = sample("a", Uniform(-1.0, 1.0))
    ...     x = sample("x_0", Normal(0.0, 1.0))
    ...     for t in range(1, len(ys)):
    ...         x = sample(f"x_{t}", Normal(a * x, 0.5))
    ...         sample(f"y_{t}", Normal(x, 1.0), obs=ys[t])
    >>> method = PMMH(static=["a"], num_particles=20, num_warmup=20, num_samples=10, chains=2)
    >>> post = infer(ssm, torch.zeros(4), method=method, seed=0)
    >>> post.samples["a"].shape, post.extra["method"]
    (torch.Size([2, 10]), 'PMMH')
    >>> infer(ssm, torch.zeros(4), method=PMMH(static=["a"], num_particles=20, num_warmup=20,
    ...       num_samples=10, chains=2, backend="torch"), seed=0).extra["backend"]
    'torch'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ppl.inference import mcmc
from ppl.inference.mcmc.base import check_count, check_probability
from ppl.inference.results.posterior import Posterior
from ppl.model import Model
from ppl.passes import run as run_passes

from .backends import backend_report, check_backend
from .blocks import check_filter_settings
from .native_blocks import block_filters
from .static import StaticModel
from .streams import run_generator

__all__ = ["PMMH", "static_draws", "acceptance_rate"]


def static_draws(split: StaticModel, draws: Tensor) -> dict[str, Tensor]:
    """The static sites' values of unconstrained draws ``(C, S, D)``: ``(C, S, *shape)``."""
    per_chain = [split.constrained(chain) for chain in draws]
    return {a: torch.stack([values[a] for values in per_chain]) for a in split.static}


def acceptance_rate(draws: Tensor) -> Tensor:
    """Per chain, the fraction of transitions that moved, from draws ``(C, S, D)``."""
    if draws.shape[1] < 2:
        return torch.full((draws.shape[0],), float("nan"), dtype=torch.float64)
    moved = (draws[:, 1:] != draws[:, :-1]).any(-1)
    return moved.to(torch.float64).mean(1)


@dataclass(frozen=True)
class PMMH:
    """Particle marginal MH on the sites ``static`` (see the module docstring): ``chains``
    chains of ``num_warmup`` adapted and ``num_samples`` kept iterations, each proposal
    scored by a filter of ``num_particles`` particles (``resample`` scheme, resampling below
    ``ess_threshold * num_particles``). ``step_size``: the initial proposal scale;
    ``target_accept``: the acceptance warmup aims for (None: RWMH's 0.234); ``backend``:
    the filters' ("auto": C when it can, "native": C or an error, "torch")."""

    static: Sequence[str] = ()
    num_particles: int = 100
    num_samples: int = 1000
    num_warmup: int = 1000
    chains: int = 4
    resample: str = "systematic"
    ess_threshold: float = 0.5
    step_size: float = 0.5
    target_accept: float | None = None
    progress_bar: bool | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_backend("PMMH", self.backend)
        check_filter_settings("PMMH", self.num_particles, self.resample, self.ess_threshold)
        check_count("PMMH", "num_samples", self.num_samples, 1)
        check_count("PMMH", "num_warmup", self.num_warmup, 0)
        check_count("PMMH", "chains", self.chains, 1)
        check_probability("PMMH", "target_accept", self.target_accept)

    def run(self, model: Model, args: tuple, kwargs: dict, *,
            passes: Sequence[Callable] = ()) -> Posterior:
        split = StaticModel(run_passes(model.graph(*args, **kwargs), list(passes)),
                            self.static, "PMMH")
        generator = run_generator()
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        start_filters, reason = block_filters(split, self.num_particles, resample=self.resample,
                                              ess_threshold=self.ess_threshold,
                                              backend=self.backend, owner="PMMH")

        def log_target(z: Tensor) -> tuple[Tensor, Tensor]:
            filters = start_filters(split.constrained(z), generator)
            return split.log_prior(z) + filters.run(), torch.zeros_like(z)

        start = split.draw_prior(self.chains, generator)
        result = mcmc.sample(mcmc.RWMH(step_size=self.step_size), log_target, start,
                             self.num_warmup, self.num_samples, seed=seed,
                             adapt=mcmc.WindowAdaptation(target_accept=self.target_accept),
                             progress_bar=self.progress_bar)
        info = {name: getattr(result.info, name) for name in result.info._fields}
        extra = {"method": "PMMH", "kernel": "RWMH", "step_size": result.step_size,
                 "inverse_mass_matrix": result.inverse_mass_matrix,
                 "accept_rate": acceptance_rate(result.draws),
                 "num_particles": self.num_particles, "graph": split.graph,
                 "warmup_time": result.warmup_time, "sampling_time": result.sampling_time,
                 **backend_report(self.backend, reason)}
        return Posterior(samples=static_draws(split, result.draws), info=info, extra=extra)
