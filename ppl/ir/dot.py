"""Graphviz DOT rendering of a graph's random sites, with plates as (nested) clusters.

Random sites are nodes labelled with their address and family (observed sites shaded,
factors as boxes); an edge ``u -> v`` when ``v`` depends on ``u`` (``ppl.ir.analysis``).
Each plate is a ``subgraph cluster_<plate>`` labelled ``name (size)``; a plate whose sites
all sit in another plate is drawn inside it. A site in two crossing plates is drawn in the
deeper one, the other named in its label. ``all_sites=True`` adds param sites (boxes) and
deterministic sites (dashed). A loop (``ppl.scan``) is drawn unrolled, one node per ``x[t]``.

    >>> from ppl.ir import GraphBuilder
    >>> b = GraphBuilder("m")
    >>> mu = b.add("sample", "Normal", kwargs=(("loc", 0.0), ("scale", 1.0)), address="mu")
    >>> _ = b.add("observe", "Normal", args=(0.5,), kwargs=(("loc", mu), ("scale", 1.0)),
    ...           address="y")
    >>> _ = b.add("output", "output", args=(None,))
    >>> print(to_dot(b.build()))
    digraph "m" {
      node [shape=ellipse];
      "mu" [label="mu\\nNormal"];
      "y" [label="y\\nNormal", style=filled, fillcolor=gray80];
      "mu" -> "y";
    }
"""

from __future__ import annotations

import re

from .analysis import _dags, _is_site, on_unrolled, plate_structure

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def dot_string(s: str) -> str:
    """A double-quoted DOT string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _cluster_id(plate: str) -> str:
    name = "cluster_" + plate
    return name if _IDENT.match(name) else dot_string(name)


def _style(attrs: dict, extra_plates: list[str]) -> str:
    label = attrs["label_address"]
    if attrs["kind"] not in ("param", "deterministic", "factor"):
        label += "\n" + attrs["family"]
    if extra_plates:
        label += "\n[" + ", ".join(extra_plates) + "]"
    parts = [f"label={dot_string(label)}"]
    kind = attrs["kind"]
    if kind == "observe":
        parts += ["style=filled", "fillcolor=gray80"]
    elif kind == "factor":
        parts += ["shape=box"]
    elif kind == "param":
        parts += ["shape=box", "style=rounded"]
    elif kind == "deterministic":
        parts += ["style=dashed"]
    return "[" + ", ".join(parts) + "]"


@on_unrolled
def to_dot(graph, *, all_sites: bool = False) -> str:
    """DOT text for ``graph`` (see the module docstring)."""
    sites_dag, random_dag = _dags(graph)
    dag = sites_dag if all_sites else random_dag
    plates = plate_structure(graph)

    def depth(p: str) -> int:
        d = 0
        while plates[p]["parent"] is not None:
            p, d = plates[p]["parent"], d + 1
        return d

    placed: dict[str | None, list[str]] = {None: []}
    lines_for: dict[str, str] = {}
    for node in graph.nodes:
        if not _is_site(node) or node.address not in dag:
            continue
        names = [f.name for f in node.meta.plates]
        home = max(names, key=depth) if names else None
        enclosing, p = set(), home
        while p is not None:
            enclosing.add(p)
            p = plates[p]["parent"]
        attrs = dict(dag.nodes[node.address], label_address=node.address)
        lines_for[node.address] = (
            f"{dot_string(node.address)} {_style(attrs, [n for n in names if n not in enclosing])};"
        )
        placed.setdefault(home, []).append(node.address)

    children: dict[str | None, list[str]] = {}
    for p, entry in plates.items():
        children.setdefault(entry["parent"], []).append(p)

    def nonempty(p: str) -> bool:
        return bool(placed.get(p)) or any(nonempty(c) for c in children.get(p, ()))

    out = [f"digraph {dot_string(graph.name)} {{", "  node [shape=ellipse];"]

    def emit(p: str | None, indent: str) -> None:
        for address in placed.get(p, ()):
            out.append(indent + lines_for[address])
        for c in children.get(p, ()):
            if not nonempty(c):
                continue
            entry = plates[c]
            size = entry["size"]
            if entry["subsample_size"] != size and entry["dim"] is not None:
                size = f"{entry['subsample_size']}/{size}"
            out.append(f"{indent}subgraph {_cluster_id(c)} {{")
            out.append(f"{indent}  label={dot_string(f'{c} ({size})')};")
            out.append(f"{indent}  labeljust=r; labelloc=b; style=rounded;")
            emit(c, indent + "  ")
            out.append(indent + "}")

    emit(None, "  ")
    for u, v in dag.edges:
        out.append(f"  {dot_string(u)} -> {dot_string(v)};")
    out.append("}")
    return "\n".join(out)


__all__ = ["to_dot", "dot_string"]
