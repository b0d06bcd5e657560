"""One line of an exception for a one-line error message (libraries raise multi-line ones)."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The exception's first non-empty line (its type's name when it has no text), cut at ``limit``."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
