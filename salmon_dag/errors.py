"""One-line errors: an exception's first line (libraries raise multi-line ones), and a full disk
told as such whatever the library that hit it says."""

from __future__ import annotations

import shutil
from pathlib import Path

# How libraries word ENOSPC / EDQUOT: Python's OSError, Rust crates (safetensors), SQLite, Arrow.
# torch.save says neither ("unexpected pos ..."): the free space on the target decides then.
_NO_SPACE_WORDS = ("no space left on device", "os error 28", "errno 28", "database or disk is full",
                   "disk quota exceeded", "os error 122")
# below this much free space after a failed write, the write failed for want of space
LOW_SPACE_BYTES = 1 << 20


class DiskFullError(OSError):
    """A write failed because its filesystem is full (the message names the path)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The exception's first non-empty line (its type's name when it has no text), cut at ``limit``."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def exception_chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during (``__cause__``, else ``__context__``)."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not e for e in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def free_bytes(path: Path | str) -> int | None:
    """Free space on the filesystem of ``path`` (its nearest existing parent); None if unknown."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def is_no_space(exc: BaseException, path: Path | str) -> bool:
    """Whether ``exc`` (or an exception in its chain) is a full disk: its words say so, or the
    filesystem of ``path``, which it was writing, has (almost) no space left."""
    if any(isinstance(e, DiskFullError) or any(w in str(e).lower() for w in _NO_SPACE_WORDS)
           for e in exception_chain(exc)):
        return True
    free = free_bytes(path)
    return free is not None and free < LOW_SPACE_BYTES


def disk_full(path: Path | str) -> DiskFullError:
    """The one-line error for a write to ``path`` that found no space."""
    return DiskFullError(f"no space left on device writing {path}")
