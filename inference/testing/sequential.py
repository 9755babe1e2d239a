"""Sequential models with exact answers, for particle filters, smoothers and MCMC on time
series.

:class:`LinearGaussianSSM`: ``x_0 ~ N(m0, s0)``, ``x_t = a x_{t-1} + N(0, q)``,
``y_t = x_t + N(0, r)`` (scales, not variances); the Kalman filter gives ``log p(y_{0:T-1})``
and the filtering moments, the Rauch-Tung-Striebel smoother the smoothing moments, and
``grid_posterior`` the exact posterior of one of its parameters under a prior (prior times
Kalman likelihood on a grid), for particle MCMC on static parameters.
:class:`DiscreteHMM`: ``z_0 ~ Cat(init)``, ``z_t ~ Cat(trans[z_{t-1}])``,
``y_t ~ N(means[z_t], scale)``; the forward algorithm gives ``log p(y)`` and the filtering
marginals. Each has ``simulate`` (data from a seed) and ``model()`` (the ppl model, written
as a user would: a Python loop of sites ``x_t``/``z_t`` and ``y_t``).

    >>> ssm = LinearGaussianSSM(a=0.9)
    >>> ys = ssm.simulate(5, seed=0)
    >>> exact = ssm.kalman(ys)
    >>> len(exact.means), exact.log_evidence < 0
    (5, True)
    >>> grid = torch.linspace(-1.0, 1.0, 401, dtype=torch.float64)
    >>> post = ssm.grid_posterior(ys, "a", lambda a: torch.full_like(a, -math.log(2.0)), grid)
    >>> -1.0 < post.mean < 1.0, post.sd > 0
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ppl import model, sample
from ppl.model import Model
from ppl.stdlib import Categorical, Normal

__all__ = ["LinearGaussianSSM", "KalmanResult", "SmoothedResult", "GridPosterior",
           "DiscreteHMM"]


@dataclass(frozen=True)
class KalmanResult:
    """``log p(y)``, and the filtering means ``E[x_t | y_{0:t}]`` and variances."""

    log_evidence: float
    means: list[float]
    variances: list[float]


@dataclass(frozen=True)
class SmoothedResult:
    """Smoothing moments given all of ``y``: ``means`` and ``variances`` of each ``x_t`` and
    ``cross[t] = Cov(x_t, x_{t+1} | y)``."""

    means: list[float]
    variances: list[float]
    cross: list[float]


@dataclass(frozen=True)
class GridPosterior:
    """The posterior of one parameter on a grid: its ``density`` at the ``grid`` points
    (integrating to 1 by the trapezoid rule), ``mean``, ``sd``, and ``log_evidence``
    ``log ∫ p(y | theta) p(theta) d theta``."""

    grid: Tensor
    density: Tensor
    mean: float
    sd: float
    log_evidence: float


@dataclass(frozen=True)
class LinearGaussianSSM:
    """The 1-D linear-Gaussian state-space model (see the module docstring)."""

    a: float = 0.9
    q: float = 1.0
    r: float = 1.0
    m0: float = 0.0
    s0: float = 1.0

    def simulate(self, steps: int, seed: int = 0) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(2, steps, generator=g, dtype=torch.float64)
        x, ys = self.m0 + self.s0 * float(noise[0, 0]), []
        for t in range(steps):
            if t > 0:
                x = self.a * x + self.q * float(noise[0, t])
            ys.append(x + self.r * float(noise[1, t]))
        return torch.tensor(ys, dtype=torch.float64)

    def model(self) -> Model:
        a, q, r, m0, s0 = self.a, self.q, self.r, self.m0, self.s0

        @model
        def linear_gaussian(ys):
            x = sample("x_0", Normal(m0, s0))
            sample("y_0", Normal(x, r), obs=ys[0])
            for t in range(1, len(ys)):
                x = sample(f"x_{t}", Normal(a * x, q))
                sample(f"y_{t}", Normal(x, r), obs=ys[t])

        return linear_gaussian

    def kalman(self, ys: Tensor) -> KalmanResult:
        mean, var, log_z, means, variances = self.m0, self.s0**2, 0.0, [], []
        for t, y in enumerate(ys.tolist()):
            if t > 0:
                mean, var = self.a * mean, self.a**2 * var + self.q**2
            s = var + self.r**2  # the predictive variance of y_t
            log_z += -0.5 * (math.log(2 * math.pi * s) + (y - mean) ** 2 / s)
            gain = var / s
            mean, var = mean + gain * (y - mean), (1 - gain) * var
            means.append(mean)
            variances.append(var)
        return KalmanResult(log_z, means, variances)

    def grid_posterior(self, ys: Tensor, param: str, log_prior: Callable[[Tensor], Tensor],
                       grid: Tensor) -> GridPosterior:
        """The exact posterior of ``param`` (one of ``a``, ``q``, ``r``, ``m0``, ``s0``) with
        the others fixed: ``log_prior`` (a function of the grid values) plus the Kalman log
        likelihood at each point of ``grid`` (increasing; it should cover the prior's
        support where the likelihood is not negligible), integrated by the trapezoid rule."""
        if param not in ("a", "q", "r", "m0", "s0"):
            raise ValueError(f"grid_posterior: unknown parameter {param!r}; one of a, q, r, "
                             "m0, s0")
        grid = grid.to(torch.float64)
        log_lik = torch.tensor([replace(self, **{param: float(v)}).kalman(ys).log_evidence
                                for v in grid], dtype=torch.float64)
        log_joint = log_lik + log_prior(grid).to(torch.float64)
        widths = torch.diff(grid)
        trapezoid = torch.zeros_like(grid)
        trapezoid[:-1] += widths / 2
        trapezoid[1:] += widths / 2
        log_evidence = float(torch.logsumexp(log_joint + trapezoid.log(), 0))
        density = torch.exp(log_joint - log_evidence)
        mean = float((trapezoid * density * grid).sum())
        var = float((trapezoid * density * (grid - mean) ** 2).sum())
        return GridPosterior(grid, density, mean, math.sqrt(var), log_evidence)

    def smoothed_means(self, ys: Tensor) -> list[float]:
        """The Rauch-Tung-Striebel smoother's means ``E[x_t | y_{0:T-1}]``."""
        return self.smoothed(ys).means

    def smoothed(self, ys: Tensor) -> SmoothedResult:
        """The Rauch-Tung-Striebel smoother: means, variances and lag-one covariances."""
        filtered = self.kalman(ys)
        means, variances, cross = [filtered.means[-1]], [filtered.variances[-1]], []
        for t in range(len(ys) - 2, -1, -1):
            predicted_var = self.a**2 * filtered.variances[t] + self.q**2
            gain = filtered.variances[t] * self.a / predicted_var
            mean, var = filtered.means[t], filtered.variances[t]
            cross.insert(0, gain * variances[0])  # Cov(x_t, x_{t+1} | y) = J_t P^s_{t+1}
            means.insert(0, mean + gain * (means[0] - self.a * mean))
            variances.insert(0, var + gain**2 * (variances[0] - predicted_var))
        return SmoothedResult(means, variances, cross)


