"""Posterior and prior predictive draws: run the model once per posterior draw, with the
latents fixed to that draw and the observations drawn afresh.

``predictive(model, posterior, *args, **kwargs)`` runs ``model(*args, **kwargs)`` for every
kept draw of ``posterior``: latent sites take the draw's values (a posterior value for a
site's name wins whether the posterior holds it as a latent or as a deterministic site, so
results of reparameterizing passes such as ``noncenter`` work), observed sites are sampled
from their distributions given those latents (their data is ignored), and deterministic
sites are recomputed. It returns every sample and deterministic site:

* for an MCMC ``Posterior``: ``(chains, draws, *site_shape)``;
* for a ``WeightedPosterior``: ``(num_samples, *site_shape)`` over ``num_samples`` draws
  resampled by the weights (default: as many as it holds);
* for ``posterior=None``, the prior predictive: ``(num_samples, *site_shape)``.

All draws run as one vectorized model run (the particle plate of ``ppl.vectorize``: the
model must keep independent dimensions in plates or ``.to_event``). A model whose code
depends on the shapes of its latents (``X @ beta`` with a latent vector ``beta``, whose
particle axis ``matmul`` would take for a matrix dimension) runs under ``torch.func.vmap``
instead, each draw seeing its own unbatched values, as in NumPyro; a model that neither
vectorizes nor vmaps (Python control flow on a latent, a family whose sampler vmap cannot
batch) runs once per draw, said once with a ``ppl.vectorize.VectorizationWarning``;
``vectorized=False`` asks for that directly (slower, same distribution, different random
streams). The draws enter
the model in each site's own dtype (a float32 model gets float32 values, whatever the
posterior stores). Randomness comes from ``seed`` (the global torch
RNG when None). The keyword names ``num_samples``, ``seed`` and ``vectorized`` belong to
``predictive``; every other keyword goes to the model.

    >>> import torch
    >>> from ppl import model, sample, plate
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m(y):
    ...     mu = sample("mu", Normal(0.0, 1.0))
    ...     with plate("data", len(y)):
    ...         sample("y", Normal(mu, 0.5), obs=y)
    >>> prior = predictive(m, None, torch.zeros(3), num_samples=100, seed=0)
    >>> prior["y"].shape, prior["mu"].shape
    (torch.Size([100, 3]), torch.Size([100]))

A latent site the posterior has no draws of is drawn given the others, as a new quantity
(e.g. ``y`` when the model is called with ``y=None``), except a site the posterior's graph
summed out with the ``enumerate_discrete`` pass: that is an error, since drawing it from its
prior, ignoring the data, would be wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .handlers import substitute, trace
from .model import _seeded
from .randomness import drawing
from .runtime import Message, Messenger
from .scan import unstack_steps
from .trace import Site, Trace
from .vectorize import batch_ndims, pilot_trace, vectorized_trace, warn_once

__all__ = ["predictive"]


class unobserve(Messenger):
    """Turn observed sample sites into random ones: their data is ignored and a value drawn."""

    def process(self, msg: Message) -> None:
        if msg.kind == "sample" and msg.is_observed and not msg.intervened:
            msg.value = None
            msg.is_observed = False


def _posterior_draws(
    posterior: Any, num_samples: int | None
) -> tuple[dict[str, Tensor], tuple[int, ...]]:
    """Flat draws ``{site: (N, *shape)}`` and the leading shape the results take."""
    if posterior is None:
        if num_samples is None:
            raise ValueError("prior predictive (posterior=None) needs num_samples")
        return {}, (num_samples,)
    if hasattr(posterior, "log_weights"):  # a WeightedPosterior: resample by the weights
        n = num_samples or posterior.num_samples
        return posterior.resample(n), (n,)
    if num_samples is not None:
        raise ValueError(
            "num_samples is for prior predictive and weighted posteriors; an MCMC posterior "
            "gives one predictive draw per kept draw (thin its samples to use fewer)"
        )
    samples = posterior.samples
    lead = tuple(next(iter(samples.values())).shape[:2])
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in samples.items()}, lead


def _marginalized(posterior: Any) -> set[str]:
    """Sites the posterior's graph summed out (recorded by the ``enumerate_discrete`` pass)."""
    graph = getattr(posterior, "extra", {}).get("graph")
    attrs = getattr(graph, "attrs", {}) or {}
    return {site["address"] for app in attrs.get("enumerated", ()) for site in app["sites"]}


