"""The passes are ppl core: they import neither ``ppl.stdlib`` nor ``ppl.inference``."""

import ast
from pathlib import Path

import ppl.passes

FORBIDDEN = ("ppl.stdlib", "ppl.inference", "stdlib", "inference")


def test_pass_modules_do_not_import_stdlib_or_inference():
    for path in Path(ppl.passes.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"


def test_public_api():
    for name in (
        "run",
        "apply_user_passes",
        "condition",
        "do",
        "unconstrain",
        "noncenter",
        "simplify",
        "temper",
        "enumerate_discrete",
        "latent_transforms",
        "posterior_of_enumerated",
    ):
        assert hasattr(ppl.passes, name), name
