"""Is a materialized artifact still there and readable? Cheap checks that ``salmon status`` and
``salmon run`` make, so that a deleted or damaged file is rebuilt instead of trusted: a table's
Parquet footer, a model manifest, and each checkpoint file's safetensors header."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from salmon_dag.errors import first_line
from salmon_dag.model_ref import manifest_path, read_model_ref
from salmon_dag.warehouse import Warehouse

MISSING, CORRUPT = "missing", "corrupt"


def table_problem(warehouse: Warehouse, table: str) -> tuple[str, str] | None:
    """(missing | corrupt, why) for the table's Parquet file, or None when its footer reads."""
    import pyarrow.parquet as pq

    path = warehouse.table_path(table)
    if not path.is_file():
        return MISSING, f"{path} is missing"
    try:
        pq.read_metadata(path)
    except Exception as exc:
        return CORRUPT, f"{path} is unreadable ({first_line(exc, 160)})"
    return None


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is damaged (its header, or shorter than the header says), or None."""
    try:
        with open(path, "rb") as fh:
            size = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(size))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except Exception as exc:
        return f"{path} has no readable safetensors header ({first_line(exc, 160)})"
    if path.stat().st_size < 8 + size + end:
        return f"{path} is truncated ({path.stat().st_size} of {8 + size + end} bytes)"
    return None


def model_problem(warehouse: Warehouse, name: str) -> tuple[str, str] | None:
    """(missing | corrupt, why) for a model asset: its manifest and, for local checkpoints, their
    folders and weight files; None when all read. Hub ids are not checked (nothing local)."""
    manifest = manifest_path(warehouse, name)
    if not manifest.is_file():
        return MISSING, f"{manifest} is missing"
    try:
        ref = read_model_ref(warehouse, name)
    except Exception as exc:
        return CORRUPT, f"{manifest} is unreadable ({first_line(exc, 160)})"
    for folder in (ref.model_id, ref.adapter_path):
        if not folder or not folder.startswith("/"):
            continue  # a Hub id
        path = Path(folder)
        if not path.is_dir():
            return MISSING, f"{path} is missing"
        for weights in sorted(path.glob("*.safetensors")):
            problem = safetensors_problem(weights)
            if problem:
                return CORRUPT, problem
    return None


def artifact_problem(warehouse: Warehouse, name: str, is_model: bool) -> tuple[str, str] | None:
    """The problem with asset ``name``'s model (``is_model``) or table, or None."""
    return model_problem(warehouse, name) if is_model else table_problem(warehouse, name)
