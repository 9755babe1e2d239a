"""Lower a graph to a flat, unconstrained, chain-batched log density and its gradient.

The MCMC kernels see one float64 tensor ``z`` of shape ``(chains, dim)``. Lowering is two
steps: the ``unconstrain`` pass (``ppl.passes``) rewrites every constrained latent into a
real-valued one, its bijection ``biject_to(support)`` and a ``log|det J|`` factor; then an
interpreter of the pass's graph (``ppl.ir.interpreter``) reads each real-valued latent from
its block of ``z`` (a slice, in graph order). Three interpreters implement it:

- **native** (``ppl.inference.lowering.native``): the potential below emitted as C and compiled
  (once per model structure, cached on disk), evaluated chain by chain in one foreign call;
  ``ppl.inference.mcmc.native_nuts`` links its NUTS to it. Used when the graph is generated,
  the machine has a C compiler and the model's data are on the CPU;
- **generated** (``ppl.inference.lowering.tape``): the log density and its gradient as one
  straight-line batched function with no autograd and no ``Distribution`` objects; used
  whenever every operation and family of the graph has a rule;
- **autograd** (the fallback, and the reference the generated one is tested against): code
  generated per position, batched with ``torch.func.vmap`` and differentiated by one
  autograd pass; it handles every graph, e.g. supports whose bounds are other latents.

``backend`` says which one runs (chosen once, when the model is built), and
``fallback_reason`` why a faster one was refused (naming the family or operation without a
rule); a model that lands on the autograd path also says so once, with a
:class:`FastPathWarning`. The autograd code is compiled only when it is used: on the tape's
backends the draws' constrained values come from the tape's forward code too.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import HalfNormal
    >>> @model
    ... def m():
    ...     sample("s", HalfNormal(1.0))
    >>> flat = FlatModel.from_graph(m.graph())
    >>> log_p, grad = flat.log_density_and_grad(torch.zeros(4, flat.dim))
    >>> log_p.shape, grad.shape
    (torch.Size([4]), torch.Size([4, 1]))
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch.distributions import biject_to

from ppl.ir import Graph, IRError
from ppl.ir.codegen import LogDensityCodeGen
from ppl.ir.node import Node
from ppl.passes import latent_transforms, unconstrain, unroll, vectorize_loops
from ppl.passes.rewriting import probe

from .native import CompileError, NativePotential
from .native.compiler import Unit
from .tape import Lowered, Unsupported, lower_potential, torch_potential, torch_values


class FastPathWarning(UserWarning):
    """A model left its fastest path: a family or operation has no generated rule (it runs on
    autograd), or its native library could not be built (it runs the generated torch code)."""


@dataclass(frozen=True)
class LatentBlock:
    """Where one latent site lives in the flat vector, and its shapes; ``latent`` is the
    address of the real-valued latent of the unconstrained graph that holds it
    (``<address>__unconstrained``, or ``address`` for a site that was real already)."""

    address: str
    offset: int
    size: int
    unconstrained_shape: tuple[int, ...]
    shape: tuple[int, ...]
    latent: str


def _as_float64(value):
    """Floating data in the potential's precision (e.g. a float32 design matrix times a
    float64 position would fail in ``matmul``)."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(torch.float64)
    return value


class _FlatCodeGen(LogDensityCodeGen):
    """Log density of the unconstrained graph at the flat vector ``z`` (one position, no
    batch dim); with ``sites`` (address -> node name), those sites' values instead."""

    signature = "z, data=None, params=None"

    def __init__(self, graph: Graph, blocks: list[LatentBlock], fn_name: str,
                 sites: dict[str, str] | None = None):
        super().__init__(graph, fn_name)
        self.blocks = {b.latent: b for b in blocks}
        self.sites = sites
        self.namespace["_graph_data"] = {k: _as_float64(v) for k, v in graph.data.items()}

    def prologue(self) -> None:
        self.emit("_data = _graph_data if data is None else {**_graph_data, **data}")
        self.emit("log_p = 0.0")

    def sample(self, node: Node, args: tuple, kwargs: dict) -> str:
        block = self.blocks[node.address]
        piece = f"z[{block.offset}:{block.offset + block.size}]"
        value = self.assign(node, f"{piece}.reshape({block.unconstrained_shape!r})")
        self.add_site(node, self.site_distribution(node, kwargs), value)
        return value

    def output(self, node: Node, args: tuple, kwargs: dict) -> None:
        if self.sites is None:
            return super().output(node, args, kwargs)
        items = ", ".join(f"{a!r}: {self.env[name]}" for a, name in self.sites.items())
        self.emit(f"return {{{items}}}")


