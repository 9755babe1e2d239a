"""The text form: print -> parse -> print is the identity, parse(print(g)) equals g node for
node, golden files, and hostile text is refused with a clear IRError.

Regenerate the golden files with
``PPL_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/ir/test_text.py``.
"""

import dataclasses
import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.distributions import constraints

from ppl import registry
from ppl.ir import DistSpec, Graph, GraphBuilder, IRError, Meta, Node, Ref, load, parse, print_graph
from ppl.ir.parser import graph_diff, same_value
from ppl.ir.printer import format_value
from ppl.runtime import PlateFrame

GOLDEN = Path(__file__).parent / "golden"
SCHOOLS = PlateFrame("schools", 8, -1, 8)


def kw(**kwargs):
    return tuple(kwargs.items())


# -- hand-built graphs -------------------------------------------------------------------------
def eight_schools() -> Graph:
    b = GraphBuilder("eight_schools")
    f32 = lambda *shape, plates=(): Meta(shape=shape, dtype="f32", plates=plates)
    sigma = b.add("input", "sigma", meta=f32(8))
    y = b.add("input", "y", meta=f32(8))
    mu = b.add("sample", "Normal", kwargs=kw(loc=0.0, scale=5.0), address="mu", meta=f32())
    tau = b.add("sample", "HalfCauchy", kwargs=kw(scale=5.0), address="tau", meta=f32())
    loc = b.add("call", "Tensor.expand", args=(mu, [8]), name="loc", meta=f32(8, plates=(SCHOOLS,)))
    theta = b.add(
        "sample",
        "Normal",
        kwargs=kw(loc=loc, scale=tau),
        address="theta",
        meta=f32(8, plates=(SCHOOLS,)),
    )
    b.add(
        "observe",
        "Normal",
        args=(y,),
        kwargs=kw(loc=theta, scale=sigma),
        address="y",
        meta=f32(8, plates=(SCHOOLS,)),
    )
    b.add("output", "output", args=(None,))
    b.bind("sigma", torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]))
    return b.build()


def kitchen_sink() -> Graph:
    """Every node kind and every kind of argument."""
    b = GraphBuilder('kitchen sink "v2"')
    b.attrs.update(
        {
            "enumerated": ("z",),
            "beta": 0.5,
            "passes": ["condition", "temper"],
            "notes": {"a": 1, 2: None},
            "odd key!": True,
        }
    )
    x = b.add("input", "x", meta=Meta(shape=(3, 2), dtype="f64", attrs=(("role", "data"),)))
    w = b.add(
        "param",
        "w",
        kwargs=kw(init=torch.tensor([0.5, 1.5]), constraint=constraints.positive),
        address="w",
        meta=Meta(shape=(2,), dtype="f32"),
    )
    s = b.add(
        "param",
        "layer/0.scale",
        kwargs=kw(constraint=constraints.interval(-1.0, 2.5)),
        address="layer/0.scale",
        meta=Meta(shape=(), dtype="f32"),
    )
    base = DistSpec("Normal", kw(loc=w, scale=1.0))
    z = b.add(
        "sample",
        "Independent",
        kwargs=kw(base_dist=base, reinterpreted_batch_ndims=1),
        address="z",
        meta=Meta(shape=(2,), dtype="f32", attrs=(("estimator", "reparam"),)),
    )
    odd = 'weird "addr"\\ with\nnewline\ttab é∂ 😀 \x00\u2028\ud800'
    u = b.add(
        "sample",
        "Uniform",
        kwargs=kw(low=-math.inf, high=math.inf),
        address=odd,
        meta=Meta(
            shape=(4, 3),
            dtype="f32",
            plates=(
                PlateFrame("outer plate", 4, -2, 4),
                PlateFrame("data", 1000, -1, 3),
                PlateFrame("time", 10, None, 1),
            ),
        ),
    )
    floats = (0.1, -0.0, 1e-300, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, math.nan, 3.0)
    c1 = b.add("call", "torch.add", args=(z, floats, [1, -2, 10**30], True, False, None), name="c1")
    tensors = [
        torch.tensor(1.5),
        torch.tensor([[1.0, 2.5], [-0.0, math.nan]]),
        torch.tensor([1, 2, 3]),
        torch.tensor([[True, False]]),
        torch.zeros(0, 3),
        torch.tensor([0.1, 1 / 3], dtype=torch.float64),
        torch.tensor([0.1], dtype=torch.float16),
        torch.tensor([0.1, 2.0], dtype=torch.bfloat16),
        torch.tensor(7, dtype=torch.int32),
        torch.tensor([255], dtype=torch.uint8),
    ]
    c2 = b.add(
        "call", "torch.stack", args=(tensors,), kwargs=kw(dtype=torch.float32, out=None), name="c2"
    )
    idx = b.add(
        "call",
        "Tensor.__getitem__",
        args=(c1, (slice(None, c2, None), Ellipsis, slice(1, None, 2), None, ())),
    )
    b.add("call", "torch.zeros", args=(torch.Size([2, 3]),), kwargs=kw(dtype=torch.int64))
    cons = [
        constraints.real,
        constraints.unit_interval,
        constraints.simplex,
        constraints.greater_than(1.0),
        constraints.independent(constraints.positive, 1),
        constraints.real_vector,
        constraints.interval(torch.tensor(0.0), 1.0),
        constraints.integer_interval(0, 3),
    ]
    b.add("call", "ppl.identity", args=(cons,), name="cons")
    det = b.add(
        "call", "ppl.identity", args=(idx,), address="det", meta=Meta(shape=(2,), dtype=None)
    )
    b.add(
        "observe",
        "Masked",
        args=(torch.tensor([1.0, 2.0]),),
        kwargs=kw(
            base_dist=DistSpec("Normal", kw(loc=det, scale=u)), mask=torch.tensor([True, False])
        ),
        address="obs",
        meta=Meta(dtype="bool", attrs=(("k", 1), ("weird key", [1, (2,)]))),
    )
    b.add("factor", "penalty", args=(det,), address="pen/alty", meta=Meta(shape=(), dtype="f32"))
    b.add("factor", "penalty", args=(x,), address="penalty")
    b.add("output", "output", args=({"z": z, "u": u, "pair": (x, [s])},))
    return b.build()


