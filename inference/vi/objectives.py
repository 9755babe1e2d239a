"""Objectives as programs: ``@expectation`` turns a program over guide draws and densities
into a surrogate whose gradient is an unbiased estimate of the gradient of the program's
expected value.

Inside the program, ``guide.sample(K)`` draws ``K`` particles (each site by its own
estimator, :mod:`.estimators`), ``model.log_density(zs, *args)`` and
``guide.log_density(zs)`` give the log densities as :class:`Terms`: one elementwise term per
site. What the program returns decides the surrogate:

- :class:`Terms` (a linear combination of log densities, such as the ELBO): each term is a
  cost; a score-function site's ``∇ log q`` multiplies only the costs downstream of it (the
  dependencies are tracked through torch, :mod:`.provenance`), per element along the plates
  they share; enumerated sites are summed exactly, weighted by their probabilities.
- a scalar tensor (any function of the per-particle totals, which ``torch`` functions and
  arithmetic on :class:`Terms` give, e.g. ``torch.logsumexp(log_w, 0)``): the whole value is
  the cost of every score site it depends on (the DiCE surrogate ``f + (▣(Σ log q) - 1) f``
  with ``▣(x) = exp(x - x.detach())``).
- an :class:`Estimate`: a value with a per-particle baseline (VIMCO) or a different tensor to
  differentiate (RWS, CUBO).

The surrogate's value is the program's value; only its gradient differs.

    >>> import math, torch
    >>> from ppl import model, param, sample
    >>> from ppl.stdlib import Normal
    >>> @model
    ... def m():
    ...     sample("y", Normal(sample("z", Normal(0.0, 1.0)), 1.0), obs=torch.tensor(1.0))
    >>> @model
    ... def q():
    ...     sample("z", Normal(param("loc", torch.tensor(0.5)), 1.0))
    >>> @expectation
    ... def my_iwae(model, guide, *args, K=10):
    ...     zs = guide.sample(K)
    ...     log_w = model.log_density(zs, *args) - guide.log_density(zs)
    ...     return torch.logsumexp(log_w, 0) - math.log(K)
    >>> out = my_iwae.using(K=100)(m, q)
    >>> out.surrogate.backward()
    >>> out.value.shape, out.value.requires_grad
    (torch.Size([]), False)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ppl.errors import ModelError
from ppl.handlers import block, freeze_params, replay, trace
from ppl.model import _signature_key
from ppl.randomness import forked
from ppl.runtime import PlateFrame
from ppl.trace import Site, Trace, sum_except
from ppl.vectorize import PARTICLE_PLATE, batch_ndims, vectorized_trace

from .baselines import LearnedBaseline
from .estimators import DEFAULT_BASELINE_DECAY, DrawByEstimator, SiteEstimator
from .mvd import Redraw, rule_for
from .provenance import sources, untrack

__all__ = [
    "expectation", "Expectation", "Estimate", "Surrogate", "Draws", "Terms", "ELBO", "IWAE",
    "RWS", "VIMCO", "RenyiELBO", "CUBO", "MIWAE", "CIWAE", "PIWAE",
    "ForwardChi2",
]


# ------------------------------------------------------------------------- draws and terms


@dataclass
class Draws:
    """``num_particles`` draws of a guide, batched along ``particle_dim``: its trace and how
    each latent site was drawn."""

    trace: Trace
    num_particles: int
    particle_dim: int
    estimators: dict[str, SiteEstimator]
    model_pilot: Trace

    def site(self, name: str) -> Site:
        return self.trace[name]

    def detached(self) -> Draws:
        """The same draws with no gradient path back to the guide (no reparameterization, no
        score): for a term whose gradient should reach only the model's params."""
        fixed = Trace()
        for site in self.trace.sites.values():
            fixed.add(dataclasses.replace(site, value=_held(site.value),
                                          log_prob=_held(site.log_prob)))
        return Draws(fixed, self.num_particles, self.particle_dim, {}, self.model_pilot)


def _held(value: Any) -> Any:
    return untrack(value).detach() if isinstance(value, Tensor) else value


@dataclass(frozen=True)
class Term:
    """One site's elementwise log density, times ``coef``, in its plates."""

    site: str
    log_prob: Tensor
    plates: tuple[PlateFrame, ...]
    coef: float = 1.0


