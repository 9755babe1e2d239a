"""networkx analysis of hand-built graphs with known structure, and their DOT rendering."""

import networkx as nx
import pytest
from torch.distributions import constraints

from ppl.ir import Graph, GraphBuilder, IRError, Meta
from ppl.ir.analysis import (
    ancestors,
    d_separated,
    descendants,
    markov_blanket,
    plate_structure,
    random_dag,
    to_networkx,
    topological_sites,
)
from ppl.ir.dot import to_dot
from ppl.runtime import PlateFrame


def normal(b: GraphBuilder, address: str, loc=0.0, scale=1.0, kind="sample", value=0.0, plates=()):
    args = (value,) if kind == "observe" else ()
    return b.add(
        kind,
        "Normal",
        args=args,
        kwargs=(("loc", loc), ("scale", scale)),
        address=address,
        meta=Meta(shape=(), dtype="f32", plates=plates),
    )


def finish(b: GraphBuilder) -> Graph:
    b.add("output", "output", args=(None,))
    return b.build()


def v_structure() -> Graph:
    """a -> c <- b, with the dependence going through call nodes."""
    b = GraphBuilder("v")
    a, c = normal(b, "a"), normal(b, "b")
    s = b.add("call", "torch.add", args=(a, c))
    e = b.add("call", "torch.exp", args=(s,))
    normal(b, "c", loc=e)
    return finish(b)


def chain() -> Graph:
    b = GraphBuilder("chain")
    a = normal(b, "a")
    m = normal(b, "m", loc=b.add("call", "torch.mul", args=(a, 2.0)))
    normal(b, "z", loc=m, kind="observe")
    return finish(b)


def blanket_graph() -> Graph:
    """p1, p2 -> x;  x, q -> child;  x -> child2 -> grandchild;  unrelated u."""
    b = GraphBuilder("blanket")
    p1, p2, q, u = normal(b, "p1"), normal(b, "p2"), normal(b, "q"), normal(b, "u")
    x = normal(b, "x", loc=p1, scale=b.add("call", "torch.exp", args=(p2,)))
    normal(b, "child", loc=b.add("call", "torch.add", args=(x, q)), kind="observe")
    c2 = normal(b, "child2", loc=x)
    normal(b, "grandchild", loc=c2, kind="observe")
    b.add("factor", "f", args=(b.add("call", "torch.mul", args=(u, u)),), address="f")
    return finish(b)


def test_v_structure_d_separation():
    g = v_structure()
    assert d_separated(g, "a", "b")
    assert not d_separated(g, "a", "b", given="c")
    assert not d_separated(g, ["a"], ["b"], given=["c"])
    assert g.d_separated({"a"}, {"b"})
    assert set(to_networkx(g).edges) == {("a", "c"), ("b", "c")}
    assert markov_blanket(g, "a") == {"b", "c"}


def test_chain():
    g = chain()
    assert not d_separated(g, "a", "z")
    assert d_separated(g, "a", "z", given="m")
    assert ancestors(g, "z") == {"a", "m"} and g.ancestors("m") == {"a"}
    assert descendants(g, "a") == {"m", "z"} and g.descendants("z") == set()
    assert g.markov_blanket("m") == {"a", "z"}


def test_markov_blanket_parents_children_coparents():
    g = blanket_graph()
    assert markov_blanket(g, "x") == {"p1", "p2", "child", "q", "child2"}
    assert markov_blanket(g, "q") == {"child", "x"}
    assert markov_blanket(g, "u") == {"f"} and markov_blanket(g, "f") == {"u"}
    assert d_separated(g, "p1", "p2") and not d_separated(g, "p1", "p2", given="grandchild")
    assert d_separated(g, "p1", "grandchild", given="x")


def test_topological_order_is_graph_order():
    g = blanket_graph()
    order = topological_sites(g)
    assert order == ["p1", "p2", "q", "u", "x", "child", "child2", "grandchild", "f"]
    assert order == g.topological_sites()
    assert list(nx.topological_sort(random_dag(g)))  # a DAG
    pos = {a: i for i, a in enumerate(order)}
    assert all(pos[u] < pos[v] for u, v in random_dag(g).edges)


def test_node_attributes_and_non_random_sites():
    b = GraphBuilder("attrs")
    data = b.add("input", "data", meta=Meta(shape=(3,), dtype="f32"))
    w = b.add("param", "w", kwargs=(("constraint", constraints.positive),), address="w")
    a = normal(b, "a", scale=w, plates=(PlateFrame("p", 3, -1, 3),))
    d = b.add(
        "call", "ppl.identity", args=(b.add("call", "torch.mul", args=(a, data)),), address="d"
    )
    normal(b, "y", loc=d, kind="observe", value=data)
    g = finish(b)
    G = g.to_networkx()
    assert set(G.nodes) == {"w", "a", "d", "y"}
    assert set(G.edges) == {("w", "a"), ("a", "d"), ("d", "y")}
    assert G.nodes["a"]["kind"] == "sample" and G.nodes["a"]["family"] == "Normal"
    assert G.nodes["a"]["plates"] == ("p",) and G.nodes["a"]["shape"] == ()
    assert G.nodes["d"]["kind"] == "deterministic" and G.nodes["w"]["kind"] == "param"
    assert G.nodes["y"]["observed"] and not G.nodes["a"]["observed"]
    assert set(random_dag(g).edges) == {("a", "y")}  # seen through the deterministic site
    assert ancestors(g, "y") == {"a"} and descendants(g, "w") == {"a", "y"}
    assert d_separated(g, "a", "y", given="d") and not d_separated(g, "a", "y")
    with pytest.raises(IRError, match="Markov blanket is asked of a random site"):
        markov_blanket(g, "d")
    G.add_edge("y", "w")  # a copy: the graph's cached DAG is unchanged
    assert ("y", "w") not in to_networkx(g).edges


