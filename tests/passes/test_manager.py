"""The pass manager: order, recorded names, failures named with the passes before them."""

import pytest
import torch

from ppl.ir import Graph, PassError
from ppl.passes import (
    apply_user_passes,
    condition,
    enumerate_discrete,
    run,
    run_report,
    simplify,
    temper,
    unconstrain,
)


def drop_output(graph: Graph) -> Graph:
    """A broken pass: mutates a copy so that it has no output node (lint must catch it)."""
    out = graph.replace()
    out.nodes = out.nodes[:-1]
    return out


class Raises:
    name = "raises"

    def __call__(self, graph: Graph) -> Graph:
        raise RuntimeError("boom")


def test_run_applies_in_order_and_records_names(zoo):
    g = zoo.eight_schools.graph(zoo.SIGMA)
    out = run(g, [condition({"y": zoo.Y}), temper(0.5), simplify()])
    assert out.attrs["passes"] == ["condition", "temper", "simplify"]
    assert out.site("y").kind == "observe" and out.site("y").meta.attr("scale") == 0.5
    assert "passes" not in g.attrs  # the input graph is untouched
    again = run(out, [simplify()])
    assert again.attrs["passes"] == ["condition", "temper", "simplify", "simplify"]


def test_a_broken_graph_names_the_pass_and_those_before(zoo):
    g = zoo.eight_schools.graph(zoo.SIGMA)
    with pytest.raises(PassError) as err:
        run(g, [condition({"y": zoo.Y}), simplify(), drop_output, temper(0.5)])
    msg = str(err.value)
    assert "'drop_output'" in msg and "'condition', 'simplify'" in msg and "broken graph" in msg
    assert "output" in msg


def test_a_raising_pass_is_named(zoo):
    g = zoo.eight_schools.graph(zoo.SIGMA)
    with pytest.raises(PassError, match=r"pass 'raises'.*no other pass.*RuntimeError: boom"):
        run(g, [Raises()])
    with pytest.raises(PassError, match="returned NoneType"):
        run(g, [lambda graph: None])


def test_a_user_error_inside_a_pass_names_pass_and_site(zoo):
    g = zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y)
    with pytest.raises(PassError, match=r"pass 'condition'.*site 'nope'"):
        run(g, [condition({"nope": torch.zeros(())})])


def test_apply_user_passes_traces_then_runs(zoo):
    out = apply_user_passes(zoo.eight_schools, (zoo.SIGMA,), {"y": zoo.Y}, [simplify()])
    assert out.attrs["passes"] == ["simplify"] and out.site("y").kind == "observe"


def test_passed_graphs_print_parse_and_evaluate_the_same(zoo):
    """The ops, attributes and literals that passes emit survive the text form."""
    from ppl.ir import LogDensity
    from ppl.ir.parser import parse
    from ppl.passes import do, enumerate_discrete, noncenter, unconstrain

    cases = [
        (
            run(
                zoo.eight_schools.graph(zoo.SIGMA),
                [condition({"y": zoo.Y}), noncenter(), unconstrain(), temper(0.5), simplify()],
            ),
            {
                "mu": torch.tensor(0.1),
                "tau__unconstrained": torch.tensor(0.3),
                "theta__raw": torch.randn(8),
            },
        ),
        (
            run(zoo.constrained.graph(torch.tensor(0.3)), [unconstrain()]),
            {
                "lo": torch.tensor(0.2),
                "rate__unconstrained": torch.tensor(0.1),
                "p__unconstrained": torch.tensor(-0.4),
                "width__unconstrained": torch.tensor(0.5),
                "u__unconstrained": torch.tensor(0.7),
                "w__unconstrained": torch.randn(2),
                "corr__unconstrained": torch.randn(3),
            },
        ),
        (
            run(zoo.hmm.graph(zoo.hmm_data), [enumerate_discrete()]),
            {"locs": torch.tensor([-0.5, 0.5])},
        ),
        (
            run(zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y), [do({"tau": 1.0}), simplify()]),
            {"mu": torch.tensor(0.0), "theta": torch.randn(8)},
        ),
    ]
    for graph, values in cases:
        text = str(graph)
        again = parse(text)
        assert str(again) == text
        expected = LogDensity(graph, values).run()
        torch.testing.assert_close(LogDensity(again, values, inputs=graph.data).run(), expected)


def test_results_say_which_passes_changed_the_graph(zoo):
    g = zoo.eight_schools.graph(zoo.SIGMA)
    out, results = run_report(g, [condition({"y": zoo.Y}), condition({}), temper(1.0),
                                  temper(0.5), lambda graph: graph])
    assert [(r.name, r.changed) for r in results] == [
        ("condition", True), ("condition", False), ("temper", True), ("temper", True),
        ("<lambda>", False)]
    assert results[-1].graph is out and out.attrs["passes"][-1] == "<lambda>"


@pytest.mark.parametrize("first, second, message", [
    (lambda: enumerate_discrete(), lambda: temper(0.5), "'temper' must run before"),
    (lambda: unconstrain(), lambda: enumerate_discrete(),
     "'enumerate_discrete' must run before 'unconstrain'"),
])
def test_passes_out_of_their_declared_order_are_refused(zoo, first, second, message):
    g = zoo.eight_schools.graph(zoo.SIGMA, y=zoo.Y)
    with pytest.raises(PassError, match=message):
        run(g, [first(), second()])
    done = run(g, [first()])  # the order is read from the graph's history, across runs too
    with pytest.raises(PassError, match="out of order"):
        run(done, [second()])
    run(g, [second(), first()])  # the declared order runs
