"""Conjugate Gibbs updates: exact draws from a site's full conditional when the graph shows a
conjugate pair (the pairs and their posteriors: :mod:`ppl.stdlib.conjugate_priors`).

A latent ``theta`` gets a conjugate update when its prior family declares a ``conjugate``
rule and every child in the graph (``random_dag`` successors: observe or sample nodes) uses it
*directly* as one parameter of a matching likelihood: the parameter is ``theta`` up to
broadcasting (``expand``, ``broadcast_tensors``, a deterministic site), up to a power
(``theta ** -0.5`` as a Normal scale is a precision), and for a Categorical up to the
normalization ``theta / theta.sum(-1, keepdim=True)``; no other parameter, nor the child's
observed value, depends on ``theta``; no site involved is scaled (tempered or subsampled).
Indexing (``locs[z]``) is not direct use: such a site is left to another kernel.
``conjugate_match`` says which prior family and likelihoods matched, or why none did.

The prior's natural parameters and each child's sufficient statistics, summed over every
dimension the child broadcasts ``theta`` along (``Independent`` wrappers are looked
through), are computed per chain by a :class:`~ppl.inference.mcmc.gibbs.site_program.SiteProgram`
over the site and its children; their sum parameterizes the posterior draw.

    >>> import torch
    >>> from ppl import model, plate, sample
    >>> from ppl.stdlib import Bernoulli, Beta
    >>> from ppl.inference.mcmc import chain_generators
    >>> @model
    ... def coin(y):
    ...     p = sample("p", Beta(1.0, 1.0))
    ...     with plate("flips", len(y)):
    ...         sample("y", Bernoulli(p), obs=y)
    >>> graph = coin.graph(torch.tensor([1.0, 1.0, 0.0]))
    >>> conjugate_match(graph, "p")[0].name
    'Beta'
    >>> update = Conjugate().bind(graph, ("p",))
    >>> values, _, _ = update.step(chain_generators(0, 3), {"p": torch.full((3,), 0.5)}, None)
    >>> values["p"].shape
    torch.Size([3])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent

from ppl.inference.rng import RNG, is_per_chain
from ppl.ir import DistSpec, Graph, Node, Ref
from ppl.ir.analysis import random_dag
from ppl.ir.errors import IRError
from ppl.ir.node import iter_refs
from ppl.registry import Family, families, get_family
from ppl.stdlib.conjugate_priors import ConjugatePrior, Likelihood, Stats

from .discrete import Values
from .site_by_site import SiteBySite
from .site_program import SiteProgram

__all__ = ["Conjugate", "conjugate_match"]

# -- detection from the graph -------------------------------------------------------------

_BROADCASTS = frozenset(
    {"Tensor.expand", "Tensor.expand_as", "torch.broadcast_to", "Tensor.broadcast_to",
     "ppl.identity"}
)
_POWERS = {"torch.sqrt": 0.5, "Tensor.sqrt": 0.5, "torch.rsqrt": -0.5, "Tensor.rsqrt": -0.5,
           "torch.reciprocal": -1.0, "Tensor.reciprocal": -1.0}
_POW = frozenset({"Tensor.__pow__", "torch.pow", "Tensor.pow"})
_RECIPROCAL = frozenset({"Tensor.__rtruediv__", "Tensor.__rdiv__"})
# ops whose value reads their first argument only (the second gives a dtype or shape)
_SHAPE_ONLY_SECOND = frozenset({"Tensor.type_as", "Tensor.expand_as", "Tensor.view_as",
                                "Tensor.reshape_as"})
_DIV = frozenset({"Tensor.div", "Tensor.__truediv__", "torch.div"})


def _innermost(spec: DistSpec) -> DistSpec:
    while spec.family == "Independent":
        spec = dict(spec.params)["base_distribution"]
    return spec


def _unwrap(dist: Distribution) -> Distribution:
    while isinstance(dist, Independent):
        dist = dist.base_dist
    return dist


def _is_sum_of(graph: Graph, arg, x: Ref) -> bool:
    """Whether ``arg`` is ``x.sum(-1, keepdim=True)``."""
    if not isinstance(arg, Ref):
        return False
    node = graph.node(arg.name)
    return (node.kind == "call" and node.target in ("Tensor.sum", "torch.sum")
            and node.args[:1] == (x,) and node.args[1:] in ((-1,), ((-1,),))
            and node.kwarg_dict.get("keepdim") is True)


def _projected(graph: Graph, node: Node):
    """The operand that ``ppl.getitem(torch.broadcast_tensors(...), k)`` reads (the tracer's
    pattern for broadcasting distribution parameters), else None."""
    if node.kind != "call" or node.target != "ppl.getitem" or len(node.args) != 2:
        return None
    source, k = node.args
    if not isinstance(source, Ref) or type(k) is not int:
        return None
    source = graph.node(source.name)
    if source.target != "torch.broadcast_tensors" or source.address is not None or source.kwargs:
        return None
    return source.args[k]


def _number(arg) -> float | None:
    """A literal Python number argument as a float, else None."""
    return float(arg) if type(arg) in (int, float) else None


def _trace(graph: Graph, arg) -> tuple[str, float, bool] | None:
    """``(latent node name, power, normalized)`` when ``arg`` is a latent's value raised to
    ``power`` up to broadcasting (and normalization over the last dim), else None."""
    power, normalized = 1.0, False
    while isinstance(arg, Ref):
        node = graph.node(arg.name)
        if node.kind == "sample":
            return node.name, power, normalized
        if node.kind != "call":
            return None
        target, args = node.target, node.args
        projected = _projected(graph, node)
        if projected is not None:
            arg = projected
        elif target in _BROADCASTS:
            arg = args[0]
        elif target in _POWERS:
            power, arg = power * _POWERS[target], args[0]
        elif target in _POW and len(args) == 2 and _number(args[1]) is not None:
            power, arg = power * args[1], args[0]
        elif target in _RECIPROCAL and len(args) == 2 and _number(args[1]) == 1.0:
            power, arg = -power, args[0]
        elif target in _DIV and len(args) == 2 and _is_sum_of(graph, args[1], args[0]):
            normalized, arg = True, args[0]
        else:
            return None
    return None


def _latent_deps(graph: Graph) -> dict[str, frozenset[str]]:
    """For each node, the latent nodes its value depends on (a latent's own value: none;
    an observe node's value: its observed value's)."""
    deps: dict[str, frozenset[str]] = {}
    for node in graph.nodes:
        projected = _projected(graph, node)
        if node.kind == "sample":
            refs = ()
        elif projected is not None:
            refs = iter_refs(projected)
        elif node.kind == "observe" or node.target in _SHAPE_ONLY_SECOND:
            refs = iter_refs(node.args[:1])
        else:
            refs = node.refs()
        out: set[str] = set()
        for r in refs:
            out |= {r} if graph.node(r).kind == "sample" else deps[r]
        deps[node.name] = frozenset(out)
    return deps


def _reads(deps: dict[str, frozenset[str]], graph: Graph, arg) -> set[str]:
    out: set[str] = set()
    for r in iter_refs(arg):
        out |= {r} if graph.node(r).kind == "sample" else deps[r]
    return out


def _child_likelihood(graph: Graph, deps, theta: Node, prior: ConjugatePrior,
                      child: Node) -> Likelihood | str:
    where = f"its child {child.address!r}"
    if child.kind not in ("sample", "observe"):
        return f"{where} is a {child.kind} node"
    if child.meta.attr("scale") is not None:
        return f"{where} is scaled (tempered or subsampled)"
    if child.kind == "observe" and theta.name in _reads(deps, graph, child.args):
        return f"the observed value of {where} depends on it"
    spec = _innermost(DistSpec(child.target, child.kwargs))
    using = [k for k, v in spec.params if theta.name in _reads(deps, graph, v)]
    if len(using) != 1:
        return f"{where} ({spec.family}) reads it in parameters {using}, not in exactly one"
    param = dict(spec.params)[using[0]]
    traced = _trace(graph, param)
    child_class = get_family(spec.family).cls
    for lik in prior.likelihoods:
        if lik.family is not child_class or lik.param != using[0] or traced is None:
            continue
        name, power, normalized = traced
        if name == theta.name and power == lik.power and (lik.normalized or not normalized):
            return lik
    known = [f"{lik.family.__name__}({lik.param}=theta**{lik.power:g})"
             for lik in prior.likelihoods]
    return (f"{where} uses it as {spec.family}({using[0]}=...), not directly as one of {known}")


def conjugate_match(
    graph: Graph, address: str
) -> tuple[Family, list[tuple[Node, Likelihood]]] | str:
    """The prior family of latent ``address`` (its ``conjugate`` rule matched) and a
    likelihood for each child, or a string saying why the site's conditional is not a
    conjugate update."""
    theta = graph.site(address)
    if theta.kind != "sample":
        return f"{address!r} is a {theta.kind} node, not a latent"
    family = get_family(_innermost(DistSpec(theta.target, theta.kwargs)).family)
    prior = family.conjugate
    if prior is None:
        known = sorted(name for name, f in families().items() if f.conjugate is not None)
        return f"its prior {family.name} is not one of the conjugate priors {known}"
    if theta.meta.attr("scale") is not None:
        return "its prior is scaled (tempered or subsampled)"
    children = [graph.site(a) for a in random_dag(graph).successors(address)]
    if not children:
        return "it has no children (its conditional is its prior)"
    deps = _latent_deps(graph)
    matched = []
    for child in children:
        lik = _child_likelihood(graph, deps, theta, prior, child)
        if isinstance(lik, str):
            return lik
        matched.append((child, lik))
    return family, matched


# -- the update -----------------------------------------------------------------------------


def _sum_to(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum ``t`` over the dims it broadcasts a tensor of ``shape`` along, then expand."""
    if t.dim() > len(shape):
        t = t.sum(tuple(range(t.dim() - len(shape))))
    offset = len(shape) - t.dim()
    dims = tuple(i for i in range(t.dim()) if shape[offset + i] == 1 and t.shape[i] != 1)
    if dims:
        t = t.sum(dims, keepdim=True)
    return t.expand(shape)


