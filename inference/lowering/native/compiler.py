"""Compile generated C into a shared library, once per source text, and load it with ctypes.

The native backend emits a model's potential (and links the samplers that call it) as C, so
that a leapfrog step costs nanoseconds instead of dozens of torch dispatches. A library is
built from translation units, each with its own optimization level (the potential's loops
need ``-O3`` to vectorize; the sampler's control flow compiles faster at ``-O1`` and runs as
fast), compiled in parallel and linked. Libraries are cached on disk by the hash of their
sources, flags and CPU (``$PPL_CACHE_DIR``, else ``$XDG_CACHE_HOME/ppl/native``, else
``~/.cache/ppl/native``), so a model compiles once per machine. The compiler is ``$CC`` or
the first of ``cc``, ``gcc``, ``clang`` on the path; without one, :func:`compiler_available`
is False and callers keep the torch path.

    >>> lib = compile_library(Unit("double twice(double x) { return 2 * x; }"))  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["CompileError", "Unit", "compiler", "compiler_available", "compile_library"]

# No -ffast-math: the samplers rely on IEEE infinities and NaNs to detect divergences. Nothing
# reads errno or floating-point exception flags, which lets selects on floats vectorize.
# -fopenmp-simd honours the ``omp simd`` loops and reductions without OpenMP's runtime.
FLAGS = ("-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-fPIC",
         "-std=gnu11")


@dataclass(frozen=True)
class Unit:
    """One translation unit: its source and its own flags (optimization, defines)."""

    source: str
    flags: tuple[str, ...] = ("-O3",)


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


@cache
def _machine() -> str:
    """What ``-march=native`` compiles for: libraries built on one CPU must not load on
    another with fewer instruction sets (a shared home directory, a copied cache)."""
    try:
        with open("/proc/cpuinfo") as info:
            lines = [line for line in info if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.machine() + platform.processor()


def cache_dir() -> Path:
    root = os.environ.get("PPL_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ppl" / "native"


_LOADED: dict[str, ctypes.CDLL] = {}


def _run(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, what: str) -> None:
    _, err = process.communicate()
    if process.returncode != 0:
        raise CompileError(f"{what} failed on generated code:\n{err[-4000:]}")


def compile_library(*units: Unit) -> ctypes.CDLL:
    """The loaded shared library of ``units`` (built unless cached on disk or in memory)."""
    cc = compiler()
    if cc is None:
        raise CompileError("no C compiler found (set $CC, or install cc/gcc/clang)")
    parts = [_machine(), cc, *FLAGS] + [piece for u in units for piece in (*u.flags, u.source)]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    directory = cache_dir()
    target = directory / f"ppl_{key}.so"
    if str(target) in _LOADED:
        return _LOADED[str(target)]
    directory.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            objects, jobs = [], []
            for i, unit in enumerate(units):
                src, obj = Path(tmp) / f"unit{i}.c", Path(tmp) / f"unit{i}.o"
                src.write_text(unit.source)
                objects.append(str(obj))
                jobs.append(_run([cc, *FLAGS, *unit.flags, "-c", str(src), "-o", str(obj)]))
            for job in jobs:
                _finish(job, cc)
            out = Path(tmp) / "module.so"
            _finish(_run([cc, "-shared", *objects, "-o", str(out), "-lm"]), f"{cc} (linking)")
            os.replace(out, target)  # atomic: concurrent builders of one model agree
    _LOADED[str(target)] = ctypes.CDLL(str(target))
    return _LOADED[str(target)]
