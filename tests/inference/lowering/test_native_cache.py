"""The native library cache loads only code that is the user's own and intact, and heals itself.

Tests run as root, so ``os.chown`` can hand a planted file to another uid. A library path is
never loaded twice in one process (glibc would hand back the first handle and hide what the
second load did), so every case uses cache directories of its own.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

from ppl import infer, model, plate, sample
from ppl.inference import NUTS, ConvergenceWarning, FastPathWarning
from ppl.inference.lowering.native import cache, compiler
from ppl.inference.lowering.native.cache import CacheWarning
from ppl.inference.lowering.native.compiler import Unit, compile_library, library_path
from ppl.stdlib import HalfNormal, Normal

pytestmark = pytest.mark.skipif(not compiler.compiler_available(), reason="no C compiler")

TWICE = Unit("double ppl_test_twice(double x) { return 2 * x; }")
OTHER_UID = 4242


def planted_library(tmp_path: Path, marker: Path) -> Path:
    """A library another user might leave: same symbol, wrong answer, and a constructor that
    leaves ``marker`` behind if the library is ever loaded."""
    src, out = tmp_path / "planted.c", tmp_path / "planted.so"
    src.write_text(textwrap.dedent(f"""
        #include <stdio.h>
        __attribute__((constructor)) static void planted(void) {{
            FILE *f = fopen("{marker}", "w"); if (f) fclose(f);
        }}
        double ppl_test_twice(double x) {{ return -1.0; }}
    """))
    subprocess.run([compiler.compiler(), "-shared", "-fPIC", str(src), "-o", str(out)], check=True)
    return out


def twice(library: ctypes.CDLL, x: float) -> float:
    fn = library.ppl_test_twice
    fn.restype, fn.argtypes = ctypes.c_double, [ctypes.c_double]
    return fn(x)


def use_cache(monkeypatch, directory: Path) -> None:
    monkeypatch.setenv("PPL_CACHE_DIR", str(directory))
    compiler._LOADED.clear()


def test_the_cache_directory_is_created_private(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "a" / "b")
    target = library_path(TWICE)
    assert target.parent == tmp_path / "a" / "b"
    for directory in (tmp_path / "a", tmp_path / "a" / "b"):
        assert directory.stat().st_mode & 0o777 == 0o700


def test_a_planted_library_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "cache")
    marker = tmp_path / "planted-code-ran"
    target = library_path(TWICE)
    shutil.copy(planted_library(tmp_path, marker), target)
    cache.install(Path(shutil.copy(target, tmp_path / "copy.so")), target)  # hash recorded too
    for path in (target, target.with_suffix(".sha256")):
        os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.warns(CacheWarning, match=f"owned by uid {OTHER_UID}"):
        library = compile_library(TWICE)
    assert not marker.exists()
    assert twice(library, 1.5) == 3.0
    assert target.stat().st_uid == os.geteuid()


@pytest.mark.parametrize("mode", [0o770, 0o707])
def test_a_cache_directory_writable_by_group_or_others_is_not_used(tmp_path, monkeypatch, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    marker = tmp_path / "planted-code-ran"
    use_cache(monkeypatch, shared)
    with pytest.warns(CacheWarning, match="writable by group or others"):
        target = library_path(TWICE)
    assert target.parent != shared
    shutil.copy(planted_library(tmp_path, marker), shared / target.name)
    with pytest.warns(CacheWarning, match="private temporary directory"):
        library = compile_library(TWICE)
    assert twice(library, 2.0) == 4.0
    assert not marker.exists()
    assert not list(shared.glob("*.sha256"))


def test_a_cache_directory_owned_by_another_user_is_not_used(tmp_path, monkeypatch):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    use_cache(monkeypatch, theirs)
    with pytest.warns(CacheWarning, match=f"owned by uid {OTHER_UID}"):
        assert library_path(TWICE).parent != theirs


def test_a_library_whose_bytes_differ_from_its_recorded_hash_is_rebuilt(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "first")
    built = library_path(TWICE)
    compile_library(TWICE)
    use_cache(monkeypatch, tmp_path / "second")  # a path this process never loaded
    shutil.copytree(built.parent, tmp_path / "second", dirs_exist_ok=True)
    target = library_path(TWICE)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.warns(CacheWarning, match="differ from the hash recorded"):
        compile_library(TWICE)
    assert cache.problem(target) is None


def test_a_library_that_hashes_as_recorded_but_does_not_load_is_rebuilt(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "cache")
    target = library_path(TWICE)
    garbage = tmp_path / "garbage.so"
    garbage.write_bytes(b"not a shared object")
    cache.install(garbage, target)
    assert cache.problem(target) is None
    with pytest.warns(CacheWarning, match="did not load"):
        library = compile_library(TWICE)
    assert twice(library, 0.25) == 0.5


def test_a_library_an_older_ppl_built_without_a_hash_is_rebuilt_quietly(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "first")
    built = library_path(TWICE)
    compile_library(TWICE)
    built.with_suffix(".sha256").unlink()
    use_cache(monkeypatch, tmp_path / "second")
    shutil.copytree(built.parent, tmp_path / "second", dirs_exist_ok=True)
    target = library_path(TWICE)
    assert cache.problem(target) == cache.UNRECORDED
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        compile_library(TWICE)
    assert cache.problem(target) is None


def test_stale_build_directories_are_removed_and_fresh_ones_kept(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "cache")
    target = library_path(TWICE)
    stale, fresh = (target.parent / f"ppl-build-{name}" for name in ("stale", "fresh"))
    for directory in (stale, fresh):
        directory.mkdir()
        (directory / "unit0.o").write_bytes(b"partial")
    old = time.time() - cache.STALE_BUILD_SECONDS - 60
    os.utime(stale, (old, old))
    compile_library(TWICE)
    assert not stale.exists() and fresh.exists()
    assert [p.name for p in target.parent.glob("ppl-build-*")] == ["ppl-build-fresh"]


def sample_scale_model() -> torch.Tensor:
    """NUTS on a fresh model (a model keeps its compiled potential once built)."""

    @model
    def scale_model():
        s = sample("s", HalfNormal(1.0))
        with plate("N", 2):
            sample("y", Normal(0.0, s), obs=torch.tensor([0.3, -1.2]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # short runs
        post = infer(scale_model, method=NUTS(num_warmup=30, num_samples=30, chains=1), seed=0)
    assert post.extra["backend"] == "native"
    return post.samples["s"]


DAMAGE = {
    "empty": lambda data: b"",
    "garbage": lambda data: b"\x7fELF not really a library" * 100,
    "truncated": lambda data: data[: len(data) // 2],
}


def damaged_cache(tmp_path: Path, monkeypatch, damage: str) -> Path:
    """A copy of a good cache of the scale model's libraries, each one then damaged."""
    use_cache(monkeypatch, tmp_path / "good")
    sample_scale_model()
    shutil.copytree(tmp_path / "good", tmp_path / "damaged")
    libraries = list((tmp_path / "damaged").glob("ppl_*.so"))
    assert libraries
    for library in libraries:
        library.write_bytes(DAMAGE[damage](library.read_bytes()))
    use_cache(monkeypatch, tmp_path / "damaged")
    return tmp_path / "damaged"