class Terms:
    """A linear combination of sites' log densities over the same particles.

    ``+``, ``-``, multiplying by a number and ``.mean()`` / ``.sum()`` over the particle axis
    keep the terms apart (so the surrogate can Rao-Blackwellize); any torch function, or
    arithmetic with a tensor, sees the per-particle totals ``(num_particles,)``.
    """

    def __init__(self, terms: tuple[Term, ...], draws: Draws):
        self.terms = terms
        self.draws = draws

    @classmethod
    def of(cls, tr: Trace, draws: Draws, latent_only: bool) -> Terms:
        sites = tr.latent_sites() if latent_only else [
            s for s in tr.sites.values() if s.log_prob is not None]
        return cls(tuple(Term(s.name, s.log_prob, s.plates) for s in sites), draws)

    def _scaled(self, factor: float) -> Terms:
        return Terms(tuple(Term(t.site, t.log_prob, t.plates, t.coef * factor)
                           for t in self.terms), self.draws)

    def _combine(self, other: Any, sign: float) -> Terms | Tensor:
        if isinstance(other, Terms):
            if other.draws is not self.draws:
                raise ModelError("Terms of different guide draws cannot be combined termwise; "
                                 "combine their totals (.total()) instead")
            return Terms(self.terms + other._scaled(sign).terms, self.draws)
        return self.total() + sign * other

    def __add__(self, other: Any) -> Terms | Tensor:
        return self._combine(other, 1.0)

    def __radd__(self, other: Any) -> Terms | Tensor:
        return self._combine(other, 1.0)

    def __sub__(self, other: Any) -> Terms | Tensor:
        return self._combine(other, -1.0)

    def __rsub__(self, other: Any) -> Terms | Tensor:
        return (-self)._combine(other, 1.0)

    def __neg__(self) -> Terms:
        return self._scaled(-1.0)

    def __mul__(self, other: Any) -> Terms | Tensor:
        if isinstance(other, (int, float)):
            return self._scaled(float(other))
        return self.total() * other

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Terms | Tensor:
        if isinstance(other, (int, float)):
            return self._scaled(1.0 / float(other))
        return self.total() / other

    def sum(self, dim: int = 0) -> Terms:
        """Sum over the particles (the only axis of the totals)."""
        self._check_particle_axis(dim)
        return self

    def mean(self, dim: int = 0) -> Terms:
        """Average over the particles."""
        self._check_particle_axis(dim)
        return self._scaled(1.0 / self.draws.num_particles)

    @staticmethod
    def _check_particle_axis(dim: int) -> None:
        if dim not in (0, -1):
            raise ModelError(f"Terms have one axis, the particles; got dim={dim}")

    def total(self) -> Tensor:
        """The per-particle sum of the terms, shape ``(num_particles,)``."""
        enumerated = _enumerated(self.draws)
        for t in self.terms:
            if sources(t.log_prob) & enumerated.keys():
                names = sorted(sources(t.log_prob) & enumerated.keys())
                raise ModelError(
                    f"sites {names} are enumerated exactly, which needs the objective to stay "
                    f"linear in the log densities (like ELBO), but the totals of site "
                    f"{t.site!r} were asked for (a nonlinear function such as logsumexp); give "
                    "those sites infer={'estimator': 'score'}"
                )
        total: Tensor | float = 0.0
        for t in self.terms:
            total = total + t.coef * sum_except(t.log_prob, self.draws.particle_dim)
        return torch.as_tensor(total).expand(self.draws.num_particles)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        convert = lambda v: v.total() if isinstance(v, Terms) else v  # noqa: E731
        args = tuple(convert(a) for a in args)
        kwargs = {k: convert(v) for k, v in (kwargs or {}).items()}
        return func(*args, **kwargs)

    def __repr__(self) -> str:
        return "Terms(" + ", ".join(f"{t.coef:+g}*{t.site}" for t in self.terms) + ")"


def _enumerated(draws: Draws) -> dict[str, Site]:
    return {n: draws.trace[n] for n, e in draws.estimators.items() if e.estimator == "enumerate"}


# ------------------------------------------------------------------------------ the views


class ModelView:
    """The model as an objective program sees it: ``log_density(zs, *args, **kwargs)``;
    ``frozen()``: the same with the model's params held fixed (no gradient reaches them)."""

    def __init__(self, model: Callable):
        self.model = model

    def frozen(self) -> ModelView:
        return ModelView(freeze_params()(self.model))

    def log_density(self, zs: Draws, *args, **kwargs) -> Terms:
        """Every random site's log density with the latents replayed from ``zs``."""
        run = vectorized_trace(replay(zs.trace)(self.model), args, kwargs, zs.num_particles,
                               particle_dim=zs.particle_dim, pilot=zs.model_pilot,
                               probe=self.model)
        missing = [s.name for s in run.trace.latent_sites() if s.name not in zs.trace]
        if missing:
            raise ModelError(f"the guide does not propose the model's latent sites {missing}")
        return Terms.of(run.trace, zs, latent_only=False)


