"""Compile generated C into a shared library, once per source text, and load it with ctypes.

The native backend emits a model's potential (and links the samplers that call it) as C, so
that a leapfrog step costs nanoseconds instead of dozens of torch dispatches. A library is
built from translation units, each with its own optimization level (the potential's loops
need ``-O3`` to vectorize; the sampler's control flow compiles faster at ``-O1`` and runs as
fast), compiled in parallel and linked. Libraries are cached on disk by the hash of their
sources, flags and CPU (``$PPL_CACHE_DIR``, else ``$XDG_CACHE_HOME/ppl/native``, else
``~/.cache/ppl/native``), so a model compiles once per machine; :mod:`.cache` decides whether
a cached library may be loaded (it is the user's alone and hashes as recorded). The compiler
is ``$CC`` or the first of ``cc``, ``gcc``, ``clang`` on the path; without one,
:func:`compiler_available` is False and callers keep the torch path.

    >>> lib = compile_library(Unit("double twice(double x) { return 2 * x; }"))  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from . import cache

__all__ = ["CompileError", "Unit", "compiler", "compiler_available", "compile_library",
           "library_path"]

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
    """The C compiler failed on generated code, or there is none (the message quotes it)."""


@functools.cache
def compiler() -> str | None:
    """The C compiler to use, or None when the machine has none. A ``$CC`` that is not on
    the path is reported (once) before another compiler is taken in its place."""
    chosen = os.environ.get("CC")
    if chosen and not shutil.which(chosen):
        warnings.warn(f"$CC={chosen!r} is not an executable on the path; ppl's native backend "
                      "uses the first of cc, gcc, clang instead", RuntimeWarning, stacklevel=2)
    for name in (chosen, "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def compiler_available() -> bool:
    return compiler() is not None


@functools.cache
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
        raise CompileError(f"{what} exited with status {process.returncode} on generated code "
                           "(a broken or unusual $CC, or a bug in ppl's C generator)"
                           + (f":\n{err[-4000:]}" if err.strip() else ""))


def library_path(*units: Unit) -> Path:
    """Where the library of ``units`` is cached: named by the hash of its sources, flags,
    compiler and CPU, in the cache directory if that is safe to load code from."""
    key = _key(*(piece for u in units for piece in (*u.flags, u.source)))
    return cache.usable_directory(cache_dir()) / f"ppl_{key}.so"


def _object_path(unit: Unit, directory: Path) -> Path:
    """Where ``unit``'s compiled object is cached (next to the libraries): a library that
    shares a unit with another one (a potential linked with another sampler) only compiles
    what is new, then links."""
    return directory / f"ppl_unit_{_key(*unit.flags, unit.source)}.o"


def _key(*pieces: str) -> str:
    parts = [_machine(), _required_compiler(), *FLAGS, *pieces]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _required_compiler() -> str:
    cc = compiler()
    if cc is None:
        raise CompileError("no C compiler found (set $CC, or install cc/gcc/clang)")
    return cc


def compile_library(*units: Unit) -> ctypes.CDLL:
    """The loaded shared library of ``units``: from memory, else from the disk cache if it
    passes :mod:`.cache`'s checks, else built (and rebuilt if it then fails to load)."""
    target = library_path(*units)
    if str(target) in _LOADED:
        return _LOADED[str(target)]
    if cache.problem(target) is not None:
        _build(units, target)
    try:
        library = ctypes.CDLL(str(target))
    except OSError as error:
        _build(units, target, failure=f"it did not load ({error})")
        library = ctypes.CDLL(str(target))
    _LOADED[str(target)] = library
    return library


def _build(units: tuple[Unit, ...], target: Path, failure: str | None = None) -> None:
    cc = _required_compiler()
    with cache.building(target, failure) as tmp:
        if tmp is None:
            return
        objects, jobs = [], []
        for i, unit in enumerate(units):
            cached = _object_path(unit, target.parent)
            objects.append(cached)
            if cache.problem(cached) is None:
                continue
            src, obj = tmp / f"unit{i}.c", tmp / f"unit{i}.o"
            src.write_text(unit.source)
            command = [cc, *FLAGS, *unit.flags, "-c", str(src), "-o", str(obj)]
            jobs.append((_run(command), obj, cached))
        try:
            for job, obj, cached in jobs:
                _finish(job, cc)
                cache.install(obj, cached)
        finally:  # a failed unit leaves no compiler running
            for job, _, _ in jobs:
                if job.poll() is None:
                    job.kill()
                    job.communicate()
        out = tmp / "module.so"
        _finish(_run([cc, "-shared", *map(str, objects), "-o", str(out), "-lm"]),
                f"{cc} (linking)")
        cache.install(out, target)
