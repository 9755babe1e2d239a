"""A proposal for the particle engine: a graph whose sample sites draw the model's latents.

A proposal is a traced ``@model`` (its graph) with one ``sample`` site per latent it
proposes, under the model latent's address and with its shape; it may read data, params and
the latents of earlier steps (through its own sites of those addresses, whose values are the
particles' live ones). Latents it leaves out are drawn from the model's prior. For each step
of the model's schedule, :func:`proposal_steps` gives the proposal's sub-graph for the
latents of that step and the earlier latents it reads, refusing a proposal that reads a
latent the schedule draws later, proposes what is no latent of the model, observes, or
disagrees with the model on a site's shape.

    >>> import torch
    >>> from ppl import model, sample
    >>> from ppl.stdlib import Normal
    >>> from ppl.inference.lowering.particles import Schedule
    >>> @model
    ... def chain():
    ...     x = sample("x_0", Normal(0.0, 1.0))
    ...     x = sample("x_1", Normal(x, 1.0))
    ...     sample("y_1", Normal(x, 1.0), obs=torch.tensor(0.5))
    >>> @model
    ... def guide():
    ...     x = sample("x_0", Normal(0.0, 1.0))
    ...     sample("x_1", Normal(0.5 * x, 0.7))
    >>> [p.sites for p in proposal_steps(Schedule.from_graph(chain.graph()), guide.graph())]
    [('x_0', 'x_1')]
"""

from __future__ import annotations

from ppl.ir import Graph

from .schedule import Schedule, ScheduleError, Step, sub_graph


def proposal_steps(schedule: Schedule, proposal: Graph) -> list[Step]:
    """The proposal's :class:`Step` for each step of ``schedule`` (its sites: the latents
    it proposes there; its reads: earlier latents), validated."""
    model = schedule.graph
    for node in proposal.random_nodes:
        where = f"proposal {proposal.name!r}, site {node.address!r}"
        if node.kind != "sample":
            raise ScheduleError(f"{where} is a {node.kind} site; a proposal only draws latents")
        if not model.has_site(node.address) or model.site(node.address).kind != "sample":
            raise ScheduleError(f"{where}: the model {model.name!r} has no latent of that "
                                "address to propose")
        want, got = model.site(node.address).meta.shape, node.meta.shape
        if want is not None and got is not None and tuple(want) != tuple(got):
            raise ScheduleError(f"{where} has shape {list(got)}, the model's latent "
                                f"{list(want)}")
    groups: list[list] = [[] for _ in range(schedule.num_steps)]
    for node in proposal.latent_nodes:
        groups[schedule.step_of(node.address)].append(node)
    steps = []
    for k, group in enumerate(groups):
        step = sub_graph(proposal, group)
        late = [a for a in step.reads if schedule.step_of(a) >= k]
        if late:
            raise ScheduleError(
                f"proposal {proposal.name!r} for step {k} (sites {list(step.sites)}) reads "
                f"latents {late}, which the schedule draws in steps "
                f"{[schedule.step_of(a) for a in late]}; a proposal reads earlier steps only")
        steps.append(step)
    return steps