def nested_plates() -> Graph:
    """Nested and sequential plates, a deterministic site, a factor, a general output."""
    outer, inner = PlateFrame("groups", 3, -2, 3), PlateFrame("items", 5, -1, 2)
    m = lambda *shape, plates=(): Meta(shape=shape, dtype="f32", plates=plates)
    nodes = [
        Node("data", "input", "data", meta=m(3, 2)),
        Node(
            "s",
            "param",
            "s",
            kwargs=kw(constraint=constraints.positive),
            meta=Meta((), "f32", address="s"),
        ),
        Node(
            "g",
            "sample",
            "Normal",
            kwargs=kw(loc=0.0, scale=Ref("s")),
            meta=Meta((3, 1), "f32", (outer,), "g"),
        ),
        Node(
            "h",
            "sample",
            "Normal",
            kwargs=kw(loc=Ref("g"), scale=1.0),
            meta=Meta((3, 2), "f32", (outer, inner), "h"),
        ),
        Node(
            "obs",
            "observe",
            "Normal",
            args=(Ref("data"),),
            kwargs=kw(loc=Ref("h"), scale=Ref("s")),
            meta=Meta((3, 2), "f32", (outer, inner), "obs"),
        ),
        Node(
            "t0",
            "sample",
            "Normal",
            kwargs=kw(loc=0.0, scale=1.0),
            meta=Meta((), "f32", (PlateFrame("t", 2, None, 1),), "t_0"),
        ),
        Node(
            "t1",
            "sample",
            "Normal",
            kwargs=kw(loc=Ref("t0"), scale=1.0),
            meta=Meta((), "f32", (PlateFrame("t", 2, None, 1),), "t_1"),
        ),
        Node(
            "total",
            "call",
            "torch.add",
            args=(Ref("t0"), Ref("t1")),
            meta=Meta((), "f32", address="total"),
        ),
        Node("lw", "call", "Tensor.sum", args=(Ref("h"),), meta=Meta((), "f32")),
        Node("f", "factor", "f", args=(Ref("lw"),), meta=Meta(address="f")),
        Node(
            "out",
            "output",
            "output",
            args=((Ref("total"), Ref("g")),),
            meta=Meta(attrs=(("a", 1),)),
        ),
    ]
    return Graph(nodes, "nested_plates", attrs={"version": 1})


