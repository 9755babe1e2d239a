"""MCMC as an ``infer`` method: trace the model, lower its graph, run a kernel, map draws back.

    >>> import torch
    >>> from ppl import infer, model, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m():
    ...     sample("y", Normal(sample("x", Normal(0.0, 1.0)), 1.0), obs=1.0)
    >>> post = infer(m, method=NUTS(num_warmup=100, num_samples=100, chains=2), seed=0)
    >>> post.samples["x"].shape
    torch.Size([2, 100])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ppl.errors import ModelError
from ppl.model import Model

from . import mcmc
from .lowering import FlatModel
from .results import Posterior


def initial_positions(flat: FlatModel, chains: int, generator: torch.Generator,
                      radius: float = 2.0, tries: int = 100) -> torch.Tensor:
    """Stan-style initialization: uniform(-radius, radius) on the unconstrained space, redrawn
    per chain until the log density and its gradient are finite."""
    z = (torch.rand(chains, flat.dim, generator=generator) * 2 - 1) * radius
    for _ in range(tries):
        log_p, grad = flat.log_density_and_grad(z)
        bad = ~(torch.isfinite(log_p) & torch.isfinite(grad).all(-1))
        if not bad.any():
            return z
        z[bad] = (torch.rand(int(bad.sum()), flat.dim, generator=generator) * 2 - 1) * radius
    raise ModelError(
        f"no finite initial log density after {tries} tries of uniform(-{radius}, {radius}) on the "
        f"unconstrained space; the non-finite terms come from: {_nonfinite_sites(flat, z[bad][0])}"
    )


def _nonfinite_sites(flat: FlatModel, z: torch.Tensor) -> list[str]:
    values = {k: v[0] for k, v in flat.constrained_values(z[None]).items()}
    from ppl.ir import Interpreter

    bad = []

    class Probe(Interpreter):
        def sample(self, node):
            value = values[node.address]
            if not torch.isfinite(self.distribution(node).log_prob(value)).all():
                bad.append(node.address)
            return value

        def observe(self, node):
            value = self.resolve(node.args[0])
            if not torch.isfinite(self.distribution(node).log_prob(value)).all():
                bad.append(node.address)
            return value

    Probe(flat.graph).run()
    return bad or ["(a log|det J| term)"]


@dataclass
class MCMC:
    """Run ``kernel`` (an ``init``/``step`` object from ``ppl.inference.mcmc``) on a model's graph.

    ``passes`` given to ``infer`` are applied to the graph before lowering. Draws come back
    as ``(chains, num_samples, *site_shape)`` for every latent and deterministic site.
    """

    kernel: Any
    num_warmup: int = 1000
    num_samples: int = 1000
    chains: int = 4
    chain_method: str = "batched"
    options: dict = field(default_factory=dict)

    def run(self, model: Model, args: tuple, kwargs: dict, *, passes: Sequence[Callable] = ()) -> Posterior:
        graph = model.graph(*args, **kwargs)
        if passes:
            from ppl.passes import run as run_passes

            graph = run_passes(graph, passes)
        flat = FlatModel.from_graph(graph)
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        init = initial_positions(flat, self.chains, torch.Generator().manual_seed(seed))
        result = mcmc.sample(self.kernel, flat.log_density_and_grad, init, self.num_warmup,
                             self.num_samples, seed=seed, chain_method=self.chain_method, **self.options)
        draws = result.draws.to(init.dtype)
        chains, num = draws.shape[:2]
        values = flat.constrained_values(draws.reshape(chains * num, -1))
        samples = {k: v.reshape(chains, num, *v.shape[1:]) for k, v in values.items()}
        info = {name: getattr(result.info, name) for name in result.info._fields}
        extra = {"step_size": result.step_size, "inverse_mass_matrix": result.inverse_mass_matrix,
                 "num_grad_evals": result.num_grad_evals, "warmup_time": result.warmup_time,
                 "sampling_time": result.sampling_time, "graph": graph}
        return Posterior(samples=samples, info=info, extra=extra)


def NUTS(num_warmup: int = 1000, num_samples: int = 1000, chains: int = 4, *,
         max_tree_depth: int = 10, target_accept: float = 0.8, dense_mass: bool = False,
         chain_method: str = "batched") -> MCMC:
    """The No-U-Turn sampler with Stan's windowed adaptation, as an ``infer`` method."""
    kernel = mcmc.NUTS(max_tree_depth=max_tree_depth, metric="dense" if dense_mass else "diag")
    adapt = mcmc.WindowAdaptation(target_accept=target_accept)
    return MCMC(kernel, num_warmup, num_samples, chains, chain_method, {"adapt": adapt})