def test_observed_value_and_broadcast_projection_dependencies():
    b = GraphBuilder("proj")
    a, s = normal(b, "a"), normal(b, "s")
    bt = b.add("call", "torch.broadcast_tensors", args=(a, s))
    loc = b.add("call", "ppl.getitem", args=(bt, 0))
    scale = b.add("call", "ppl.getitem", args=(bt, 1))
    normal(b, "x", loc=loc, scale=1.0)
    normal(
        b, "y", loc=0.0, scale=scale, kind="observe", value=b.add("call", "torch.exp", args=(a,))
    )
    g = finish(b)
    assert random_dag(g).has_edge("a", "x") and not random_dag(g).has_edge("s", "x")
    assert set(random_dag(g).predecessors("y")) == {"a", "s"}  # scale and observed value


def test_errors_name_the_problem():
    g = chain()
    with pytest.raises(IRError, match="no site 'nope'"):
        ancestors(g, "nope")
    with pytest.raises(IRError, match="must be disjoint"):
        d_separated(g, "a", "a")


def nested() -> Graph:
    outer, inner = PlateFrame("groups", 3, -2, 3), PlateFrame("items", 5, -1, 5)
    b = GraphBuilder("nested")
    top = normal(b, "top")
    g = normal(b, "g", loc=top, plates=(outer,))
    h = normal(b, "h", loc=g, plates=(outer, inner))
    normal(b, "obs", loc=h, kind="observe", plates=(outer, inner))
    t = PlateFrame("t", 2, None, 1)
    normal(b, "t0", plates=(t,))
    normal(b, "sub", plates=(PlateFrame("data", 100, -1, 10),))
    return finish(b)


def test_plate_structure():
    p = plate_structure(nested())
    assert p == {
        "groups": {
            "size": 3,
            "dim": -2,
            "subsample_size": 3,
            "sites": ["g", "h", "obs"],
            "parent": None,
        },
        "items": {
            "size": 5,
            "dim": -1,
            "subsample_size": 5,
            "sites": ["h", "obs"],
            "parent": "groups",
        },
        "t": {"size": 2, "dim": None, "subsample_size": 1, "sites": ["t0"], "parent": None},
        "data": {"size": 100, "dim": -1, "subsample_size": 10, "sites": ["sub"], "parent": None},
    }
    assert nested().plates() == p


def test_conflicting_plate_frames_are_reported():
    b = GraphBuilder("bad")
    normal(b, "a", plates=(PlateFrame("p", 3, -1, 3),))
    normal(b, "b", plates=(PlateFrame("p", 4, -1, 4),))
    with pytest.raises(IRError, match="plate 'p' is .* at node 'a' but .* at node 'b'"):
        plate_structure(finish(b))


def test_dot_has_nested_clusters_edges_and_shading():
    dot = to_dot(nested())
    assert dot == nested().to_dot()
    lines = dot.splitlines()
    assert lines[0] == 'digraph "nested" {'
    start = lines.index("  subgraph cluster_groups {")
    inner = lines.index("    subgraph cluster_items {")
    assert start < lines.index('    "g" [label="g\\nNormal"];') < inner
    assert inner < lines.index(
        '      "obs" [label="obs\\nNormal", style=filled, fillcolor=gray80];'
    )
    assert '    label="groups (3)";' in lines and '      label="items (5)";' in lines
    assert '    label="data (10/100)";' in lines and "  subgraph cluster_t {" in lines
    for edge in ('"top" -> "g"', '"g" -> "h"', '"h" -> "obs"'):
        assert f"  {edge};" in lines
    assert dot.count("{") == dot.count("}")


def test_dot_crossed_plates_quoting_and_all_sites():
    rows, cols = PlateFrame("rows", 2, -2, 2), PlateFrame("my cols", 3, -1, 3)
    b = GraphBuilder('q"uote')
    r = normal(b, "r", plates=(rows,))
    c = normal(b, 'c"1', plates=(cols,))
    w = b.add("param", "w", address="w")
    normal(
        b,
        "x",
        loc=b.add("call", "torch.add", args=(r, c)),
        scale=w,
        kind="observe",
        plates=(rows, cols),
    )
    g = finish(b)
    dot = to_dot(g)
    assert dot.startswith('digraph "q\\"uote" {')
    assert 'subgraph "cluster_my cols" {' in dot and "subgraph cluster_rows {" in dot
    assert '"c\\"1" -> "x";' in dot
    assert "[rows]" in dot or "[my cols]" in dot  # the crossing plate is named in the label
    assert '"w"' not in dot
    full = to_dot(g, all_sites=True)
    assert '"w" [label="w", shape=box, style=rounded];' in full and '"w" -> "x";' in full