GRAPHS = {
    "eight_schools": eight_schools,
    "kitchen_sink": kitchen_sink,
    "nested_plates": nested_plates,
}


def assert_round_trip(g: Graph) -> str:
    text = print_graph(g)
    g2 = parse(text)
    assert print_graph(g2) == text
    assert graph_diff(g, g2) is None, graph_diff(g, g2)
    return text


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_round_trip_hand_built(name):
    assert_round_trip(GRAPHS[name]())


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_golden(name):
    text = print_graph(GRAPHS[name]()) + "\n"
    path = GOLDEN / f"{name}.ir"
    if os.environ.get("PPL_REGEN_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text
    assert graph_diff(load(path), GRAPHS[name]()) is None


def test_eight_schools_text_reads_well():
    text = str(eight_schools())
    assert text.splitlines() == [
        "graph eight_schools {",
        '  %sigma = input "sigma" : f32[8]',
        '  %y = input "y" : f32[8]',
        '  %mu = sample "mu" Normal(loc=0.0, scale=5.0) : f32[]',
        '  %tau = sample "tau" HalfCauchy(scale=5.0) : f32[]',
        "  %loc = call Tensor.expand(%mu, [8]) : f32[8] plates[schools:8@-1]",
        '  %theta = sample "theta" Normal(loc=%loc, scale=%tau) : f32[8] plates[schools:8@-1]',
        '  %y_1 = observe "y" Normal(loc=%theta, scale=%sigma) = %y : f32[8] plates[schools:8@-1]',
        "  return None",
        "}",
    ]


def test_nodes_equal_except_source_and_data_binding():
    g = eight_schools()
    with_source = g.replace(
        [
            n.replace(
                meta=Meta(
                    n.meta.shape,
                    n.meta.dtype,
                    n.meta.plates,
                    n.meta.address,
                    "model.py:3",
                    n.meta.attrs,
                )
            )
            for n in g.nodes
        ]
    )
    assert str(with_source) == str(g)
    g2 = parse(str(with_source))
    assert g2.nodes == g.nodes and g2.data == {}
    bound = parse(str(g), data={"sigma": g.data["sigma"], "y": torch.zeros(8)})
    assert torch.equal(bound.data["sigma"], g.data["sigma"])
    with pytest.raises(IRError, match="not inputs"):
        parse(str(g), data={"nope": torch.zeros(1)})


def test_values_round_trip_exactly():
    values = [
        0.1,
        1e-300,
        -0.0,
        math.nan,
        math.inf,
        -math.inf,
        2**70,
        -3,
        True,
        None,
        "",
        '\\"',
        (),
        (1,),
        [()],
        [[]],
        {},
        {"a": (1, [2])},
        Ellipsis,
        slice(None),
        slice(Ref("a"), -1, 2),
        torch.float64,
        torch.bool,
        torch.Size([]),
        torch.tensor(True),
        torch.zeros(2, 0, dtype=torch.int64),
        DistSpec("Normal"),
        DistSpec("pkg.Custom", kw(a=DistSpec("Normal", kw(loc=0.0)))),
    ]
    for v in values:
        text = format_value(v)
        g = parse(f'graph g {{\n  %a = input "a"\n  return {text}\n}}')
        back = g.output.args[0]
        assert same_value(back, v), (v, text, back)
        assert format_value(back) == text


def test_constraints_by_name_and_registered_ones():
    assert format_value(constraints.greater_than(0.0)) == "positive"
    assert format_value(constraints.independent(constraints.real, 1)) == "real_vector"
    assert format_value(constraints.interval(0.0, 2.0)) == "interval(0.0, 2.0)"
    assert (
        format_value(constraints.independent(constraints.positive, 1)) == "independent(positive, 1)"
    )

    class Sorted(constraints.Constraint):
        event_dim = 1

        def check(self, value):
            return (value[..., 1:] >= value[..., :-1]).all(-1)

    class AtLeast(constraints.Constraint):
        def __init__(self, k):
            self.k = k
            super().__init__()

    only = Sorted()
    registry.register_constraint("test_sorted", only)
    registry.register_constraint("test_at_least", AtLeast, ("k",))
    try:
        text = format_value([only, AtLeast(3)])
        assert text == "[test_sorted, test_at_least(3)]"
        back = parse(f"graph g {{\n  return {text}\n}}").output.args[0]
        assert back[0] is only and isinstance(back[1], AtLeast) and back[1].k == 3
    finally:
        registry._CONSTRAINTS.pop("test_sorted")
        registry._CONSTRAINTS.pop("test_at_least")
    with pytest.raises(IRError, match="no registered name"):
        format_value(only)
    with pytest.raises(ValueError):
        registry.register_constraint("inf", only)


def test_hand_written_text_with_comments_blank_lines_and_crlf():
    text = (
        "# a model written by hand\r\n\r\n"
        "graph coin {   # header comment\r\n"
        '  %p = sample "p" Beta(concentration1=1.0, concentration0=1.0)\r\n'
        "\r\n"
        "  # observations\r\n"
        '  %y = observe "y" Bernoulli(probs=%p) = tensor([1.0, 0.0, 1.0], f32) : f32[3]\r\n'
        "  return %p\r\n"
        "}\r\n"
    )
    g = parse(text)
    assert [n.kind for n in g] == ["sample", "observe", "output"]
    assert torch.equal(g.site("y").args[0], torch.tensor([1.0, 0.0, 1.0]))
    assert_round_trip(g)


def test_load_reports_the_path(tmp_path):
    path = tmp_path / "bad.ir"
    path.write_text("graph g {\n  %x = call torch.add(1 2)\n  return %x\n}\n")
    with pytest.raises(
        IRError,
        match=r"bad\.ir:2:25: line 2, column 25: unexpected '2'; expected one of: '\)', ','\n",
    ):
        load(path)


def test_unprintable_value_names_the_node():
    b = GraphBuilder("g")
    b.add("call", "ppl.identity", args=(object(),), name="bad")
    b.add("output", "output", args=(None,))
    with pytest.raises(IRError, match="node 'bad'.*no text form"):
        str(b.build())
    b = GraphBuilder("g")
    b.add("call", "ppl.identity", args=(torch.zeros(10_001),), name="big")
    b.add("output", "output", args=(None,))
    with pytest.raises(IRError, match="too large.*input node"):
        str(b.build())


# -- hostile and malformed text ---------------------------------------------------------------
def _stmt(line: str) -> str:
    return f"graph g {{\n  {line}\n  return None\n}}"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            _stmt('%x = call os.system("rm -rf /")'),
            r"line 2, column 13: call target 'os.system' is not an allowed",
        ),
        (_stmt("%x = call Tensor.__class__(1)"), r"'Tensor.__class__' is not an allowed operation"),
        (_stmt("%x = call torch.__builtins__(1)"), r"'torch.__builtins__' is not an allowed"),
        (_stmt("%x = call torch.randn(3)"), r"'torch.randn' is not an allowed"),
        (_stmt('%x = sample "x" __import__(name="os")'), r"family '__import__' is not allowed"),
        (_stmt("%x = call ppl.identity(__import__)"), r"unknown name '__import__'"),
        (_stmt("%x = call ppl.identity(torch.ops)"), r"unknown name 'torch.ops'"),
        (
            _stmt("%x = call ppl.identity(tensor([" + ", ".join(["1.0"] * 10_001) + "], f32))"),
            r"too large",
        ),
        (
            _stmt("%x = call ppl.identity(tensor([" + ", ".join(["[1, 2]"] * 5001) + "], i64))"),
            r"more than 10000 elements",
        ),
        (
            _stmt("%x = call ppl.identity(" + "9" * 1001 + ")"),
            r"number literal of 1001 characters is too long",
        ),
        (_stmt("%x = call ppl.identity(1e999)"), r"out of float range"),
        (_stmt("%x = call ppl.identity(" + "[" * 3000 + "]" * 3000 + ")"), r"nested too deeply"),
        (
            _stmt('%x = frobnicate "x" Normal()'),
            r"line 2, column 8: unknown node kind 'frobnicate'",
        ),
        (
            _stmt("%x = call torch.add(%nope, 1.0)"),
            r"line 2: .*node 'x'.*uses %nope before it is defined",
        ),
        (
            _stmt("%x = call torch.add(1,, 2)"),
            r"line 2, column 25: unexpected ','; expected one of: .*%name",
        ),
        (_stmt("%x = call torch.add(1, $)"), r"line 2, column 26: unexpected character '\$'"),
        (_stmt('%x = sample "a\\q" Normal()'), r"invalid escape sequence"),
        (_stmt("%x = call ppl.identity(Normal(1.0, loc=2.0))"), r"mixes positional and keyword"),
        (_stmt("%x = call ppl.identity(interval(0.0))"), r"constraint 'interval' takes arguments"),
        (_stmt("%x = call ppl.identity(tensor([1, 2], f99))"), r"tensor dtype must be one of"),
        (_stmt("%x = call ppl.identity(tensor([1, [2]], f32))"), r"bad tensor literal"),
        (_stmt("%x = call ppl.identity(-nan)"), r"only allowed in -inf"),
        (_stmt("%x = call ppl.identity(1, a=1, a=2)"), r"keyword 'a' given twice"),
        (_stmt("%x = call ppl.identity(a=1, 2)"), r"positional argument after a keyword"),
        (_stmt('%x = sample "a" Normal() : f32[2.5]'), r"a shape dimension must be an integer"),
        (_stmt('%x = sample "x" Normal()\n  %x = sample "y" Normal()'), r"name defined twice"),
        (
            _stmt('%x = sample "x" Normal()\n  %z = sample "x" Normal()'),
            r"address 'x' already used",
        ),
        ("graph g {\n  %x = call torch.add(1, 2)\n", r"line 2, column 28: unexpected end of input"),
        ("graph g {\n  %x = call torch.add(1, 2)\n}", r"exactly one output node"),
    ],
)
def test_hostile_text_is_refused(text, message):
    with pytest.raises(IRError, match=message):
        parse(text)


