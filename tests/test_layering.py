"""Layering and packaging: ``ppl`` core imports neither ``stdlib`` nor ``inference``,
``stdlib`` does not import ``inference``, and pyproject.toml lists every package.

Imports are read with ``ast`` (absolute, relative, and ``importlib.import_module("...")``
calls with a literal name), so code is never executed and lazy imports inside functions
count too.
"""

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder -> installed package name (the package-dir mapping of pyproject.toml)
SOURCES = {"ppl": "ppl", "stdlib": "ppl.stdlib", "inference": "ppl.inference"}
TOP_LEVEL_ALIASES = {"stdlib": "ppl.stdlib", "inference": "ppl.inference"}


def module_name(path: Path) -> tuple[str, bool]:
    """Installed dotted name of a source file, and whether it is a package ``__init__``."""
    rel = path.relative_to(ROOT)
    parts = [SOURCES[rel.parts[0]], *rel.parts[1:-1]]
    is_package = path.name == "__init__.py"
    if not is_package:
        parts.append(path.stem)
    return ".".join(parts), is_package


def canonical(module: str) -> str:
    """``stdlib.x`` and ``inference.x`` (the source folders) name ``ppl.stdlib.x`` etc."""
    head, dot, rest = module.partition(".")
    return TOP_LEVEL_ALIASES[head] + dot + rest if head in TOP_LEVEL_ALIASES else module


def imported_modules(path: Path, text: str | None = None) -> set[str]:
    """Every module a file imports, as absolute installed names (``from a import b`` gives
    both ``a`` and ``a.b``, since ``b`` may be a submodule)."""
    name, is_package = module_name(path)
    package = name if is_package else name.rpartition(".")[0]
    text = path.read_text() if text is None else text
    found: set[str] = set()
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value)
    return {canonical(m) for m in found}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def violations(folder: str, forbidden: tuple[str, ...], skip: tuple[Path, ...] = ()) -> list[str]:
    out = []
    for path in sources(folder):
        if path in skip:
            continue
        for module in sorted(imported_modules(path)):
            if any(within(module, f) for f in forbidden):
                out.append(f"{path.relative_to(ROOT)} imports {module}")
    return out


def test_the_import_reader_resolves_relative_and_aliased_imports():
    fake = ROOT / "ppl" / "ir" / "probe.py"
    source = (
        "from ..stdlib import Normal\n"
        "from .. import inference\n"
        "import stdlib.base\n"
        "def f():\n"
        "    import importlib\n"
        "    importlib.import_module('ppl.inference.mcmc')\n"
    )
    found = imported_modules(fake, source)
    assert {"ppl.stdlib", "ppl.inference", "ppl.stdlib.base", "ppl.inference.mcmc"} <= found
    assert module_name(ROOT / "stdlib" / "__init__.py") == ("ppl.stdlib", True)
    in_stdlib = ROOT / "stdlib" / "base.py"
    assert "ppl.inference" in imported_modules(in_stdlib, "from ..inference import x")
    assert "ppl.inference" not in imported_modules(in_stdlib, "from .inference import x")


def test_ppl_core_imports_neither_stdlib_nor_inference():
    assert sources("ppl"), "no sources found"
    bad = violations("ppl", ("ppl.stdlib", "ppl.inference"), skip=(ROOT / "ppl" / "__init__.py",))
    assert not bad, "the core must not depend on stdlib or inference:\n" + "\n".join(bad)


def test_stdlib_does_not_import_inference():
    assert sources("stdlib"), "no sources found"
    bad = violations("stdlib", ("ppl.inference",))
    assert not bad, "stdlib must not depend on inference:\n" + "\n".join(bad)


@pytest.fixture(scope="module")
def setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_package_dir_maps_the_three_source_folders(setuptools_config):
    assert setuptools_config["package-dir"] == {v: k for k, v in SOURCES.items()}


def test_packages_list_covers_every_package_directory(setuptools_config):
    on_disk = set()
    for folder, package in SOURCES.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join([package, *rel.parts]))
    listed = set(setuptools_config["packages"])
    assert not on_disk - listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert not listed - on_disk, f"listed but missing on disk: {sorted(listed - on_disk)}"


# -- the engines' folders inside ppl.inference -----------------------------------------------
# Each folder of ``inference/`` and what it may import (besides ppl core and stdlib). Lowering
# and results serve every engine and import none; engines never import each other, except
# that SMC may move particles with MCMC kernels.
ENGINE_LAYERS: dict[str, set[str]] = {
    "ppl.inference.rng": set(),
    "ppl.inference.results": set(),
    "ppl.inference.lowering": set(),
    "ppl.inference.mcmc": {"ppl.inference.rng", "ppl.inference.lowering", "ppl.inference.results"},
    "ppl.inference.mcmc.gibbs": {"ppl.inference.mcmc", "ppl.inference.rng",
                                 "ppl.inference.lowering", "ppl.inference.results"},
    "ppl.inference.smc": {"ppl.inference.mcmc", "ppl.inference.rng", "ppl.inference.lowering",
                          "ppl.inference.results"},
    "ppl.inference.vi": {"ppl.inference.rng", "ppl.inference.lowering", "ppl.inference.results"},
    "ppl.inference.testing": {"ppl.inference.results"},
    "ppl.inference.gallery": {"ppl.inference.results"},
}


def layer_of(module: str) -> str | None:
    """The most specific declared layer that ``module`` belongs to."""
    owners = [layer for layer in ENGINE_LAYERS if within(module, layer)]
    return max(owners, key=len) if owners else None


def module_imports() -> dict[str, set[str]]:
    """Installed name of every ``inference/`` module -> the inference modules it imports."""
    graph = {}
    for path in sources("inference"):
        name, _ = module_name(path)
        graph[name] = {m for m in imported_modules(path) if within(m, "ppl.inference")}
    return graph


def test_every_inference_module_lies_in_a_declared_layer():
    undeclared = sorted(m for m in module_imports() if m != "ppl.inference" and not layer_of(m))
    assert not undeclared, f"declare a layer in ENGINE_LAYERS for: {undeclared}"


def test_engine_layers_import_only_what_they_may():
    bad = []
    for module, imports in module_imports().items():
        own = layer_of(module)
        if own is None:  # ppl.inference itself re-exports the public API
            continue
        for target in imports:
            layer = layer_of(target)
            if layer is not None and layer != own and layer not in ENGINE_LAYERS[own]:
                bad.append(f"{module} imports {target} ({own} may not import {layer})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles_between_layers_or_modules():
    import networkx as nx

    modules = module_imports()
    graph = nx.DiGraph()
    for module, imports in modules.items():
        for target in imports:
            # ``from . import x`` names the enclosing package: not an import of its __init__
            if target in modules and not within(module, target):
                graph.add_edge(module, target)
    layers = nx.DiGraph()
    layers.add_edges_from(
        (layer_of(a), layer_of(b)) for a, b in graph.edges
        if layer_of(a) and layer_of(b) and layer_of(a) != layer_of(b)
    )
    assert nx.is_directed_acyclic_graph(layers), nx.find_cycle(layers)
    assert nx.is_directed_acyclic_graph(graph), nx.find_cycle(graph)
