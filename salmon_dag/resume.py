"""Finished chunks of a long step, kept until its table is written: a killed run redoes at most
the chunk it was in.

Sampling (Self-Align, response pairs) and judging run in chunks; each finished chunk is saved here
(``<warehouse>/.partial/<asset>/<key>.json``, written atomically) under a key that hashes
everything deciding its result (model and its run, engine settings, sampling parameters and seed,
the chunk's own prompts or judgement keys). A rerun finds a chunk by that key, so a chunk is reused
only for exactly the work it holds, whatever changed in between; the folder is removed when the
step's table is written (``Warehouse.write_table``). Plain Python and JSON: no pickle, nothing
that runs code on load.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from salmon_dag.config import stable_hash
from salmon_dag.warehouse import atomic_path

PARTIAL_DIR = ".partial"
# A failpoint for the fault tests (tests/test_faults.py): the process kills itself (SIGKILL, no
# cleanup, as the OOM killer or a lost node would) right after saving this many chunks.
KILL_AFTER_ENV = "SALMON_FAILPOINT_KILL_AFTER_CHUNKS"
_saved_in_process = 0


class ChunkStore:
    """JSON values by key in one folder (created on the first save)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    @staticmethod
    def key(*parts: Any) -> str:
        """A chunk's key: the hash of what decides its result."""
        return stable_hash(list(parts))

    def load(self, key: str) -> Any | None:
        """The value saved under ``key``, or None (never saved, or unreadable: then redone)."""
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def save(self, key: str, value: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._path(key)) as tmp:
            Path(tmp).write_text(json.dumps(value), encoding="utf-8")
        global _saved_in_process
        _saved_in_process += 1
        if os.environ.get(KILL_AFTER_ENV) == str(_saved_in_process):
            os.kill(os.getpid(), signal.SIGKILL)

    def values(self) -> Iterator[Any]:
        """Every readable saved value (in name order)."""
        for path in sorted(self.root.glob("*.json")) if self.root.is_dir() else ():
            try:
                yield json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue

    def __len__(self) -> int:
        return len(list(self.root.glob("*.json"))) if self.root.is_dir() else 0

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
