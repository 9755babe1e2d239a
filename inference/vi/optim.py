"""The optimizer update of a ``VI`` step: torch's optimizer, with its fused Adam stepped
without ``Optimizer.step``'s per-call bookkeeping.

``Optimizer.step`` spends about 40 µs per call around a 13 µs fused Adam kernel on small
params (a profiler record, hook dispatch, the params regrouped by device and dtype, the
lazy-state checks), which is most of a fast ADVI step. :func:`stepper` returns a function
that runs the same kernels on the optimizer's own params and state tensors, so the params,
``state_dict``, checkpoints and schedules are exactly those of ``optimizer.step()``; any
other optimizer, option or hook keeps ``optimizer.step``.

    >>> leaf = torch.zeros(3, requires_grad=True)
    >>> optimizer = torch.optim.Adam([leaf], lr=0.1, fused=True)
    >>> step = stepper(optimizer)
    >>> for _ in range(2):
    ...     leaf.grad = torch.ones(3)
    ...     step()
    >>> [round(v, 4) for v in leaf.tolist()], int(optimizer.state[leaf]["step"])
    ([-0.2, -0.2, -0.2], 2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import optimizer as torch_optimizer

__all__ = ["optimizer_options", "pack", "stepper", "views"]

# the Adam options the direct kernel call leaves out (torch's own step handles them)
_UNSUPPORTED = ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay")


def optimizer_options(optimizer: type, options: dict[str, Any],
                      leaves: list[Tensor]) -> dict[str, Any]:
    """``options``, with torch's fused Adam where the user left the implementation open: the
    same update in one kernel, a third of the time of the per-tensor loop on small params."""
    chosen = {"fused", "foreach"} & options.keys()
    if optimizer in (torch.optim.Adam, torch.optim.AdamW) and not chosen and all(
            t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in leaves):
        return {**options, "fused": True}
    return options


def views(buffer: Tensor, like: list[Tensor]) -> list[Tensor]:
    """``buffer`` cut into consecutive views of the shapes of ``like``."""
    parts = buffer.split([t.numel() for t in like])
    return [part.view(t.shape) for part, t in zip(parts, like, strict=True)]


def pack(tensors: list[Tensor]) -> Tensor:
    """Move ``tensors`` into one flat buffer, in order, and return it: each (the same
    object, wherever it is held: a param store, an optimizer's state) becomes a view of it,
    so one op on the buffer reads or updates them all."""
    buffer = torch.cat([t.detach().reshape(-1) for t in tensors])
    for tensor, view in zip(tensors, views(buffer, tensors), strict=True):
        tensor.data = view
    return buffer


def stepper(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """``optimizer.step``, or for a plain fused Adam with no hooks the same update as
    :class:`_FusedAdam`."""
    hooks = (optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
             or torch_optimizer._global_optimizer_pre_hooks
             or torch_optimizer._global_optimizer_post_hooks)
    plain = type(optimizer) is torch.optim.Adam and not hooks and all(
        group["fused"] and not any(group[k] for k in _UNSUPPORTED)
        for group in optimizer.param_groups)
    return _FusedAdam(optimizer) if plain else optimizer.step


class _FusedAdam:
    """Fused Adam's kernel called directly: the step counts incremented, then per group
    ``_fused_adam_`` on the params, grads and moment estimates, with the group's current
    ``lr`` (a schedule's). A step where some param has no grad or no state yet (the first)
    goes through ``optimizer.step``, which creates the state; the state's tensors are then
    collected once, so a ``load_state_dict`` must come before the first step, and the step
    counts (one scalar tensor per param) packed into one buffer, so that one ``add_``
    increments them all (``_foreach_add_`` took 12 µs for four scalars). The kernel
    runs with one intra-op thread (torch's count is set around the call and restored): it
    opens a parallel region however small the params are, and on a busy machine waiting
    for the second thread took 0.5 ms against its 4 µs of work."""

    def __init__(self, optimizer: torch.optim.Adam):
        self.optimizer = optimizer
        self.groups: list[tuple[dict, list[Tensor], list[Tensor], list[Tensor], list[Tensor],
                                list[Tensor]]] | None = None
        self.step_counts = torch.zeros(0)  # every param's step count, packed (see below)

    def __call__(self) -> None:
        if self.groups is None or any(p.grad is None for g in self.groups for p in g[1]):
            self.optimizer.step()
            self.groups = self._collect()
            if self.groups is not None:
                self.step_counts = pack([s for g in self.groups for s in g[5]])
            return
        self.step_counts.add_(1)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the kernel opens a parallel region at any size: see above
        try:
            for group, params, values, exp_avgs, exp_avg_sqs, steps in self.groups:
                beta1, beta2 = group["betas"]
                torch._fused_adam_(values, [p.grad for p in params], exp_avgs, exp_avg_sqs,
                                   [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
                                   beta2=beta2, weight_decay=group["weight_decay"],
                                   eps=group["eps"], maximize=False)
        finally:
            torch.set_num_threads(threads)

    def _collect(self):
        """Each group's params, their detached values (updated in place with no autograd
        check), and their state tensors; None while some state is missing, or where the
        params mix devices or dtypes (torch's step splits those)."""
        groups = []
        params_of = [group["params"] for group in self.optimizer.param_groups]
        if len({(p.device, p.dtype) for params in params_of for p in params}) > 1:
            return None
        for group, params in zip(self.optimizer.param_groups, params_of, strict=True):
            states = [self.optimizer.state.get(p, {}) for p in params]
            if not all(states):
                return None
            groups.append((group, params, [p.detach() for p in params],
                           [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                           [s["step"] for s in states]))
        return groups
