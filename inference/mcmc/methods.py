"""MCMC as an ``infer`` method: trace the model, lower its graph, run a kernel, map draws back.

``MCMC(kernel, ...)`` runs any kernel of ``ppl.inference.mcmc``; ``NUTS``, ``HMC``, ``MALA``,
``RWMH`` and ``Slice`` here are factories of it with each kernel's own options (built by one
helper, ``_infer_method``, from the kernel's dataclass fields and defaults).

    >>> import torch
    >>> from ppl import infer, model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m():
    ...     sample("y", Normal(sample("x", Normal(0.0, 1.0)), 1.0), obs=1.0)
    >>> post = infer(m, method=NUTS(num_warmup=300, num_samples=500, chains=2), seed=0)
    >>> post.samples["x"].shape, post.diagnostics().num_divergent
    (torch.Size([2, 500]), 0)
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ppl.errors import ModelError
from ppl.inference import mcmc
from ppl.inference.lowering.flat import BACKENDS, FlatModel
from ppl.inference.mcmc.base import check_count
from ppl.inference.mcmc.initialization import InitStrategy, check_init, initial_positions
from ppl.inference.mcmc.native_nuts import NativeNUTS, nuts_unit
from ppl.inference.mcmc.runner import Checkpoint, SamplingInterrupted
from ppl.inference.results.posterior import Posterior
from ppl.model import Model
from ppl.randomness import drawing


def _samples(flat: FlatModel, draws: torch.Tensor) -> dict[str, torch.Tensor]:
    """Constrained site values of flat draws ``(C, n, D)``, chain by chain: torch's vectorized
    kernels round a batch's tail differently, and chain c must not depend on how many chains
    ran beside it."""
    per_chain = [flat.constrained_values(chain.to(flat.dtype)) for chain in draws]
    return {k: torch.stack([v[k] for v in per_chain]) for k in per_chain[0]}


def build_kernel(kernel: mcmc.Kernel, flat: FlatModel) -> mcmc.Kernel:
    """``kernel`` bound to the model's potential, on the model's backend, chosen here once:
    NUTS becomes :class:`~ppl.inference.mcmc.native_nuts.NativeNUTS` (whole transitions in
    C) when the potential is native; every other kernel calls the potential."""
    if type(kernel) is mcmc.NUTS and flat.build_native(nuts_unit(flat.dim)):
        return NativeNUTS.of(kernel, flat.native)
    return kernel.bind(flat.potential)


@dataclass
class MCMC:
    """Run ``kernel`` (an ``init``/``step`` object from ``ppl.inference.mcmc``) on a model's graph.

    ``passes`` given to ``infer`` are applied to the graph before lowering. Draws come back
    as ``(chains, num_samples // thin, *site_shape)`` for every latent and deterministic site,
    with the per-draw sampler info, and convergence problems are reported once, at the end
    of the run, as :class:`~ppl.inference.results.summary.ConvergenceWarning` (see
    ``Posterior.convergence_warnings``). ``adapt``: Stan's windowed warmup (``True``), none
    (``False``) or a configured ``ppl.inference.mcmc.WindowAdaptation``. ``options`` go to
    ``ppl.inference.mcmc.sample`` (``num_threads``, ``num_processes``, ``start_method``).
    ``backend`` pins the potential's backend (``"auto"``: native where a C compiler is, else
    generated torch, else autograd; see ``FlatModel``): the backends round differently, so one
    seed gives the same draws only on the same backend. ``resume``: the ``checkpoint`` of an
    interrupted run of this method (:class:`~ppl.inference.mcmc.runner.SamplingInterrupted`),
    to continue it to the draws the uninterrupted run gives. ``init``: where the chains start,
    ``"uniform"``, ``"prior"``, ``"median"`` or a dict of site values (see
    :mod:`ppl.inference.mcmc.initialization`).
    """

    kernel: Any
    num_warmup: int = 1000
    num_samples: int = 1000
    chains: int = 4
    chain_method: str = "batched"
    options: dict = field(default_factory=dict)
    adapt: bool | mcmc.WindowAdaptation = True
    thin: int = 1
    progress_bar: bool | None = None
    backend: str = "auto"
    resume: Checkpoint | None = None
    init: InitStrategy = "uniform"

    def __post_init__(self) -> None:
        owner = f"MCMC({type(self.kernel).__name__})"
        check_count(owner, "num_warmup", self.num_warmup, 0)
        check_count(owner, "num_samples", self.num_samples, 1)
        check_count(owner, "chains", self.chains, 1)
        check_count(owner, "thin", self.thin, 1)
        if self.backend not in BACKENDS:
            raise ValueError(f"{owner}: backend must be one of {BACKENDS}, got {self.backend!r}")
        check_init(owner, self.init)

    def run(self, model: Model, args: tuple, kwargs: dict, *,
            passes: Sequence[Callable] = ()) -> Posterior:
        # First, so the run's randomness does not depend on whether tracing the graph (skipped
        # when the model's graph is cached) or lowering it drew random numbers.
        with drawing() as generator:
            seed = int(torch.randint(0, 2**31 - 1, (), generator=generator).item())
        graph = model.graph(*args, **kwargs)
        if passes:
            from ppl.passes import run as run_passes

            graph = run_passes(graph, passes)
        flat = FlatModel.from_graph(graph, self.backend)
        if flat.dim == 0:
            raise ModelError(
                f"graph {graph.name!r} has no continuous latent left for MCMC to sample (every "
                "latent was enumerated out or observed): its posterior over the enumerated "
                "sites is exact, from ppl.passes.posterior_of_enumerated, or sample them with "
                "Gibbs or Importance")
        kernel = build_kernel(self.kernel, flat)  # first: it builds the native library once
        init = initial_positions(flat, self.chains, torch.Generator().manual_seed(seed), self.init)
        options = {"adapt": self.adapt, "thin": self.thin, "progress_bar": self.progress_bar,
                   **self.options}
        try:
            result = mcmc.sample(kernel, kernel.log_density_fn, init, self.num_warmup,
                                 self.num_samples, seed=seed, chain_method=self.chain_method,
                                 resume=self.resume, **options)
        except SamplingInterrupted as interrupt:  # keep what was drawn, on the exception
            if interrupt.draws.shape[1] > 0:
                interrupt.posterior = Posterior(samples=_samples(flat, interrupt.draws),
                                                info=interrupt.info._asdict(),
                                                extra={"graph": graph, "interrupted": True})
            raise
        samples = _samples(flat, result.draws)
        info = {name: getattr(result.info, name) for name in result.info._fields}
        extra = {"step_size": result.step_size, "inverse_mass_matrix": result.inverse_mass_matrix,
                 "num_grad_evals": result.num_grad_evals, "warmup_time": result.warmup_time,
                 "sampling_time": result.sampling_time, "graph": graph,
                 "kernel": type(self.kernel).__name__, "backend": flat.backend,
                 "max_tree_depth": getattr(self.kernel, "max_tree_depth", None)}
        posterior = Posterior(samples=samples, info=info, extra=extra)
        posterior.warn(stacklevel=3)  # reported at the user's infer(...) call
        return posterior


def _infer_method(kernel_cls: type, options: Sequence[str], doc: str) -> Callable[..., MCMC]:
    """An ``infer`` method factory for ``kernel_cls``: the run settings every kernel shares
    (draws, chains, ``dense_mass``, ``target_accept``, ``chain_method``, ``thin``,
    ``progress_bar``) plus the kernel's own ``options``, with the kernel's defaults."""
    fields = {f.name: f for f in dataclasses.fields(kernel_cls)}
    adapts_step = kernel_cls.target_accept is not None

    def factory(num_warmup: int = 1000, num_samples: int = 1000, chains: int = 4, *,
                dense_mass: bool = False, target_accept: float | None = None,
                chain_method: str = "batched", thin: int = 1, progress_bar: bool | None = None,
                backend: str = "auto", resume: Checkpoint | None = None,
                init: InitStrategy = "uniform", **kernel_options: Any) -> MCMC:
        unknown = sorted(set(kernel_options) - set(options))
        if unknown:
            known = [*shared_names, *options]
            hints = [f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
                     for name in unknown
                     for close in [difflib.get_close_matches(name, known, n=1, cutoff=0.5)]]
            raise TypeError(f"{kernel_cls.__name__}() got unknown options {', '.join(hints)}; "
                            f"it takes {known}")
        if target_accept is not None and not adapts_step:
            raise ValueError(f"{kernel_cls.__name__} has no step size to adapt; drop target_accept")
        kernel = kernel_cls(metric="dense" if dense_mass else "diag", **kernel_options)
        adapt = mcmc.WindowAdaptation(target_accept=target_accept)
        return MCMC(kernel, num_warmup, num_samples, chains, chain_method, adapt=adapt, thin=thin,
                    progress_bar=progress_bar, backend=backend, resume=resume, init=init)

    shared = [p for p in inspect.signature(factory).parameters.values() if p.kind != p.VAR_KEYWORD]
    shared_names = [p.name for p in shared]
    own = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=fields[name].default,
                             annotation=fields[name].type) for name in options]
    factory.__signature__ = inspect.Signature(shared + own, return_annotation=MCMC)  # type: ignore[attr-defined]
    factory.__name__ = factory.__qualname__ = kernel_cls.__name__
    factory.__doc__ = doc + _SHARED_DOC
    factory.__module__ = __name__
    return factory


_SHARED_DOC = """

    Shared settings: ``num_warmup`` warmup iterations (Stan's windowed adaptation of the step
    size and of a diagonal, or with ``dense_mass=True`` dense, inverse mass matrix), then
    ``num_samples`` iterations of which every ``thin``-th is kept, for ``chains`` chains run
    as ``chain_method`` (``"batched"``, ``"sequential"``, ``"processes"``). ``target_accept``:
    the acceptance statistic step-size adaptation aims for (None: the kernel's default).
    ``progress_bar``: a progress line on stderr (None: only when stderr is a terminal).
    ``backend``: pin the potential's backend (``"auto"``, ``"native"``, ``"generated"``,
    ``"autograd"``); the same seed gives the same draws on the same backend. ``resume``: the
    ``checkpoint`` of an interrupted run (``SamplingInterrupted``) with these settings, to
    continue it to the draws the uninterrupted run gives. ``init``: where the chains start
    (``"uniform"`` in (-2, 2) on the unconstrained space, ``"prior"``, ``"median"``, or a dict
    of site values; see ``ppl.inference.mcmc.initialization``).
    Returns an :class:`MCMC` method for ``infer(..., method=...)``.
    """

NUTS = _infer_method(mcmc.NUTS, ("max_tree_depth", "divergence_threshold"),
                     "The No-U-Turn sampler (multinomial, Stan's U-turn checks); "
                     "target_accept 0.8.")
HMC = _infer_method(mcmc.HMC, ("num_steps", "trajectory_length", "jitter", "divergence_threshold"),
                    "Static HMC: ``num_steps`` leapfrog steps (default 10) or ``trajectory_length``"
                    " / step size, ``jitter`` the step-size jitter; target_accept 0.8.")
MALA = _infer_method(mcmc.MALA, ("divergence_threshold",),
                     "Preconditioned Metropolis-adjusted Langevin (one-step HMC); "
                     "target_accept 0.574.")
RWMH = _infer_method(mcmc.RWMH, (),
                     "Random-walk Metropolis with a Gaussian proposal shaped by the adapted "
                     "metric; target_accept 0.234.")
Slice = _infer_method(mcmc.Slice, ("direction", "num_directions", "max_steps_out", "max_shrinks"),
                      "Slice sampling with stepping out, along coordinates or random directions "
                      "scaled by the adapted metric; no step-size adaptation.")
