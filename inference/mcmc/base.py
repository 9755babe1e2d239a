"""The state, info and kernel interface shared by every MCMC kernel.

A kernel is a small frozen dataclass holding a log density function and its own settings.
``init(position) -> State`` evaluates the density once; ``step(rng, state) -> (State, Info)``
makes one transition for every chain. Tunable parameters (step size, inverse mass matrix) are
per chain and live in the :class:`State`, so adaptation is ``state._replace(...)`` and one
kernel object serves any number of chains; kernels are interchangeable on the same state
(e.g. NUTS then slice on the same chains).

The log density function maps unconstrained positions ``(C, D)`` to
``(log_density (C,), grad (C, D))``. It may return ``-inf`` or ``nan`` at bad points (kernels
treat them as divergent or rejected), must not modify its input in place nor keep a reference
to it (kernels update positions in place), and must not later modify what it returned.

>>> from ppl.inference.mcmc import NUTS
>>> fn = lambda z: (-0.5 * (z * z).sum(-1), -z)
>>> kernel = NUTS(fn, step_size=0.5)
>>> state = kernel.init(torch.zeros(4, 3, dtype=torch.float64))
>>> state.position.shape, state.step_size.shape
(torch.Size([4, 3]), torch.Size([4]))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from ppl.inference.rng import RNG

from .integrators import LogDensityFn, Metric, make_metric

__all__ = ["State", "Info", "Kernel", "KernelBase", "StretchInterrupted", "check_count",
           "check_probability", "make_info", "stack_infos", "step_by_step"]


class StretchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a stretch of transitions: ``info`` ``(C, n)`` and ``draws`` ``(C, n, D)``
    of the ``n`` transitions every chain completed before it (the runner keeps them)."""

    def __init__(self, info: Info, draws: Tensor):
        super().__init__(f"interrupted after {draws.shape[1]} transitions")
        self.info, self.draws = info, draws


