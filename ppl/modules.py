"""``module(name, net)``: a ``torch.nn.Module``'s weights as params of the current store.

Inside a model or guide, ``module("encoder", net)`` sends one ``param`` message per
parameter of ``net`` (``"encoder.<path>"``, e.g. ``"encoder.0.weight"``), so the store,
``VI``'s optimizer, checkpoints and the graph IR all see them: a traced model records
``param`` nodes that the module's operations read, and gradients reach the weights on the
trace and the graph path alike. The store keeps the module's own ``nn.Parameter`` objects as
its leaves, so training moves ``net`` in place and ``net`` keeps working outside ppl. When
the store already holds a name (a restored checkpoint, or another module registered under
it), the store's value wins: a restored value is copied into ``net``'s weight, another
module's weight is shared with ``net``. Each message names the weight's owner
(``msg.infer[OWNER]``: the submodule and attribute), so a handler that holds params fixed
(``ppl.handlers.freeze_params``) can swap in a detached alias for the run.

A module used inside a traced model without ``module`` is refused by the tracer, which would
otherwise freeze its weights into the graph.

    >>> import torch
    >>> from ppl import ParamStore
    >>> net = torch.nn.Linear(3, 2)
    >>> with ParamStore() as store:
    ...     _ = module("net", net)
    >>> sorted(store), store.leaf("net.weight") is net.weight
    (['net.bias', 'net.weight'], True)
"""

from __future__ import annotations

import torch

from .errors import ModelError
from .params import current_store
from .primitives import param

__all__ = ["module", "OWNER"]

OWNER = "module_owner"
"""The ``infer`` key of a module weight's param message: ``(submodule, attribute)``."""


def module(name: str, net: torch.nn.Module) -> torch.nn.Module:
    """Register ``net``'s parameters as params ``name.<path>`` of the current store (in a
    model or guide, on every run) and return ``net``, now computing with the store's
    tensors."""
    if not isinstance(net, torch.nn.Module):
        raise TypeError(f"module({name!r}, ...) takes a torch.nn.Module, got "
                        f"{type(net).__name__}")
    store = current_store()
    for path, weight in list(net.named_parameters()):
        address = f"{name}.{path}"
        held = store.leaf(address)
        if held is not None and held is not weight:
            if isinstance(held, torch.nn.Parameter) and held.shape == weight.shape:
                _set_parameter(net, path, held)  # another module's weight: share it
                weight = held
            else:  # a restored value is copied into the module's weight (a clash refused)
                store.adopt(address, weight)
        owner, attr = _owner(net, path)
        value = param(address, weight, infer={OWNER: (owner, attr)})
        if value is not getattr(owner, attr):  # a handler's swap changes both alike
            raise ModelError(
                f"module {name!r}: a handler gave param {address!r} a value of its own, which "
                f"{type(net).__name__} cannot compute with; substitute a module's weights by "
                "loading them into the store (ParamStore.load_state_dict) instead"
            )
    return net


def _owner(net: torch.nn.Module, path: str) -> tuple[torch.nn.Module, str]:
    owner, _, attr = path.rpartition(".")
    return net.get_submodule(owner), attr


def _set_parameter(net: torch.nn.Module, path: str, weight: torch.nn.Parameter) -> None:
    setattr(*_owner(net, path), weight)
