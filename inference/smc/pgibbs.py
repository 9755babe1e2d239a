"""``ParticleGibbs``: particle Gibbs with ancestor sampling (PGAS; Lindsten, Jordan & Schön
2014) for the static parameters and the latent path of a state-space model.

Each sweep alternates two updates that leave ``p(theta, x | y)`` invariant:

1. the path given ``theta``: a conditional particle filter keeps the current path as its
   reference particle, draws its ancestors by ancestor sampling, and returns a path drawn
   from its final particles (:class:`~ppl.inference.smc.blocks.BlockFilter`); ancestor
   sampling lets the new path leave the old one at any step, so few particles mix well;
2. ``theta`` given the path: ``theta_moves`` transitions of the ``RWMH`` kernel of
   ``ppl.inference.mcmc`` on the unconstrained static parameters, targeting ``log p(z) +
   log p(x, y | theta(z))`` (the engine scores every step at the path), with Stan's windowed
   warmup adapting its scale and metric over the first ``num_warmup`` sweeps.

Chains run batched: ``chains`` conditional filters in one engine call per step. The samples
hold the static sites and every latent of the path, ``(chains, num_samples, *shape)``.

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
    >>> method = ParticleGibbs(static=["a"], num_particles=10, num_warmup=10, num_samples=10)
    >>> post = infer(ssm, torch.zeros(4), method=method, seed=0)
    >>> post.samples["a"].shape, post.samples["x_3"].shape
    (torch.Size([2, 10]), torch.Size([2, 10]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ppl.inference import mcmc
from ppl.inference.mcmc.base import check_count, check_probability, stack_infos
from ppl.inference.mcmc.progress import ProgressLine, progress_enabled
from ppl.inference.results.posterior import Posterior
from ppl.inference.rng import chain_generators
from ppl.model import Model
from ppl.passes import run as run_passes

from .blocks import BlockFilter, check_filter_settings, one_thread
from .pmmh import acceptance_rate, static_draws
from .static import StaticModel
from .streams import run_generator

__all__ = ["ParticleGibbs"]


@dataclass(frozen=True)
class ParticleGibbs:
    """PGAS on the sites ``static`` (see the module docstring): ``chains`` chains of
    ``num_warmup`` adapting and ``num_samples`` kept sweeps, each a conditional filter of
    ``num_particles`` particles (``resample`` scheme, every step) and ``theta_moves`` RWMH
    transitions of the static parameters (``step_size``: their initial scale;
    ``target_accept``: None for RWMH's 0.234)."""

    static: Sequence[str] = ()
    num_particles: int = 50
    num_samples: int = 1000
    num_warmup: int = 500
    chains: int = 2
    theta_moves: int = 2
    resample: str = "systematic"
    step_size: float = 0.5
    target_accept: float | None = None
    progress_bar: bool | None = None

    def __post_init__(self) -> None:
        check_filter_settings("ParticleGibbs", self.num_particles, self.resample, 1.0)
        check_count("ParticleGibbs", "num_samples", self.num_samples, 1)
        check_count("ParticleGibbs", "num_warmup", self.num_warmup, 0)
        check_count("ParticleGibbs", "chains", self.chains, 1)
        check_count("ParticleGibbs", "theta_moves", self.theta_moves, 1)
        check_probability("ParticleGibbs", "target_accept", self.target_accept)

    def run(self, model: Model, args: tuple, kwargs: dict, *,
            passes: Sequence[Callable] = ()) -> Posterior:
        split = StaticModel(run_passes(model.graph(*args, **kwargs), list(passes)),
                            self.static, "ParticleGibbs")
        split.check_markov("ParticleGibbs")
        with one_thread():
            return self._run(split)

    def _run(self, split: StaticModel) -> Posterior:
        generator = run_generator()
        streams = chain_generators(int(torch.randint(0, 2**62, (), generator=generator)),
                                   self.chains)
        z = split.draw_prior(self.chains, generator)
        first = BlockFilter(split, split.constrained(z), self.num_particles, generator,
                            resample=self.resample, ess_threshold=1.0, keep_paths=True)
        first.run()
        path = first.draw_paths()
        kernel = mcmc.RWMH(_joint(split, path), step_size=self.step_size)
        adaptation = mcmc.WindowAdaptation(target_accept=self.target_accept)
        warmup_moves = self.num_warmup * self.theta_moves
        state, adapting = adaptation.init(kernel, streams, kernel.init(z), warmup_moves)
        draws, paths, infos, move = [], [], [], 0
        sweeps = self.num_warmup + self.num_samples
        line = (ProgressLine(sweeps, phase="sweeps", counter="theta moved")
                if progress_enabled(self.progress_bar) else None)
        for sweep in range(sweeps):
            conditional = BlockFilter(split, split.constrained(state.position),
                                      self.num_particles, generator, resample=self.resample,
                                      reference=path)
            conditional.run()
            path = conditional.draw_paths()
            kernel = kernel.bind(_joint(split, path))
            state = state._replace(log_density=kernel.fn(state.position)[0])
            before = state.position.clone()
            for _ in range(self.theta_moves):
                state, info = kernel.step(streams, state)
                if move < warmup_moves:
                    state, adapting = adaptation.update(kernel, streams, move, state, info,
                                                        adapting)
                move += 1
            if sweep >= self.num_warmup:
                infos.append(info)  # the sweep's last move
                draws.append(state.position.clone())
                paths.append(path)
            if line is not None:
                line.update(int((state.position != before).any(-1).sum()))
        if line is not None:
            line.close()
        draws_t = torch.stack(draws, 1)
        samples = {**static_draws(split, draws_t),
                   **{a: torch.stack([p[a] for p in paths], 1) for a in split.path_sites}}
        stacked = stack_infos(infos)
        info = {name: getattr(stacked, name) for name in stacked._fields}
        extra = {"method": "ParticleGibbs", "kernel": "RWMH", "step_size": state.step_size,
                 "accept_rate": acceptance_rate(draws_t), "num_particles": self.num_particles,
                 "graph": split.graph}
        return Posterior(samples=samples, info=info, extra=extra)


def _joint(split: StaticModel, path: Mapping[str, Tensor]
           ) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """``z -> (log p(z) + log p(path, y | theta(z)), 0)`` for each chain's path."""
    def log_density(z: Tensor) -> tuple[Tensor, Tensor]:
        return (split.log_prior(z) + split.path_log_density(split.constrained(z), path),
                torch.zeros_like(z))
    return log_density
