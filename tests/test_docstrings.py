"""Every module's docstring examples run (DESIGN: a module starts with a runnable example)."""

import doctest
import importlib
import pkgutil

import pytest

import ppl
import ppl.inference
import ppl.stdlib

# ppl.stdlib and ppl.inference live in their own folders (pyproject's package-dir), so each
# package is walked from its own path.
MODULES = sorted(
    {
        info.name
        for package in (ppl, ppl.stdlib, ppl.inference)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
    }
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