@dataclass(frozen=True)
class DiscreteHMM:
    """A K-state HMM with Gaussian emissions (see the module docstring); ``init`` (K,) and
    ``trans`` (K, K) are probabilities, ``means`` (K,) the emission means."""

    init: tuple[float, ...] = (0.5, 0.5)
    trans: tuple[tuple[float, ...], ...] = ((0.9, 0.1), (0.2, 0.8))
    means: tuple[float, ...] = (-1.0, 1.0)
    scale: float = 1.0

    def _tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        return (torch.tensor(self.init, dtype=torch.float64),
                torch.tensor(self.trans, dtype=torch.float64),
                torch.tensor(self.means, dtype=torch.float64))

    def simulate(self, steps: int, seed: int = 0) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        init, trans, means = self._tensors()
        z, ys = int(torch.multinomial(init, 1, generator=g)), []
        for t in range(steps):
            if t > 0:
                z = int(torch.multinomial(trans[z], 1, generator=g))
            ys.append(float(means[z]) + self.scale * float(torch.randn((), generator=g)))
        return torch.tensor(ys, dtype=torch.float64)

    def model(self) -> Model:
        init, trans, means = self._tensors()
        scale = self.scale

        @model
        def hmm(ys):
            z = sample("z_0", Categorical(init))
            sample("y_0", Normal(means[z], scale), obs=ys[0])
            for t in range(1, len(ys)):
                z = sample(f"z_{t}", Categorical(trans[z]))
                sample(f"y_{t}", Normal(means[z], scale), obs=ys[t])

        return hmm

    def forward(self, ys: Tensor) -> tuple[float, Tensor]:
        """``log p(y)`` and the filtering marginals ``p(z_t | y_{0:t})``, ``(T, K)``."""
        init, trans, means = self._tensors()
        emit = torch.distributions.Normal(means, self.scale).log_prob(ys[:, None].double())
        log_alpha, log_z, marginals = init.log() + emit[0], 0.0, []
        for t in range(len(ys)):
            if t > 0:
                log_alpha = torch.logsumexp(log_alpha[:, None] + trans.log(), 0) + emit[t]
            norm = torch.logsumexp(log_alpha, 0)
            log_z += float(norm)
            log_alpha = log_alpha - norm
            marginals.append(log_alpha.exp())
        return log_z, torch.stack(marginals)
