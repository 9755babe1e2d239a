"""Compile generated C into a shared library, once per source text, and load it with ctypes.

The native backend emits a model's potential (and the samplers that call it) as C, so that a
leapfrog step costs nanoseconds instead of dozens of torch dispatches. Libraries are cached
on disk by the hash of their source and flags (``$PPL_CACHE_DIR``, else
``$XDG_CACHE_HOME/ppl/native``, else ``~/.cache/ppl/native``), so a model compiles once per
machine. The compiler is ``$CC`` or the first of ``cc``, ``gcc``, ``clang`` on the path;
without one, :func:`compiler_available` is False and callers keep the torch path.

    >>> lib = compile_library("double twice(double x) { return 2 * x; }")  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

__all__ = ["CompileError", "compiler", "compiler_available", "compile_library"]

# No -ffast-math: the samplers rely on IEEE infinities and NaNs to detect divergences. Nothing
# reads errno or floating-point exception flags, which lets selects on floats vectorize.
# -fopenmp-simd honours the ``omp simd`` loops and reductions without OpenMP's runtime.
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd",
         "-fPIC", "-shared", "-std=gnu11")


class CompileError(RuntimeError):
    """The C compiler rejected generated code (a bug in the generator: please report it)."""


@cache
def compiler() -> str | None:
    """The C compiler to use, or None when the machine has none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def compiler_available() -> bool:
    return compiler() is not None


def cache_dir() -> Path:
    root = os.environ.get("PPL_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ppl" / "native"


_LOADED: dict[str, ctypes.CDLL] = {}


def compile_library(source: str) -> ctypes.CDLL:
    """The loaded shared library of ``source`` (compiled unless cached on disk or in memory)."""
    cc = compiler()
    if cc is None:
        raise CompileError("no C compiler found (set $CC, or install cc/gcc/clang)")
    key = hashlib.sha256("\0".join((cc, *FLAGS, source)).encode()).hexdigest()[:32]
    directory = cache_dir()
    target = directory / f"ppl_{key}.so"
    if str(target) in _LOADED:
        return _LOADED[str(target)]
    directory.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            src = Path(tmp) / "module.c"
            src.write_text(source)
            out = Path(tmp) / "module.so"
            done = subprocess.run([cc, *FLAGS, str(src), "-o", str(out), "-lm"],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise CompileError(f"{cc} failed on generated code:\n{done.stderr[-4000:]}")
            os.replace(out, target)  # atomic: concurrent builders of one model agree
    _LOADED[str(target)] = ctypes.CDLL(str(target))
    return _LOADED[str(target)]
