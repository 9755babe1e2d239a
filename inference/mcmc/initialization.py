"""Where MCMC chains start: the ``init`` strategies of the ``infer`` methods (NumPyro's).

- ``"uniform"`` (the default, Stan's): each unconstrained coordinate uniform in (-2, 2);
- ``"prior"``: one prior draw per chain, mapped to the unconstrained space;
- ``"median"``: the coordinatewise median of 15 prior draws on the unconstrained space (a
  valid point for every support, e.g. a Cholesky factor), the same for every chain;
- a dict ``{site: value}``: those sites at the given constrained values (each shaped as the
  site, or ``(chains, *site_shape)`` for one value per chain), the rest uniform.

Every chain must start where the log density and its gradient are finite: random strategies
redraw the chains that do not, fixed ones raise an error naming the sites whose terms are
not finite.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import HalfNormal
    >>> from ppl.inference.lowering.flat import FlatModel
    >>> @model
    ... def m():
    ...     sample("s", HalfNormal(1.0))
    >>> flat = FlatModel.from_graph(m.graph())
    >>> z = initial_positions(flat, 2, torch.Generator().manual_seed(0), {"s": torch.tensor(1.0)})
    >>> z
    tensor([[0.],
            [0.]], dtype=torch.float64)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ppl.errors import ModelError
from ppl.inference.lowering.flat import FlatModel
from ppl.ir import Interpreter
from ppl.passes.rewriting import probe
from ppl.randomness import seeded

InitStrategy = str | Mapping[str, torch.Tensor]
STRATEGIES = ("uniform", "prior", "median")
MEDIAN_DRAWS = 15  # as NumPyro's init_to_median
RADIUS = 2.0


def check_init(owner: str, init: InitStrategy) -> None:
    """Refuse an unknown strategy name at construction, before any model is traced."""
    if isinstance(init, str) and init not in STRATEGIES:
        raise ValueError(f"{owner}: init must be one of {STRATEGIES} or a dict of site values, "
                         f"not {init!r}")
    if not isinstance(init, (str, Mapping)):
        raise TypeError(f"{owner}: init must be one of {STRATEGIES} or a dict of site values, "
                        f"not {type(init).__name__}")


def initial_positions(flat: FlatModel, chains: int, generator: torch.Generator,
                      init: InitStrategy = "uniform", tries: int = 100) -> torch.Tensor:
    """``(chains, dim)`` unconstrained starting points by ``init`` (see the module docstring),
    each with a finite log density and gradient; random draws come from ``generator``."""
    check_init("initial_positions", init)
    if init == "median":
        z = _median(flat, generator).expand(chains, -1).clone()
        return _checked(flat, z, "the prior median")
    if isinstance(init, Mapping):
        return _checked(flat, _with_values(flat, _uniform(flat, chains, generator), init, chains),
                        "the given init values")
    draw = {"uniform": _uniform, "prior": _prior}[init]
    z = draw(flat, chains, generator)
    for _ in range(tries):
        bad = ~_finite(flat, z)
        if not bad.any():
            return z
        z[bad] = draw(flat, int(bad.sum()), generator)
    raise ModelError(
        f"no finite initial log density after {tries} tries of init={init!r}; the non-finite "
        f"terms come from: {nonfinite_sites(flat, z[bad][0])}"
    )


def _finite(flat: FlatModel, z: torch.Tensor) -> torch.Tensor:
    log_p, grad = flat.log_density_and_grad(z)
    return torch.isfinite(log_p) & torch.isfinite(grad).all(-1)


def _checked(flat: FlatModel, z: torch.Tensor, what: str) -> torch.Tensor:
    bad = ~_finite(flat, z)
    if bad.any():
        raise ModelError(f"the log density is not finite at {what} (chains "
                         f"{bad.nonzero().flatten().tolist()}); the non-finite terms come from: "
                         f"{nonfinite_sites(flat, z[bad][0])}")
    return z


def _uniform(flat: FlatModel, n: int, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, flat.dim, generator=generator, dtype=flat.dtype) * 2 - 1) * RADIUS


def _prior(flat: FlatModel, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` prior draws of the latents (improper ones at a point of their support), each in
    its own seed scope, mapped to the unconstrained space."""
    rows = []
    for _ in range(n):
        with seeded(int(torch.randint(0, 2**31 - 1, (), generator=generator))):
            values = probe(flat.graph).env
        rows.append(flat.unconstrain(
            {b.address: values[flat.graph.site(b.address).name] for b in flat.blocks}))
    return torch.stack(rows).to(flat.dtype)


def _median(flat: FlatModel, generator: torch.Generator) -> torch.Tensor:
    return _prior(flat, MEDIAN_DRAWS, generator).median(0).values


def _with_values(flat: FlatModel, z: torch.Tensor, values: Mapping[str, torch.Tensor],
                 chains: int) -> torch.Tensor:
    """``z`` with the blocks of the sites in ``values`` replaced by their unconstrained
    values (the other sites' constrained values read at ``z``, for supports that depend on
    them)."""
    blocks = {b.address: b for b in flat.blocks}
    unknown = sorted(set(values) - set(blocks))
    if unknown:
        raise ModelError(f"init values for {unknown}, which are not latent sites of the model "
                         f"(its latent sites: {sorted(blocks)})")
    current = flat.constrained_values(z)
    rows = []
    for c in range(chains):
        row = {a: current[a][c] for a in blocks}
        for address, value in values.items():
            value = torch.as_tensor(value, dtype=torch.float64)
            shape = blocks[address].shape
            if tuple(value.shape) == (chains, *shape):
                value = value[c]
            if tuple(value.shape) != shape:
                raise ModelError(
                    f"init value for site {address!r} has shape {tuple(value.shape)}; the site "
                    f"has shape {shape} (or give {(chains, *shape)}, one value per chain)")
            row[address] = value
        rows.append(flat.unconstrain(row))
    return torch.stack(rows).to(flat.dtype)


def nonfinite_sites(flat: FlatModel, z: torch.Tensor) -> list[str]:
    """The sites whose log density terms are not finite at the unconstrained point ``z``
    ``(dim,)`` (or a note that only a ``log|det J|`` term is)."""
    values = {k: v[0] for k, v in flat.constrained_values(z[None]).items()}
    bad = []

    class Probe(Interpreter):
        def check(self, node, kwargs, value):
            if not torch.isfinite(self.site_distribution(node, kwargs).log_prob(value)).all():
                bad.append(node.address)
            return value

        def sample(self, node, args, kwargs):
            return self.check(node, kwargs, values[node.address])

        def observe(self, node, args, kwargs):
            return self.check(node, kwargs, args[0])

    Probe(flat.graph).run()
    return bad or ["(a log|det J| term)"]