def test_syntax_error_shows_the_line_and_a_caret():
    with pytest.raises(IRError) as info:
        parse(_stmt("%x = call torch.add(1 2)"))
    msg = str(info.value)
    assert "<text>:2:25: line 2, column 25: unexpected '2'; expected one of: ')', ','\n" in msg
    assert msg.endswith("  %x = call torch.add(1 2)\n    " + " " * 24 + "^")


# -- hypothesis: random graphs ------------------------------------------------------------------
FAMILIES = ["Normal", "Gamma", "Beta", "Bernoulli", "Categorical", "HalfCauchy"]
CALLS = [  # no constructors: what they allocate must be literal (test_ir_safety.py)
    "torch.add",
    "torch.exp",
    "Tensor.reshape",
    "Tensor.__getitem__",
    "torch.stack",
    "Tensor.sum",
]
PLATES = [
    PlateFrame("a", 3, -1, 3),
    PlateFrame("b", 4, -2, 2),
    PlateFrame("seq", 5, None, 1),
    PlateFrame("odd name", 2, -3, 2),
]
NAMES = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
IDENTS = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
TENSORS = st.one_of(
    st.lists(FLOATS.map(float), max_size=4).map(lambda v: torch.tensor(v, dtype=torch.float32)),
    st.lists(st.integers(-(2**40), 2**40), max_size=4).map(torch.tensor),
    st.lists(st.booleans(), min_size=1, max_size=3).map(lambda v: torch.tensor([v, v])),
    FLOATS.map(lambda v: torch.tensor(v, dtype=torch.float64)),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    FLOATS,
    NAMES,
    st.just(Ellipsis),
    st.sampled_from([torch.float32, torch.int64]),
    st.sampled_from([constraints.positive, constraints.interval(0.0, 1.0), constraints.simplex]),
)


