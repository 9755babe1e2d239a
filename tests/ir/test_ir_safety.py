"""A parsed graph has no side effects: the allow-list refuses in-place ops, process-wide state
and loaders of other code, constructors are capped, malformed metadata is linted, and
literals nest boundedly. A fuzz test over mutated printed graphs checks it all together."""

import random
import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppl.ir import IRError, parse
from ppl.ir.graph import lint
from ppl.ir.interpreter import Simulate
from ppl.ir.ops import MAX_ALLOCATION, op_name
from ppl.ir.parser import MAX_NESTING, graph_diff

GOLDEN = Path(__file__).parent / "golden"


def stmt(*lines: str) -> str:
    body = "\n".join(f"  {line}" for line in lines)
    return f"graph g {{\n  %x = input \"x\" : f32[3]\n{body}\n  return None\n}}"


@pytest.mark.parametrize("target", [
    "Tensor.add_", "Tensor.copy_", "Tensor.fill_", "Tensor.zero_", "Tensor.resize_",
    "torch.relu_", "torch.nn.functional.relu_", "torch.use_deterministic_algorithms",
    "torch.manual_seed", "torch.set_default_dtype", "torch.set_num_threads",
    "torch.set_flush_denormal", "torch.import_ir_module", "torch.import_ir_module_from_buffer",
    "torch.as_strided", "Tensor.as_strided", "torch.from_dlpack", "torch.frombuffer",
    "torch.init_num_threads", "torch.get_rng_state",
])
def test_side_effecting_targets_are_refused(target):
    with pytest.raises(IRError, match="not an allowed operation"):
        parse(stmt(f"%y = call {target}(%x, 1.0)"))


def test_in_place_methods_have_no_name_and_pure_ones_stay():
    assert op_name(torch.Tensor.add_) is None and op_name(torch.Tensor.add) == "Tensor.add"
    assert op_name(torch.use_deterministic_algorithms) is None
    assert op_name(torch.Tensor.__getitem__) == "Tensor.__getitem__"


@pytest.mark.parametrize("call, message", [
    ("torch.add(%x, 1.0, out=%x)", "out= writes into an argument"),
    ("torch.nn.functional.relu(%x, inplace=True)", "inplace=True writes into its input"),
    ("torch.nn.functional.relu(%x, True)", "inplace=True writes into its input"),
    ("torch.nn.functional.threshold(%x, 0.0, 0.0, %x)", "inplace=%x"),
])
def test_calls_writing_into_their_arguments_are_refused(call, message):
    with pytest.raises(IRError, match=re.escape(message)):
        parse(stmt(f"%y = call {call}"))


@pytest.mark.parametrize("call", [
    "torch.zeros(10000, 10000)", "torch.ones([5000, 5000])",
    "torch.empty(torch.Size([2, 10000000]))", "torch.full([5000, 5000], 1.0)",
    "torch.arange(0, 100000000)", "torch.linspace(0.0, 1.0, 100000000)", "torch.eye(100000)",
    "Tensor.expand(%x, [10000, 10000, -1])", "Tensor.repeat(%x, [100000, 1000])",
    "Tensor.new_zeros(%x, [100000, 1000])",
])
def test_constructors_are_capped(call):
    with pytest.raises(IRError, match=f"at most {MAX_ALLOCATION}"):
        parse(stmt(f"%y = call {call}"))


def test_constructor_sizes_must_be_literal_and_small_ones_pass():
    with pytest.raises(IRError, match="sizes must be literal ints"):
        parse(stmt("%n = call Tensor.sum(%x)", "%y = call torch.zeros(%n)"))
    g = parse(stmt("%y = call torch.zeros(torch.Size([2, 3]), dtype=torch.int64)",
                   "%z = call Tensor.expand(%x, [4, -1])", "%a = call torch.arange(0, 10, 2)"))
    out = Simulate(g, inputs={"x": torch.ones(3)}).run()
    assert out == {} and len(g) == 5


@pytest.mark.parametrize("line, message", [
    ('%m = sample "m" Normal(loc=0.0, scale=1.0) : f32[3] plates[p:-3@-1]', "size -3"),
    ('%m = sample "m" Normal(loc=0.0, scale=1.0) : f32[3] plates[p:3/5@-1]', "subsamples 5 of 3"),
    ('%m = sample "m" Normal(loc=0.0, scale=1.0) : f32[3] plates[p:3@1]', "dim 1"),
    ('%m = sample "m" Normal(loc=0.0, scale=1.0) : f99[3]', "unknown dtype 'f99'"),
    ('%m = observe "m" Normal(loc=0.0, scale=1.0) = tensor([1.0, 2.0], f32) : f32[3]',
     "declared shape [3] disagrees with its value's shape [2]"),
])
def test_malformed_metadata_is_linted(line, message):
    with pytest.raises(IRError, match=re.escape(message)):
        parse(stmt(line))


def test_bound_data_must_agree_with_the_declared_shape():
    with pytest.raises(IRError, match=re.escape("disagrees with its value's shape [4]")):
        parse(stmt(), data={"x": torch.zeros(4)})


