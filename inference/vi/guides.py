"""Autoguides: variational families built from one run of the model.

An autoguide runs the model once (on a copy of the random stream, hidden from handlers) to
learn its latent sites, their shapes, plates and supports; each site lives on the reals
through ``biject_to(support)``. Calling the guide with the model's arguments samples every
latent site (inside the same plates), with its parameters in the current param store under
``"<prefix>.<site>.<name>"``. Every autoguide is a plain guide: ``VI(guide)`` trains it and
``Importance(guide=guide)`` proposes from it.

- :class:`AutoDelta`: a point mass per site (MAP estimation);
- :class:`AutoNormal`: independent Normals in the unconstrained space (mean field);
- :class:`AutoMultivariateNormal`: one full-rank Gaussian over all sites;
- :class:`AutoLowRankMultivariateNormal`: a Gaussian with covariance ``W Wᵀ + diag(d)``;
- :class:`AutoLaplace`: ``fit()`` finds the MAP and the Hessian there; the guide is the
  Gaussian with that mean and the inverse Hessian as covariance.

    >>> import torch
    >>> from ppl import ParamStore, model, sample
    >>> from ppl.stdlib import Gamma, Normal
    >>> @model
    ... def m():
    ...     s = sample("s", Gamma(2.0, 2.0))
    ...     sample("y", Normal(0.0, s), obs=torch.tensor(0.3))
    >>> with ParamStore() as store:
    ...     guide = AutoNormal(m)
    ...     guide()
    ...     sorted(store)
    ['auto.s.loc', 'auto.s.scale']
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import (
    ComposeTransform,
    Distribution,
    IndependentTransform,
    Transform,
    TransformedDistribution,
    biject_to,
    constraints,
)

from ppl import param, plate, sample
from ppl.errors import ModelError
from ppl.handlers import block, condition, trace
from ppl.model import Model
from ppl.randomness import drawing, forked
from ppl.runtime import PlateFrame
from ppl.stdlib import Delta, LowRankMultivariateNormal, MultivariateNormal, Normal

__all__ = [
    "AutoGuide", "AutoDelta", "AutoNormal", "AutoMultivariateNormal",
    "AutoLowRankMultivariateNormal", "AutoLaplace",
]


@dataclass(frozen=True)
class LatentSite:
    """One latent site of the model as a guide sees it."""

    name: str
    batch_shape: torch.Size
    event_shape: torch.Size
    transform: Transform
    unconstrained_shape: torch.Size
    plates: tuple[PlateFrame, ...]
    init: Tensor  # unconstrained initial value

    @property
    def numel(self) -> int:
        return self.unconstrained_shape.numel()

    def event_dims(self) -> int:
        """Unconstrained dims beyond the batch (summed into one event)."""
        return len(self.unconstrained_shape) - len(self.batch_shape)


class AutoGuide:
    """Base of the autoguides: finds the model's latent sites on the first call."""

    def __init__(self, model: Callable, *, prefix: str = "auto", init_scale: float = 0.1):
        if init_scale <= 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        self.model = model if isinstance(model, Model) else Model(model)
        self.prefix = prefix
        self.init_scale = float(init_scale)
        self.sites: list[LatentSite] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"

    def setup(self, *args, **kwargs) -> list[LatentSite]:
        """The model's latent sites, read from one prior run (once)."""
        if self.sites is None:
            with forked(), torch.no_grad(), block():
                tr = trace().get_trace(self.model, *args, **kwargs)
            self.sites = [self._latent_site(s) for s in tr.latent_sites()]
            if not self.sites:
                raise ModelError(f"{type(self).__name__}: {self.model!r} has no latent sites")
        return self.sites

    @staticmethod
    def _latent_site(site) -> LatentSite:
        dist: Distribution = site.fn
        if dist.has_enumerate_support or getattr(dist.support, "is_discrete", False):
            raise ModelError(
                f"autoguides cover continuous sites; {site.name!r} ({type(dist).__name__}) is "
                "discrete: write a guide for it, or marginalize it in the model"
            )
        for frame in site.plates:
            if frame.subsample_size < frame.size:
                raise ModelError(
                    f"site {site.name!r} sits in the subsampled plate {frame.name!r} "
                    f"({frame.subsample_size} of {frame.size}); autoguides need full plates. "
                    "Write a guide with the same subsampled plate that indexes per-point params "
                    "with its indices (VI gives guide and model one minibatch), or an "
                    "amortized one (examples/vae.py)"
                )
        transform = biject_to(dist.support)
        value = site.value.detach()
        init = transform.inv(value)
        return LatentSite(site.name, dist.batch_shape, dist.event_shape, transform,
                          init.shape, tuple(f for f in site.plates if f.dim is not None),
                          init)

    def __call__(self, *args, **kwargs) -> None:
        self.run(self.setup(*args, **kwargs))

    def run(self, sites: list[LatentSite]) -> None:
        raise NotImplementedError

    def _name(self, *parts: str) -> str:
        return ".".join((self.prefix, *parts))