def check_count(owner: str, name: str, value: object, minimum: int) -> None:
    """Raise a ``ValueError`` naming ``owner`` unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")


def check_probability(owner: str, name: str, value: float | None) -> None:
    """Raise a ``ValueError`` naming ``owner`` unless ``value`` is None or in (0, 1)."""
    if value is not None and not 0.0 < float(value) < 1.0:
        raise ValueError(f"{owner}: {name} must lie strictly between 0 and 1, got {value!r}")


class State(NamedTuple):
    """Per-chain sampler state. ``position`` ``(C, D)``, ``log_density`` ``(C,)``, ``grad``
    ``(C, D)`` at the position; ``step_size`` ``(C,)`` and ``metric`` are the tunable
    parameters (for random-walk and slice kernels the step size is the proposal scale or
    bracket width, in units of the metric's ``sqrt(M^{-1})``)."""

    position: Tensor
    log_density: Tensor
    grad: Tensor
    step_size: Tensor
    metric: Metric


class Info(NamedTuple):
    """What one transition did, per chain (all ``(C,)``).

    ``accept_prob``: the acceptance statistic that step-size adaptation targets (NUTS: mean
    Metropolis probability over the trajectory, as Stan's ``accept_stat__``; MH kernels:
    ``min(1, ratio)``; slice: 1). ``divergent``: the energy error exceeded the threshold or the
    density was not finite along the way. ``energy``: the Hamiltonian at the returned point
    (``-log_density`` for kernels without momentum). ``num_grad_evals``: rows of the log
    density function this chain needed. ``tree_depth``: NUTS doublings (0 elsewhere).
    ``step_size``: the step size used (after jitter).
    """

    accept_prob: Tensor
    divergent: Tensor
    energy: Tensor
    num_grad_evals: Tensor
    tree_depth: Tensor
    step_size: Tensor


def make_info(
    accept_prob: Tensor,
    divergent: Tensor,
    energy: Tensor,
    num_grad_evals: Tensor,
    step_size: Tensor,
    tree_depth: Tensor | None = None,
) -> Info:
    """Build an :class:`Info`, filling ``tree_depth`` with zeros when the kernel has none."""
    if tree_depth is None:
        tree_depth = torch.zeros_like(num_grad_evals)
    return Info(accept_prob, divergent, energy, num_grad_evals, tree_depth, step_size)


def stack_infos(infos: list[Info]) -> Info:
    """Per-transition infos ``(C,)`` stacked along a new draw dimension: ``(C, len(infos))``."""
    if not infos:
        raise ValueError("no transitions to stack")
    return Info(*(torch.stack(field, dim=1) for field in zip(*infos, strict=True)))


def step_by_step(kernel: Kernel, rng: RNG, state: State, num_steps: int
                 ) -> tuple[State, Info, Tensor]:
    """``num_steps`` calls of ``kernel.step``, as :meth:`KernelBase.steps` returns them (for
    any kernel, including those that only implement the :class:`Kernel` protocol)."""
    infos, positions = [], []
    try:
        for _ in range(num_steps):
            state, info = kernel.step(rng, state)
            infos.append(info)
            positions.append(state.position.clone())  # kernels may update it in place
    except KeyboardInterrupt:
        if not infos:
            raise
        raise StretchInterrupted(stack_infos(infos), torch.stack(positions, 1)) from None
    return state, stack_infos(infos), torch.stack(positions, 1)


@runtime_checkable
class Kernel(Protocol):
    """What ``sample`` and compositional samplers need from a kernel."""

    log_density_fn: LogDensityFn | None
    target_accept: float | None

    def init(self, position: Tensor) -> State: ...

    def step(self, rng: RNG, state: State) -> tuple[State, Info]: ...

    def bind(self, log_density_fn: LogDensityFn) -> Kernel: ...


@dataclass(frozen=True)
class KernelBase:
    """Settings every kernel shares and the ``init`` they share.

    ``step_size``: initial step size (a float, or a ``(C,)`` tensor). ``metric``: ``"diag"`` or
    ``"dense"``, the shape of the inverse mass matrix the state carries and adaptation
    estimates. ``inverse_mass_matrix``: initial ``M^{-1}`` as ``(D,)``/``(D, D)`` shared by all
    chains or ``(C, D)``/``(C, D, D)`` per chain; identity when omitted.
    """

    log_density_fn: LogDensityFn | None = None
    step_size: float | Tensor = 1.0
    metric: str = "diag"
    inverse_mass_matrix: Tensor | None = None

    #: acceptance statistic that step-size adaptation aims for; None: no step-size adaptation.
    target_accept: ClassVar[float | None] = 0.8
    #: whether Stan's doubling/halving step-size search applies (gradient-based kernels).
    step_size_search: ClassVar[bool] = True
    #: whether transitions evaluate the density outside ``log_density_fn`` (in C) and report
    #: those evaluations in ``Info.num_grad_evals`` (the runner then adds them to its count).
    counts_own_evaluations: ClassVar[bool] = False

    def bind(self, log_density_fn: LogDensityFn):
        """A copy of this kernel that uses ``log_density_fn``."""
        return replace(self, log_density_fn=log_density_fn)

    @property
    def fn(self) -> LogDensityFn:
        if self.log_density_fn is None:
            raise ValueError(
                f"{type(self).__name__} has no log density function: construct it as "
                f"{type(self).__name__}(log_density_fn, ...) or call .bind(log_density_fn)"
            )
        return self.log_density_fn

    def init(self, position: Tensor) -> State:
        """Evaluate the log density at ``position`` ``(C, D)`` and attach the initial step
        size and metric (broadcast to all chains)."""
        if position.dim() != 2:
            raise ValueError(
                f"positions must be (chains, dim), got shape {tuple(position.shape)}; "
                "use position.unsqueeze(0) for one chain"
            )
        if self.metric not in ("diag", "dense"):
            raise ValueError(f"metric must be 'diag' or 'dense', got {self.metric!r}")
        with torch.no_grad():
            z = position.detach().clone()
            num_chains, dim = z.shape
            log_density, grad = self.fn(z)
            step_size = torch.as_tensor(self.step_size, dtype=z.dtype, device=z.device)
            step_size = step_size.expand(num_chains).clone()
            return State(
                z, log_density.clone(), grad.clone(), step_size, self._initial_metric(z, dim)
            )

    def steps(self, rng: RNG, state: State, num_steps: int) -> tuple[State, Info, Tensor]:
        """``num_steps`` transitions with the state's step size and metric fixed: the final
        state, the infos ``(C, num_steps)`` and the positions ``(C, num_steps, D)``. Kernels
        that run a stretch of transitions in one go (NUTS in C) override it."""
        return step_by_step(self, rng, state, num_steps)

    def _initial_metric(self, z: Tensor, dim: int) -> Metric:
        num_chains = z.shape[0]
        dense = self.metric == "dense"
        given = self.inverse_mass_matrix
        if given is None:
            inv = torch.ones(num_chains, dim, dtype=z.dtype, device=z.device)
            if dense:
                inv = torch.diag_embed(inv)
        else:
            inv = torch.as_tensor(given, dtype=z.dtype, device=z.device)
            if dense and inv.dim() == 1:
                inv = torch.diag(inv)
            if dense and inv.dim() == 2 and tuple(inv.shape) != (dim, dim):
                inv = torch.diag_embed(inv)  # per-chain diagonals given to a dense kernel
            if inv.dim() == (2 if dense else 1):
                inv = inv.expand(num_chains, *inv.shape)
            expected = (num_chains, dim, dim) if dense else (num_chains, dim)
            if tuple(inv.shape) != expected:
                raise ValueError(
                    f"inverse_mass_matrix has shape {tuple(given.shape)}; expected (dim,) "
                    f"{'or (dim, dim) ' if dense else ''}or {expected} for {num_chains} chains "
                    f"of dimension {dim}"
                )
            inv = inv.clone()
        return make_metric(inv)
