"""A pointer to a model checkpoint produced (or referenced) by a pipeline stage."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from salmon_dag.warehouse import Warehouse, WarehouseError, atomic_path


@dataclass(frozen=True)
class ModelRef:
    """``model_id`` is what ``from_pretrained`` takes: a local checkpoint dir or a Hub id;
    ``adapter_path``, when set, a PEFT adapter to apply on top of it."""

    name: str
    model_id: str
    revision: str | None = None
    adapter_path: str | None = None
    trust_remote_code: bool = False
    lineage: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def manifest_path(warehouse: Warehouse, name: str) -> Path:
    return warehouse.root / "models" / f"{name}.json"


def write_model_ref(warehouse: Warehouse, ref: ModelRef) -> Path:
    path = manifest_path(warehouse, ref.name)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(asdict(ref), indent=2, sort_keys=True, default=str))
    return path


def read_model_ref(warehouse: Warehouse, name: str) -> ModelRef:
    path = manifest_path(warehouse, name)
    if not path.is_file():
        raise WarehouseError(f"model '{name}' is not in the warehouse ({path} missing); materialize it first")
    return ModelRef(**json.loads(path.read_text()))
