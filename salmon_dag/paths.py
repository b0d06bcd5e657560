"""Where salmon's own files are, and how a relative path in a profile is found.

One home for the project root (the checkout: ``principles/``, ``../shared`` beside it) and the
bundled data, so no module computes them from its own depth in the package.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
DATA_DIR = PACKAGE_DIR / "data"
BUNDLED_PRINCIPLES_DIR = PROJECT_ROOT / "principles"


def resolve_local(path: str | Path) -> Path:
    """A local path as a profile names it: absolute (``~`` expanded) as it is; a relative one from
    the working directory when it exists there, else from the project root when it exists there
    (profiles name ``../shared/data/...`` relative to the checkout, and Dagster may run from
    elsewhere), else unchanged (the caller reports it missing)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    from_root = PROJECT_ROOT / candidate
    return from_root if from_root.exists() else candidate
