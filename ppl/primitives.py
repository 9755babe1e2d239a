"""The modelling primitives: ``sample``, ``param``, ``factor``, ``deterministic``, ``plate``.

Each one sends a ``Message`` through the handler stack (see ``ppl.runtime``) and returns the
value the handlers settled on. Outside any handler, ``sample`` simply draws.

    >>> import torch
    >>> from ppl.stdlib import Normal
    >>> def model(data):
    ...     mu = sample("mu", Normal(0.0, 1.0))
    ...     with plate("data", len(data)):
    ...         sample("x", Normal(mu, 1.0), obs=data)
    ...     return mu
    >>> model(torch.zeros(3)).shape
    torch.Size([])
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.distributions import Distribution, constraints

from ppl.shapes import broadcast_shapes

from .errors import ModelError, ShapeError
from .randomness import drawing
from .runtime import (
    CHECKS,
    DEFAULT_VALUES,
    Message,
    Messenger,
    PlateFrame,
    active_handlers,
    apply_stack,
    caller_location,
    internal,
    unwatched,
)
from .scan import record_step
from .subsample import subsample_indices
from .validation import check_distribution, check_in_support, validation_enabled

RANDOM_KINDS = ("sample", "factor")


def as_tensor(value: Any) -> torch.Tensor:
    """Data as a tensor: Python and numpy numbers, and boolean tensors (which no log_prob
    accepts), become the default float dtype; other tensors are kept as they are."""
    if isinstance(value, torch.Tensor):
        with unwatched():  # reading the dtype is no part of the model (a tracer records none)
            is_bool = value.dtype == torch.bool
        return value.to(torch.get_default_dtype()) if is_bool else value
    tensor = torch.as_tensor(value)
    return tensor.to(torch.get_default_dtype()) if not tensor.is_floating_point() else tensor


def sample(
    name: str, fn: Distribution, obs: Any = None, *, infer: dict | None = None
) -> torch.Tensor:
    """A random choice at address ``name``: drawn from ``fn``, or fixed to ``obs`` if given."""
    check_distribution(name, fn)
    value = None if obs is None else as_tensor(obs)
    if not active_handlers():
        if value is None:
            return draw(fn)
        check_in_support(name, fn, value)
        return value
    msg = apply_stack(
        Message(
            kind="sample",
            name=name,
            fn=fn,
            value=value,
            is_observed=value is not None,
            infer=dict(infer or {}),
            source=caller_location(),
        )
    )
    return msg.value


def draw(dist: Distribution) -> torch.Tensor:
    """One draw from ``dist``, from the current seed scope's stream (:mod:`ppl.randomness`)."""
    with drawing():
        return dist.rsample() if dist.has_rsample else dist.sample()


DEFAULT_VALUES["sample"] = lambda msg: draw(msg.fn)


def check_sample_value(msg: Message) -> None:
    """An observed value fits the site's shape and support (run before any postprocess)."""
    if msg.is_observed and not msg.intervened:
        msg.value = as_tensor(msg.value)
        with internal():
            check_value_shape(msg)
            check_in_support(msg.name, msg.fn, msg.value)


CHECKS["sample"] = check_sample_value


def check_value_shape(msg: Message) -> None:
    """A fixed value must broadcast to the site's batch + event shape (plates included)."""
    if not validation_enabled():
        return
    dist = msg.fn
    expected = tuple(dist.batch_shape + dist.event_shape)
    got = tuple(msg.value.shape)
    try:  # most values have the site's shape exactly
        fits = got == expected or broadcast_shapes(got, expected) == expected
    except RuntimeError:
        fits = False
    if not fits:
        plates = ", ".join(f"{f.name!r} (size {f.subsample_size}, dim {f.dim})" for f in msg.plates)
        raise ShapeError(
            f"sample site {msg.name!r}: value of shape {got} does not broadcast to the site's "
            f"shape {expected} (batch {tuple(dist.batch_shape)} + event {tuple(dist.event_shape)})"
            + (f" inside plates {plates}" if plates else "")
            + "; wrap the site in a plate of the data's size, or use .to_event(n) for "
            "dimensions that form one event"
        )


class LogWeight(Distribution):
    """The 'distribution' of a factor site: its log_prob is the given log weight (public
    for code that scores factors without the primitive, e.g. the compiled VI step)."""

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = True

    def __init__(self, log_weight: torch.Tensor):
        self.log_weight = log_weight
        super().__init__(batch_shape=log_weight.shape, validate_args=False)

    def expand(self, batch_shape, _instance=None) -> LogWeight:
        return LogWeight(self.log_weight.expand(batch_shape))

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.log_weight

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.log_weight


def factor(name: str, log_weight: Any) -> torch.Tensor:
    """Add ``log_weight`` to the model's log density (a soft constraint or custom likelihood)."""
    log_weight = as_tensor(log_weight)
    if not active_handlers():
        return log_weight
    msg = Message(kind="factor", name=name, fn=LogWeight(log_weight), value=log_weight,
                  is_observed=True, source=caller_location())
    return apply_stack(msg).value


