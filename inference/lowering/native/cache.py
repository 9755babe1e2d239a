"""The on-disk cache of compiled libraries, trusted only the way ssh trusts ``~/.ssh``.

Loading a shared library runs its code, so a cached library is loaded only when its directory
and the file itself belong to the effective user and nobody else can write to them, and when
its bytes hash to the digest recorded beside it after it was built. A library that fails a
check (planted by another user, truncated by a full disk or a killed copy, overwritten) is
rebuilt, never loaded. A directory that fails is not used at all: libraries are then built in
a private temporary directory, with a warning that says how to fix the cache. Builds run in
temporary directories inside the cache, one builder per library at a time; directories left
behind by a build that was killed are removed once they are old.

    >>> import tempfile
    >>> root = usable_directory(Path(tempfile.mkdtemp()) / "native")
    >>> oct(root.stat().st_mode & 0o777)
    '0o700'
    >>> problem(root / "ppl_0.so") is MISSING
    True
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import hashlib
import os
import shutil
import stat
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CacheWarning", "MISSING", "UNRECORDED", "usable_directory", "problem", "building",
           "install"]

STALE_BUILD_SECONDS = 15 * 60
"""A build directory untouched for this long belongs to a build that was killed."""

_BUILD_PREFIX = "ppl-build-"

MISSING = "not built yet"
UNRECORDED = "no content hash was recorded for it (an older ppl built it)"
_EXPECTED = (MISSING, UNRECORDED)  # reasons to build that need no warning


class CacheWarning(UserWarning):
    """The native cache was not trusted or not intact; ppl rebuilt (or built elsewhere)."""


def usable_directory(directory: Path) -> Path:
    """``directory``, created with mode 0700 where missing, if it is safe to load code from;
    otherwise (another owner, writable by group or others, not creatable) a private temporary
    directory for this process, with a :class:`CacheWarning` saying why."""
    try:
        for path in reversed([p for p in (directory, *directory.parents) if not p.exists()]):
            path.mkdir(mode=0o700, exist_ok=True)
        reason = _untrusted(os.stat(directory), stat.S_ISDIR, "a directory")
    except OSError as error:
        reason = f"it cannot be used ({error})"
    if reason is None:
        return directory
    warnings.warn(CacheWarning(
        f"not using the native library cache {directory}: {reason}. Like ssh with ~/.ssh, ppl "
        "loads compiled code only from a directory that is yours alone (chown it, "
        f"`chmod go-w {directory}`, or set $PPL_CACHE_DIR); building in a private temporary "
        "directory instead"), stacklevel=3)
    return _private_directory()


@functools.cache
def _private_directory() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ppl-native-"))  # mode 0700, ours
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _untrusted(info: os.stat_result, is_kind, kind: str) -> str | None:
    """Why a file with ``info`` must not be trusted, or None."""
    if not is_kind(info.st_mode):
        return f"it is not {kind}"
    if info.st_uid != os.geteuid():
        return f"it is owned by uid {info.st_uid}, not by you (uid {os.geteuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by group or others (mode {stat.filemode(info.st_mode)})"
    return None


def _record_path(library: Path) -> Path:
    return library.with_suffix(".sha256")


def _digest(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def problem(library: Path) -> str | None:
    """None when ``library`` may be loaded; else why not (:data:`MISSING` when absent)."""
    record = _record_path(library)
    try:
        info = os.lstat(library)  # a symlink is refused, not followed
    except FileNotFoundError:
        return MISSING
    reason = _untrusted(info, stat.S_ISREG, "a regular file")
    if reason is not None:
        return reason
    try:
        reason = _untrusted(os.lstat(record), stat.S_ISREG, "a regular file")
        recorded = record.read_text().strip()
    except FileNotFoundError:
        return UNRECORDED
    if reason is not None:
        return f"its recorded hash {record.name} cannot be trusted: {reason}"
    if _digest(library) != recorded:
        return "its bytes differ from the hash recorded when it was built (truncated or modified)"
    return None


@contextmanager
def building(library: Path, failure: str | None = None) -> Iterator[Path | None]:
    """Hold the build lock of ``library`` and yield a fresh build directory beside it, or None
    when the library is good after all (another process built it while this one waited).
    ``failure`` says why a library that passed the checks must be rebuilt (it did not load)."""
    directory = library.parent
    with open(directory / f"{library.stem}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reason = failure or problem(library)
        if reason is None:
            yield None
            return
        if reason not in _EXPECTED:
            warnings.warn(CacheWarning(
                f"not loading the cached library {library}: {reason}; rebuilding it"),
                stacklevel=4)
        _remove_stale_builds(directory)
        with tempfile.TemporaryDirectory(prefix=_BUILD_PREFIX, dir=directory) as tmp:
            yield Path(tmp)


def _remove_stale_builds(directory: Path) -> None:
    deadline = time.time() - STALE_BUILD_SECONDS
    for path in directory.glob(f"{_BUILD_PREFIX}*"):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and info.st_mtime < deadline:
            shutil.rmtree(path, ignore_errors=True)


def install(built: Path, library: Path) -> None:
    """Move the freshly linked ``built`` to ``library``, its hash recorded beside it first (so
    a reader never trusts a library without a matching record). Call inside :func:`building`."""
    os.chmod(built, 0o700)
    record = built.with_suffix(".sha256")
    record.write_text(_digest(built) + "\n")
    os.chmod(record, 0o600)
    os.replace(record, _record_path(library))
    os.replace(built, library)  # atomic: a reader sees the old file or the new one
