"""``KernelUpdate``: a flat-density kernel (NUTS, HMC, slice, ...) as one block of a Gibbs sampler.

The block's sites are continuous latents; every other latent is conditioned on (the
``condition`` pass turns it into an observation whose value is an input of the graph), and
the graph is lowered with :class:`~ppl.inference.lowering.flat.FlatModel`. Each chain has its own
values of the other sites, passed to the generated potential as per-chain arguments: compiled
to C where the machine has a compiler and every operation a C rule (``backend`` "native", as
plain NUTS runs), else its torch code ("generated"), and for a graph the tape cannot express,
the vmapped autograd path. On a native potential NUTS runs as
:class:`~ppl.inference.mcmc.native_nuts.NativeNUTS`: whole transitions in C, each chain on
its own thread and tree, reading its own row of the per-chain inputs (``KernelUpdate.backend``
"native", chosen once by :meth:`KernelUpdate.bind`; the chains no longer wait for each other
leapfrog by leapfrog). Any other kernel, or NUTS elsewhere, runs in torch and must evaluate
every chain's row, in chain order, so NUTS runs with ``compact=False`` (its compaction passes
a subset of the chains). Before each transition the state's log density
and gradient are recomputed when another block has moved since the last one (the kernel's
cached values belong to the old conditional).

Warmup adapts the kernel's step size and metric with Stan's windowed scheme
(:class:`~ppl.inference.mcmc.adaptation.WindowAdaptation`) during the first ``num_warmup``
steps, the same on either backend (a sweep makes one transition, adapted after it); the
conditional moves as the other blocks move, which the adaptation simply sees as part of the
target. Positions are float64, drawn uniformly in ``(-init_radius, init_radius)``
on the unconstrained space per chain until the log density and gradient are finite.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Bernoulli, Normal
    >>> from ppl.inference.mcmc import NUTS, chain_generators
    >>> @model
    ... def m():
    ...     z = sample("z", Bernoulli(0.5))
    ...     sample("y", Normal(sample("x", Normal(0.0, 1.0)) + z, 1.0), obs=torch.tensor(1.0))
    >>> update = KernelUpdate(NUTS()).bind(m.graph(), ("x",))
    >>> gens = chain_generators(0, 2)
    >>> values, state = update.init(gens, {"z": torch.ones(2), "x": torch.zeros(2)}, 10)
    >>> values, state, info = update.step(gens, values, state)
    >>> values["x"].shape, sorted(info)[:2], update.backend in ("native", "torch")
    (torch.Size([2]), ['accept_prob', 'divergent'], True)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ppl.errors import ModelError
from ppl.inference.lowering.flat import FastPathWarning, FlatModel
from ppl.inference.lowering.native import CompileError, NativePotential
from ppl.inference.lowering.native.compiler import Unit
from ppl.inference.lowering.tape import (
    Unsupported,
    lower_potential,
    per_chain_dtype,
    torch_potential,
    torch_values,
)
from ppl.inference.mcmc.adaptation import AdaptationState, WindowAdaptation
from ppl.inference.mcmc.base import Kernel, State
from ppl.inference.mcmc.native_nuts import NativeNUTS, nuts_unit
from ppl.inference.mcmc.nuts import NUTS
from ppl.inference.rng import RNG, rand
from ppl.ir import Graph
from ppl.ir.errors import IRError
from ppl.passes import condition
from ppl.passes.rewriting import probe

from .discrete import Values

__all__ = ["ConditionalFlat", "KernelUpdate", "KernelUpdateState"]


class ConditionalFlat:
    """The flat log density of some latents of a graph given per-chain values of the others.

    ``data(values)`` picks the conditioned sites' values as FlatModel data; the other methods
    take positions ``z`` ``(chains, dim)`` and that data (each row of both is one chain)."""

    def __init__(self, graph: Graph, sites: tuple[str, ...], nuts: bool = False):
        p = probe(graph)
        others = [n for n in graph.latent_nodes if n.address not in sites]
        conditioned = condition({n.address: p.env[n.name] for n in others})(graph)
        self.flat = FlatModel.from_graph(conditioned, backend="autograd")
        self.inputs = {n.address: conditioned.site(n.address).args[0].name for n in others}
        self.sites = sites
        self.dim = self.flat.dim
        # the autograd path, compiled on first use
        self._log_density = torch.func.vmap(lambda z, d: self.flat.log_density_fn(z, d))
        self._values = torch.func.vmap(lambda z, d: self.flat.values_fn(z, d))
        # The generated potential and site values with the other blocks' values as per-chain
        # arguments; the autograd path where the tape has no rule.
        self.backend, self.fallback_reason = "generated", None
        self.native: NativePotential | None = None
        self._generated: Callable | None = None
        self._generated_values: Callable | None = None
        try:
            lowered = lower_potential(self.flat.unconstrained, self.flat.blocks,
                                      tuple(self.inputs.values()), self.flat.sites)
            self._generated_values = torch_values(lowered)
            self.native, self.fallback_reason = _native(
                lowered, (nuts_unit(self.dim),) if nuts else ())
            if self.native is not None:
                self.backend, self._generated = "native", self._call_native
            else:
                self._generated = torch_potential(lowered)
        except Unsupported as refusal:
            self.backend, self.fallback_reason = "autograd", str(refusal)
            warnings.warn(f"Gibbs block {list(sites)} leaves the generated potential for "
                          f"vmapped autograd ({refusal}): expect it to run 10-100x slower",
                          FastPathWarning, stacklevel=4)

    def data(self, values: Values) -> dict[str, Tensor]:
        return {name: values[address] for address, name in self.inputs.items()}

    def bind_native(self, data: dict[str, Tensor]) -> None:
        """Point the native potential's per-row inputs at ``data``, row ``c`` for chain ``c``
        (what C kernels read in the library, as NUTS's transitions do)."""
        self.native.bind_inputs(_args(data))

    def _call_native(self, z: Tensor, *data: Tensor) -> tuple[Tensor, Tensor]:
        self.native.bind_inputs(list(data))
        return self.native(z)

    def log_density_and_grad(self, z: Tensor, data: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Log density and gradient of each row of ``z``; row ``r`` is chain ``r mod chains``
        (kernels may stack several proposals per chain, as slice sampling does)."""
        num_chains = next(iter(data.values())).shape[0] if data else z.shape[0]
        if z.shape[0] != num_chains:
            if z.shape[0] % num_chains:
                raise ValueError(
                    f"a kernel inside a Gibbs block evaluated {z.shape[0]} rows for "
                    f"{num_chains} chains; each chain's target differs, so a kernel must pass "
                    "every chain's row, in chain order (possibly stacked several times)"
                )
            reps = z.shape[0] // num_chains
            data = {k: v.repeat(reps, *([1] * (v.dim() - 1))) for k, v in data.items()}
        if self._generated is not None:
            return self._generated(z.detach().to(torch.float64), *_args(data))
        data = {k: v.to(z.dtype) if v.is_floating_point() else v for k, v in data.items()}
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_p = self._log_density(z, data)
            (grad,) = torch.autograd.grad(log_p.sum(), z)
        return log_p.detach(), grad

    def values(self, z: Tensor, data: dict[str, Tensor]) -> Values:
        """The block's sites at ``z``, constrained (``(chains, *site_shape)``)."""
        if self._generated_values is not None:
            out = self._generated_values(z.detach().to(torch.float64), *_args(data))
        else:
            out = self._values(z, data)
        return {a: out[a].detach() for a in self.sites}


def _args(data: dict[str, Tensor]) -> list[Tensor]:
    """The per-chain data as the generated code's arguments, each in the dtype it reads."""
    return [v.to(per_chain_dtype(v)) for v in data.values()]


def _native(lowered, companions: tuple[Unit, ...]) -> tuple[NativePotential | None, str | None]:
    """The lowered potential compiled to C now, with ``companions`` linked in (from the disk
    cache after the first time), and None; or None and why not, where there is no C
    compiler, an operation has no C rule or the build fails (the generated torch code runs
    instead; a failed build also warns, as ``FlatModel.build_native`` does)."""
    try:
        native = NativePotential.from_lowered(lowered)
        native.link(*companions)
        native.bind_inputs([torch.zeros(1, *shape, dtype=dtype)
                            for shape, dtype in native.source.inputs])
        native.build()
    except Unsupported as refusal:
        return None, str(refusal)
    except (CompileError, OSError) as error:
        reason = f"the native library could not be built: {error}"
        warnings.warn(f"{reason}; the Gibbs block runs the generated torch code instead, "
                      "several times slower", FastPathWarning, stacklevel=5)
        return None, reason
    return native, None


class KernelUpdateState(NamedTuple):
    """The kernel's state, the adaptation's (None after warmup or without adaptation), the
    number of steps taken, and the per-chain data the kernel state was computed with."""

    kernel: State
    adaptation: AdaptationState | None
    iteration: int
    data: dict[str, Tensor]


@dataclass(frozen=True)
class KernelUpdate:
    """Move continuous ``sites`` with a flat-density ``kernel``, adapted during warmup.

    ``adaptation``: None keeps the kernel's step size and metric. ``init_radius``: initial
    positions are uniform in ``(-init_radius, init_radius)`` on the unconstrained space.
    ``backend``: "auto" (or "native") runs NUTS's whole transitions in C (``NativeNUTS``,
    each chain on its own thread and data row) where the block's potential is native, "torch"
    pins the torch kernel; :meth:`bind` sets it to where they run, "native" or "torch" (the
    kernel in torch, calling the potential of ``flat.backend``).
    """

    kernel: Kernel = field(default_factory=NUTS)
    adaptation: WindowAdaptation | None = field(default_factory=WindowAdaptation)
    init_radius: float = 2.0
    init_tries: int = 100
    flat: ConditionalFlat | None = field(default=None, repr=False)
    backend: str = "auto"

    def bind(self, graph: Graph, sites: tuple[str, ...]) -> KernelUpdate:
        p = probe(graph)
        for address in sites:
            node = graph.site(address)
            if node.kind != "sample" or p.dists[node.name].support.is_discrete:
                raise IRError(
                    f"KernelUpdate({type(self.kernel).__name__}): site {address!r} is "
                    f"{'discrete' if node.kind == 'sample' else 'a ' + node.kind + ' node'}; "
                    "a flat-density kernel moves continuous latent sites only: give a discrete "
                    "site DiscreteGibbs() or enumerate it out (discrete='enumerate')"
                )
        if self.backend not in ("auto", "native", "torch"):
            raise ValueError(f"KernelUpdate: backend must be 'auto', 'native' or 'torch', "
                             f"got {self.backend!r}")
        kernel, nuts = self.kernel, type(self.kernel) is NUTS and self.backend != "torch"
        if getattr(kernel, "compact", False):  # rows left out would lose their chain's data
            kernel = replace(kernel, compact=False)
        flat = ConditionalFlat(graph, tuple(sites), nuts=nuts)
        if nuts and flat.native is not None:  # chain c's C transitions read its data row c
            return replace(self, kernel=NativeNUTS.of(kernel, flat.native), flat=flat,
                           backend="native")
        return replace(self, kernel=kernel, flat=flat, backend="torch")

    def _bound(self, data: dict[str, Tensor]) -> Kernel:
        if self.backend == "native":  # the C transitions read the rows bound last
            self.flat.bind_native(data)
        return self.kernel.bind(lambda z: self.flat.log_density_and_grad(z, data))

    def init(self, rng: RNG, values: Values, num_warmup: int) -> tuple[Values, KernelUpdateState]:
        if self.flat is None:
            raise ValueError("KernelUpdate is not bound to any site: call .bind(graph, sites)")
        data = self.flat.data(values)
        num_chains, dim = next(iter(values.values())).shape[0], self.flat.dim
        z = (rand(rng, num_chains, (dim,)) * 2 - 1) * self.init_radius
        for _ in range(self.init_tries):
            log_p, grad = self.flat.log_density_and_grad(z, data)
            bad = ~(torch.isfinite(log_p) & torch.isfinite(grad).all(-1))
            if not bad.any():
                break
            rows = bad.nonzero().flatten().tolist()
            redraw = (rand(rng, num_chains, (dim,), rows=rows) * 2 - 1) * self.init_radius
            z = torch.where(bad.unsqueeze(-1), redraw, z)
        else:
            raise ModelError(
                f"KernelUpdate: no finite log density for sites {list(self.flat.sites)} after "
                f"{self.init_tries} draws of uniform(-{self.init_radius}, {self.init_radius}) on "
                f"the unconstrained space, for chains {bad.nonzero().flatten().tolist()}"
            )
        kernel = self._bound(data)
        state = kernel.init(z)
        astate = None
        if self.adaptation is not None and num_warmup > 0:
            state, astate = self.adaptation.init(kernel, rng, state, num_warmup)
        values = {**values, **self.flat.values(state.position, data)}
        return values, KernelUpdateState(state, astate, 0, data)

    def step(
        self, rng: RNG, values: Values, state: KernelUpdateState
    ) -> tuple[Values, KernelUpdateState, dict[str, Tensor]]:
        """One kernel transition of the block's sites given the other sites' values."""
        kstate, astate, iteration, last = state
        data = self.flat.data(values)
        kernel = self._bound(data)
        if any(data[k] is not last[k] for k in data):
            log_p, grad = kernel.log_density_fn(kstate.position)
            kstate = kstate._replace(log_density=log_p, grad=grad)
        kstate, info = kernel.step(rng, kstate)
        if astate is not None:
            kstate, astate = self.adaptation.update(kernel, rng, iteration, kstate, info, astate)
            if iteration + 1 == astate.num_warmup:
                astate = None
        values = {**values, **self.flat.values(kstate.position, data)}
        return values, KernelUpdateState(kstate, astate, iteration + 1, data), info._asdict()

    def tuned(self, state: KernelUpdateState) -> dict[str, Any]:
        """The adapted step size ``(chains,)`` and inverse mass matrix of the block."""
        return {"step_size": state.kernel.step_size,
                "inverse_mass_matrix": state.kernel.metric.inverse_mass}