class RefSlot(int):
    """A placeholder leaf, later replaced by a reference to an earlier node (or None)."""


REF_SLOTS = st.integers(0, 50).map(RefSlot)
LITERALS = st.recursive(
    st.one_of(SCALARS, TENSORS, REF_SLOTS),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(IDENTS, inner, max_size=2),
        st.tuples(*[st.none() | st.integers(-9, 9) | REF_SLOTS] * 3).map(lambda p: slice(*p)),
        st.lists(st.tuples(IDENTS, inner), max_size=2, unique_by=lambda t: t[0]).map(
            lambda ps: DistSpec("Normal", tuple(ps))
        ),
    ),
    max_leaves=6,
)


def fill_refs(value, refs: list[str]):
    """Replace each ``RefSlot`` by a ``Ref`` to one of ``refs`` (None when there are none)."""
    if isinstance(value, RefSlot):
        return Ref(refs[value % len(refs)]) if refs else None
    if isinstance(value, DistSpec):
        return DistSpec(value.family, fill_refs(value.params, refs))
    if isinstance(value, slice):
        return slice(*fill_refs([value.start, value.stop, value.step], refs))
    if isinstance(value, list | tuple):
        return type(value)(fill_refs(v, refs) for v in value)
    if isinstance(value, dict):
        return {k: fill_refs(v, refs) for k, v in value.items()}
    return value