class GuideView:
    """The guide as an objective program sees it, bound to the run's arguments."""

    def __init__(self, guide: Callable, args: tuple, kwargs: dict,
                 pilots: Callable[[], tuple[Trace, Trace]], record: list[Draws],
                 redraws: list[Redraw] | None = None):
        self.guide, self.args, self.kwargs = guide, args, kwargs
        self._pilots, self._record, self._redraws = pilots, record, redraws

    def sample(self, num_particles: int = 1, *, linear: bool = False,
               detach: bool = False) -> Draws:
        """``num_particles`` draws. ``linear=True`` promises the program stays linear in the
        log densities, which lets small finite sites be enumerated; ``detach=True`` draws
        without any gradient path (no reparameterization, no score)."""
        model_pilot, guide_pilot = self._pilots()
        particle_dim = -(max(batch_ndims(model_pilot), batch_ndims(guide_pilot)) + 1)
        drawer = site_drawer(self._record, self._redraws, particle_dim, linear, detach)
        with drawer:
            run = vectorized_trace(self.guide, self.args, self.kwargs, num_particles,
                                   particle_dim=particle_dim, pilot=guide_pilot)
        draws = Draws(run.trace, num_particles, particle_dim, drawer.estimators, model_pilot)
        self._record.append(draws)
        return draws

    def log_density(self, zs: Draws) -> Terms:
        """The guide's log density of its own draws, one term per latent site."""
        return Terms.of(zs.trace, zs, latent_only=True)


def site_drawer(record: list[Draws], redraws: list[Redraw] | None, particle_dim: int,
                linear: bool, detach: bool) -> DrawByEstimator | Redraw:
    """How a guide view's next ``sample`` draws (``record``: its draws so far): a fresh draw,
    or in a re-run (:mod:`.mvd`) the replay of the first run's draws."""
    if redraws is None:
        return DrawByEstimator(particle_dim - 1, allow_enumerate=linear, detach=detach)
    index = len(record)
    if index >= len(redraws):
        raise ModelError("the objective program drew from the guide more often when "
                         "re-run for a measure-valued derivative than the first time")
    return redraws[index]


# ------------------------------------------------------------------------------ surrogate


@dataclass
class Estimate:
    """What a program may return besides a tensor: ``value`` (reported), ``baseline`` (a
    detached per-particle baseline for the score-function sites, shape ``(K,)``) and
    ``gradient_of`` (the tensor to differentiate instead of ``value``, or several whose
    gradients add up, the surrogate keeping the first one's value: each is its own score
    sites' learning signal, so that terms aimed at different params, such as PIWAE's, keep
    their own)."""

    value: Tensor
    baseline: Tensor | None = None
    gradient_of: Tensor | tuple[Tensor, ...] | None = None


@dataclass
class Surrogate:
    """``value``: the program's value (detached); ``surrogate``: same value, and its
    gradient is the estimator's."""

    value: Tensor
    surrogate: Tensor


def _magic_box(x: Tensor) -> Tensor:
    return torch.exp(x - x.detach())


def _frames(plates: tuple[PlateFrame, ...]) -> set[PlateFrame]:
    return {f for f in plates if f.dim is not None and f.name != PARTICLE_PLATE}


def _enum_weight_sites(names: frozenset[str], enumerated: dict[str, Site]) -> list[Site]:
    """The enumerated sites a cost depends on, closed under their own dependencies."""
    todo, seen = list(names & enumerated.keys()), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(sources(enumerated[name].log_prob) & enumerated.keys())
    return [enumerated[n] for n in sorted(seen)]


def _expect_enumerated(term: Term, enumerated: dict[str, Site], batch_ndim: int) -> Tensor:
    """The term's cost with its enumerated dims summed out, weighted by their probabilities
    (gradients flow into those probabilities: the exact expectation)."""
    cost = untrack(term.log_prob)
    weighting = _enum_weight_sites(sources(term.log_prob), enumerated)
    if not weighting:
        return cost
    log_weight: Tensor | float = 0.0
    for site in weighting:
        outside = _frames(site.plates) - _frames(term.plates)
        if outside:
            raise ModelError(
                f"site {term.site!r} depends on the enumerated site {site.name!r} but lies "
                f"outside its plates {sorted(f.name for f in outside)}; its expectation would "
                "need every joint value; use infer={'estimator': 'score'} for "
                f"{site.name!r}"
            )
        log_weight = log_weight + untrack(site.log_prob)
    weighted = cost * torch.exp(log_weight)
    lead = weighted.dim() - batch_ndim
    return weighted.sum(tuple(range(lead))) if lead > 0 else weighted


