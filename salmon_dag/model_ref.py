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

    def identity(self) -> str:
        """What names these weights across runs: a warehouse model by the run that wrote it, any
        other by its id and revision."""
        run = self.lineage.get("run_id")
        return f"{self.name}@{run}" if run else f"{self.model_id}@{self.revision or ''}"


def manifest_path(warehouse: Warehouse, name: str) -> Path:
    return warehouse.root / "models" / f"{name}.json"


# the manifest's key listing the path fields stored relative to the warehouse root
RELATIVE_KEY = "relative_to_warehouse"
_PATH_FIELDS = ("model_id", "adapter_path")


def write_model_ref(warehouse: Warehouse, ref: ModelRef) -> Path:
    """Write the manifest; a checkpoint inside the warehouse is named relative to its root, so a
    copied or moved warehouse keeps loading its own models (Hub ids and paths elsewhere as given)."""
    path = manifest_path(warehouse, ref.name)
    data = asdict(ref)
    relative = []
    for key in _PATH_FIELDS:
        value = data[key]
        if value and Path(value).is_absolute() and Path(value).resolve().is_relative_to(warehouse.root):
            data[key] = Path(value).resolve().relative_to(warehouse.root).as_posix()
            relative.append(key)
    if relative:
        data[RELATIVE_KEY] = relative
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    return path


def read_model_ref(warehouse: Warehouse, name: str) -> ModelRef:
    """The manifest of model ``name``, its warehouse-relative paths resolved against this
    warehouse's root (where it is now, not where it was built)."""
    path = manifest_path(warehouse, name)
    if not path.is_file():
        raise WarehouseError(f"model '{name}' is not in the warehouse ({path} missing); materialize it first")
    data = json.loads(path.read_text())
    for key in data.pop(RELATIVE_KEY, []):
        data[key] = str(warehouse.root / data[key])
    return ModelRef(**data)
