"""C rules of a discrete chain summed out (``ppl.passes.chains``): the forward recursion
and, for the gradient, forward-backward, each one ``for`` over the ``T`` steps of
``K x K`` log-sum-exps (``O(T K^2)``, no matrix of paths), per chain.

``F`` is the ``(T, K, K)`` buffer of log factors; ``alpha`` (``T x K``, a scratch buffer
of the function) holds the forward messages ``alpha_t[k]``, the log weight of the paths
from ``start`` that end in ``z_t = k``.
"""

from __future__ import annotations

from collections.abc import Callable

from ppl.inference.lowering.tape.tape import Instr

from .emitter import Emitter


def _scratch(em: Emitter, size: int) -> str:
    name = em.fresh("scratch")
    em.declared[name] = f"static _Thread_local double {name}[{size}];"
    return name


def _lse(em: Emitter, target: str, n: int, term: Callable[[str], str], depth: int) -> None:
    """``target = log sum_i exp(term(i))`` for ``i < n``, max-shifted (NaN propagates)."""
    i, m, acc = em.fresh(), em.fresh("m"), em.fresh("acc")
    em.emit(f"double {m} = -INFINITY, {acc} = 0.0;", depth)
    em.emit(f"for (long {i} = 0; {i} < {n}; {i}++) "
            f"if ({term(i)} > {m} || isnan({term(i)})) {m} = {term(i)};", depth)
    em.emit(f"if (isinf({m})) {target} = {m}; else {{", depth)
    em.emit(f"for (long {i} = 0; {i} < {n}; {i}++) {acc} += exp({term(i)} - {m});", depth + 1)
    em.emit(f"{target} = {m} + log({acc}); }}", depth + 1)


def _forward(em: Emitter, instr: Instr) -> tuple[str, int, int, Callable[[str, str, str], str]]:
    """Emit the forward messages into a scratch ``alpha``; return it, ``T``, ``K`` and
    ``f(t, j, k)``, the C of ``F[t, j, k]``."""
    F, start = instr.args[0], instr.attrs["start"]
    T, K, _ = F.shape

    def f(t: str, j: str, k: str) -> str:
        return em.at(F, f"(({t}) * {K} + {j}) * {K} + {k}")

    alpha = _scratch(em, T * K)
    t, k = em.fresh("t"), em.fresh()
    em.emit(f"for (long {k} = 0; {k} < {K}; {k}++) {alpha}[{k}] = {f('0', str(start), k)};")
    em.emit(f"for (long {t} = 1; {t} < {T}; {t}++) {{")
    em.emit(f"for (long {k} = 0; {k} < {K}; {k}++) {{", 1)
    _lse(em, f"{alpha}[{t} * {K} + {k}]", K,
         lambda i: f"({alpha}[({t} - 1) * {K} + {i}] + {f(t, i, k)})", 2)
    em.emit("}", 1)
    em.emit("}")
    return alpha, T, K, f


def chain_logsumexp(em: Emitter, instr: Instr) -> None:
    """``log Z``: the forward messages, then a log-sum-exp of the last."""
    alpha, T, K, _ = _forward(em, instr)
    em.declare(instr.out)
    _lse(em, em.at(instr.out, "0"), K, lambda i: f"{alpha}[{(T - 1) * K} + {i}]", 0)


def chain_marginals(em: Emitter, instr: Instr) -> None:
    """``P(z_{t-1} = j, z_t = k) = exp(alpha_{t-1}[j] + F[t, j, k] + beta_t[k] - log Z)``:
    the forward messages, then one backward sweep of ``beta`` writing each step's
    marginals (at ``t = 0`` only row ``start`` is nonzero)."""
    log_z, start, out = instr.args[1], instr.attrs["start"], instr.out
    alpha, T, K, f = _forward(em, instr)
    em.declare(out)
    beta, after = _scratch(em, K), _scratch(em, K)
    z = em.at(log_z, "0")
    t, j, k = em.fresh("t"), em.fresh(), em.fresh()
    cell = f"({t} * {K} + {j}) * {K} + {k}"
    em.emit(f"for (long {k} = 0; {k} < {K}; {k}++) {beta}[{k}] = 0.0;")
    em.emit(f"for (long {t} = {T - 1}; {t} >= 1; {t}--) {{")
    em.emit(f"for (long {j} = 0; {j} < {K}; {j}++) {{", 1)
    em.emit(f"for (long {k} = 0; {k} < {K}; {k}++) {out.name}[{cell}] = "
            f"exp({alpha}[({t} - 1) * {K} + {j}] + {f(t, j, k)} + {beta}[{k}] - {z});", 2)
    _lse(em, f"{after}[{j}]", K, lambda i: f"({f(t, j, i)} + {beta}[{i}])", 2)
    em.emit("}", 1)
    em.emit(f"for (long {j} = 0; {j} < {K}; {j}++) {beta}[{j}] = {after}[{j}];", 1)
    em.emit("}")
    em.emit(f"for (long {j} = 0; {j} < {K}; {j}++)")
    em.emit(f"for (long {k} = 0; {k} < {K}; {k}++) {out.name}[{j} * {K} + {k}] = "
            f"{j} == {start} ? exp({f('0', j, k)} + {beta}[{k}] - {z}) : 0.0;", 1)
