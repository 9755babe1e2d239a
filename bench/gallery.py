"""NUTS on the tutorial gallery (issue 14): ppl side by side with NumPyro and Pyro, and ppl's
own autograd fallback, on the models of ``ppl.inference.gallery`` and their simulated data.

The harness is ``bench/nuts.py`` (cold and warm runs, gradient counts, bulk ESS, ESS/s,
ratios to each peer; the same options: ``--quick``, ``--repeats``, ``--models``, ``--ppls``,
``--chains``, ``--json``...). Each model is written once here, as a factory over the PPLs'
shared primitives (the gallery's model in the harness's notation, without its deterministic
sites), and reads the gallery's data (``gallery(seed=0)``, float32 values):

* ``varying_slopes``: intercepts and slopes of 8 groups (200 rows), correlated through
  ``LKJCholesky(2, 2)``, non-centered;
* ``stochastic_volatility``: 200 returns, log-volatility a scaled ``GaussianRandomWalk``;
* ``ordered_logistic``: 300 ordinal outcomes, 3 ordered cutpoints (improper flat prior);
* ``mvn_lkj``: 100 rows of a 3-d Gaussian, ``scale_tril = sd * LKJCholesky(3, 2)``;
* ``mvn_constant_scale``: 25 rows of a 2-d Gaussian with a known ``scale_tril``;
* ``mixture_constant_weights``, ``mixture_latent_weights``: ``MixtureSameFamily`` of 2
  Gaussians with known weights (200 points) and of 3 with Dirichlet weights and a clamped
  scale (300 points).

``ppl_autograd`` is ppl pinned to its autograd backend (``NUTS(backend="autograd")``): its
ratio to ``ppl`` is the slowdown a model that leaves the fast path pays. Peers that are not
installed are skipped (``pip install -e '.[bench]'``). Chains start as ``init_to_median``
(NumPyro) / ``init="median"`` (ppl) for the mixtures, as the gallery does, so that no chain
settles in a mode with the labels swapped; the other models start uniform in (-2, 2).

Run: ``.venv/bin/python bench/gallery.py [--quick] [--repeats N] [--models a,b]
[--ppls ppl,ppl_autograd,numpyro,pyro] [--chains 1,4] [--json out.json]``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nuts  # noqa: E402 - the harness, next to this file

from ppl.inference.gallery import gallery  # noqa: E402

# --------------------------------------------------------------------------- models


def varying_slopes(lib: SimpleNamespace) -> Callable:
    def model(group, x, num_groups, y):
        mu = lib.sample("mu", lib.Normal(0.0, 2.0).expand([2]).to_event(1))
        tau = lib.sample("tau", lib.HalfNormal(1.0).expand([2]).to_event(1))
        chol = lib.sample("L", lib.LKJCholesky(2, 2.0))
        sigma = lib.sample("sigma", lib.HalfNormal(1.0))
        with lib.plate("groups", num_groups):
            z = lib.sample("z", lib.Normal(0.0, 1.0).expand([2]).to_event(1))
        effects = mu + z @ (tau[:, None] * chol).T
        with lib.plate("data", x.shape[0]):
            lib.sample("y", lib.Normal(effects[group, 0] + effects[group, 1] * x, sigma), obs=y)

    return model


def stochastic_volatility(lib: SimpleNamespace) -> Callable:
    def model(y):
        sigma = lib.sample("sigma", lib.HalfNormal(1.0))
        mu = lib.sample("mu", lib.Normal(0.0, 2.0))
        h = sigma * lib.sample("h_std", lib.GaussianRandomWalk(1.0, y.shape[0]))
        lib.sample("y", lib.Normal(0.0, lib.exp(0.5 * (mu + h))).to_event(1), obs=y)

    return model


def ordered_logistic(lib: SimpleNamespace) -> Callable:
    def model(x, num_cutpoints, y):
        beta = lib.sample("beta", lib.Normal(0.0, 3.0))
        cutpoints = lib.sample("cutpoints",
                               lib.ImproperUniform(lib.ordered, (), (num_cutpoints,)))
        with lib.plate("data", x.shape[0]):
            lib.sample("y", lib.OrderedLogistic(beta * x, cutpoints), obs=y)

    return model


def mvn_lkj(lib: SimpleNamespace) -> Callable:
    def model(y):
        dim = y.shape[-1]
        mu = lib.sample("mu", lib.Normal(0.0, 5.0).expand([dim]).to_event(1))
        sd = lib.sample("sd", lib.HalfNormal(2.0).expand([dim]).to_event(1))
        chol = lib.sample("L", lib.LKJCholesky(dim, 2.0))
        with lib.plate("data", y.shape[0]):
            lib.sample("y", lib.MultivariateNormal(mu, scale_tril=sd[:, None] * chol), obs=y)

    return model


def mvn_constant_scale(lib: SimpleNamespace) -> Callable:
    def model(y, scale_tril):
        mu = lib.sample("mu", lib.Normal(0.0, 5.0).expand([y.shape[-1]]).to_event(1))
        with lib.plate("data", y.shape[0]):
            lib.sample("y", lib.MultivariateNormal(mu, scale_tril=scale_tril), obs=y)

    return model


def mixture_constant_weights(lib: SimpleNamespace) -> Callable:
    def model(weights, prior_loc, y):
        loc = lib.sample("loc", lib.Normal(prior_loc, 1.0).to_event(1))
        with lib.plate("data", y.shape[0]):
            mixture = lib.MixtureSameFamily(lib.Categorical(probs=weights), lib.Normal(loc, 1.0))
            lib.sample("y", mixture, obs=y)

    return model


def mixture_latent_weights(lib: SimpleNamespace) -> Callable:
    def model(concentration, prior_loc, y):
        weights = lib.sample("weights", lib.Dirichlet(concentration))
        loc = lib.sample("loc", lib.Normal(prior_loc, 1.0).to_event(1))
        scale = lib.sample("scale", lib.HalfNormal(2.0))
        with lib.plate("data", y.shape[0]):
            component = lib.Normal(loc, lib.clamp_min(scale, 1e-3))
            lib.sample("y", lib.MixtureSameFamily(lib.Categorical(probs=weights), component),
                       obs=y)

    return model


# --------------------------------------------------------------------------- data


def _numpy(value) -> np.ndarray | int:
    if isinstance(value, int):
        return value
    array = value.numpy()
    return array.astype(np.float64) if array.dtype.kind == "f" else array


def gallery_data(name: str) -> nuts.Data:
    """The gallery case's data by the bench model's argument names (numpy; float32-exact)."""
    case = gallery(seed=0)[name]
    names = {
        "varying_slopes": ("group", "x", "num_groups"),
        "stochastic_volatility": ("y",),
        "ordered_logistic": ("x", "num_cutpoints"),
        "mvn_lkj": ("y",),
        "mvn_constant_scale": ("y", "scale_tril"),
        "mixture_constant_weights": ("weights",),
        "mixture_latent_weights": ("y",),
    }[name]
    data = {k: _numpy(v) for k, v in zip(names, case.args, strict=True)}
    data.update({k: _numpy(v) for k, v in case.kwargs.items()})
    if name == "mixture_constant_weights":
        data["prior_loc"] = np.array([-3.0, 3.0])
    if name == "mixture_latent_weights":
        data["prior_loc"] = np.array([-4.0, 0.0, 4.0])
        data["concentration"] = np.ones(3)
    return data


MEDIAN_INIT = ("mixture_constant_weights", "mixture_latent_weights")
GALLERY = {b.name: b for b in (
    nuts.Benchmark("varying_slopes", varying_slopes, lambda: gallery_data("varying_slopes"),
                   ("mu", "tau", "sigma", "z")),
    nuts.Benchmark("stochastic_volatility", stochastic_volatility,
                   lambda: gallery_data("stochastic_volatility"), ("mu", "sigma", "h_std")),
    nuts.Benchmark("ordered_logistic", ordered_logistic,
                   lambda: gallery_data("ordered_logistic"), ("beta", "cutpoints")),
    nuts.Benchmark("mvn_lkj", mvn_lkj, lambda: gallery_data("mvn_lkj"), ("mu", "sd")),
    nuts.Benchmark("mvn_constant_scale", mvn_constant_scale,
                   lambda: gallery_data("mvn_constant_scale"), ("mu",)),
    nuts.Benchmark("mixture_constant_weights", mixture_constant_weights,
                   lambda: gallery_data("mixture_constant_weights"), ("loc",)),
    nuts.Benchmark("mixture_latent_weights", mixture_latent_weights,
                   lambda: gallery_data("mixture_latent_weights"), ("weights", "loc", "scale")),
)}

# --------------------------------------------------------------------------- adapters


class GalleryPpl(nuts.PplAdapter):
    backend = "auto"

    def namespace(self) -> SimpleNamespace:
        import torch

        import ppl.stdlib as D

        names = ("Categorical", "Dirichlet", "GaussianRandomWalk", "ImproperUniform",
                 "LKJCholesky", "MixtureSameFamily", "MultivariateNormal", "OrderedLogistic")
        return SimpleNamespace(**vars(super().namespace()), **{n: getattr(D, n) for n in names},
                               ordered=D.constraints.ordered, exp=torch.exp,
                               clamp_min=lambda x, low: torch.clamp(x, min=low))

    def method(self, bench: nuts.Benchmark, config: nuts.RunConfig):
        from ppl.inference.mcmc.methods import NUTS

        init = "median" if bench.name in MEDIAN_INIT else "uniform"
        return NUTS(num_warmup=config.num_warmup, num_samples=config.num_samples,
                    chains=config.chains, init=init, backend=self.backend)


class GalleryPplAutograd(GalleryPpl):
    name = "ppl_autograd"
    backend = "autograd"
    settings = "ppl_autograd: ppl pinned to NUTS(backend='autograd'), the fallback path"


class GalleryNumPyro(nuts.NumPyroAdapter):
    def namespace(self) -> SimpleNamespace:
        import jax.numpy as jnp
        import numpyro.distributions as dist
        from numpyro.distributions import constraints

        names = ("Categorical", "Dirichlet", "GaussianRandomWalk", "ImproperUniform",
                 "LKJCholesky", "MixtureSameFamily", "MultivariateNormal", "OrderedLogistic")
        return SimpleNamespace(**vars(super().namespace()), **{n: getattr(dist, n) for n in names},
                               ordered=constraints.ordered_vector, exp=jnp.exp,
                               clamp_min=lambda x, low: jnp.clip(x, low))

    def kernel(self, bench: nuts.Benchmark, model: Callable):
        from numpyro.infer import NUTS, init_to_median, init_to_uniform

        init = init_to_median if bench.name in MEDIAN_INIT else init_to_uniform
        return NUTS(model, init_strategy=init)


class GalleryPyro(nuts.PyroAdapter):
    def namespace(self) -> SimpleNamespace:
        import pyro.distributions as dist
        import torch
        from pyro.distributions import constraints

        names = ("Categorical", "Dirichlet", "GaussianRandomWalk", "ImproperUniform",
                 "LKJCholesky", "MixtureSameFamily", "MultivariateNormal", "OrderedLogistic")
        return SimpleNamespace(**vars(super().namespace()), **{n: getattr(dist, n) for n in names},
                               ordered=constraints.ordered_vector, exp=torch.exp,
                               clamp_min=lambda x, low: torch.clamp(x, min=low))


def main(argv=None):
    nuts.BENCHMARKS.clear()
    nuts.BENCHMARKS.update(GALLERY)
    nuts.PEERS = ("numpyro", "pyro", "ppl_autograd")
    nuts.ADAPTERS.clear()
    nuts.ADAPTERS.update({a.name: a for a in (GalleryPpl(), GalleryPplAutograd(),
                                              GalleryNumPyro(), GalleryPyro())})
    return nuts.main(argv)


if __name__ == "__main__":
    main()
