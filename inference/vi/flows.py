"""Normalizing-flow guides over the model's flat unconstrained latent vector.

A flow guide draws ``ε ~ N(0, I)`` and returns ``x = loc + scale ⊙ f_K ∘ … ∘ f_1(ε)``; each
model site is its slice of ``x`` mapped to its support (as in every :class:`JointGuide`).
With identity layers the guide is :class:`AutoNormal`'s family, so a flow can only add to it.
The layers work on the standardized scale, which keeps their parameters well conditioned.

- :class:`AutoPlanar`, :class:`AutoRadial`: ``num_layers`` planar or radial layers
  (:mod:`.flow_layers`), each the identity at initialization.
- :class:`AutoIAF`, :class:`AutoNeuralSpline`: zuko's masked autoregressive affine and
  rational-quadratic spline transforms used in the sampling direction (inverse
  autoregressive: one pass to draw; the density of a value the guide did not draw needs
  ``D`` passes). They need the ``flows`` extra (``pip install 'ppl[flows]'``).

Every learnable tensor, the flow networks' weights included, is a param of the current
:class:`~ppl.params.ParamStore` named ``"<prefix>.…"``, so checkpoints, ``resume=`` and
``res.guide`` work as for the other guides. The density of the value just drawn is the one
computed while drawing it; any other value is inverted through the layers.

    >>> import torch
    >>> from ppl import ParamStore, model, sample
    >>> from ppl.handlers import trace
    >>> from ppl.stdlib import HalfNormal, Normal
    >>> @model
    ... def funnel():
    ...     scale = sample("scale", HalfNormal(1.0))
    ...     sample("x", Normal(0.0, scale))
    >>> with ParamStore() as store:
    ...     tr = trace().get_trace(AutoPlanar(funnel, num_layers=2))
    ...     sorted(store)[:4], tr["auto.latent"].value.shape
    (['auto.layers.0.b', 'auto.layers.0.u', 'auto.layers.0.w', 'auto.layers.1.b'], torch.Size([2]))
    >>> float(tr["scale"].value.detach()) > 0
    True
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from types import ModuleType

import torch
from torch import Tensor
from torch.distributions import Distribution, Transform, constraints

from ppl import param
from ppl.randomness import drawing, forked

from .flow_layers import PlanarTransform, RadialTransform, call_and_ladj
from .guides import JointGuide

__all__ = ["FlowDistribution", "FlowGuide", "AutoPlanar", "AutoRadial", "AutoIAF",
           "AutoNeuralSpline"]


def _standard_normal_log_prob(eps: Tensor) -> Tensor:
    return -0.5 * (eps**2).sum(-1) - 0.5 * eps.shape[-1] * math.log(2 * math.pi)


class FlowDistribution(Distribution):
    """``x = loc + scale ⊙ f_K ∘ … ∘ f_1(ε)``, ``ε ~ N(0, I)`` on ``R^D``; ``layers`` are
    vector bijections (``event_dim=1``) applied in order."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, layers: Sequence[Transform],
                 batch_shape: torch.Size = torch.Size()):
        self.loc, self.scale, self.layers = loc, scale, tuple(layers)
        self._drawn: tuple[Tensor, Tensor] | None = None  # (x, log q(x)) of the last rsample
        super().__init__(torch.Size(batch_shape), loc.shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None) -> FlowDistribution:
        return FlowDistribution(self.loc, self.scale, self.layers, batch_shape)

    def _draw(self, sample_shape: torch.Size) -> tuple[Tensor, Tensor]:
        eps = torch.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype,
                          device=self.loc.device)
        x, log_det = eps, torch.zeros(eps.shape[:-1], dtype=eps.dtype)
        for layer in self.layers:
            x, step = call_and_ladj(layer, x)
            log_det = log_det + step
        x = self.loc + self.scale * x
        log_det = log_det + self.scale.log().sum(-1)
        return x, _standard_normal_log_prob(eps) - log_det

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        self._drawn = self._draw(torch.Size(sample_shape))
        return self._drawn[0]

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        # not remembered: a later log_prob of it must build its own gradient path
        with torch.no_grad():
            return self._draw(torch.Size(sample_shape))[0]

    def log_prob(self, value: Tensor) -> Tensor:
        if self._drawn is not None and value is self._drawn[0]:
            return self._drawn[1]
        eps = (value - self.loc) / self.scale
        log_det = self.scale.log().sum(-1).expand(eps.shape[:-1])
        for layer in reversed(self.layers):
            eps, step = call_and_ladj(layer.inv, eps)
            log_det = log_det - step
        return _standard_normal_log_prob(eps) - log_det


class _SeededInits:
    """Random initial values drawn once per guide from ppl's stream (distinct per layer,
    or layers that start equal would stay equal)."""

    def __init__(self) -> None:
        self._values: dict[str, Tensor] = {}

    def get(self, key: str, shape: tuple[int, ...], scale: float) -> Tensor:
        if key not in self._values:
            with forked(), drawing() as generator:
                self._values[key] = scale * torch.randn(shape, generator=generator)
        return self._values[key]


