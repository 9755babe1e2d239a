"""Effect handlers: small classes that change what primitives do.

Each is a context manager and a decorator (see ``ppl.runtime.Messenger``):

    >>> import torch
    >>> from ppl import sample
    >>> from ppl.stdlib import Normal
    >>> def model():
    ...     return sample("x", Normal(0.0, 1.0))
    >>> with trace() as tr, condition({"x": torch.tensor(0.5)}):
    ...     model()
    tensor(0.5000)
    >>> tr.trace["x"].is_observed
    True
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from typing import Any

import torch

from . import randomness
from .errors import DuplicateSiteError, ModelError
from .modules import OWNER
from .primitives import RANDOM_KINDS, as_tensor, broadcast_to_frame
from .runtime import Message, Messenger, internal, is_library_file, source_location
from .trace import Site, Trace, site_log_prob

__all__ = [
    "trace", "seed", "condition", "substitute", "replay", "block", "scale", "mask", "do",
    "broadcast", "freeze_params",
]


def _note_where(error: Exception, tb, sites: list[str]) -> None:
    """Add to an error raised inside a model (a torch error between sites, say) where it
    happened: the model's source line and the last site recorded before it (once)."""
    if getattr(error, "_ppl_noted", False):
        return
    frames = [f for f in traceback.extract_tb(tb) if not is_library_file(f.filename)]
    line = source_location(frames[-1].filename, frames[-1].lineno) if frames else "<unknown>"
    after = f"after site {sites[-1]!r}" if sites else "before any site"
    error.add_note(f"ppl: raised inside the model at {line}, {after}")
    error._ppl_noted = True  # type: ignore[attr-defined]


class trace(Messenger):
    """Record every site into ``self.trace`` (a ``Trace``), computing log densities.

        >>> with trace() as tr:
        ...     pass
        >>> len(tr.trace)
        0
    """

    def __enter__(self) -> trace:
        self.trace = Trace()
        return super().__enter__()

    def __exit__(self, exc_type, exc, tb) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, ModelError):
            _note_where(exc, tb, list(self.trace))
        super().__exit__(exc_type, exc, tb)

    def postprocess(self, msg: Message) -> None:
        if msg.name in self.trace:
            first = self.trace[msg.name]
            raise DuplicateSiteError(
                f"address {msg.name!r} is used twice: first by a {first.kind} site at "
                f"{first.source}, again by a {msg.kind} site at {msg.source}; give each site a "
                "unique name (e.g. f'x_{i}' inside a loop)"
            )
        self.trace.add(
            Site(
                name=msg.name, kind=msg.kind, fn=msg.fn, value=msg.value,
                log_prob=self._log_prob(msg), plates=msg.plates, is_observed=msg.is_observed,
                intervened=msg.intervened, scale=msg.scale, mask=msg.mask,
                infer=dict(msg.infer), source=msg.source,
            )
        )

    @staticmethod
    def _log_prob(msg: Message) -> torch.Tensor | None:
        with internal():
            return _site_log_prob(msg)

    def get_trace(self, fn: Callable, *args, **kwargs) -> Trace:
        """Run ``fn`` under this handler and return its trace (with the return value)."""
        with self:
            value = fn(*args, **kwargs)
        self.trace.return_value = value
        return self.trace


def _site_log_prob(msg: Message) -> torch.Tensor | None:
    if msg.kind not in RANDOM_KINDS:
        return None
    if msg.intervened:
        return torch.zeros(())
    return site_log_prob(msg.fn, msg.value, msg.scale, msg.mask)


class seed(Messenger):
    """Make sampling inside reproducible: draws inside come from a private generator seeded on
    entry (see :mod:`ppl.randomness`), so a seeded block neither disturbs torch's global
    generator nor is disturbed by other threads drawing at the same time.

        >>> from ppl import sample
        >>> from ppl.stdlib import Normal
        >>> draw = seed(0)(lambda: sample("x", Normal(0.0, 1.0)))
        >>> bool(draw() == draw())
        True
    """

    def __init__(self, rng_seed: int):
        self.rng_seed = int(rng_seed)

    def __enter__(self) -> seed:
        randomness.enter_scope(self.rng_seed)
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        randomness.exit_scope()


def _lookup(data: dict | Callable | None, name: str) -> Any:
    if data is None:
        return None
    if callable(data) and not isinstance(data, dict):
        return data(name)
    return data.get(name)


class condition(Messenger):
    """Fix sample sites to the given values and mark them observed.

    ``data`` is a dict from address to value, or a function of the address returning a
    value or None.
    """

    def __init__(self, data: dict | Callable):
        self.data = data

    def process(self, msg: Message) -> None:
        if msg.kind != "sample":
            return
        value = _lookup(self.data, msg.name)
        if value is not None:
            msg.value = as_tensor(value)
            msg.is_observed = True


