"""Per-chain sampler diagnostics of an MCMC run: divergences, tree depths, step sizes,
acceptance, E-BFMI, cost and time, with the warnings Stan would give.

``SamplerDiagnostics.from_run(info, extra)`` reads the per-draw info of the kept draws
(``(chains, draws)`` tensors named as the fields of ``ppl.inference.mcmc.Info``) and the run
facts ``Posterior.extra`` holds (``kernel``, ``max_tree_depth``, adapted ``step_size``,
``num_grad_evals``, ``warmup_time``, ``sampling_time``). A missing field gives ``None``, so
results of other samplers (e.g. Gibbs) work with whatever they record.

    >>> import torch
    >>> info = {"divergent": torch.zeros(2, 100, dtype=torch.bool),
    ...         "tree_depth": torch.full((2, 100), 3), "accept_prob": torch.full((2, 100), 0.8)}
    >>> d = SamplerDiagnostics.from_run(info, {"kernel": "NUTS", "max_tree_depth": 10})
    >>> d.divergences, d.tree_depth_max, d.warnings()
    ((0, 0), (3, 3), [])

E-BFMI (``ppl.inference.results.diagnostics.e_bfmi``) is computed only for kernels whose ``energy``
is a Hamiltonian with momentum resampled every transition (NUTS, HMC; or an unnamed kernel
that records an energy): for MALA (one leapfrog step) and for the random-walk and slice
kernels (energy = -log density) the statistic does not measure what it is meant to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .diagnostics import e_bfmi

__all__ = ["SamplerDiagnostics"]

_HAMILTONIAN_KERNELS = ("NUTS", "HMC")


def _per_chain(x: Tensor | None, reduce: str) -> tuple | None:
    """(chains, draws) -> one Python number per chain (``sum``, ``mean`` or ``max``)."""
    if x is None or x.dim() < 2 or x.shape[1] == 0:
        return None
    if reduce == "sum":
        return tuple(int(v) for v in x.to(torch.int64).sum(1).tolist())
    if reduce == "max":
        return tuple(int(v) for v in x.amax(1).tolist())
    return tuple(float(v) for v in x.to(torch.float64).mean(1).tolist())


def format_seconds(seconds: float) -> str:
    """A duration in s (two decimals), or below a second with three significant digits in ms
    or us: a fast run's sampling time reads ``4.21 ms``, not ``0.00 s``.

    >>> format_seconds(12.3456), format_seconds(0.0042137), format_seconds(3.2e-5)
    ('12.35 s', '4.21 ms', '32 us')
    """
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


@dataclass(frozen=True)
class SamplerDiagnostics:
    """What the sampler did, one entry per chain (kept draws only; warmup is not counted).

    ``divergences``: divergent transitions. ``tree_depth_mean`` / ``tree_depth_max``: NUTS
    doublings; ``max_depth_hits``: transitions that stopped at ``max_tree_depth`` (the
    trajectory was cut before it U-turned). ``step_size``: the adapted step size.
    ``accept_stat``: mean acceptance statistic (what step-size adaptation targets).
    ``e_bfmi``: energy Bayesian fraction of missing information. ``grad_evals_per_draw``:
    mean gradient evaluations per kept transition. ``num_grad_evals``: rows the log density
    was evaluated on over the whole run, warmup included (what the run paid).
    ``warmup_time`` / ``sampling_time``: wall seconds.
    """

    kernel: str | None
    num_chains: int
    num_draws: int
    divergences: tuple[int, ...] | None = None
    tree_depth_mean: tuple[float, ...] | None = None
    tree_depth_max: tuple[int, ...] | None = None
    max_tree_depth: int | None = None
    max_depth_hits: tuple[int, ...] | None = None
    step_size: tuple[float, ...] | None = None
    accept_stat: tuple[float, ...] | None = None
    e_bfmi: tuple[float, ...] | None = None
    grad_evals_per_draw: tuple[float, ...] | None = None
    num_grad_evals: int | None = None
    warmup_time: float | None = None
    sampling_time: float | None = None

    @classmethod
    def from_run(cls, info: Mapping[str, Tensor], extra: Mapping[str, Any]) -> SamplerDiagnostics:
        """Build from per-draw ``info`` ``{field: (chains, draws)}`` and run facts ``extra``."""
        shape = next((tuple(v.shape[:2]) for v in info.values() if v.dim() >= 2), (0, 0))
        kernel = extra.get("kernel")
        max_depth = extra.get("max_tree_depth")
        depth = info.get("tree_depth") if kernel in (None, "NUTS") or max_depth else None
        energy = info.get("energy")
        hamiltonian = kernel in _HAMILTONIAN_KERNELS or kernel is None
        step = extra.get("step_size")
        if isinstance(step, Tensor):
            steps = tuple(float(v) for v in step.reshape(-1).tolist())
        else:
            steps = _per_chain(info.get("step_size"), "mean")
        total = extra.get("num_grad_evals")
        return cls(
            kernel=kernel,
            num_chains=shape[0],
            num_draws=shape[1],
            divergences=_per_chain(info.get("divergent"), "sum"),
            tree_depth_mean=_per_chain(depth, "mean"),
            tree_depth_max=_per_chain(depth, "max"),
            max_tree_depth=max_depth,
            max_depth_hits=(_per_chain(depth >= max_depth, "sum")
                            if depth is not None and max_depth is not None else None),
            step_size=steps,
            accept_stat=_per_chain(info.get("accept_prob"), "mean"),
            e_bfmi=(tuple(float(v) for v in e_bfmi(energy).tolist())
                    if hamiltonian and energy is not None and energy.dim() == 2 else None),
            grad_evals_per_draw=_per_chain(info.get("num_grad_evals"), "mean"),
            num_grad_evals=int(total) if total is not None else None,
            warmup_time=extra.get("warmup_time"),
            sampling_time=extra.get("sampling_time"),
        )

    @property
    def num_divergent(self) -> int:
        """Divergent transitions over all chains."""
        return sum(self.divergences or ())

    def warnings(self, *, min_e_bfmi: float = 0.3, max_depth_fraction: float = 0.0) -> list[str]:
        """Sampler problems, as Stan reports them (empty when all is well): any divergence
        after warmup; E-BFMI below ``min_e_bfmi`` (0.3) in a chain; more than
        ``max_depth_fraction`` (0: any) of the transitions stopped at the maximum tree depth."""
        out = []
        total = self.num_chains * self.num_draws
        if self.num_divergent:
            out.append(
                f"{self.num_divergent} of {total} transitions after warmup were divergent "
                f"(per chain {list(self.divergences or ())}): the sampler cannot follow the "
                "posterior's curvature there, so the draws may be biased; raise target_accept "
                "(e.g. 0.95) or reparameterize (e.g. the noncenter pass)."
            )
        if self.e_bfmi is not None:
            low = [(c, v) for c, v in enumerate(self.e_bfmi) if v < min_e_bfmi]
            if low:
                text = ", ".join(f"chain {c}: {v:.3f}" for c, v in low)
                out.append(
                    f"E-BFMI below {min_e_bfmi:g} ({text}): momentum resampling explores the "
                    "energy distribution poorly (heavy tails or a funnel); reparameterize."
                )
        if self.max_depth_hits is not None and total:
            hits = sum(self.max_depth_hits)
            if hits / total > max_depth_fraction:
                out.append(
                    f"{hits} of {total} transitions stopped at the maximum tree depth "
                    f"{self.max_tree_depth}: trajectories were cut short, so sampling is "
                    "inefficient; raise max_tree_depth, use dense_mass=True for correlated "
                    "posteriors, or reparameterize."
                )
        return out

    def __str__(self) -> str:
        columns: list[tuple[str, tuple | None, str]] = [
            ("divergences", self.divergences, "{}"),
            ("accept_stat", self.accept_stat, "{:.3f}"),
            ("step_size", self.step_size, "{:.3g}"),
            ("depth_mean", self.tree_depth_mean, "{:.2f}"),
            ("depth_max", self.tree_depth_max, "{}"),
            ("max_depth_hits", self.max_depth_hits, "{}"),
            ("e_bfmi", self.e_bfmi, "{:.3f}"),
            ("grads/draw", self.grad_evals_per_draw, "{:.1f}"),
        ]
        shown = [(name, [fmt.format(v) for v in values]) for name, values, fmt in columns
                 if values is not None]
        title = f"Sampler diagnostics: {self.kernel or 'MCMC'}, "
        title += f"{self.num_chains} chains x {self.num_draws} draws"
        if self.max_tree_depth is not None:
            title += f", max_tree_depth {self.max_tree_depth}"
        lines = [title, ""]
        widths = [max(len(name), *(len(c) for c in cells)) for name, cells in shown]
        columns_widths = list(zip(shown, widths, strict=True))
        lines.append("chain" + "".join(f"  {name.rjust(w)}" for (name, _), w in columns_widths))
        for c in range(self.num_chains):
            cells = "".join(f"  {values[c].rjust(w)}" for (_, values), w in columns_widths)
            lines.append(f"{c:>5}{cells}")
        facts = []
        if self.num_grad_evals is not None:
            facts.append(f"gradient evaluations: {self.num_grad_evals}")
        if self.warmup_time is not None and self.sampling_time is not None:
            facts.append(f"warmup {format_seconds(self.warmup_time)}, "
                         f"sampling {format_seconds(self.sampling_time)}")
        if facts:
            lines += ["", "; ".join(facts)]
        return "\n".join(lines)