class FlowGuide(JointGuide):
    """Base of the flow guides: ``loc`` and ``scale`` params around :meth:`layers`."""

    def __init__(self, model: Callable, *, num_layers: int = 4, prefix: str = "auto",
                 init_scale: float = 0.1):
        super().__init__(model, prefix=prefix, init_scale=init_scale)
        if num_layers < 1:
            raise ValueError(f"{type(self).__name__}: num_layers must be at least 1, "
                             f"got {num_layers}")
        self.num_layers = num_layers
        self._inits = _SeededInits()

    def layers(self, dim: int) -> list[Transform]:
        """The layers over ``R^dim``, built from params of the current store."""
        raise NotImplementedError

    def joint(self, init: Tensor) -> Distribution:
        loc = param(self._name("loc"), init)
        scale = param(self._name("scale"), torch.full_like(init, self.init_scale),
                      constraints.positive)
        return FlowDistribution(loc, scale, self.layers(init.numel()))


class AutoPlanar(FlowGuide):
    """``num_layers`` planar layers ``z + û tanh(wᵀz + b)``; each starts as the identity
    (``u = 0``) with a small random ``w``."""
    def layers(self, dim: int) -> list[Transform]:
        out = []
        for k in range(self.num_layers):
            w = param(self._name("layers", str(k), "w"),
                      self._inits.get(f"w{k}", (dim,), 1.0 / math.sqrt(dim)))
            u = param(self._name("layers", str(k), "u"), torch.zeros(dim))
            b = param(self._name("layers", str(k), "b"), torch.zeros(()))
            out.append(PlanarTransform(w, u, b))
        return out


class AutoRadial(FlowGuide):
    """``num_layers`` radial layers around learned centres; each starts as the identity
    (``β = 0``) with a random centre."""
    def layers(self, dim: int) -> list[Transform]:
        out = []
        for k in range(self.num_layers):
            center = param(self._name("layers", str(k), "center"),
                           self._inits.get(f"center{k}", (dim,), 1.0))
            alpha = param(self._name("layers", str(k), "alpha"), torch.ones(()),
                          constraints.positive)
            beta_raw = param(self._name("layers", str(k), "beta_raw"),
                             torch.full((), math.log(math.e - 1.0)))  # β = 0 at alpha = 1
            out.append(RadialTransform(center, alpha, beta_raw))
        return out


def _zuko(who: str) -> ModuleType:
    try:
        return importlib.import_module("zuko")
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"{who} needs zuko, which the 'flows' extra installs: pip install 'ppl[flows]'"
        ) from error


class _ZukoFlowGuide(FlowGuide):
    """A zuko flow whose transform (data to base) is used from ``ε`` to ``x``. Its module is
    a template: its ``nn.Parameter``s are removed and, on every call, replaced by the
    current store's params ``"<prefix>.flow.<parameter name>"`` (initialized from the
    module's own random initialization, drawn from ppl's stream)."""

    def __init__(self, model: Callable, *, num_layers: int = 3,
                 hidden: Sequence[int] = (32, 32), prefix: str = "auto",
                 init_scale: float = 0.1):
        super().__init__(model, num_layers=num_layers, prefix=prefix, init_scale=init_scale)
        _zuko(type(self).__name__)  # fail here, not at the first step
        self.hidden = tuple(hidden)
        self._module: torch.nn.Module | None = None
        self._slots: dict[str, tuple[torch.nn.Module, str, Tensor]] = {}

    def build(self, dim: int) -> torch.nn.Module:
        """The zuko flow over ``R^dim``."""
        raise NotImplementedError

    def layers(self, dim: int) -> list[Transform]:
        if self._module is None:
            with forked(), drawing():  # zuko initializes from torch's (lent) generator
                self._module = self.build(dim)
            for name, value in list(self._module.named_parameters()):
                owner_name, _, attr = name.rpartition(".")
                owner = self._module.get_submodule(owner_name)
                del owner._parameters[attr]
                self._slots[name] = (owner, attr, value.detach().clone())
        for name, (owner, attr, init) in self._slots.items():
            setattr(owner, attr, param(self._name("flow", name), init))
        return [self._module.transform(None)]


class AutoIAF(_ZukoFlowGuide):
    """An inverse autoregressive flow: ``num_layers`` masked autoregressive affine layers
    (zuko's MAF transforms, alternating orders) with ``hidden`` units per MADE layer."""

    def build(self, dim: int) -> torch.nn.Module:
        return _zuko("AutoIAF").flows.MAF(features=dim, transforms=self.num_layers,
                                   hidden_features=self.hidden)


class AutoNeuralSpline(_ZukoFlowGuide):
    """An inverse autoregressive neural spline flow: ``num_layers`` monotonic
    rational-quadratic spline layers with ``bins`` bins on ``[-5, 5]`` (identity outside)."""

    def __init__(self, model: Callable, *, num_layers: int = 3,
                 hidden: Sequence[int] = (32, 32), bins: int = 8, prefix: str = "auto",
                 init_scale: float = 0.1):
        super().__init__(model, num_layers=num_layers, hidden=hidden, prefix=prefix,
                         init_scale=init_scale)
        self.bins = bins

    def build(self, dim: int) -> torch.nn.Module:
        return _zuko("AutoNeuralSpline").flows.NSF(features=dim, transforms=self.num_layers,
                                   hidden_features=self.hidden, bins=self.bins)