BACKENDS = ("auto", "native", "generated", "autograd")


def _device(graph: Graph) -> torch.device:
    """Where the model's tensors live (the CPU when it has none)."""
    for value in graph.data.values():
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")


def model_sites(graph: Graph) -> dict[str, str]:
    """The sites whose values a posterior reports, address -> node name: every latent and
    deterministic site of ``graph`` (the node names the ``unconstrain`` pass keeps)."""
    return {n.address: n.name for n in graph.nodes if n.kind == "sample" or n.is_deterministic_site}


def lower_loops(graph: Graph) -> Graph:
    """Loops (``ppl.scan``) as vectorized nodes over their steps (``vectorize_loops``: body
    site ``x`` is one site of shape ``(T, ...)``); a loop that does not qualify (its carry
    recurs) is unrolled into T copies of its step, with one :class:`FastPathWarning` naming
    it and why."""
    graph = vectorize_loops()(graph)
    for loop, why in graph.attrs.get("unvectorized_loops", {}).items():
        warnings.warn(f"scan {loop!r} is unrolled into one copy of its step per step: {why}",
                      FastPathWarning, stacklevel=4)
    return unroll()(graph)


class FlatModel:
    """A graph's posterior as a function of one unconstrained vector per chain.

    The lowering is the ``unconstrain`` pass (``unconstrained``: every latent real-valued,
    with the bijections and their ``log|det J|`` as nodes) followed by an interpreter of its
    result: the tape's (generated and native backends) or the code generator's (autograd).
    ``backend`` (``"auto"``: the fastest that accepts the graph, or one of ``BACKENDS``) is
    chosen once, here: ``potential`` is that backend's ``z -> (log density, grad)``, and
    ``native`` the compiled potential a C sampler links to when the backend is native.
    """

    dtype = torch.float64

    def __init__(self, graph: Graph, unconstrained: Graph, blocks: list[LatentBlock],
                 backend: str = "auto"):
        self.graph = graph
        self.unconstrained = unconstrained
        self.blocks = blocks
        self.sites = model_sites(graph)
        self.dim = sum(b.size for b in blocks)
        self.backend, self.fallback_reason = "autograd", None
        self._lowered: Lowered | None = None
        self._generated: Callable | None = None
        self.native: NativePotential | None = None
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if backend != "autograd":
            self._lower(backend)
        # the backend is chosen here, once: every evaluation goes through ``potential``
        self.potential: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = (
            self._first_native_call if self.native is not None
            else self._generated if self._generated is not None
            else self.autograd_log_density_and_grad
        )

    def build_native(self, *companions: Unit) -> bool:
        """Build the native library now, with ``companions`` (C units that call the
        potential, e.g. a sampler's) linked in. If the C compiler or the library fails, the
        model runs the generated torch code from then on: ``backend`` and
        ``fallback_reason`` say so, with one :class:`FastPathWarning`; returns whether the
        native backend is still in use."""
        if self.native is None:
            return False
        try:
            self.native.link(*companions)
            self.native.build()
        except (CompileError, OSError) as error:
            self.native, self.backend, self.potential = None, "generated", self._generated
            self.fallback_reason = f"the native library could not be built: {error}"
            warnings.warn(f"{self.fallback_reason}; the model runs the generated torch code "
                          "instead, several times slower", FastPathWarning, stacklevel=3)
            return False
        self.potential = self.native
        return True

    def _first_native_call(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.build_native()
        return self.potential(z)

    def _lower(self, backend: str) -> None:
        """Record the tape and emit torch (and, on the CPU with a compiler, C) code for it;
        with ``backend="auto"`` a refusal is kept in ``fallback_reason``."""
        try:
            self._lowered = lower_potential(self.unconstrained, self.blocks, sites=self.sites)
            self._generated = torch_potential(self._lowered)
            self.backend = "generated"
            if backend in ("auto", "native"):
                if _device(self.graph).type != "cpu":
                    raise Unsupported(f"the model's data are on {_device(self.graph)}; "
                                      "the native backend runs on the CPU")
                self.native = NativePotential.from_lowered(self._lowered)
                self.backend = "native"
        except Unsupported as refusal:
            if backend != "auto":
                raise
            self._lowered = None
            self.fallback_reason = str(refusal)
            if self._generated is None:
                warnings.warn(
                    f"{refusal}: the model runs on the autograd path, typically 10 to 50 "
                    "times slower end to end than the native one (bench/gallery.py)",
                    FastPathWarning, stacklevel=4,
                )

    @cached_property
    def log_density_fn(self) -> Callable:
        """The autograd path's log density of one unconstrained position ``z (dim,)``."""
        return _FlatCodeGen(self.unconstrained, self.blocks, "flat_log_density").compile()

    @cached_property
    def values_fn(self) -> Callable:
        """The autograd path's latent and deterministic site values of one unconstrained
        position."""
        return _FlatCodeGen(self.unconstrained, self.blocks, "flat_values", self.sites).compile()

    @cached_property
    def _batched(self) -> Callable:
        return torch.func.vmap(self.log_density_fn)

    @cached_property
    def _batched_values(self) -> Callable:
        """Site values of a batch of positions: from the tape when the model is lowered
        (forward code only), else the vmapped autograd code."""
        if self._lowered is not None:
            return torch_values(self._lowered)
        return torch.func.vmap(self.values_fn)

    @classmethod
    def from_graph(cls, graph: Graph, backend: str = "auto") -> FlatModel:
        """Unconstrain the graph and lay out its latents, in graph order, using one prior
        draw for their shapes."""
        graph = lower_loops(graph)
        unconstrained = unconstrain()(graph)
        transforms = latent_transforms(unconstrained)
        prior = probe(unconstrained)
        blocks, offset = [], 0
        for node in graph.latent_nodes:
            site = transforms.get(node.address)
            latent = unconstrained.site(site.unconstrained if site else node.address)
            if prior.dists[latent.name].support.is_discrete:
                raise IRError(
                    f"site {node.address!r} is discrete; a flat model moves continuous latents "
                    "only: enumerate it out (enumerate_discrete) or give it a Gibbs update"
                )
            shape = tuple(prior.env[latent.name].shape)
            size = math.prod(shape)
            value_shape = tuple(prior.env[node.name].shape)
            blocks.append(
                LatentBlock(node.address, offset, size, shape, value_shape, latent.address)
            )
            offset += size
        return cls(graph, unconstrained, blocks, backend)

    def log_density_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z (chains, dim)`` -> ``(log density (chains,), gradient (chains, dim))``, float64,
        on the backend chosen when the model was built (``potential``)."""
        return self.potential(z.to(self.dtype))

    def autograd_log_density_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference path: one reverse pass through the vmapped forward (measured on
        eight schools, 4 chains: 2.3 ms against 3.3 ms for ``vmap(grad_and_value)``)."""
        z = z.to(self.dtype)
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_p = self._batched(z)
            (grad,) = torch.autograd.grad(log_p.sum(), z, allow_unused=True)
        return log_p.detach(), torch.zeros_like(z) if grad is None else grad

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        if self._generated is not None:
            return self.log_density_and_grad(z)[0]
        return self._batched(z.to(self.dtype))

    def constrained_values(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latent (constrained) and deterministic site values for a batch ``z (n, dim)``."""
        return self._batched_values(z.to(self.dtype))

    def unconstrain(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """The flat vector of a dict of constrained latent values (e.g. user init values)."""
        dists = probe(self.graph, values).dists
        parts = [
            biject_to(dists[self.graph.site(b.address).name].support).inv(values[b.address])
            for b in self.blocks
        ]
        return torch.cat([p.reshape(-1) for p in parts]) if parts else torch.zeros(0)