def _to_site_shape(cost: Tensor, cost_plates: tuple, site: Site) -> Tensor:
    """Sum ``cost`` over every dim except the plates it shares with ``site`` (and the
    particles), shaped to broadcast against the site's elementwise log density."""
    shared = {f.dim for f in cost_plates if f.dim is not None and f in site.plates}
    ndim = cost.dim()
    dims = tuple(d for d in range(ndim) if d - ndim not in shared)
    out = cost.sum(dims, keepdim=True) if dims else cost
    extra = out.dim() - site.log_prob.dim()
    return out.reshape(out.shape[extra:]) if extra > 0 else out


def _costs(terms: Terms, record: list[Draws]) -> list[tuple[Term, Tensor]]:
    """Each term with its coefficient and its enumerated sites summed out exactly."""
    enumerated = {n: s for d in record for n, s in _enumerated(d).items()}
    batch_ndim = -terms.draws.particle_dim
    return [(t, _times(t.coef, _expect_enumerated(t, enumerated, batch_ndim)))
            for t in terms.terms]


def _times(coef: float, cost: Tensor) -> Tensor:
    """``coef * cost``, with no operation (nor autograd node) for a coefficient of one."""
    return cost if coef == 1.0 else coef * cost


def _downstream_cost(site: Site, costs: list[tuple[Term, Tensor]]) -> Tensor:
    """The (detached) sum of the costs that depend on ``site``, shaped to broadcast against
    it: its learning signal."""
    signal = torch.zeros(())
    for t, cost in costs:
        if site.name in sources(t.log_prob):
            signal = signal + _to_site_shape(cost.detach(), t.plates, site)
    return signal


def _check_elementwise(site: Site, costs: list[tuple[Term, Tensor]]) -> None:
    """An MVD site sets every element's alternative at once: each dim it varies along must be
    a plate shared by every cost downstream of it, so that element i's cost sees only z_i."""
    for t, _ in costs:
        if site.name not in sources(t.log_prob):
            continue
        shared = {f.dim for f in t.plates if f.dim is not None and f in site.plates}
        ndim = site.log_prob.dim()
        for dim, size in enumerate(site.log_prob.shape):
            if size > 1 and dim - ndim not in shared:
                raise ModelError(
                    f"MVD site {site.name!r} varies along dim {dim - ndim} (size {size}), "
                    f"which the cost of site {t.site!r} downstream of it does not share as a "
                    "plate; put both in one plate or use infer={'estimator': 'score'}"
                )


