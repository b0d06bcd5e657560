"""Lineage: where every row and checkpoint came from."""

from __future__ import annotations

import hashlib
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

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        """Append the lineage columns (string-typed, null where not applicable)."""
        values = asdict(self)
        clash = [c for c in LINEAGE_COLUMNS if c in df.columns]
        if clash:
            raise ValueError(f"table already has lineage column(s) {clash}; rename them")
        return df.with_columns(pl.lit(values[c], dtype=pl.Utf8).alias(c) for c in LINEAGE_COLUMNS)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if values["rehearsal"] is None:  # a real run's lineage has no such key
            del values["rehearsal"]
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
