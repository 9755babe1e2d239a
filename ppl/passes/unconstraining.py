"""``unconstrain()``: move every constrained continuous latent to an unconstrained space.

For a latent site ``x ~ D`` whose support ``S`` is not all of R^n, with ``T = biject_to(S)``
(``torch.distributions.biject_to``, extended by ``ppl.stdlib``), the pass writes::

    %x__unconstrained = sample "x__unconstrained" ImproperUniform(support=real, batch_shape=..,
                                                                  event_shape=..)
    %x_value          = call T(%x__unconstrained)          # torch.exp, or ppl.biject_to
    %x__log_abs_det_jacobian = factor "x__log_abs_det_jacobian"(log|det J_T(u)|)
                                                           {role="log_abs_det_jacobian", of="x"}
    %x                = observe "x" D(...) = %x_value      {role="constrained",
                                                            unconstrained_from="x__unconstrained"}

so the joint density of the new graph at ``u`` is ``p(T(u), ...) * |det J_T(u)|``: the
original model, pushed to R^n. The Jacobian factor comes right after the bijection, before
the site's own density: the order in which the flat lowering (``ppl.inference.lowering``,
which runs this pass) adds the two terms, so that its sums round the same way on every
backend. Naming: the new latent is ``<address>__unconstrained``, the Jacobian factor
``<address>__log_abs_det_jacobian``; the site keeps its address and SSA name, so downstream
nodes read the constrained value, and a posterior over ``x`` is read off the ``observe``
node. ``latent_transforms(graph)`` lists the rewritten sites for a
lowering; ``constrained_values(graph, values)`` maps unconstrained values to the sites'.

Supports that are static (``positive``, ``unit_interval``, ``simplex``, ``corr_cholesky``,
``ordered``, ...) are passed to ``ppl.biject_to`` as constraint literals (``positive`` and
``nonnegative`` become a plain ``torch.exp`` with log|det J| = u); a support that depends on
model values (``Uniform(lo, hi)`` with random ``lo``) is passed as the site's distribution,
so its bounds are read at run time. Discrete latents and real-valued ones are left alone.

    >>> from ppl import model, sample
    >>> from ppl.stdlib import Gamma
    >>> @model
    ... def m():
    ...     sample("s", Gamma(2.0, 1.0))
    >>> g = unconstrain()(m.graph())
    >>> [(n.kind, n.target, n.address) for n in g.nodes[:-1]]  # doctest: +NORMALIZE_WHITESPACE
    [('sample', 'ImproperUniform', 's__unconstrained'), ('call', 'torch.exp', None),
     ('factor', 's__log_abs_det_jacobian', 's__log_abs_det_jacobian'), ('observe', 'Gamma', 's')]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch.distributions import biject_to, constraints
from torch.distributions.constraints import Constraint

from ppl.ir import DistSpec, Graph, LogDensity, Meta, Node, Ref
from ppl.ir.errors import IRError
from ppl.ir.loop import refuse_loops
from ppl.registry import describe_constraint

from .rewriting import Probe, Rewriter, is_static, probe

UNCONSTRAINED = "__unconstrained"
JACOBIAN = "__log_abs_det_jacobian"


class UnconstrainedSite(NamedTuple):
    """How one site was unconstrained: addresses of its parts and its SSA name."""

    address: str
    unconstrained: str
    jacobian: str
    node: str
    support: Any


def _base(c: Constraint) -> Constraint:
    while isinstance(c, constraints.independent):
        c = c.base_constraint
    return c


def _is_real(c: Constraint) -> bool:
    return isinstance(_base(c), type(constraints.real))


def _is_exp(c: Constraint) -> bool:
    b = _base(c)
    return (
        isinstance(b, (constraints.greater_than, constraints.greater_than_eq))
        and isinstance(b.lower_bound, (int, float))
        and float(b.lower_bound) == 0.0
    )


def _describable(c: Constraint) -> bool:
    try:
        describe_constraint(c)
        return True
    except KeyError:
        return False


class unconstrain:
    """Pass: every constrained continuous latent (or those in ``sites``) becomes unconstrained."""

    name = "unconstrain"

    def __init__(self, sites: Sequence[str] | None = None):
        self.sites = None if sites is None else list(sites)

    def __repr__(self) -> str:
        return "unconstrain()" if self.sites is None else f"unconstrain({self.sites})"

    def __call__(self, graph: Graph) -> Graph:
        return self.with_prior(graph)[0]

    def with_prior(self, graph: Graph) -> tuple[Graph, Probe]:
        """The pass's graph, and the probe of ``graph`` it was made from: a lowering reads
        each latent's support and shape off that one prior draw instead of probing the new
        graph again (a second walk building every site's distribution).

        >>> from ppl import model, sample
        >>> from ppl.stdlib import Gamma
        >>> @model
        ... def m():
        ...     sample("s", Gamma(2.0, 1.0))
        >>> g, prior = unconstrain().with_prior(m.graph())
        >>> str(prior.dists["s"].support), g.site("s__unconstrained").meta.shape
        ('GreaterThanEq(lower_bound=0.0)', ())
        """
        refuse_loops(graph, "pass 'unconstrain'")
        for address in self.sites or ():
            if not graph.has_site(address) or graph.site(address).kind != "sample":
                raise IRError(
                    f"unconstrain: {address!r} is not a latent sample site of graph {graph.name!r}"
                )
        prior = probe(graph)
        dists = prior.dists
        rw = Rewriter(graph)
        done: dict[str, str] = {}
        for node in graph.nodes:
            if node.kind != "sample" or (self.sites is not None and node.address not in self.sites):
                rw.copy(node)
                continue
            support = dists[node.name].support
            if support.is_discrete or _is_real(support):
                if self.sites is not None and support.is_discrete:
                    raise IRError(
                        f"unconstrain: site {node.address!r} is discrete (support {support}); "
                        "it has no bijection to the reals (enumerate it instead)"
                    )
                rw.copy(node)
                continue
            done[node.address] = self._rewrite(
                rw, node, support, dists[node.name], prior.env[node.name]
            )
        unconstrained = {**graph.attrs.get("unconstrained", {}), **done}
        return rw.build({"unconstrained": unconstrained}), prior

    @staticmethod
    def _rewrite(
        rw: Rewriter, node: Node, support: Constraint, dist, point: torch.Tensor
    ) -> str:
        """Rewrite one site; ``point`` is a prior draw of it, a point of its support."""
        address = node.address
        try:
            transform = biject_to(support)
        except NotImplementedError:
            raise IRError(
                f"unconstrain: site {address!r} has support {support}, for which no bijection "
                "from the reals is registered; register one with torch.distributions.biject_to, "
                "or leave the site out (unconstrain(sites=[...]))"
            ) from None
        shape = (
            tuple(node.meta.shape)
            if node.meta.shape is not None
            else tuple(dist.batch_shape + dist.event_shape)
        )
        # the image of a point, not ``transform.inverse_shape``: for an affine map that imports
        # torch's symbolic-shape machinery, a second on the first call
        with torch.no_grad():
            u_shape = tuple(transform.inv(point.expand(shape)).shape)
        n_batch = len(shape) - support.event_dim
        u_address = rw.new_address(address + UNCONSTRAINED, f"unconstrain (site {address!r})")
        jac_address = rw.new_address(address + JACOBIAN, f"unconstrain (site {address!r})")
        u_kwargs = (
            ("support", constraints.real),
            ("batch_shape", u_shape[:n_batch]),
            ("event_shape", u_shape[n_batch:]),
        )
        u_meta = Meta(
            shape=u_shape,
            dtype=node.meta.dtype,
            plates=node.meta.plates,
            address=u_address,
            source=node.meta.source,
            attrs=(("role", "unconstrained"), ("constrains", address)),
        )
        u = rw.add("sample", "ImproperUniform", (), u_kwargs, meta=u_meta, hint=u_address)
        value_meta = Meta(shape=shape, dtype=node.meta.dtype, source=node.meta.source)
        if _is_exp(support):
            value = rw.add("call", "torch.exp", (u,), meta=value_meta, hint=f"{address}_value")
            log_det: Any = u
        else:
            spec: Any = (
                support
                if is_static(support) and _describable(support)
                else DistSpec(node.target, tuple((k, rw.arg(v)) for k, v in node.kwargs))
            )
            value = rw.add(
                "call", "ppl.biject_to", (u, spec), meta=value_meta, hint=f"{address}_value"
            )
            log_det = rw.add(
                "call",
                "ppl.log_abs_det_jacobian",
                (u, value, spec),
                meta=Meta(dtype=node.meta.dtype),
                hint=f"{address}_log_det",
            )
        rw.add(
            "factor",
            jac_address,
            (log_det,),
            hint=jac_address,
            meta=Meta(
                plates=node.meta.plates,
                address=jac_address,
                attrs=(("role", "log_abs_det_jacobian"), ("of", address)),
            ),
        )
        meta = node.meta.with_attr("role", "constrained").with_attr("unconstrained_from", u_address)
        rw.copy(node, kind="observe", args=(value,), meta=meta)
        return u_address


def latent_transforms(graph: Graph) -> dict[str, UnconstrainedSite]:
    """Sites rewritten by ``unconstrain``: original address -> its ``UnconstrainedSite``."""
    out = {}
    for node in graph.nodes:
        if node.kind == "observe" and node.meta.attr("role") == "constrained":
            u_address = node.meta.attr("unconstrained_from")
            value = graph.node(node.args[0].name) if isinstance(node.args[0], Ref) else None
            support = (
                value.args[1]
                if value is not None and value.target == "ppl.biject_to"
                else constraints.positive
            )
            out[node.address] = UnconstrainedSite(
                node.address, u_address, node.address + JACOBIAN, node.name, support
            )
    return out


def constrained_values(graph: Graph, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The value of every unconstrained site, given values of the graph's latents."""
    interp = LogDensity(graph, values)
    interp.run()
    return {address: interp.env[site.node] for address, site in latent_transforms(graph).items()}