def literals(draw, refs: list[str]):
    return fill_refs(draw(LITERALS), refs)


def named_literals(draw, refs: list[str], names, max_size: int) -> tuple:
    pairs = draw(st.lists(st.tuples(names, LITERALS), max_size=max_size, unique_by=lambda t: t[0]))
    return tuple((k, fill_refs(v, refs)) for k, v in pairs)


def agreeing_shape(meta: Meta, kind: str, value) -> Meta:
    """``meta`` with its declared shape made that of a literal observed value (lint checks
    that they agree)."""
    if meta.shape is not None and kind == "observe" and isinstance(value, torch.Tensor):
        return dataclasses.replace(meta, shape=tuple(value.shape))
    return meta


@st.composite
def random_graphs(draw):
    b = GraphBuilder(draw(st.one_of(IDENTS, NAMES)))
    b.attrs.update(dict(named_literals(draw, [], NAMES, 2)))
    refs: list[str] = []
    addresses = draw(st.lists(NAMES, unique=True, min_size=8, max_size=8))
    for i in range(draw(st.integers(1, 8))):
        kind = draw(
            st.sampled_from(["input", "param", "sample", "observe", "factor", "call", "call"])
        )
        meta = Meta(
            shape=draw(st.none() | st.lists(st.integers(0, 5), max_size=3).map(tuple)),
            dtype=draw(
                st.none() | st.sampled_from(["f32", "i64", "bool", "float64", "u8"])
            ),
            plates=tuple(draw(st.lists(st.sampled_from(PLATES), max_size=2, unique=True))),
            attrs=named_literals(draw, refs, NAMES, 2),
        )
        params = named_literals(draw, refs, IDENTS, 3)
        address = addresses[i]
        if kind == "input":
            ref = b.add("input", draw(IDENTS), meta=meta)
        elif kind == "param":
            ref = b.add(
                "param",
                address,
                kwargs=(("constraint", draw(SCALARS)),),
                address=address,
                meta=meta,
            )
        elif kind in ("sample", "observe"):
            args = (literals(draw, refs),) if kind == "observe" else ()
            ref = b.add(
                kind,
                draw(st.sampled_from(FAMILIES)),
                args=args,
                kwargs=params,
                address=address,
                meta=agreeing_shape(meta, kind, args[0] if args else None),
            )
        elif kind == "factor":
            ref = b.add(
                "factor",
                draw(st.sampled_from([address, "lw"])),
                args=(literals(draw, refs),),
                address=address,
                meta=meta,
            )
        else:
            args = tuple(fill_refs(draw(st.lists(LITERALS, max_size=3)), refs))
            ref = b.add(
                "call",
                draw(st.sampled_from(CALLS)),
                args=args,
                kwargs=params,
                address=draw(st.none() | st.just(address)),
                meta=meta,
            )
        refs.append(ref.name)
    b.add("output", "output", args=(literals(draw, refs),))
    return b.build()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_random_graphs_round_trip(g):
    assert_round_trip(g)


def test_traced_models_round_trip_and_run_from_text():
    """Traced graphs print, parse back, and the parsed graph computes the same log density."""
    D = pytest.importorskip("ppl.stdlib")
    from ppl import deterministic, model, plate, sample
    from ppl.ir import compile_log_density, trace_graph

    @model
    def regression(x, y):
        w = sample("w", D.Normal(torch.zeros(2), 1.0).to_event(1))
        s = sample("s", D.HalfCauchy(1.0))
        with plate("data", x.shape[0]):
            sample("y", D.Normal(x @ w, s), obs=y)
        return deterministic("w_norm", w.norm())

    x, y = torch.randn(5, 2), torch.randn(5)
    g = trace_graph(regression, x, y)
    text = assert_round_trip(g)
    g2 = parse(text, data=g.data)
    latents = {"w": torch.tensor([0.3, -1.2]), "s": torch.tensor(0.7)}
    assert torch.equal(compile_log_density(g2)(latents), compile_log_density(g)(latents))