def deterministic(name: str, value: Any) -> torch.Tensor:
    """Record a named function of other sites so that inference reports it."""
    value = as_tensor(value)
    if not active_handlers():
        return value
    msg = Message(kind="deterministic", name=name, value=value, source=caller_location())
    return apply_stack(msg).value


def param(
    name: str,
    init: Any = None,
    constraint: constraints.Constraint = constraints.real,
    *,
    infer: dict | None = None,
) -> torch.Tensor:
    """A learnable tensor, stored unconstrained in the param store, returned constrained;
    ``infer`` tells handlers more about it (``ppl.module`` names the weight's owner)."""
    msg = Message(kind="param", name=name, fn=constraint, value=None,
                  infer={**(infer or {}), "init": init}, source=caller_location())
    return apply_stack(msg).value


class plate(Messenger):
    """Conditional independence along one batch dimension of size ``size``.

    As a context manager, sites inside are broadcast to ``size`` (or ``subsample_size``) at
    batch dimension ``dim`` (chosen automatically from the right if not given), their log
    densities scaled by ``size / subsample_size``; it yields the (sub)sample indices (see
    :mod:`ppl.subsample` for where subsample indices come from). As an
    iterator, it yields ``0..size-1`` and marks the sites of each iteration as independent
    without vectorizing (a sequential plate); each site made in iteration ``i`` records the
    plate in ``msg.plates`` and ``(name, i)`` in ``msg.infer["steps"]`` (outermost loop first;
    ``Meta.attr("steps")`` in a graph), so later passes and schedules know its step.
    """

    def __init__(
        self, name: str, size: int, subsample_size: int | None = None, dim: int | None = None
    ):
        self.name = name
        self.size = int(size)
        self.subsample_size = self.size if subsample_size is None else int(subsample_size)
        if not 0 < self.subsample_size <= self.size:
            raise ModelError(
                f"plate {name!r}: subsample_size {subsample_size} must be in 1..{size}"
            )
        if dim is not None and dim >= 0:
            raise ModelError(
                f"plate {name!r}: dim must be negative (counted from the right), got {dim}"
            )
        self.dim = dim
        self._frame: PlateFrame | None = None
        self._step: int | None = None
        self.indices: torch.Tensor | None = None

    def _allocate_dim(self) -> int:
        taken = {h._frame.dim for h in active_handlers() if isinstance(h, plate) and h._frame}
        if self.dim is not None:
            if self.dim in taken:
                raise ModelError(
                    f"plate {self.name!r}: dim {self.dim} is already used by an enclosing plate"
                )
            return self.dim
        dim = -1
        while dim in taken:
            dim -= 1
        return dim

    def __enter__(self) -> torch.Tensor:
        self._frame = PlateFrame(self.name, self.size, self._allocate_dim(), self.subsample_size)
        if self.subsample_size < self.size:
            self.indices = subsample_indices(self._frame)
        else:
            self.indices = torch.arange(self.size)
        super().__enter__()
        return self.indices

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self._frame = None

    def __iter__(self) -> Iterator[int]:
        for i in range(self.size):
            self._frame = PlateFrame(self.name, self.size, None, self.size)
            self._step = i
            Messenger.__enter__(self)
            try:
                yield i
            finally:
                Messenger.__exit__(self, None, None, None)
                self._frame, self._step = None, None

    def process(self, msg: Message) -> None:
        if msg.kind not in RANDOM_KINDS and msg.kind != "deterministic":
            return
        frame = self._frame
        msg.plates = (frame, *msg.plates)
        if frame.dim is None:
            record_step(msg, self.name, self._step)
        if msg.kind == "deterministic" or frame.dim is None:
            return
        if frame.subsample_size < frame.size:
            msg.scale = msg.scale * (frame.size / frame.subsample_size)
        broadcast_to_frame(msg, frame)


def broadcast_to_frame(msg: Message, frame: PlateFrame) -> None:
    """Expand the site's distribution so its batch shape has ``frame``'s size at ``frame.dim``."""
    dist = msg.fn
    batch = list(dist.batch_shape)
    need = -frame.dim
    if len(batch) >= need and batch[frame.dim] == frame.subsample_size:
        return
    batch = [1] * (need - len(batch)) + batch  # a plate of size 1 still adds its dim
    have = batch[frame.dim]
    if have != 1:
        raise ShapeError(
            f"sample site {msg.name!r}: batch shape {tuple(dist.batch_shape)} of "
            f"{type(dist).__name__} has size {have} at dim {frame.dim}, but plate {frame.name!r} "
            f"there has size {frame.subsample_size}; give the parameters that dimension, or "
            "move the extra dimensions into the event with .to_event(n)"
        )
    batch[frame.dim] = frame.subsample_size
    msg.fn = dist.expand(torch.Size(batch))