@pytest.mark.parametrize("damage", ["empty", "garbage"])
def test_an_empty_or_garbage_cached_library_is_rebuilt_and_the_model_samples(
        tmp_path, monkeypatch, damage):
    directory = damaged_cache(tmp_path, monkeypatch, damage)
    with pytest.warns(CacheWarning, match="rebuilding"):
        draws = sample_scale_model()
    assert draws.shape == (1, 30) and bool(torch.isfinite(draws).all())
    assert all(cache.problem(p) is None for p in directory.glob("ppl_*.so"))


SAMPLE_IN_A_FRESH_PROCESS = """
import torch
from ppl import infer, model, plate, sample
from ppl.inference import NUTS, ConvergenceWarning, FastPathWarning
from ppl.stdlib import HalfNormal, Normal

@model
def scale_model():
    s = sample("s", HalfNormal(1.0))
    with plate("N", 2):
        sample("y", Normal(0.0, s), obs=torch.tensor([0.3, -1.2]))

post = infer(scale_model, method=NUTS(num_warmup=30, num_samples=30, chains=1), seed=0)
assert post.extra["backend"] == "native"
print("sampled", tuple(post.samples["s"].shape))
"""


def test_a_truncated_cached_library_is_rebuilt_instead_of_crashing_python(tmp_path, monkeypatch):
    """A truncated library maps past the end of its file: loading it used to kill the process
    with SIGBUS, so the run happens in a child process."""
    directory = damaged_cache(tmp_path, monkeypatch, "truncated")
    child = subprocess.run([sys.executable, "-c", SAMPLE_IN_A_FRESH_PROCESS],
                           env={**os.environ, "PPL_CACHE_DIR": str(directory)},
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    assert "sampled (1, 30)" in child.stdout
    assert "CacheWarning" in child.stderr and "rebuilding" in child.stderr
    assert all(cache.problem(p) is None for p in directory.glob("ppl_*.so"))


def test_a_library_sharing_a_unit_with_another_compiles_only_what_is_new(tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path / "native"))
    helper = Unit("double ppl_test_plus_one(double x) { return x + 1; }", ("-O1",))
    compile_library(TWICE)
    compiled: list[list[str]] = []
    run = compiler._run

    def counting(command):
        if "-c" in command:
            compiled.append(command)
        return run(command)

    monkeypatch.setattr(compiler, "_run", counting)
    library = compile_library(TWICE, helper)
    assert len(compiled) == 1 and "-O1" in compiled[0]  # TWICE's object came from the cache
    library.ppl_test_plus_one.restype = ctypes.c_double
    library.ppl_test_plus_one.argtypes = [ctypes.c_double]
    assert library.ppl_test_plus_one(2.0) == 3.0


def test_an_invalid_cc_is_reported_and_a_failing_one_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path / "native"))
    monkeypatch.setenv("CC", "no-such-compiler-here")
    compiler.compiler.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no-such-compiler-here.*instead"):
            assert compiler.compiler() is not None
        monkeypatch.setenv("CC", "/bin/false")
        compiler.compiler.cache_clear()
        with pytest.raises(compiler.CompileError, match="false exited with status 1"):
            compile_library(TWICE)
    finally:
        compiler.compiler.cache_clear()


def test_a_failing_compiler_falls_back_to_the_generated_backend_and_samples(tmp_path,
                                                                             monkeypatch):
    use_cache(monkeypatch, tmp_path / "native")
    monkeypatch.setenv("CC", "/bin/false")
    compiler.compiler.cache_clear()
    try:
        @model
        def m():
            sample("x", Normal(0.0, 1.0))

        with pytest.warns(FastPathWarning, match="(?s)could not be built.*generated torch code"):
            post = infer(m, method=NUTS(50, 50, chains=2), seed=0)
        assert post.extra["backend"] == "generated"
        assert torch.isfinite(post.samples["x"]).all()
    finally:
        compiler.compiler.cache_clear()