def _in_plates(site: LatentSite) -> ExitStack:
    stack = ExitStack()
    for frame in site.plates:
        stack.enter_context(plate(frame.name, frame.size, dim=frame.dim))
    return stack


class AutoDelta(AutoGuide):
    """A point mass at a learned value per site: VI with it is MAP estimation."""

    def run(self, sites: list[LatentSite]) -> None:
        for site in sites:
            loc = param(self._name(site.name, "loc"), site.init)
            with _in_plates(site):
                sample(site.name, Delta(site.transform(loc), event_dim=len(site.event_shape)))


class AutoNormal(AutoGuide):
    """Independent Normals on the unconstrained values, mapped to each site's support."""

    def run(self, sites: list[LatentSite], *, mapped: bool = True) -> None:
        for site in sites:
            loc = param(self._name(site.name, "loc"), site.init)
            scale = param(self._name(site.name, "scale"),
                          torch.full(site.unconstrained_shape, self.init_scale),
                          constraints.positive)
            base = Normal(loc, scale).to_event(site.event_dims())
            with _in_plates(site):
                sample(site.name, base if not mapped or _is_identity(site.transform)
                       else TransformedDistribution(base, [site.transform]))

    def unconstrained(self) -> tuple[Callable[..., None], dict[str, Transform]]:
        """The guide with every site left on the reals (its Normal, which a graph can hold,
        unlike a transformed one), and the bijectors, by site, that map those draws to the
        supports: the compiled VI step traces the one and applies the others
        (:mod:`.compiled`). Call it once the guide has run."""
        bijectors = {s.name: s.transform for s in self.sites if not _is_identity(s.transform)}
        return (lambda *args, **kwargs: self.run(self.setup(*args, **kwargs), mapped=False),
                bijectors)


def _is_identity(transform: Transform) -> bool:
    """Whether ``transform`` is the identity (a real site's bijector, perhaps over an event):
    the Normal is then the site's distribution itself, which a graph can hold (a transformed
    one it cannot), with the same draws and log density."""
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, ComposeTransform) and not transform.parts


class JointGuide(AutoGuide):
    """A guide with one distribution over the concatenated unconstrained values of all
    sites (the ``"<prefix>.latent"`` site); each model site is then a point mass at its
    slice mapped to its support, carrying ``-log|det J|`` so that the guide's log density
    is that of the constrained values."""

    def joint(self, init: Tensor) -> Distribution:
        """The distribution over the flat unconstrained vector (initialized around ``init``)."""
        raise NotImplementedError

    def run(self, sites: list[LatentSite]) -> None:
        init = torch.cat([s.init.reshape(-1) for s in sites])
        flat = sample(self._name("latent"), self.joint(init))
        lead = flat.shape[:-1]
        start = 0
        for site in sites:
            part = flat[..., start:start + site.numel]
            start += site.numel
            keep = lead[:len(lead) - len(site.batch_shape)] if lead else ()
            u = part.reshape((*keep, *site.unconstrained_shape))
            z = site.transform(u)
            log_det = site.transform.log_abs_det_jacobian(u, z)
            extra = log_det.dim() - (len(keep) + len(site.batch_shape))
            if extra > 0:
                log_det = log_det.sum(tuple(range(-extra, 0)))
            sample(site.name, Delta(z, log_density=-log_det, event_dim=len(site.event_shape)))


