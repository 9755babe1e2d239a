"""The allow-list of operations a ``call`` node may name, and the name of each.

Text is never ``eval``'d: a call target is looked up here by qualified name, and only public
callables of a few torch namespaces (plus ppl's own helpers) resolve. Refused: random-number
functions (randomness belongs in ``sample`` sites), in-place ops (``Tensor.add_``: a graph
must not write into its inputs), functions that change or read process-wide state
(``torch.use_deterministic_algorithms``, ``torch.manual_seed``, ``torch.set_*``, thread
counts, ...) and loaders of other code or memory (``torch.import_ir_module*``,
``torch.as_strided``, dlpack, files). ``check_allocation`` caps what one constructor call of
a parsed graph may allocate (``torch.zeros``, ``Tensor.expand``, ...).

    >>> import torch
    >>> op_name(torch.add), op_name(torch.Tensor.exp)
    ('torch.add', 'Tensor.exp')
    >>> resolve_op("Tensor.__getitem__") is torch.Tensor.__getitem__
    True
    >>> op_name(torch.Tensor.add_) is None
    True
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

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
                 "storage", "_C", "numpy", "tolist", "item", "backward", "register",
                 # process-wide state, other code, raw memory
                 "deterministic", "rng_state", "num_threads", "num_interop", "flush_denormal",
                 "printoptions", "warn_always", "anomaly", "autocast", "matmul_precision",
                 "import_ir_module", "parse_ir", "as_strided", "dlpack", "frombuffer",
                 "file_path", "multiprocessing", "fork", "wait", "generator")


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
    return not attr.startswith("_") and not attr.endswith("_")  # x_: in place


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


@functools.cache
def _inplace_position(name: str) -> int | None:
    """Where an op takes an ``inplace`` flag (``torch.nn.functional.relu``), if it does."""
    try:
        params = list(inspect.signature(resolve_op(name)).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: no inplace flag
        return None
    return params.index("inplace") if "inplace" in params else None


def check_pure(target: str, args: tuple, kwargs: tuple[tuple[str, Any], ...]) -> None:
    """Refuse a call that would write into one of its arguments: ``out=`` or a set (or not
    literal) ``inplace`` flag."""
    given = dict(kwargs) if kwargs else {}
    if given.get("out") is not None:
        raise IRError(f"call {target}: out= writes into an argument; a call in a graph must "
                      "not mutate its inputs")
    position = _inplace_position(target)
    if position is None:
        return
    flag = args[position] if len(args) > position else given.get("inplace", False)
    if flag is not False:
        raise IRError(f"call {target}: inplace={flag!r} writes into its input; a call in a "
                      "graph must not mutate its inputs (inplace must be a literal False)")


MAX_ALLOCATION = 1 << 24
"""Most elements one constructor call of a parsed graph may create (128 MiB of float64)."""


def _sizes(args: tuple) -> list:
    """Sizes given as ``*ints`` or one int sequence (``torch.Size``, list, tuple)."""
    if len(args) == 1 and isinstance(args[0], list | tuple):
        args = tuple(args[0])
    return list(args)


def _arange_count(args: tuple, kwargs: dict) -> list:
    """[number of values] of ``torch.arange(end)`` / ``(start, end[, step])``, or the
    non-literal bounds."""
    given = dict(zip(("end",) if len(args) == 1 else ("start", "end", "step"), args, strict=False))
    start, end, step = (kwargs.get(k, given.get(k, d)) for k, d in
                        (("start", 0), ("end", None), ("step", 1)))
    bounds = [start, end, step]
    if not all(type(v) in (int, float) and math.isfinite(v) for v in bounds) or step == 0:
        return [v for v in bounds if type(v) is not int] or [None]
    return [max(0, math.ceil((end - start) / step))]


_ALLOCATIONS: dict[str, Callable[[tuple, dict], list]] = {
    **{f"torch.{f}": lambda a, k: _sizes(a) if a else _sizes((k.get("size"),))
       for f in ("zeros", "ones", "empty")},
    "torch.full": lambda a, k: _sizes(a[:1] or (k.get("size"),)),
    "torch.empty_strided": lambda a, k: _sizes(a[:1] or (k.get("size"),)),
    "torch.empty_permuted": lambda a, k: _sizes(a[:1] or (k.get("size"),)),
    "torch.arange": _arange_count,
    "torch.linspace": lambda a, k: [(a[2:3] or (k.get("steps"),))[0]],
    "torch.logspace": lambda a, k: [(a[2:3] or (k.get("steps"),))[0]],
    "torch.eye": lambda a, k: [a[0], a[1] if len(a) > 1 else a[0]] if a else [k.get("n")],
    "torch.tril_indices": lambda a, k: [2, *a[:2]],
    "torch.triu_indices": lambda a, k: [2, *a[:2]],
    **{f"Tensor.new_{f}": lambda a, k: _sizes(a[1:]) if len(a) > 1 else _sizes((k.get("size"),))
       for f in ("zeros", "ones", "empty")},
    "Tensor.new_full": lambda a, k: _sizes(a[1:2] or (k.get("size"),)),
    # growth factors of the input: the new (or repeated) dims; -1 keeps a dim of the input
    "Tensor.expand": lambda a, k: [d for d in _sizes(a[1:]) if d != -1],
    "torch.broadcast_to": lambda a, k: [d for d in _sizes(a[1:]) if d != -1],
    "Tensor.broadcast_to": lambda a, k: [d for d in _sizes(a[1:]) if d != -1],
    "Tensor.repeat": lambda a, k: _sizes(a[1:]),
    "Tensor.tile": lambda a, k: _sizes(a[1:]),
    "torch.tile": lambda a, k: _sizes(a[1:]),
    "Tensor.repeat_interleave": lambda a, k: list(a[1:2] or (k.get("repeats", 1),)),
    "torch.repeat_interleave": lambda a, k: list(a[1:2] or (k.get("repeats", 1),)),
}


def check_allocation(target: str, args: tuple, kwargs: tuple[tuple[str, Any], ...]) -> None:
    """Refuse a constructor call (``torch.zeros``, ``Tensor.expand``, ...) that would create
    more than ``MAX_ALLOCATION`` elements (or multiply its input by more), or whose sizes are
    not literal ints, so that what a parsed graph allocates is known before it runs."""
    count = _ALLOCATIONS.get(target)
    if count is None:
        return
    dims = count(tuple(args), dict(kwargs))
    if not all(type(d) is int for d in dims):
        raise IRError(
            f"call {target}: sizes must be literal ints in a parsed graph (got "
            f"{', '.join(repr(d) for d in dims if type(d) is not int)}), so that what it "
            "allocates can be checked"
        )
    total = math.prod(max(d, 0) for d in dims)
    if total > MAX_ALLOCATION:
        raise IRError(
            f"call {target}: {total} elements is more than a parsed graph may allocate in one "
            f"call (at most {MAX_ALLOCATION}); bind large data to an input node"
        )
