"""The ADVI fast path: the reparameterized ELBO of a location-scale autoguide, evaluated on the
model's flat potential with no autograd graph through the model.

An autoguide over the model's unconstrained latents draws ``u = loc + S ε`` (``ε`` standard
normal; ``S`` the scales, a Cholesky factor, or a low-rank factor and diagonal; a point mass
has no noise) and maps each block to its support by ``biject_to``. Its ELBO is

    E_ε[ f(u) - log q_u(u) ],   f(u) = log p(T(u)) + log|det J_T(u)|,

with ``f`` the model's :class:`~ppl.inference.lowering.flat.FlatModel` potential and
``q_u`` the guide's density in unconstrained coordinates. Its gradient needs ``∇f`` only at
the draws: one ``log_density_and_grad`` call on the ``(num_particles, dim)`` batch (C where
the native backend is available) and the surrogate ``Σ_k ∇f(u_k)·u_k / K - mean_k log
q_u(u_k)`` whose small torch graph runs from the guide's params to ``u`` and never touches
the data. For the Gaussian guides ``log q_u`` at its own draw is ``-|ε|²/2 - log|det S| -
const`` (its gradient is the entropy's, exactly as on the general path); a point mass
(``AutoDelta``, MAP on the constrained density) subtracts ``log|det J_T(u)|`` instead.
The mean-field guide (``AutoNormal``, the common case) writes its chain rule out, and on a
native potential runs it in C (``mean_field.c``, linked with the potential): after the
draws, a step is one foreign call.

The draws take the random stream in the order and shapes the general path does, so a seed
gives both paths the same noise. :func:`fast_elbo` decides once per run whether the path
applies; a refusal names why (:data:`SLOW` prefixes it).

    >>> import torch
    >>> from ppl import ParamStore, model, sample
    >>> from ppl.stdlib import Normal
    >>> from ppl.inference.vi import ELBO, AutoNormal
    >>> @model
    ... def m():
    ...     sample("y", Normal(sample("z", Normal(0.0, 1.0)), 1.0), obs=torch.tensor(2.0))
    >>> with ParamStore():
    ...     guide = AutoNormal(m)
    ...     guide()
    ...     fast, path = fast_elbo(m, guide, ELBO(), (), {})
    ...     value = fast.backward()
    >>> path.startswith("fast"), isinstance(value, float)
    (True, True)
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ppl.ir import IRError
from ppl.model import Model
from ppl.params import current_store, get_param
from ppl.randomness import drawing, forked
from ppl.stdlib import LowRankMultivariateNormal

from ..lowering.flat import FlatModel
from ..lowering.native import NativePotential
from ..lowering.native.compiler import Unit
from .guides import (
    AutoDelta,
    AutoGuide,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    LatentSite,
)
from .objectives import Expectation, elbo
from .optim import pack, views

__all__ = ["FastELBO", "fast_elbo", "SLOW"]

SLOW = "slow: "
_LOG_2PI = math.log(2 * math.pi)


class _Family:
    """A guide's draws in the flat layout. ``noise`` takes the random stream as the guide's
    own ``rsample`` does; ``differentiable`` maps noise to ``u (K, dim)`` and ``log q_u(u)``
    ``(K,)`` as torch functions of the guide's params; ``backward`` evaluates the potential
    at ``u``, accumulates the gradient of the negative ELBO into the params and returns the
    ELBO estimate. ``gradient``: one buffer that every param's ``.grad`` views after
    ``backward``, where the family writes them so (else None)."""

    gradient: Tensor | None = None

    def __init__(self, guide: AutoGuide, sites: list[LatentSite]):
        self.guide, self.sites = guide, sites
        self.dim = sum(s.numel for s in sites)

    def param(self, *parts: str) -> Tensor:
        return get_param(self.guide._name(*parts))

    def link(self, flat: FlatModel) -> None:
        """Prepare a step in C on ``flat``'s native potential, for a family that has one."""

    def noise(self, generator: torch.Generator, num: int, dtype: torch.dtype) -> list[Tensor]:
        return [torch.randn(num, self.dim, generator=generator, dtype=dtype)]

    def differentiable(self, noise: list[Tensor]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def positions(self, noise: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``u`` and ``log q_u(u)`` with no gradient."""
        with torch.no_grad():
            return self.differentiable(noise)

    def backward(self, noise: list[Tensor], potential: Potential) -> float:
        """Backpropagate ``-(Σ_k ∇f(u_k)·u_k / K - mean_k log q_u(u_k))`` through the guide's
        small graph; returns ``mean_k f(u_k) - log q_u(u_k)``."""
        u, log_q = self.differentiable(noise)
        log_p, grad = potential(u.detach())
        surrogate = (grad.to(u.dtype) * u).sum() / u.shape[0] - log_q.mean()
        (-surrogate).backward()
        return float(log_p.mean() - log_q.detach().mean())


Potential = Callable[[Tensor], tuple[Tensor, Tensor]]


def _gaussian_log_q(eps: Tensor, log_det_scale: Tensor) -> Tensor:
    """log N(loc + S ε; loc, S Sᵀ) per particle: ``-|ε|²/2 - log|det S| - dim/2 log 2π``."""
    return -0.5 * eps.square().sum(-1) - log_det_scale - 0.5 * eps.shape[-1] * _LOG_2PI


class _MeanField(_Family):
    """AutoNormal: one loc and scale per site, independent noise per site in guide order.
    The hot path of ADVI, so its chain rule is written out: with ``scale = exp(s)`` (the
    store's map for ``positive``), ``∂/∂loc = mean_k g_k`` and ``∂/∂s = mean_k (g_k ε_k)
    scale + 1`` (the entropy's ``Σ s``). The params live in one buffer ``[loc | s]`` and
    their grads in another (``gradient``), each site's leaf and ``.grad`` views of them, so
    that a step neither concatenates nor allocates per site. On a native potential the step
    after the draws is one call of ``mean_field.c`` linked with it; else torch's."""

    def __init__(self, guide: AutoGuide, sites: list[LatentSite]):
        super().__init__(guide, sites)
        leaves = current_store().unconstrained()
        self.locs = [leaves[guide._name(s.name, "loc")] for s in sites]
        self.log_scales = [leaves[guide._name(s.name, "scale")] for s in sites]
        self.leaves = self.locs + self.log_scales
        self.values = pack(self.leaves)
        self.loc, self.log_scale = self.values[:self.dim], self.values[self.dim:]
        self.gradient = torch.zeros_like(self.values)
        self.d_loc, self.d_log_scale = self.gradient[:self.dim], self.gradient[self.dim:]
        self._grads = views(self.gradient, self.leaves)
        self._minus_one = torch.full_like(self.log_scale, -1.0)
        self._log_q_const = -0.5 * self.dim * _LOG_2PI
        self._native: NativePotential | None = None
        self._native_step: Callable[..., float] | None = None

    def link(self, flat):
        real = _C_REALS.get(self.values.dtype)
        unit = Unit(_MEAN_FIELD_C.read_text(), ("-O3", f"-DPPL_DIM={self.dim}",
                                                f"-DPPL_REAL={real}"))
        if flat.native is None or real is None or not flat.build_native(unit):
            return
        self._native = flat.native
        with self._native.bound() as library:
            step = library.ppl_mean_field
        step.argtypes = [ctypes.c_long] + [ctypes.c_void_p] * 3
        step.restype = ctypes.c_double
        self._native_step = step

    def noise(self, generator, num, dtype):
        eps = [torch.randn(num, s.numel, generator=generator, dtype=dtype) for s in self.sites]
        return [_flat(eps, 1)]

    def differentiable(self, noise):
        loc = _flat([t.reshape(-1) for t in self.locs], 0)
        scale = _flat([t.reshape(-1) for t in self.log_scales], 0).exp()
        (eps,) = noise
        return loc + scale * eps, _gaussian_log_q(eps, scale.log().sum())

    def positions(self, noise):
        u, _ = self._positions(noise)
        return u, _gaussian_log_q(noise[0], self.log_scale.sum())

    def _positions(self, noise: list[Tensor]) -> tuple[Tensor, Tensor]:
        scale = self.log_scale.exp()
        return torch.addcmul(self.loc, scale, noise[0]), scale

    def backward(self, noise, potential):
        """Writes the grads (the loop cleared them) rather than accumulating."""
        (eps,) = noise
        if self._native_step is None:
            value = self._torch_backward(eps, potential)
        else:
            with self._native.bound():
                value = self._native_step(eps.shape[0], self.values.data_ptr(),
                                          eps.contiguous().data_ptr(), self.gradient.data_ptr())
        for leaf, view in zip(self.leaves, self._grads, strict=True):
            leaf.grad = view
        return value

    def _torch_backward(self, eps: Tensor, potential: Potential) -> float:
        u, scale = self._positions([eps])
        log_p, grad = potential(u)
        num = eps.shape[0]
        grad = grad.to(u.dtype)
        torch.sum(grad, 0, out=self.d_loc).mul_(-1.0 / num)
        torch.addcmul(self._minus_one, grad.mul_(eps).sum(0), scale, value=-1.0 / num,
                      out=self.d_log_scale)
        # the mean of log q_u at the draws (_gaussian_log_q), as plain numbers
        log_q = (-0.5 * float(eps.square().sum()) / num - float(self.log_scale.sum())
                 + self._log_q_const)
        return float(log_p.mean()) - log_q


_MEAN_FIELD_C = Path(__file__).with_name("mean_field.c")
_C_REALS = {torch.float32: "float", torch.float64: "double"}


def _flat(parts: list[Tensor], dim: int) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


class _FullRank(_Family):
    """AutoMultivariateNormal: ``u = loc + L ε``."""

    def differentiable(self, noise):
        loc, tril = self.param("loc"), self.param("scale_tril")
        (eps,) = noise
        return loc + eps @ tril.T, _gaussian_log_q(eps, tril.diagonal().log().sum())


class _LowRank(_Family):
    """AutoLowRankMultivariateNormal: ``u = loc + W ε_W + √d ε_d`` (ε_W drawn first, as
    torch's ``rsample`` does); ``q_u`` is evaluated as a density, since the noise has more
    dims than ``u``."""

    def noise(self, generator, num, dtype):
        rank = self.param("cov_factor").shape[-1]
        return [torch.randn(num, rank, generator=generator, dtype=dtype),
                torch.randn(num, self.dim, generator=generator, dtype=dtype)]

    def differentiable(self, noise):
        loc, factor, diag = self.param("loc"), self.param("cov_factor"), self.param("cov_diag")
        eps_factor, eps_diag = noise
        u = loc + eps_factor @ factor.T + diag.sqrt() * eps_diag
        return u, LowRankMultivariateNormal(loc, factor, diag).log_prob(u)


class _PointMass(_Family):
    """AutoDelta: ``u = loc`` (one row; the particles would all be equal) and the ELBO is
    ``log p(T(u))``, so ``log|det J_T(u)|`` is taken back out of the potential."""

    def noise(self, generator, num, dtype):
        return []

    def differentiable(self, noise):
        locs = [self.param(s.name, "loc") for s in self.sites]
        log_det = sum(s.transform.log_abs_det_jacobian(loc, s.transform(loc)).sum()
                      for s, loc in zip(self.sites, locs, strict=True))
        u = torch.cat([loc.reshape(-1) for loc in locs])
        return u[None], torch.as_tensor(log_det).reshape(1)


_FAMILIES: dict[type, type[_Family]] = {
    AutoNormal: _MeanField, AutoMultivariateNormal: _FullRank,
    AutoLowRankMultivariateNormal: _LowRank, AutoDelta: _PointMass,
}


class FastELBO:
    """The ELBO of ``family``'s guide on ``flat``'s potential, ``num_particles`` per step."""

    def __init__(self, flat: FlatModel, family: _Family, num_particles: int):
        self.flat, self.family, self.num_particles = flat, family, num_particles
        self.dtype = family.sites[0].init.dtype  # the guide params' (one, see fast_elbo)
        family.link(flat)
        self.gradient = family.gradient

    def _noise(self, num: int) -> list[Tensor]:
        with drawing(lend=False) as generator:
            return self.family.noise(generator, num, self.dtype)

    def _draw(self, num: int) -> tuple[Tensor, Tensor]:
        return self.family.positions(self._noise(num))

    def backward(self) -> float:
        """One ELBO estimate; puts the gradient of its negative into the params' ``.grad``
        (what an optimizer minimizes; clear them first) and returns the estimate.
        ``gradient``, where not None, is one buffer that those grads view."""
        return self.family.backward(self._noise(self.num_particles),
                                    self.flat.log_density_and_grad)

    def estimate(self) -> Tensor:
        """One ELBO estimate, with no gradient."""
        with torch.no_grad():
            u, log_q = self._draw(self.num_particles)
            return (self.flat.log_density(u) - log_q).mean().to(self.dtype)

    def posterior_draws(self, num: int) -> dict[str, Tensor]:
        """``num`` draws of the model's latent and deterministic sites from the guide."""
        with torch.no_grad():
            u, _ = self._draw(num)
            values = self.flat.constrained_values(u.expand(num, -1))
        return {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in values.items()}


def fast_elbo(model: Callable, guide: Callable, objective: Expectation, args: tuple,
              kwargs: dict) -> tuple[FastELBO | None, str]:
    """The fast ELBO for this run, or ``None``; and the path taken, ``"fast (<backend>
    potential)"`` or ``"slow: <why>"``. Call it inside the run's param store after the guide
    has created its params; it leaves the random stream where it was."""
    family = _FAMILIES.get(type(guide))
    if family is None:
        return None, SLOW + f"the guide {guide!r} is not a location-scale autoguide"
    if objective.program is not elbo.program:
        return None, SLOW + f"the objective {objective!r} is not the reparameterized ELBO"
    dtypes = sorted({str(s.init.dtype) for s in guide.sites})
    if len(dtypes) > 1:
        return None, SLOW + f"the guide's sites mix the dtypes {dtypes}"
    model = model if isinstance(model, Model) else Model(model)
    with forked():
        flat, why = _flat_model(model, guide, args, kwargs)
    if flat is None:
        return None, SLOW + why
    num_particles = objective.options.get("num_particles", 1)
    return (FastELBO(flat, family(guide, guide.sites), num_particles),
            f"fast ({flat.backend} potential)")


def _flat_model(model: Model, guide: AutoGuide, args: tuple,
                kwargs: dict) -> tuple[FlatModel | None, str]:
    """The model's flat potential if the guide's sites are exactly its latent blocks."""
    try:
        graph = model.graph(*args, **kwargs)
    except (IRError, TypeError, ValueError) as error:
        return None, f"its graph cannot be traced ({error})"
    params = [n.address for n in graph.nodes_of("param")]
    if params:
        return None, (f"the model has params {params}; their gradient needs autograd through "
                      "the model")
    # a traced graph draws no minibatch (its indices would be frozen): refuse any it holds
    subsampled = sorted({f.name for n in graph.nodes for f in n.meta.plates
                         if f.subsample_size < f.size})
    if subsampled:
        return None, f"it subsamples the plates {subsampled} (a fresh minibatch every step)"
    try:
        flat = FlatModel.from_graph(graph)
    except (IRError, ValueError) as error:
        return None, f"it has no flat potential ({error})"
    layout = [(b.address, b.unconstrained_shape) for b in flat.blocks]
    sites = [(s.name, tuple(s.unconstrained_shape)) for s in guide.sites]
    if layout != sites:
        return None, (f"the guide's sites {sites} are not the model graph's latent blocks "
                      f"{layout}")
    return flat, ""
