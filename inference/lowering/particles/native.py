"""The particle engine's steps as C: one function per step over all N particles.

:func:`emit_steps` writes, for each step of a :class:`~.engine.ParticleEngine`, the tape its
torch code was generated from as a C loop over the particles: row ``i`` reads particle
``i``'s live latents from their slots (buffers of ``N * site size`` doubles that the caller
lays out), draws the step's new latents by the family's C sampling rule (:data:`C_SAMPLERS`,
from the ``ppl_rng`` stream of ``rng.h``; the step's standard normals are drawn first, for
all rows at once, into ``z``, ``StepsSource.normals`` per row), writes them to their slots
and its log weight to ``lw[i]``; everything else is the native backend's C rules
(:mod:`ppl.inference.lowering.native.rules`), the same log densities the potential uses.
Data and params are run-time inputs read through the pointer table ``ppl_X``
(:attr:`StepsSource.inputs` says what goes where), tensor constants through one table per
step (:attr:`StepsSource.constants`), so new param values never recompile. Steps whose C
differs only in constants and slots share one function (``slot`` holds the step's own
slots; a time series compiles two functions, not one per step). A step the C cannot
express raises ``Unsupported`` naming the site and family (or the operation)::

    static void ppl_step_K(long n, ppl_rng *rng, double *const *slot, double *lw, double *z,
                           const unsigned char *pin, const void *const *ppl_K,
                           const void *const *ppl_X);
    static void ppl_run_step(int k, long n, ppl_rng *rng, double *const *slot, double *lw,
                             double *z, const unsigned char *pin,
                             const void *const *const *constants, const void *const *inputs);

A row whose ``pin`` byte is set (``pin`` may be NULL) keeps the latents its slots hold
instead of its draws: the reference particle of a conditional filter. With ``scorers``,
``ppl_run_score`` (the same signature) writes each row's ``log p(latents, observations |
live)`` at the latents its slots hold, for ancestor sampling.

    >>> import torch
    >>> from ppl.inference.lowering.particles import ParticleEngine
    >>> from ppl.inference.testing import LinearGaussianSSM
    >>> ssm = LinearGaussianSSM()
    >>> engine = ParticleEngine.from_graph(ssm.model().graph(ssm.simulate(3)))
    >>> source = emit_steps(engine, {"x_0": 0, "x_1": 1, "x_2": 0})
    >>> "ppl_rng_normals(rng, z, n * 1)" in source.text, source.normals, source.inputs
    (True, 1, (('model', 'ys'),))
    >>> source.text.count("static void ppl_step_")  # the first step, and the others'
    2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from string import Formatter

import torch

from ppl.inference.lowering.native.emitter import Emitter
from ppl.inference.lowering.native.rules import emit, supported
from ppl.inference.lowering.tape.tape import Instr, Unsupported, Value, Var, is_var, shape_of
from ppl.stdlib import samplers

from .engine import ParticleEngine, StepFunction
from .lowering import DistributionSource, Draw

__all__ = ["C_SAMPLERS", "StepsSource", "emit_steps"]

#: C draws of the families with a torch sampling rule (``Family.sample``) that C can follow:
#: the standard variate ``{z}`` each element takes (a normal from the step's block, drawn
#: for all rows at once; a uniform; or the stream ``rng`` itself, for the rejection
#: samplers of ``rng.h``) and a template over it and the site's parameters, or several
#: templates, the first whose parameters the site has (Bernoulli's ``probs`` or
#: ``logits``); a family not here keeps the engine on torch, by name.
C_SAMPLERS: dict[Callable, tuple[str, str | tuple[str, ...]]] = {
    samplers.normal: ("normal", "{loc} + {scale} * {z}"),
    samplers.log_normal: ("normal", "exp({loc} + {scale} * {z})"),
    samplers.half_normal: ("normal", "{scale} * fabs({z})"),
    samplers.uniform: ("uniform", "{low} + ({high} - {low}) * {z}"),
    samplers.exponential: ("uniform", "ppl_std_exponential({z}) / {rate}"),
    samplers.gumbel: ("uniform", "{loc} + {scale} * ppl_std_gumbel({z})"),
    samplers.laplace: ("uniform", "{loc} + {scale} * ppl_std_laplace({z})"),
    samplers.cauchy: ("uniform", "{loc} + {scale} * ppl_std_cauchy({z})"),
    samplers.half_cauchy: ("uniform", "{scale} * fabs(ppl_std_cauchy({z}))"),
    samplers.gamma: ("rng", "fmax(ppl_rng_gamma({z}, {concentration}) / {rate}, 0x1p-1022)"),
    samplers.student_t: ("rng", "{loc} + {scale} * ppl_rng_student_t({z}, {df})"),
    samplers.beta: ("rng", "ppl_rng_beta({z}, {concentration1}, {concentration0})"),
    samplers.poisson: ("rng", "ppl_rng_poisson({z}, {rate})"),
    samplers.bernoulli: ("uniform", ("({z} < {probs} ? 1.0 : 0.0)",
                                     "({z} < ppl_sigmoid({logits}) ? 1.0 : 0.0)")),
    samplers.categorical: ("categorical", ("{probs}", "{logits}")),  # see _categorical
    samplers.chi2: ("rng", "fmax(2.0 * ppl_rng_gamma({z}, 0.5 * {df}), 0x1p-1022)"),
    samplers.inverse_gamma: ("rng", "{rate} / fmax(ppl_rng_gamma({z}, {concentration}), "
                                    "0x1p-1022)"),
    samplers.weibull: ("uniform", "{scale} * pow(ppl_std_exponential({z}), 1.0 / "
                                  "{concentration})"),
    samplers.pareto: ("uniform", "{scale} * exp(ppl_std_exponential({z}) / {alpha})"),
    samplers.geometric: ("uniform", ("floor(log(fmax({z}, 0x1p-1022)) / log1p(-{probs}))",
                                     "floor(log(fmax({z}, 0x1p-1022)) / "
                                     "ppl_logsigmoid(-{logits}))")),
    samplers.binomial: ("rng", ("ppl_rng_binomial({z}, {total_count}, {probs})",
                                "ppl_rng_binomial({z}, {total_count}, ppl_sigmoid({logits}))")),
    samplers.delta: ("rng", "{v}"),
    samplers.negative_binomial: ("rng", (
        "ppl_rng_poisson({z}, ppl_rng_gamma({z}, {total_count}) * {probs} / (1.0 - {probs}))",
        "ppl_rng_poisson({z}, ppl_rng_gamma({z}, {total_count}) * ppl_exp({logits}))")),
}

#: Families whose draws are int64 (held as doubles in the C code and the slots: exact).
_INTEGER_DRAWS = (samplers.categorical,)

#: Wrappers whose draws are their base's (``Independent``, ``Masked``).
_DRAWS_BASE = (samplers.independent, samplers.masked)

_INPUT_TYPES = {torch.float64: "double", torch.int64: "int64_t"}


def _template(dist: DistributionSource) -> tuple[str, str] | None:
    """The variate and the C template of ``dist``'s draws (its family's first template
    whose parameters it has), or None when C has no rule for them."""
    rule = C_SAMPLERS.get(dist.family.sample)
    if rule is None:
        return None
    variate, templates = rule
    given = {name for name, _ in dist.params}
    for template in (templates,) if isinstance(templates, str) else templates:
        if {field for _, field, _, _ in Formatter().parse(template) if field} - {"z"} <= given:
            return variate, template
    return None


def _sampled(dist: DistributionSource) -> DistributionSource:
    """The distribution whose rule makes ``dist``'s draws (a wrapper's base, or itself)."""
    while dist.family.sample in _DRAWS_BASE:
        base = dict(dist.params)[dist.family.wraps]
        if not isinstance(base, DistributionSource):
            break
        dist = base
    return dist


@dataclass
class StepsSource:
    """The C of every step, each step's table of tensor constants, and the run-time inputs
    that ``ppl_X`` points at, in order (keyed as ``StepFunction.inputs``: ``("model",
    input name)``, ``("proposal", input name)`` or ``("param", address)``)."""

    text: str
    constants: list[list[torch.Tensor]]
    inputs: tuple[tuple[str, str], ...]
    normals: int  # the most standard normals a step draws per row
    unpinned: tuple[str, ...] = ()  # drawn latents a pinned row cannot keep, by step


def emit_steps(engine: ParticleEngine, slot_of: Mapping[str, int],
               scorers: Mapping[int, StepFunction] | None = None, first: int = 0
               ) -> StepsSource:
    """C for ``engine``'s steps from ``first`` on (see the module docstring; earlier steps
    do nothing in C: their latents are the caller's to place); ``slot_of`` gives the slot
    of each latent the steps draw or read. Steps whose C is the same but for their
    constants and slots (a time series' steps, which differ in their observations) share
    one function. ``scorers`` (step ``k``'s :meth:`~.engine.ParticleEngine.scorer`) adds
    ``ppl_run_score``: ``log p(latents, observations of step k | live)`` with the step's
    latents read from their slots. Raises ``Unsupported`` naming the first step, site and
    family (or operation) the C cannot express."""
    inputs: dict[tuple[str, str], int] = {}
    functions: dict[str, int] = {}  # a function's body -> its index
    constants, dispatch, normals, unpinned = [], {"step": [], "score": []}, 0, []
    jobs = [("step", k, step) for k, step in enumerate(engine.steps) if k >= first]
    jobs += [("score", k, scorer) for k, scorer in sorted((scorers or {}).items())]
    for kind, k, step in jobs:
        body, table, count, slots, free = _emit_step(k, step, inputs)
        index = functions.setdefault(body, len(functions))
        unpinned += [f"step {k}: site {a!r}" for a in free]
        normals = max(normals, count)
        own = ", ".join(f"slot[{slot_of[a]}]" for a in slots) or "NULL"
        dispatch[kind].append(f"    case {k}: {{ double *own[] = {{{own}}}; ppl_step_{index}("
                              f"n, rng, own, lw, z, pin, constants[{len(constants)}], "
                              "inputs); break; }")
        constants.append(table)
    texts = [f"static void ppl_step_{index}(long n, ppl_rng *restrict rng, "
             "double *const *restrict slot,\n        double *restrict lw, double *restrict z, "
             "const unsigned char *restrict pin, const void *const *ppl_K,\n        "
             f"const void *const *ppl_X)\n{{\n{body}}}\n"
             for body, index in functions.items()]
    texts += [f"static void ppl_run_{kind}(int k, long n, ppl_rng *rng, double *const *slot, "
              "double *lw, double *z,\n        const unsigned char *pin, "
              "const void *const *const *constants, const void *const *inputs)\n{\n"
              "    switch (k) {\n" + "\n".join(cases) + "\n    }\n}\n"
              for kind, cases in dispatch.items()]
    return StepsSource("\n".join(texts), constants, tuple(inputs), normals, tuple(unpinned))


def _emit_step(k: int, step: StepFunction, inputs: dict[tuple[str, str], int]
               ) -> tuple[str, list[torch.Tensor], int, tuple[str, ...], tuple[str, ...]]:
    """The body of step ``k``'s C function, its constants, the standard normals a row draws,
    the latents whose slots it takes (``slot[j]`` is the ``j``-th's) and those it draws
    that a pinned row cannot keep (drawn by no draw of their own address)."""
    if step.fallbacks:
        raise Unsupported(f"step {k}: {'; '.join(step.fallbacks)}")
    if step.tape is None:
        raise Unsupported(f"step {k} was generated without its tape")
    tape, reads = step.tape, len(step.reads)
    live_vars, input_vars = tape.inputs[:reads], tape.inputs[reads:]
    *drawn, total = step.outputs
    instrs = tape.live(step.outputs)
    for instr in instrs:
        _check(k, instr)
    slots = tuple(dict.fromkeys([*step.reads, *step.drawn]))
    own = {a: j for j, a in enumerate(slots)}
    em = _StepEmitter()
    for (role, key), var in zip(step.inputs, input_vars, strict=True):
        index = inputs.setdefault((role, key), len(inputs))
        ctype = _INPUT_TYPES.get(var.dtype)
        if ctype is None:
            raise Unsupported(f"step {k}: {role} input {key!r} is {var.dtype} (C takes "
                              "float64, int64)")
        pointer = f"(const {ctype} *)ppl_X[{index}]"
        em.declared[var.name] = (f"const {ctype} {var.name} = *{pointer};" if var.ndim == 0
                                 else f"const {ctype} *{var.name} = {pointer};")
    em.emit("for (long row = 0; row < n; row++) {")
    for address, var, dtype in zip(step.reads, live_vars, step.read_dtypes, strict=True):
        if dtype not in (torch.float64, torch.int64):
            raise Unsupported(f"step {k} reads the {dtype} latent {address!r} (the C filter "
                              "holds float64 and int64 latents)")
        _read(em, var, own[address])
    normals = [0]  # the row's normals taken so far
    pinned = set()
    for instr in instrs:  # in tape order: a row's values are mostly scalars, nothing to fuse
        if isinstance(instr.prim, Draw):
            _draw(em, instr, normals, own.get(instr.prim.address))
            pinned.add(instr.prim.address)
        else:
            emit(em, instr)
    for address, value in zip(step.drawn, drawn, strict=True):
        _write(em, value, own[address])
    em.emit(f"lw[row] = {em.at(total, '0')};")
    em.emit("}")
    lines = ["    " + d for d in em.declared.values()]
    if normals[0]:
        lines.append(f"    ppl_rng_normals(rng, z, n * {normals[0]});")
    return ("\n".join([*lines, *em.pointer_declarations(), *em.lines, ""]), list(em.constants),
            normals[0], slots, tuple(a for a in step.drawn if a not in pinned))


class _StepEmitter(Emitter):
    """An emitter that reads single-value tensor constants (an observation the tape folded
    in) from the step's constant table instead of writing them as literals, so that steps
    that differ only in their data have the same C."""

    def at(self, value: Value, index: str) -> str:
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return f"{self.constant(value)}[0]"
        return super().at(value, index)


def _check(k: int, instr: Instr) -> None:
    """``Unsupported`` naming the site and family of a draw C cannot make, or the operation
    without a C rule."""
    prim = instr.prim
    if isinstance(prim, Draw):
        dist = _sampled(prim.dist)
        family = dist.family
        dtype = torch.int64 if family.sample in _INTEGER_DRAWS else torch.float64
        if prim.dtype != dtype or _template(dist) is None:
            raise Unsupported(f"step {k}: {family.name} has no C sampling rule (site "
                              f"{prim.address!r})")
        for name, value in dist.params:
            if isinstance(value, DistributionSource) or not (
                    is_var(value) or isinstance(value, (int, float, torch.Tensor))):
                raise Unsupported(f"step {k}: the {family.name} parameter {name!r} of site "
                                  f"{prim.address!r} is not a number or a tensor")
    elif not supported(instr):
        raise Unsupported(f"step {k}: no C rule for {prim.name} ({instr.out.dtype})")


def _read(em: Emitter, var: Var, slot: int) -> None:
    """Bind a live latent to row ``row`` of its slot."""
    if var.ndim == 0:
        em.declared[var.name] = f"double {var.name};"
        em.emit(f"{var.name} = slot[{slot}][row];", 1)
    else:
        size = math.prod(var.shape)
        em.declared[var.name] = f"const double *{var.name};"
        em.emit(f"{var.name} = slot[{slot}] + row * {size};", 1)


def _write(em: Emitter, value: Var, slot: int) -> None:
    """Store a drawn latent in row ``row`` of its slot."""
    if value.ndim == 0:
        em.emit(f"slot[{slot}][row] = {value.name};", 1)
    else:
        size = math.prod(value.shape)
        em.emit(f"for (long j = 0; j < {size}; j++) slot[{slot}][row * {size} + j] = "
                f"{em.at(value, 'j')};", 1)


def _draw(em: Emitter, instr: Instr, normals: list[int], slot: int | None) -> None:
    """The site's draws: the family's C template at each element, its parameters broadcast
    against the site's shape; normal variates come from the row's next ones in ``z``
    (``normals[0]`` counts those taken: the ``j``-th of row ``row`` is ``z[j * n + row]``).
    A row that ``pin`` marks keeps the value its ``slot`` holds (a conditional filter's
    reference particle): it is drawn, then replaced."""
    out, dist = instr.out, _sampled(instr.prim.dist)
    variate, template = _template(dist)
    params = dict(dist.params)
    em.declare(out)
    first = normals[0]
    if variate == "normal":
        normals[0] += math.prod(out.shape)

    def body(indices: list[str], depth: int) -> None:
        element = em.offset(out.shape, indices, out.ndim)
        if variate == "categorical":
            _categorical(em, em.at(out, element), template[1:-1], params, indices, out.ndim,
                         depth + 1)
            return
        values = {name: em.at(v, em.offset(shape_of(v), indices, out.ndim))
                  for name, v in params.items()}
        z = {"uniform": "ppl_rng_uniform(rng)", "rng": "rng"}.get(
            variate, f"z[({first} + {element}) * n + row]")
        em.emit(f"{em.at(out, element)} = {template.format(z=z, **values)};", depth + 1)

    def pin(indices: list[str], depth: int) -> None:
        element = em.offset(out.shape, indices, out.ndim)
        size = max(1, math.prod(out.shape))
        em.emit(f"if (pin != NULL && pin[row]) {em.at(out, element)} = "
                f"slot[{slot}][row * {size} + {element}];", depth + 1)

    if out.ndim == 0:
        body([], 0)
        if slot is not None:
            pin([], 0)
    else:
        em.loops(out.shape, body)
        if slot is not None:
            em.loops(out.shape, pin)




def _categorical(em: Emitter, target: str, kind: str, params: Mapping[str, Value],
                 indices: list[str], rank: int, depth: int) -> None:
    """One Categorical draw into ``target`` by the inverse CDF, as ``samplers.categorical``:
    the first category whose cumulative weight exceeds a uniform times the total, at most
    the last (``kind``: the weights are ``probs``, or ``exp(logits - max)``)."""
    value = params[kind]
    size = shape_of(value)[-1]
    k = em.fresh("k")

    def weight(index: str) -> str:
        at = em.at(value, em.offset(shape_of(value), [*indices, index], rank + 1))
        return at if kind == "probs" else f"ppl_exp({at} - top)"

    lines = ["{", "    double total = 0.0, cdf = 0.0;"]
    if kind == "logits":
        lines += ["    double top = -INFINITY;",
                  f"    for (long {k} = 0; {k} < {size}; {k}++) top = fmax(top, "
                  f"{em.at(value, em.offset(shape_of(value), [*indices, k], rank + 1))});"]
    lines += [f"    for (long {k} = 0; {k} < {size}; {k}++) total += {weight(k)};",
              "    double point = ppl_rng_uniform(rng) * total;",
              f"    long {k} = 0;",
              f"    for (; {k} < {size - 1}; {k}++) {{",
              f"        cdf += {weight(k)};",
              "        if (cdf > point) break;",
              "    }",
              f"    {target} = (double){k};",
              "}"]
    for line in lines:
        em.emit(line, depth)