class AutoMultivariateNormal(JointGuide):
    """A full-rank Gaussian over all unconstrained values."""

    def joint(self, init: Tensor) -> Distribution:
        loc = param(self._name("loc"), init)
        scale_tril = param(self._name("scale_tril"),
                           self.init_scale * torch.eye(init.numel()), constraints.lower_cholesky)
        return MultivariateNormal(loc, scale_tril=scale_tril)


class AutoLowRankMultivariateNormal(JointGuide):
    """A Gaussian with covariance ``W Wᵀ + diag(d)``, ``W`` of ``rank`` columns (default
    about the square root of the dimension)."""

    def __init__(self, model: Callable, *, rank: int | None = None, prefix: str = "auto",
                 init_scale: float = 0.1):
        super().__init__(model, prefix=prefix, init_scale=init_scale)
        if rank is not None and rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        self.rank = rank
        self._factor_init: Tensor | None = None

    def joint(self, init: Tensor) -> Distribution:
        dim = init.numel()
        rank = self.rank or max(1, round(math.sqrt(dim)))
        if self._factor_init is None:  # distinct columns, or they would stay identical
            with forked(), drawing() as generator:
                noise = torch.randn(dim, rank, generator=generator)
            self._factor_init = noise * (self.init_scale / math.sqrt(2 * rank))
        loc = param(self._name("loc"), init)
        factor = param(self._name("cov_factor"), self._factor_init)
        diag = param(self._name("cov_diag"), torch.full((dim,), self.init_scale**2 / 2),
                     constraints.positive)
        return LowRankMultivariateNormal(loc, factor, diag)


class AutoLaplace(JointGuide):
    """The Laplace approximation: ``fit(*args)`` maximizes the log density of the
    unconstrained values (the model's log joint plus ``log|det J|``) by L-BFGS and takes the
    inverse of the Hessian there as the covariance. It has no params; it must be fitted
    before it is used."""

    def __init__(self, model: Callable, *, prefix: str = "auto"):
        super().__init__(model, prefix=prefix)
        self.loc: Tensor | None = None
        self.scale_tril: Tensor | None = None

    def _log_density(self, flat: Tensor, args: tuple, kwargs: dict) -> Tensor:
        values, log_det, start = {}, torch.zeros(()), 0
        for site in self.sites:
            u = flat[start:start + site.numel].reshape(site.unconstrained_shape)
            start += site.numel
            values[site.name] = site.transform(u)
            log_det = log_det + site.transform.log_abs_det_jacobian(u, values[site.name]).sum()
        with block():
            tr = trace().get_trace(condition(values)(self.model.fn), *args, **kwargs)
        return tr.log_joint() + log_det

    def fit(self, *args, max_iter: int = 500, **kwargs) -> AutoLaplace:
        """Find the MAP and the Hessian there; returns the guide."""
        sites = self.setup(*args, **kwargs)
        flat = torch.cat([s.init.reshape(-1) for s in sites]).clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS([flat], max_iter=max_iter, line_search_fn="strong_wolfe",
                                      tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = -self._log_density(flat, args, kwargs)
            loss.backward()
            return loss

        optimizer.step(closure)
        mode = flat.detach()
        hessian = torch.autograd.functional.hessian(
            lambda u: -self._log_density(u, args, kwargs), mode)
        hessian = (hessian + hessian.T) / 2
        chol, info = torch.linalg.cholesky_ex(hessian)
        if int(info) != 0:
            raise ModelError(
                f"AutoLaplace: the Hessian at the mode of {self.model!r} is not positive "
                f"definite (sites {[s.name for s in sites]}); the mode may be a saddle or on "
                "a boundary"
            )
        self.loc = mode
        # Cholesky of H^-1 = (L L^T)^-1: invert L, then re-factor the covariance.
        covariance = torch.cholesky_inverse(chol)
        self.scale_tril = torch.linalg.cholesky((covariance + covariance.T) / 2)
        return self

    def joint(self, init: Tensor) -> Distribution:
        if self.loc is None:
            raise ModelError("AutoLaplace: call fit(*args) before using the guide")
        return MultivariateNormal(self.loc, scale_tril=self.scale_tril)
