"""The allow-list of operations a ``call`` node may name, and the name of each.

Text is never ``eval``'d: a call target is looked up here by qualified name, and only public
callables of a few torch namespaces (plus ppl's own helpers) resolve. Random-number
functions are excluded: randomness belongs in ``sample`` sites.

    >>> import torch
    >>> op_name(torch.add), op_name(torch.Tensor.exp)
    ('torch.add', 'Tensor.exp')
    >>> resolve_op("Tensor.__getitem__") is torch.Tensor.__getitem__
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .errors import IRError

_NAMESPACES: tuple[tuple[str, object], ...] = (
    ("torch", torch),
    ("torch.special", torch.special),
    ("torch.linalg", torch.linalg),
    ("torch.nn.functional", torch.nn.functional),
    ("torch.distributions.utils", torch.distributions.utils),
    ("Tensor", torch.Tensor),
)

_TENSOR_DUNDERS = frozenset(
    "__getitem__ __radd__ __rsub__ __rmul__ __rtruediv__ __rdiv__ __rpow__ __rmatmul__ "
    "__neg__ __abs__ __pow__ __matmul__ __and__ __or__ __xor__ __invert__ __rfloordiv__ "
    "__floordiv__ __mod__ __rmod__ __lt__ __le__ __gt__ __ge__ __eq__ __ne__ __truediv__ "
    "__mul__ __add__ __sub__ __rand__ __ror__ __rxor__ __lshift__ __rshift__".split()
)

RANDOM_OPS = frozenset(
    "rand randn randint randperm normal bernoulli multinomial poisson rand_like randn_like "
    "randint_like uniform_ normal_ exponential_ geometric_ cauchy_ log_normal_ random_ "
    "bernoulli_ dropout alpha_dropout feature_alpha_dropout dropout1d dropout2d dropout3d "
    "gumbel_softmax rrelu _sample_dirichlet _standard_gamma binomial".split()
)

_DENIED_WORDS = ("save", "load", "from_file", "set_", "manual_seed", "seed", "compile", "cuda",
                 "storage", "_C", "numpy", "tolist", "item", "backward", "register")


def identity(x):
    """The value itself: marks a deterministic site."""
    return x


def setitem(x: torch.Tensor, index, value) -> torch.Tensor:
    """Functional ``x[index] = value``: a new tensor, ``x`` untouched."""
    out = x.clone()
    out[index] = value
    return out


PPL_OPS: dict[str, Callable] = {"ppl.identity": identity, "ppl.setitem": setitem}


def _allowed_attr(namespace: str, attr: str) -> bool:
    if namespace == "Tensor" and attr in _TENSOR_DUNDERS:
        return True
    if attr in RANDOM_OPS or any(word in attr for word in _DENIED_WORDS):
        return False
    return not attr.startswith("_")


@functools.cache
def _tables() -> tuple[dict[int, str], dict[str, Callable]]:
    by_id: dict[int, str] = {}
    by_name: dict[str, Callable] = dict(PPL_OPS)
    for name, fn in PPL_OPS.items():
        by_id[id(fn)] = name
    for prefix, namespace in _NAMESPACES:
        for attr in dir(namespace):
            if not _allowed_attr(prefix, attr):
                continue
            obj = getattr(namespace, attr, None)
            if not callable(obj) or isinstance(obj, type):
                continue
            qualified = f"{prefix}.{attr}"
            by_name[qualified] = obj
            by_id.setdefault(id(obj), qualified)
    return by_id, by_name


def op_name(func: Callable) -> str | None:
    """The allow-listed name of ``func``, or None if it may not appear in a graph."""
    by_id, _ = _tables()
    return by_id.get(id(func))


def is_random_op(func: Callable) -> bool:
    return getattr(func, "__name__", "") in RANDOM_OPS


def resolve_op(name: str) -> Callable:
    """The callable an allow-listed name stands for; an ``IRError`` for anything else."""
    _, by_name = _tables()
    try:
        return by_name[name]
    except KeyError:
        raise IRError(
            f"call target {name!r} is not an allowed operation; targets are public functions of "
            "torch, torch.special, torch.linalg, torch.nn.functional, Tensor methods, and "
            f"{', '.join(PPL_OPS)} (random-number functions and private names are refused)"
        ) from None


def getitem(container, index):
    """An element of a tuple-valued operation's result (e.g. ``torch.broadcast_tensors``)."""
    return container[index]


_TENSOR_ATTRS = frozenset({"T", "mT", "H", "mH", "real", "imag"})


def attr(x: torch.Tensor, name: str) -> torch.Tensor:
    """A tensor-valued attribute such as ``x.T`` (only these: T, mT, H, mH, real, imag)."""
    if name not in _TENSOR_ATTRS:
        raise IRError(
            f"attribute {name!r} is not allowed in a graph; allowed: {sorted(_TENSOR_ATTRS)}"
        )
    return getattr(x, name)


PPL_OPS.update({"ppl.getitem": getitem, "ppl.attr": attr})