def test_nesting_is_bounded_so_every_parsed_graph_prints():
    with pytest.raises(IRError, match="nested too deeply"):
        parse(stmt("%y = call ppl.identity(" + "[" * 900 + "]" * 900 + ")"))
    deepest = parse(stmt("%y = call ppl.identity(" + "[" * MAX_NESTING + "]" * MAX_NESTING + ")"))
    assert graph_diff(parse(str(deepest)), deepest) is None


# --------------------------------------------------------------------------- fuzzing

SEEDS = [p.read_text() for p in sorted(GOLDEN.glob("*.ir"))] + [
    stmt("%y = call torch.add(%x, 1.0)", '%m = sample "m" Normal(loc=%y, scale=1.0) : f32[3]')
]
TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|%?[A-Za-z_][A-Za-z0-9_.]*|-?[0-9.]+(?:[eE][-+]?[0-9]+)?|\S')
HOSTILE = {  # replacements by the kind of token they replace
    "number": ["100000000", "-5", "0", "1", "99", "2.5", "-1", "1e300"],
    "name": ["Tensor.add_", "Tensor.copy_", "torch.use_deterministic_algorithms",
             "torch.manual_seed", "torch.set_default_dtype", "torch.import_ir_module",
             "torch.zeros", "Tensor.expand", "torch.full", "torch.arange", "torch.exp",
             "Normal", "True", "None", "out", "inplace", "f99", "f64", "i64", "plates"],
    "ref": ["%x", "%sigma", "%y", "%mu", "%tau", "%theta", "%nope"],
    "other": ["[", "]", "(", ")", ",", "=", ":", "@", "/", "[[[[[[[["],
}


def _kind(token: str) -> str:
    if token[0] == "%":
        return "ref"
    if token[0].isdigit() or token[0] == "-":
        return "number"
    return "name" if token[0].isalpha() or token[0] == "_" else "other"


def _torch_state() -> tuple:
    return (torch.are_deterministic_algorithms_enabled(), torch.get_default_dtype(),
            torch.get_num_threads(), torch.is_grad_enabled(), torch.is_anomaly_enabled())


def _inputs(graph) -> dict[str, torch.Tensor]:
    return {n.name: torch.ones(n.meta.shape or ()) for n in graph.inputs}


def _params(graph) -> dict[str, torch.Tensor]:
    return {n.address: torch.ones(n.meta.shape or ()) for n in graph.nodes_of("param")}


HOSTILE_LINES = [
    "%h = call Tensor.add_(%x, 1.0)", "%h = call torch.use_deterministic_algorithms(True)",
    "%h = call torch.zeros(100000, 100000)", "%h = call Tensor.expand(%x, [100000, 100000])",
    "%h = call torch.add(%x, 1.0, out=%x)", "%h = call torch.nn.functional.relu(%x, True)",
    '%h = sample "h" Normal(loc=0.0, scale=1.0) : f32[-2] plates[q:-4/9@2]',
]


@st.composite
def mutated_texts(draw) -> str:
    """A printed graph with a few token edits (replace, insert, delete, repeat) on its lines,
    or a hostile statement inserted or a line repeated; tokens are re-joined by spaces."""
    lines = [TOKENS.findall(line) for line in draw(st.sampled_from(SEEDS)).splitlines()]
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    for _ in range(draw(st.integers(1, 2))):
        row = rng.randrange(1, len(lines) - 1)  # not the header or the closing brace
        tokens = lines[row]
        i = rng.randrange(len(tokens))
        action = rng.choice(("replace",) * 6 + ("insert", "delete", "repeat", "line", "hostile"))
        if action == "replace":
            tokens[i] = rng.choice(HOSTILE[_kind(tokens[i])])
        elif action == "insert":
            tokens.insert(i, rng.choice(HOSTILE[rng.choice(list(HOSTILE))]))
        elif action == "delete" and len(tokens) > 1:
            del tokens[i]
        elif action == "repeat":
            tokens[i:i] = tokens[i : i + rng.randrange(1, 12)]
        elif action == "line":
            lines.insert(row, list(tokens))
        else:
            lines.insert(row, TOKENS.findall(rng.choice(HOSTILE_LINES)))
    return "\n".join(" ".join(tokens) for tokens in lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_texts())
def test_mutated_graphs_fail_to_parse_or_run_without_side_effects(text):
    try:
        graph = parse(text)
    except IRError:
        return
    lint(graph)
    assert graph_diff(parse(str(graph)), graph) is None
    inputs, params = _inputs(graph), _params(graph)
    before = ({k: v.clone() for k, v in inputs.items()}, {k: v.clone() for k, v in params.items()},
              _torch_state())
    try:
        Simulate(graph, inputs=inputs, params=params).run()
    except Exception:  # a mutated graph may well be ill-typed; it must still change nothing
        pass
    assert _torch_state() == before[2]
    for now, then in ((inputs, before[0]), (params, before[1])):
        assert all(torch.equal(now[k], then[k]) for k in then)