class substitute(Messenger):
    """Give sample and param sites the given values without marking them observed."""

    def __init__(self, data: dict | Callable):
        self.data = data

    def process(self, msg: Message) -> None:
        if msg.kind not in ("sample", "param"):
            return
        value = _lookup(self.data, msg.name)
        if value is not None:
            msg.value = as_tensor(value)


class replay(Messenger):
    """Reuse the values of an earlier trace's latent sample sites."""

    def __init__(self, guide_trace: Trace):
        self.guide_trace = guide_trace

    def process(self, msg: Message) -> None:
        if msg.kind != "sample" or msg.is_observed or msg.intervened:
            return
        site = self.guide_trace.sites.get(msg.name)
        if site is not None and site.kind == "sample":
            msg.value = site.value


class block(Messenger):
    """Hide sites from handlers outside this one.

    Hides every site by default; ``hide`` (addresses), ``expose`` (hide all but these) or
    ``hide_fn(msg) -> bool`` choose which.
    """

    def __init__(
        self,
        hide: Iterable[str] | None = None,
        expose: Iterable[str] | None = None,
        hide_fn: Callable[[Message], bool] | None = None,
    ):
        if hide_fn is not None:
            self.hide_fn = hide_fn
        elif hide is not None:
            hidden = set(hide)
            self.hide_fn = lambda msg: msg.name in hidden
        elif expose is not None:
            shown = set(expose)
            self.hide_fn = lambda msg: msg.name not in shown
        else:
            self.hide_fn = lambda msg: True

    def process(self, msg: Message) -> None:
        if self.hide_fn(msg):
            msg.stop = True


class scale(Messenger):
    """Multiply the log densities of random sites by a positive factor (e.g. for minibatches)."""

    def __init__(self, factor: float | torch.Tensor):
        if not bool(torch.all(torch.as_tensor(factor) > 0)):
            raise ModelError(f"scale factor must be positive, got {factor}")
        self.factor = factor

    def process(self, msg: Message) -> None:
        if msg.kind in RANDOM_KINDS:
            msg.scale = self.factor * msg.scale


class mask(Messenger):
    """Keep only the elements of random sites' log densities where the boolean mask is True."""

    def __init__(self, mask: bool | torch.Tensor):
        self.mask = torch.as_tensor(mask, dtype=torch.bool)

    def process(self, msg: Message) -> None:
        if msg.kind in RANDOM_KINDS:
            msg.mask = self.mask if msg.mask is None else msg.mask & self.mask


class do(Messenger):
    """Intervene: fix sample sites to values and cut them from their parents.

    An intervened site is no longer random: it contributes nothing to the log density
    (unlike ``condition``, which adds the log likelihood of the value) and its value
    reaches every downstream site.
    """

    def __init__(self, data: dict):
        self.data = data

    def process(self, msg: Message) -> None:
        if msg.kind != "sample":
            return
        value = _lookup(self.data, msg.name)
        if value is not None:
            msg.value = as_tensor(value)
            msg.intervened = True
            msg.is_observed = False


class broadcast(Messenger):
    """Expand each random site's distribution to the full shape of the plates it sits in.

    ``plate`` already broadcasts at its own dim; this handler is for code that builds
    plate frames by hand (sites carrying ``msg.plates`` from elsewhere).
    """

    def process(self, msg: Message) -> None:
        if msg.kind in RANDOM_KINDS:
            for frame in msg.plates:
                if frame.dim is not None:
                    broadcast_to_frame(msg, frame)


class freeze_params(Messenger):
    """Params read without a gradient path: what is computed inside moves no param (an
    objective's term meant to train only the other side's params, e.g. PIWAE's guide term).
    A ``ppl.module`` weight is swapped in its module for a detached alias until the handler
    exits, since the module computes with its own attribute, not the message's value.

        >>> import torch
        >>> from ppl import ParamStore, module
        >>> net = torch.nn.Linear(2, 1)
        >>> with ParamStore(), freeze_params():
        ...     out = module("net", net)(torch.ones(2))
        >>> out.requires_grad, isinstance(net.weight, torch.nn.Parameter)
        (False, True)
    """

    def __init__(self) -> None:
        self._swapped: list[tuple[torch.nn.Module, str, torch.Tensor]] = []
        self._marks: list[int] = []  # where each (re-)entry's swaps begin

    def __enter__(self) -> freeze_params:
        self._marks.append(len(self._swapped))
        return super().__enter__()

    def postprocess(self, msg: Message) -> None:
        if msg.kind != "param":
            return
        msg.value = msg.value.detach()
        if OWNER in msg.infer:
            owner, attr = msg.infer[OWNER]
            self._swapped.append((owner, attr, owner._parameters[attr]))
            owner._parameters[attr] = msg.value  # how torch.func.functional_call swaps too

    def __exit__(self, exc_type, exc, tb) -> None:
        mark = self._marks.pop()
        while len(self._swapped) > mark:
            owner, attr, weight = self._swapped.pop()
            owner._parameters[attr] = weight
        super().__exit__(exc_type, exc, tb)
