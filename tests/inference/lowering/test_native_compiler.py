"""Compiling and caching the native libraries, and the fallback without a compiler."""

from __future__ import annotations

import pytest
import torch

from ppl import model, plate, sample
from ppl.inference.lowering.flat import FlatModel
from ppl.inference.lowering.native import compiler
from ppl.inference.lowering.native.compiler import CompileError, Unit, compile_library
from ppl.stdlib import HalfNormal, Normal

needs_cc = pytest.mark.skipif(not compiler.compiler_available(), reason="no C compiler")


@model
def scale_model():
    s = sample("s", HalfNormal(1.0))
    with plate("N", 2):
        sample("y", Normal(0.0, s), obs=torch.tensor([0.3, -1.2]))


@needs_cc
def test_a_library_is_built_once_and_then_loaded_from_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path))
    source = Unit("double ppl_test_twice(double x) { return 2 * x; }")
    first = compile_library(source)
    assert compile_library(source) is first  # in memory
    built = list(tmp_path.glob("ppl_*.so"))
    assert len(built) == 1
    compiler._LOADED.clear()
    mtime = built[0].stat().st_mtime_ns
    compile_library(source)  # from disk: not rebuilt
    assert built[0].stat().st_mtime_ns == mtime


@needs_cc
def test_rejected_code_raises_with_the_compilers_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path))
    with pytest.raises(CompileError, match="undeclared|error"):
        compile_library(Unit("double broken(void) { return missing; }"))


def test_without_a_compiler_the_torch_potential_runs(monkeypatch):
    monkeypatch.setattr(compiler, "compiler", lambda: None)
    flat = FlatModel.from_graph(scale_model.graph())
    assert flat.backend == "generated"
    assert "compiler" in flat.fallback_reason
    log_p, grad = flat.potential(torch.zeros(2, flat.dim, dtype=torch.float64))
    ref_log_p, ref_grad = flat.autograd_log_density_and_grad(torch.zeros(2, flat.dim))
    torch.testing.assert_close(log_p, ref_log_p)
    torch.testing.assert_close(grad, ref_grad)
    with pytest.raises(Exception, match="compiler"):
        FlatModel.from_graph(scale_model.graph(), backend="native")


@needs_cc
def test_models_sharing_a_library_keep_their_own_data_across_threads():
    """Same structure, different data: one compiled library, yet each model reads its own
    constants, also when both are evaluated from different threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    @model
    def regression(y):
        loc = sample("loc", Normal(0.0, 1.0))
        with plate("N", 3):
            sample("y", Normal(loc, 1.0), obs=y)

    flats = [FlatModel.from_graph(regression.graph(torch.tensor(y)))
             for y in ([0.0, 1.0, 2.0], [5.0, -3.0, 9.0])]
    z = torch.linspace(-2, 2, 50, dtype=torch.float64).unsqueeze(-1)
    expected = [flat.autograd_log_density_and_grad(z) for flat in flats]
    for flat in flats:
        flat.potential(z)
    assert flats[0].native._library is flats[1].native._library

    def evaluate(i: int):
        return [flats[i].potential(z) for _ in range(200)]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(evaluate, [0, 1]))
    for got, (log_p, grad) in zip(results, expected, strict=True):
        for value in got:
            torch.testing.assert_close(value[0], log_p)
            torch.testing.assert_close(value[1], grad)