def _check_latents(pilot: Trace, draws: dict[str, Tensor], marginalized: set[str]) -> None:
    missing = [s.name for s in pilot.latent_sites()
               if s.name in marginalized and s.name not in draws]
    if missing:
        raise ValueError(
            f"the posterior has no draws of latent sites {missing}, which the enumerate_discrete "
            "pass summed out; drawing them from their prior would be wrong, since the data "
            "inform them. Sample them in the posterior (e.g. with a discrete Gibbs kernel)"
        )


def _aligned(value: Tensor, site: Site, ndims: int) -> Tensor:
    """``(N, *site_shape)`` -> ``(N, 1, ..., *site_shape)`` so the draw axis sits at the
    particle dim ``-(ndims + 1)`` left of the site's batch dims."""
    pad = ndims - len(site.fn.batch_shape)
    return value.reshape(value.shape[0], *([1] * pad), *value.shape[1:])


def _in_site_dtype(value: Tensor, site: Site) -> Tensor:
    """A posterior draw cast to the dtype the model gives its site (MCMC stores float64)."""
    dtype = torch.as_tensor(site.value).dtype
    return value.to(dtype) if value.is_floating_point() and dtype.is_floating_point else value


def _run_once(fn: Callable, values: dict[str, Tensor], args: tuple,
              kwargs: dict) -> dict[str, Tensor]:
    """One run of ``fn`` with ``values`` substituted: its sample and deterministic values."""
    tr = trace().get_trace(substitute(values)(fn), *args, **kwargs)
    return {n: s.value for n, s in tr.sites.items() if s.kind in ("sample", "deterministic")}


class plain_draws(Messenger):
    """Draw the sites no handler gave a value with ``sample()``, not ``rsample()``: predictive
    draws need no gradient, and torch's ``rsample`` fills a fresh tensor in place, which
    ``vmap`` cannot give a different draw per batch element."""

    def process(self, msg: Message) -> None:
        if msg.kind == "sample" and msg.value is None:
            with drawing(), torch.no_grad():
                msg.value = msg.fn.sample()


def _vmapped(fn: Callable, draws: dict[str, Tensor], total: int, args: tuple,
             kwargs: dict) -> dict[str, Tensor]:
    """``total`` runs of ``fn`` under ``torch.func.vmap``, run ``i`` with draw ``i`` of each
    site substituted: the model sees unbatched values, so shape-dependent code runs as
    written. Returns ``{site: (total, *site_shape)}``."""
    def once(values: dict[str, Tensor], _row: Tensor) -> dict[str, Tensor]:
        return _run_once(plain_draws()(fn), values, args, kwargs)

    rows = torch.zeros(total)  # batched even when there are no draws (prior predictive)
    return torch.func.vmap(once, randomness="different")(draws, rows)


def predictive(
    model: Callable,
    posterior: Any = None,
    *args,
    num_samples: int | None = None,
    seed: int | None = None,
    vectorized: bool = True,
    **kwargs,
) -> dict[str, Tensor]:
    """Posterior (or, with ``posterior=None``, prior) predictive draws of every sample and
    deterministic site of ``model(*args, **kwargs)``; see the module docstring for shapes."""
    with _seeded(seed):
        draws, lead = _posterior_draws(posterior, num_samples)
        fn = unobserve()(model)
        pilot = pilot_trace(fn, args, kwargs)
        _check_latents(pilot, draws, _marginalized(posterior))
        draws = unstack_steps(draws, pilot.sites, dim=1)  # MCMC stacks a scan's steps
        draws = {k: _in_site_dtype(v, pilot.sites[k]) for k, v in draws.items()
                 if k in pilot.sites and pilot.sites[k].kind == "sample"}
        total = math.prod(lead)
        flat = None
        if vectorized:
            ndims = batch_ndims(pilot)
            fixed = {k: _aligned(v, pilot.sites[k], ndims) for k, v in draws.items()}
            try:
                run = vectorized_trace(substitute(fixed)(fn), args, kwargs, total,
                                       particle_dim=-(ndims + 1), pilot=pilot, probe=fn)
                flat = run.values(observed=True)
            except Exception:  # noqa: BLE001 - shape-dependent code: vmap it instead
                try:
                    flat = _vmapped(fn, draws, total, args, kwargs)
                except Exception as error:  # noqa: BLE001 - nor that: per draw
                    failure = error
        if flat is None:
            rows = [_run_once(fn, {k: v[i] for k, v in draws.items()}, args, kwargs)
                    for i in range(total)]
            flat = {k: torch.stack([row[k] for row in rows]) for k in rows[0]} if rows else {}
            if vectorized:
                warn_once(model, failure)
    return {k: v.reshape(*lead, *v.shape[1:]) for k, v in flat.items()}