class Expectation:
    """An objective program (see the module docstring). Call it as
    ``objective(model, guide, *args, **kwargs) -> Surrogate``; ``using(**options)`` fixes the
    program's keyword-only options (``num_particles=8``). ``maximize``: a lower bound to
    raise (True) or an upper bound to lower. It keeps the score sites' running baselines
    (``state_dict`` / ``load_state_dict`` for checkpoints)."""

    def __init__(self, program: Callable, *, maximize: bool = True,
                 options: dict[str, Any] | None = None):
        self.program = program
        self.maximize = maximize
        self.options = dict(options or {})
        self.option_names = {
            p.name for p in inspect.signature(program).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        unknown = set(self.options) - self.option_names
        if unknown:
            raise TypeError(f"{program.__name__} has no options {sorted(unknown)} "
                            f"(its options: {sorted(self.option_names)})")
        self._baselines: dict[str, Tensor] = {}
        self._learned: dict[str, LearnedBaseline] = {}
        self._pilots: dict[Any, tuple[Trace, Trace]] = {}

    @property
    def name(self) -> str:
        return self.program.__name__

    def using(self, **options: Any) -> Expectation:
        return Expectation(self.program, maximize=self.maximize,
                           options={**self.options, **options})

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.name}({opts})"

    def state_dict(self) -> dict[str, Any]:
        return {"baselines": {n: b.clone() for n, b in self._baselines.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._baselines = {n: b.clone() for n, b in state["baselines"].items()}

    def create_params(self, model: Callable, guide: Callable, *args, **kwargs) -> None:
        """Create the params the objective owns (learned baselines) in the current store,
        so that an optimizer built next holds them: one evaluation on a fork of the random
        stream, the running baselines put back (no draw or state of the run changes)."""
        state = self.state_dict()
        with forked(), torch.no_grad():
            self(model, guide, *args, **kwargs)
        self.load_state_dict(state)

    def __call__(self, model: Callable, guide: Callable, *args, **kwargs) -> Surrogate:
        clash = set(kwargs) & self.option_names
        if clash:
            raise TypeError(f"{self.name}: model keyword arguments {sorted(clash)} clash with "
                            "the objective's options")
        pilots = lambda: self.pilot_traces(model, guide, args, kwargs)  # noqa: E731
        return self.run_views(ModelView(model), lambda record, redraws: GuideView(
            guide, args, kwargs, pilots, record, redraws), args, kwargs)

    def run_views(self, model: Any,
                  guide_view: Callable[[list[Draws], list[Redraw] | None], Any],
                  args: tuple, kwargs: dict) -> Surrogate:
        """The program run on ``model`` (a ``ModelView``, or a view with its interface such
        as the compiled step's) and the guide view ``guide_view(record, redraws)`` makes (a
        ``GuideView`` or the like: its draws go to ``record``; ``redraws`` replay them in
        the re-runs of measure-valued derivatives, None otherwise)."""
        def rerun(redraws: list[Redraw]) -> tuple[Any, list[Draws]]:
            again: list[Draws] = []
            with _particles_in_flight(), forked(), torch.no_grad():
                out = self.program(model, guide_view(again, redraws), *args, **kwargs,
                                   **self.options)
            return out, again

        record: list[Draws] = []
        with _particles_in_flight():
            out = self.program(model, guide_view(record, None), *args, **kwargs,
                               **self.options)
        if isinstance(out, Terms):
            return self._linear(out, record, rerun)
        estimate = out if isinstance(out, Estimate) else Estimate(out)
        return self._nonlinear(estimate, record)

    def pilot_traces(self, model: Callable, guide: Callable, args: tuple,
                     kwargs: dict) -> tuple[Trace, Trace]:
        """One ordinary run of model and guide (for shapes and dims), on a copy of the
        random stream so that it never shifts the draws of the run; cached per argument
        signature."""
        key = (id(model), id(guide), _signature_key(args, kwargs))
        if key[2] is None or key not in self._pilots:
            with forked(), torch.no_grad(), block():
                pair = (trace().get_trace(model, *args, **kwargs),
                        trace().get_trace(guide, *args, **kwargs))
            if key[2] is None:
                return pair
            self._pilots[key] = pair
        return self._pilots[key]

    def _score_sites(self, record: list[Draws]) -> list[tuple[Draws, Site, SiteEstimator]]:
        return [(d, d.trace[n], e) for d in record for n, e in d.estimators.items()
                if e.estimator == "score"]

    def _baseline(self, name: str, decay: float | None, signal: Tensor) -> Tensor | float:
        """The running average of the site's learning signal before this step (so that it is
        independent of this step's draws), then updated with this step's."""
        if decay is None:
            return 0.0
        if not isinstance(decay, float):
            raise ModelError(f"site {name!r}: a learned baseline needs per-element costs, "
                             f"which objective {self.name} (not linear in the log densities) "
                             "does not give; use a running average (a decay) there")
        previous = self._baselines.get(name)
        now = signal.detach().mean()
        self._baselines[name] = now if previous is None else decay * previous + (1 - decay) * now
        return 0.0 if previous is None else previous

    def _linear(self, terms: Terms, record: list[Draws], rerun: Callable) -> Surrogate:
        enumerated = {n: s for d in record for n, s in _enumerated(d).items()}
        costs = _costs(terms, record)
        sums = [c.sum() for _, c in costs]
        value = functools.reduce(operator.add, sums) if sums else torch.zeros(())
        surrogate = value
        for _, site, est in self._score_sites(record):
            upstream_enum = _enum_weight_sites(sources(site.log_prob) - {site.name}, enumerated)
            if upstream_enum:
                raise ModelError(
                    f"score-function site {site.name!r} depends on the enumerated sites "
                    f"{[s.name for s in upstream_enum]}; enumerate {site.name!r} too or use "
                    "the score function for them"
                )
            signal = _downstream_cost(site, costs)
            if isinstance(est.baseline, float) or est.baseline is None:
                baseline = self._baseline(site.name, est.baseline, signal)
            else:
                baseline, fit = self._learned_baseline(site, est.baseline, signal)
                surrogate = surrogate + fit
            log_q = untrack(site.log_prob)
            surrogate = surrogate + ((_magic_box(log_q) - 1) * (signal - baseline)).sum()
        carriers = [self._mvd_carrier(i, d.trace[n], record, costs, rerun)
                    for i, d in enumerate(record) for n, e in d.estimators.items()
                    if e.estimator == "mvd"]
        if carriers:
            carrier = sum(carriers, torch.zeros(()))
            surrogate = surrogate + (carrier - carrier.detach())
        return Surrogate(value.detach(), surrogate)

    def _learned_baseline(self, site: Site, spec: Any, signal: Tensor) -> tuple[Tensor, Tensor]:
        """The site's baseline, the running average plus the network's per-element residual
        (detached), and a zero-valued term whose gradient trains the network towards the
        signal's residual (squared error), in the objective's direction."""
        network = self._learned.setdefault(site.name, LearnedBaseline(site.name, spec))
        offset = self._baseline(site.name, DEFAULT_BASELINE_DECAY, signal)
        predicted = network(site.fn, site.log_prob.shape)
        error = ((signal.detach() - offset - predicted) ** 2).mean()
        fit = (error - error.detach()) * (-1.0 if self.maximize else 1.0)
        return (offset + predicted).detach(), fit

    def _mvd_carrier(self, index: int, site: Site, record: list[Draws], costs: list,
                     rerun: Callable) -> Tensor:
        """A tensor whose gradient is the site's measure-valued derivative: the program
        re-run once per alternative value (see :mod:`.mvd`)."""
        _check_elementwise(site, costs)
        rule = rule_for(site.fn, site.name)
        value = untrack(site.value).detach()
        shape = site.log_prob.shape
        at_alternatives = []
        for alternative in rule.alternatives(site.fn, value):
            redraws = [Redraw(d.trace, d.estimators, site.name if i == index else None,
                              alternative) for i, d in enumerate(record)]
            terms, again = rerun(redraws)
            if not isinstance(terms, Terms) or len(again) != len(record):
                raise ModelError(f"objective {self.name}: re-run for the measure-valued "
                                 f"derivative of {site.name!r}, the program did not draw and "
                                 "return the same Terms as before")
            at_alternatives.append(_downstream_cost(site, _costs(terms, again)).expand(shape))
        own = _downstream_cost(site, costs).expand(shape)
        return rule.gradient_carrier(site.fn, value, own, at_alternatives)

    def _nonlinear(self, estimate: Estimate, record: list[Draws]) -> Surrogate:
        targets = estimate.gradient_of if estimate.gradient_of is not None else estimate.value
        targets = targets if isinstance(targets, tuple) else (targets,)
        for name, value in (("value", estimate.value),
                            *(("gradient_of", target) for target in targets)):
            if value.numel() != 1:
                raise ModelError(f"objective {self.name}: the program's {name} has shape "
                                 f"{tuple(value.shape)}; return a scalar (e.g. .mean())")
        first, *more = (self._dice(target, estimate.baseline, record, index)
                        for index, target in enumerate(targets))
        surrogate = first + sum((s - s.detach() for s in more), torch.zeros(()))
        return Surrogate(untrack(estimate.value).detach().reshape(()), surrogate)

    def _dice(self, target: Tensor, baseline: Tensor | None, record: list[Draws],
              index: int) -> Tensor:
        """``target`` plus, for each score site it depends on, ``(▣(log q) - 1)`` times its
        learning signal (the ``index``-th target keeps running baselines of its own)."""
        depends = sources(target)
        mvd = [n for d in record for n, e in d.estimators.items()
               if e.estimator == "mvd" and n in depends]
        if mvd:
            raise ModelError(f"objective {self.name} is not linear in the log densities, so "
                             f"sites {mvd} cannot use measure-valued derivatives")
        enumerated = [n for d in record for n in _enumerated(d) if n in depends]
        if enumerated:
            raise ModelError(f"objective {self.name} is not linear in the log densities, so "
                             f"sites {enumerated} cannot be enumerated; use the score function")
        f = untrack(target).reshape(())
        surrogate = f
        for d, site, est in self._score_sites(record):
            if site.name not in depends:
                continue
            log_q = sum_except(untrack(site.log_prob), d.particle_dim).expand(d.num_particles)
            if baseline is not None:
                signal = f.detach() - baseline.detach()
            else:
                key = site.name if index == 0 else f"{site.name}/{index}"
                signal = f.detach() - self._baseline(key, est.baseline, f)
            surrogate = surrogate + ((_magic_box(log_q) - 1) * signal).sum()
        return surrogate


@contextmanager
def _particles_in_flight() -> Iterator[None]:
    """Marks an objective evaluation in this context (nested evaluations are refused: their
    draws would mix with the outer program's)."""
    if _EVALUATING.get():
        raise ModelError("an objective program may not evaluate another objective inside it")
    token = _EVALUATING.set(True)
    try:
        yield
    finally:
        _EVALUATING.reset(token)


_EVALUATING: ContextVar[bool] = ContextVar("ppl_vi_evaluating", default=False)


def expectation(program: Callable | None = None, *, maximize: bool = True):
    """Decorator: the objective program ``program(model, guide, *args, **kwargs)`` as an
    :class:`Expectation`. ``@expectation(maximize=False)`` for an upper bound."""
    if program is None:
        return lambda p: Expectation(p, maximize=maximize)
    return Expectation(program, maximize=maximize)


# ---------------------------------------------------------------------- library objectives


def _log_weights(model: ModelView, guide: GuideView, args, kwargs, num_particles: int,
                 **draw) -> tuple[Draws, Tensor, Tensor]:
    zs = guide.sample(num_particles, **draw)
    return zs, model.log_density(zs, *args, **kwargs).total(), guide.log_density(zs).total()


@expectation
def elbo(model, guide, *args, num_particles: int = 1, **kwargs):
    """E_q[log p(x, z) - log q(z)], averaged over ``num_particles``."""
    zs = guide.sample(num_particles, linear=True)
    return (model.log_density(zs, *args, **kwargs) - guide.log_density(zs)).mean()


@expectation
def iwae(model, guide, *args, num_particles: int = 10, **kwargs):
    """log (1/K) Σ_k w_k, w = p(x, z) / q(z): tighter than the ELBO as K grows."""
    _, log_p, log_q = _log_weights(model, guide, args, kwargs, num_particles)
    return torch.logsumexp(log_p - log_q, 0) - math.log(num_particles)


@expectation
def miwae(model, guide, *args, num_particles: int = 10, num_averaged: int = 1, **kwargs):
    """The mean of ``num_averaged`` independent IWAE bounds of ``num_particles`` each."""
    _, log_p, log_q = _log_weights(model, guide, args, kwargs, num_particles * num_averaged)
    log_w = (log_p - log_q).reshape(num_averaged, num_particles)
    return (torch.logsumexp(log_w, 1) - math.log(num_particles)).mean()


@expectation
def ciwae(model, guide, *args, num_particles: int = 10, beta: float = 0.5, **kwargs):
    """β ELBO + (1 - β) IWAE over the same particles."""
    _, log_p, log_q = _log_weights(model, guide, args, kwargs, num_particles)
    log_w = log_p - log_q
    bound = torch.logsumexp(log_w, 0) - math.log(num_particles)
    return beta * log_w.mean() + (1 - beta) * bound


@expectation
def renyi(model, guide, *args, num_particles: int = 10, alpha: float = 0.5, **kwargs):
    """The Rényi bound 1/(1-α) log (1/K) Σ w_k^(1-α) (α = 0: IWAE; α → 1: the ELBO)."""
    if alpha == 1.0:
        raise ValueError("renyi: alpha=1 is the ELBO; use ELBO()")
    _, log_p, log_q = _log_weights(model, guide, args, kwargs, num_particles)
    scaled = (1 - alpha) * (log_p - log_q)
    return (torch.logsumexp(scaled, 0) - math.log(num_particles)) / (1 - alpha)


@expectation
def vimco(model, guide, *args, num_particles: int = 10, **kwargs):
    """IWAE with VIMCO's leave-one-out baselines: particle k's score is weighted by the
    bound minus the bound with log w_k replaced by the mean of the others."""
    if num_particles < 2:
        raise ValueError("vimco needs num_particles >= 2")
    _, log_p, log_q = _log_weights(model, guide, args, kwargs, num_particles)
    log_w = log_p - log_q
    k = num_particles
    bound = torch.logsumexp(log_w, 0) - math.log(k)
    held = log_w.detach()
    leave_one_out = (held.sum() - held) / (k - 1)
    replaced = held.expand(k, k).clone()
    replaced.diagonal().copy_(leave_one_out)
    baseline = torch.logsumexp(replaced, 1) - math.log(k)
    return Estimate(bound, baseline=baseline)


@expectation
def rws(model, guide, *args, num_particles: int = 10, **kwargs):
    """Reweighted wake-sleep: the model follows the IWAE gradient (wake-θ), the guide
    Σ_k w̄_k ∇ log q(z_k) with self-normalized weights (wake-φ); draws carry no gradient.
    The value reported is the IWAE bound."""
    _, log_p, log_q = _log_weights(model, guide, args, kwargs, num_particles, detach=True)
    log_w = log_p - log_q.detach()
    bound = torch.logsumexp(log_w, 0) - math.log(num_particles)
    wake_phi = (torch.softmax(log_w.detach(), 0) * log_q).sum()
    return Estimate(bound, gradient_of=bound + wake_phi - wake_phi.detach())


@expectation
def piwae(model, guide, *args, num_particles: int = 10, num_averaged: int = 1, **kwargs):
    """Partially importance-weighted (Rainforth et al. 2018): on the same M·K draws, the
    model's params follow the IWAE bound over all of them and the guide's the MIWAE bound
    (M groups of K), whose guide gradient does not lose its signal-to-noise as K grows.
    The value reported is the IWAE bound."""
    total = num_particles * num_averaged
    zs = guide.sample(total)
    fixed = zs.detached()
    log_w_model = (model.log_density(fixed, *args, **kwargs) - guide.log_density(fixed)).total()
    iwae_bound = torch.logsumexp(log_w_model, 0) - math.log(total)
    log_w_guide = (model.frozen().log_density(zs, *args, **kwargs)
                   - guide.log_density(zs)).total().reshape(num_averaged, num_particles)
    miwae_bound = (torch.logsumexp(log_w_guide, 1) - math.log(num_particles)).mean()
    return Estimate(iwae_bound, gradient_of=(iwae_bound, miwae_bound))


@expectation(maximize=False)
def cubo(model, guide, *args, num_particles: int = 10, n: float = 2.0, **kwargs):
    """The χ upper bound (1/n) log (1/K) Σ w_k^n (n = 2: χ²). It is lowered by the
    gradient of (1/K) Σ w_k^n, unbiased for ∇ E_q[w^n] (scaled by a detached constant)."""
    _, log_p, log_q = _log_weights(model, guide, args, kwargs, num_particles)
    scaled = n * (log_p - log_q)
    bound = (torch.logsumexp(scaled, 0) - math.log(num_particles)) / n
    shift = scaled.detach().max()
    return Estimate(bound, gradient_of=torch.exp(scaled - shift).mean() / n)


@expectation(maximize=False)
def forward_chi2(model, guide, *args, num_particles: int = 100, **kwargs):
    """Variational importance sampling: the guide is fitted as an importance proposal by
    lowering D_χ²(p‖q) = E_q[w²] / p(x)² - 1 (the relative variance of the weights
    w = p(x, z) / q(z)), which makes it cover the posterior rather than hide in a mode.
    On draws without a gradient path, ∇ E_q[w²] = -E_q[w² ∇ log q]; the self-normalized
    -½ Σ_k w̄_k ∇ log q(z_k), w̄_k = w_k² / Σ_j w_j², estimates ∇ ½ log E_q[w²], the
    gradient of the CUBO₂ bound ½ log (1/K) Σ w_k² reported as the value. The model's
    params follow the IWAE gradient (as in RWS)."""
    _, log_p, log_q = _log_weights(model, guide, args, kwargs, num_particles, detach=True)
    log_w = log_p - log_q.detach()
    bound = (torch.logsumexp(2 * log_w, 0) - math.log(num_particles)) / 2
    guide_term = -0.5 * (torch.softmax(2 * log_w.detach(), 0) * log_q).sum()
    model_term = torch.logsumexp(log_w, 0)
    return Estimate(bound, gradient_of=bound.detach() + (guide_term - guide_term.detach())
                    - (model_term - model_term.detach()))


def ELBO(num_particles: int = 1) -> Expectation:  # noqa: N802 (objectives read as names)
    """The evidence lower bound, Rao-Blackwellized, enumerating small discrete sites."""
    return elbo.using(num_particles=num_particles)


def IWAE(num_particles: int = 10) -> Expectation:  # noqa: N802
    return iwae.using(num_particles=num_particles)


def MIWAE(num_particles: int = 10, num_averaged: int = 1) -> Expectation:  # noqa: N802
    return miwae.using(num_particles=num_particles, num_averaged=num_averaged)


def CIWAE(num_particles: int = 10, beta: float = 0.5) -> Expectation:  # noqa: N802
    return ciwae.using(num_particles=num_particles, beta=beta)


def RenyiELBO(num_particles: int = 10, alpha: float = 0.5) -> Expectation:  # noqa: N802
    return renyi.using(num_particles=num_particles, alpha=alpha)


def VIMCO(num_particles: int = 10) -> Expectation:  # noqa: N802
    return vimco.using(num_particles=num_particles)


def RWS(num_particles: int = 10) -> Expectation:  # noqa: N802
    return rws.using(num_particles=num_particles)


def CUBO(num_particles: int = 10, n: float = 2.0) -> Expectation:  # noqa: N802
    return cubo.using(num_particles=num_particles, n=n)


def ForwardChi2(num_particles: int = 100) -> Expectation:  # noqa: N802
    """D_χ²(p‖q) lowered with self-normalized squared weights (variational importance
    sampling); the value is the CUBO₂ bound."""
    return forward_chi2.using(num_particles=num_particles)


def PIWAE(num_particles: int = 10, num_averaged: int = 1) -> Expectation:  # noqa: N802
    """IWAE(M·K) for the model's params, MIWAE(K, M) for the guide's, on the same draws."""
    return piwae.using(num_particles=num_particles, num_averaged=num_averaged)