class _Stats:
    """A ``SiteFn``: the natural parameters (prior) or sufficient statistics (child), summed
    to the shape of the conjugate site."""

    def __init__(self, fn: Callable, shape: tuple[int, ...]):
        self.fn, self.shape = fn, shape

    def __call__(self, dist: Distribution, value: Tensor) -> Stats:
        return tuple(_sum_to(t, self.shape) for t in self.fn(_unwrap(dist), value))


@dataclass(frozen=True)
class _ConjugatePlan:
    address: str
    prior: ConjugatePrior
    program: SiteProgram

    def step(self, rng: RNG, values: Values) -> Tensor:
        terms = list(self.program(values).values())
        params = tuple(sum(t[i] for t in terms) for i in range(len(terms[0])))
        if not is_per_chain(rng):
            return self.prior.draw(params, rng)
        return torch.stack([self.prior.draw(tuple(p[c] for p in params), g)
                            for c, g in enumerate(rng)])


def _plan(graph: Graph, p, address: str) -> _ConjugatePlan:
    match = conjugate_match(graph, address)
    if isinstance(match, str):
        raise IRError(f"Conjugate: site {address!r} has no conjugate update: {match}")
    prior, children = match[0].conjugate, match[1]
    shape = tuple(p.env[graph.site(address).name].shape)
    fns = {address: _Stats(lambda d, v: prior.natural(d), shape)}
    fns.update({child.address: _Stats(lik.stats, shape) for child, lik in children})
    return _ConjugatePlan(address, prior, SiteProgram(graph, fns))


@dataclass(frozen=True)
class Conjugate(SiteBySite):
    """Exact conjugate Gibbs updates of continuous sites, one after another (see the module
    docstring for the pairs recognized)."""

    plan_site = staticmethod(_plan)
