"""Lineage: where every row and checkpoint came from."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from salmon_dag import __version__

LINEAGE_COLUMNS: tuple[str, ...] = ("run_id", "config_hash", "principle_hash", "model_id", "code_version")


@dataclass(frozen=True)
class Lineage:
    run_id: str
    config_hash: str
    code_version: str
    principle_hash: str | None = None
    model_id: str | None = None
    # a rehearsal's record for this asset (salmon_dag.rehearsal.stage_record): not a column
    rehearsal: dict | None = field(default=None, compare=False)
    # the local data files it was built from (DataFiles.record): not a column
    data_files: dict | None = field(default=None, compare=False)

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        """Append the lineage columns (string-typed, null where not applicable)."""
        values = asdict(self)
        clash = [c for c in LINEAGE_COLUMNS if c in df.columns]
        if clash:
            raise ValueError(f"table already has lineage column(s) {clash}; rename them")
        return df.with_columns(pl.lit(values[c], dtype=pl.Utf8).alias(c) for c in LINEAGE_COLUMNS)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("rehearsal", "data_files"):  # absent, not null, where they do not apply
            if values[key] is None:
                del values[key]
        return {**values, "salmon_version": __version__}


def files_hash(paths: list[Path | str], length: int = 16) -> str:
    """Content hash of some files (missing ones count by name), for code versions of data inputs.

    Files count by base name and content, not by absolute path, so the hash is the same on every
    machine that has the same files.
    """
    h = hashlib.sha256()
    for path in sorted((Path(x) for x in paths), key=lambda q: (q.name, str(q))):
        h.update(path.name.encode())
        if path.is_file():
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        else:
            h.update(b"<missing>")
    return h.hexdigest()[:length]


def file_digest(path: Path | str) -> str | None:
    """sha256 of a file's content; None when it is missing."""
    path = Path(path)
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class DataFiles:
    """Local data files an asset reads besides its config and upstream assets, whose content counts
    in its code version. ``optional`` ones may be missing on a machine (what needs them is skipped:
    ``../shared/data`` beside a checkout); ``hash`` is the asset's own hash of the files as they are
    here (its existing formula, so code versions stay those of before)."""

    required: tuple[Path, ...]
    optional: tuple[Path, ...]
    hash: str

    @classmethod
    def of(cls, files: Sequence[tuple[Path, bool]]) -> "DataFiles":
        """``(path, optional)`` pairs, hashed together with :func:`files_hash`."""
        return cls(required=tuple(p for p, optional in files if not optional),
                   optional=tuple(p for p, optional in files if optional), hash=files_hash([p for p, _ in files]))

    def record(self) -> dict[str, Any]:
        """What the artifact built now records in its lineage: the hash and each file's digest."""
        return {"hash": self.hash, "files": {p.name: file_digest(p) for p in (*self.required, *self.optional)}}

    def version(self, built: dict[str, Any] | None) -> str:
        """The hash for the code version. An optional file missing here that the artifact was built
        with (``built``: its lineage's :meth:`record`) counts as it was then, as long as every file
        present here is unchanged: where optional data lives, or whether this machine has it, does
        not make what was built with it stale. Any present file that changed, or one that appeared
        since, counts as it is."""
        missing = [p for p in self.optional if not p.is_file()]
        if not missing or not built or "files" not in built:
            return self.hash
        was = built["files"]
        if any(was.get(p.name) is None for p in missing):
            return self.hash  # built without it too
        present = [p for p in (*self.required, *self.optional) if p.is_file()]
        if any(was.get(p.name) != file_digest(p) for p in present):
            return self.hash
        return built.get("hash", self.hash)
