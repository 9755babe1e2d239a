"""``ParticleGibbs``: particle Gibbs with ancestor sampling (PGAS; Lindsten, Jordan & Schön
2014) for the static parameters and the latent path of a state-space model.

Each sweep alternates two updates that leave ``p(theta, x | y)`` invariant:

1. the path given ``theta``: a conditional particle filter keeps the current path as its
   reference particle, draws its ancestors by ancestor sampling, and returns a path drawn
   from its final particles (:class:`~ppl.inference.smc.blocks.BlockFilter`); ancestor
   sampling lets the new path leave the old one at any step, so few particles mix well;
2. ``theta`` given the path: ``theta_moves`` transitions of an MCMC kernel of
   ``ppl.inference.mcmc`` (``RWMH`` by default; MALA, HMC, NUTS, Slice) on the unconstrained
   static parameters, targeting ``log p(z) + log p(x, y | theta(z))``: the model with the
   path observed, as a flat model whose path inputs are rebound each sweep
   (:class:`PathConditioned`), with Stan's windowed warmup adapting the kernel's step size
   and metric over the first ``num_warmup`` sweeps.

Chains run batched: ``chains`` conditional filters in one engine call per step. The samples
hold the static sites and every latent of the path, ``(chains, num_samples, *shape)``.
The conditional filter runs in C when the engine allows (``filter_backend``, chosen once
per run: :mod:`.native_conditional`, one C call per sweep: the reference row pinned, its
ancestor drawn with the steps' scorers in C, the new path drawn back), else on torch, with
``extra["filter_backend"]`` and ``extra["filter_backend_reason"]`` saying which and why.

    >>> import torch
    >>> from ppl import infer, model, sample
    >>> from ppl.stdlib import HalfNormal, Normal
    >>> @model
    ... def walk(ys):
    ...     q = sample("q", HalfNormal(1.0))
    ...     x = 0.0
    ...     for t, y in enumerate(ys):
    ...         x = sample(f"x_{t}", Normal(x, q))
    ...         sample(f"y_{t}", Normal(x, 1.0), obs=y)
    >>> method = ParticleGibbs(static=["q"], num_particles=10, num_warmup=10, num_samples=10)
    >>> post = infer(walk, torch.zeros(4), method=method, seed=0)
    >>> post.samples["q"].shape, post.samples["x_3"].shape
    (torch.Size([2, 10]), torch.Size([2, 10]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ppl.inference import mcmc
from ppl.inference.lowering.flat import BACKENDS, FlatModel
from ppl.inference.lowering.particles.lowering import value_dtype
from ppl.inference.mcmc.base import check_count, check_probability, stack_infos
from ppl.inference.mcmc.progress import ProgressLine, progress_enabled
from ppl.inference.results.posterior import Posterior
from ppl.inference.rng import chain_generators
from ppl.ir.node import iter_refs
from ppl.model import Model
from ppl.passes import condition
from ppl.passes import run as run_passes

from .backends import backend_report, check_backend
from .blocks import check_filter_settings, one_thread
from .moves import as_kernel
from .native_conditional import path_sweeps
from .pmmh import acceptance_rate, static_draws
from .static import StaticModel
from .streams import run_generator

__all__ = ["ParticleGibbs"]


@dataclass(frozen=True)
class ParticleGibbs:
    """PGAS on the sites ``static`` (see the module docstring): ``chains`` chains of
    ``num_warmup`` adapting and ``num_samples`` kept sweeps, each a conditional filter of
    ``num_particles`` particles (``resample`` scheme, every step) and ``theta_moves``
    transitions of ``kernel`` (default ``RWMH()``) on the static parameters
    (``target_accept``: None for the kernel's own; ``backend`` pins the flat model's,
    ``filter_backend`` the conditional filter's: "auto", "native" or "torch")."""

    static: Sequence[str] = ()
    num_particles: int = 50
    num_samples: int = 1000
    num_warmup: int = 500
    chains: int = 2
    theta_moves: int = 2
    resample: str = "systematic"
    kernel: Any = None
    target_accept: float | None = None
    backend: str = "auto"
    progress_bar: bool | None = None
    filter_backend: str = "auto"

    def __post_init__(self) -> None:
        check_backend("ParticleGibbs", self.filter_backend, "filter_backend")
        check_filter_settings("ParticleGibbs", self.num_particles, self.resample, 1.0)
        check_count("ParticleGibbs", "num_samples", self.num_samples, 1)
        check_count("ParticleGibbs", "num_warmup", self.num_warmup, 0)
        check_count("ParticleGibbs", "chains", self.chains, 1)
        check_count("ParticleGibbs", "theta_moves", self.theta_moves, 1)
        check_probability("ParticleGibbs", "target_accept", self.target_accept)
        as_kernel(self.theta_kernel, "ParticleGibbs")
        if self.backend not in BACKENDS:
            raise ValueError(f"ParticleGibbs: backend must be one of {BACKENDS}, got "
                             f"{self.backend!r}")

    @property
    def theta_kernel(self) -> mcmc.Kernel:
        return as_kernel(mcmc.RWMH() if self.kernel is None else self.kernel, "ParticleGibbs")

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
        update_path, reason = path_sweeps(split, self.num_particles, resample=self.resample,
                                          backend=self.filter_backend)
        path = update_path(split.constrained(z), None, generator)
        given_path = PathConditioned(split, self.backend)
        given_path.bind(path)
        kernel = self.theta_kernel.bind(given_path.flat.log_density_and_grad)
        adaptation = mcmc.WindowAdaptation(target_accept=self.target_accept)
        warmup_moves = self.num_warmup * self.theta_moves
        state, adapting = adaptation.init(kernel, streams, kernel.init(z), warmup_moves)
        draws, paths, infos, move = [], [], [], 0
        sweeps = self.num_warmup + self.num_samples
        line = (ProgressLine(sweeps, phase="sweeps", counter="theta moved")
                if progress_enabled(self.progress_bar) else None)
        for sweep in range(sweeps):
            path = update_path(split.constrained(state.position), path, generator)
            given_path.bind(path)
            log_density, grad = kernel.fn(state.position)
            state = state._replace(log_density=log_density, grad=grad)
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
        extra = {"method": "ParticleGibbs", "kernel": type(kernel).__name__,
                 "step_size": state.step_size, "accept_rate": acceptance_rate(draws_t),
                 "num_particles": self.num_particles, "backend": given_path.flat.backend,
                 **{f"filter_{k}": v for k, v in
                    backend_report(self.filter_backend, reason).items()},
                 "graph": split.graph}
        return Posterior(samples=samples, info=info, extra=extra)


class PathConditioned:
    """The static parameters' posterior given a path, as a flat model: the graph with every
    path site observed at an input taking one row per chain (the ``condition`` pass), so a
    new path is a :meth:`bind` and the whole ``log p(z) + log p(path, y | theta(z))`` is one
    evaluation of the flat model (with its gradient, on its fastest backend)."""

    def __init__(self, split: StaticModel, backend: str):
        fixed = {a: torch.zeros(split.graph.site(a).meta.shape or (),
                                dtype=value_dtype(split.graph.site(a)))
                 for a in split.path_sites}  # a category indexes: int64 placeholders
        graph = condition(fixed)(split.graph)
        self.inputs = {a: next(iter_refs(graph.site(a).args[0])) for a in split.path_sites}
        self.flat = FlatModel.from_graph(graph, backend, rows=tuple(self.inputs.values()))

    def bind(self, path: Mapping[str, Tensor]) -> None:
        self.flat.bind(rows={name: path[a] for a, name in self.inputs.items()})
