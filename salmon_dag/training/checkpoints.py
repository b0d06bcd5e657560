"""Resumable training: a persistent work dir, an input fingerprint, stamped checkpoints.

A run's inputs (base model, data, config, seed, device) hash to a fingerprint. It is written into
the work dir and into every checkpoint the trainer saves; a later run with the same fingerprint
resumes from the newest stamped checkpoint, and a run with other inputs clears the work dir.
Plain Python: no dagster import here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from salmon_dag.config import stable_hash
from salmon_dag.lineage import file_digest
from salmon_dag.warehouse import atomic_path

FINGERPRINT_FILE = "salmon_fingerprint.json"
TENSORBOARD_SUBDIR = "tensorboard"
# What training writes to the work dir besides checkpoint-N/ (cleared when the inputs change).
_WORK_DIR_ENTRIES = frozenset({FINGERPRINT_FILE, TENSORBOARD_SUBDIR, "runs", "README.md", "sft_merged", "vllm_adapter"})


@dataclass(frozen=True)
class Fingerprint:
    """The hash of a training run's inputs; ``stage`` names the run in log lines."""

    stage: str
    value: str
    inputs: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"fingerprint": self.value, "inputs": dict(self.inputs)}


def fingerprint(stage: str, inputs: Mapping[str, Any]) -> Fingerprint:
    """Fingerprint of ``inputs`` (JSON-able: see :func:`data_hash`, :func:`base_model_stamp`)."""
    full = {"stage": stage, **inputs}
    return Fingerprint(stage, stable_hash(full), full)


def default_work_dir(out_dir: Path) -> Path:
    """Where checkpoints of ``out_dir``'s training live between runs: a hidden sibling."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.work"


def data_hash(rows: Iterable[Mapping[str, Any]]) -> str:
    """Content hash of training rows (a ``datasets.Dataset`` iterates as dicts)."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def base_model_stamp(model_id: str, revision: str | None = None) -> Any:
    """Identity of a model to train from: the id (and revision), or for a local checkpoint the
    names, sizes and content digests of its files (:func:`file_stamp`). Not its path or times: a
    copied or moved warehouse, or a checkpoint rewritten with the same weights (a reward model's PMP
    stage resumed to its end), still resumes; a retrained one never resumes the old runs."""
    path = Path(model_id).expanduser()
    if not path.is_dir():
        return [model_id, revision] if revision else model_id
    return [[p.name, p.stat().st_size, file_stamp(p)] for p in sorted(path.iterdir()) if p.is_file()]


# files up to this size are hashed whole; larger ones (a local 70B checkpoint's shards) by samples
WHOLE_FILE_BYTES = 64 << 20
_SAMPLE = 1 << 20


def file_stamp(path: Path) -> str:
    """sha256 of a file's content: whole up to WHOLE_FILE_BYTES, else of 1 MiB at its start, middle
    and end (any retraining changes weights throughout; the header holds every tensor's offsets)."""
    size = path.stat().st_size
    if size <= WHOLE_FILE_BYTES:
        return file_digest(path)[:16]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for offset in (0, size // 2, size - _SAMPLE):
            fh.seek(offset)
            h.update(fh.read(_SAMPLE))
    return h.hexdigest()[:16]


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")


def stamp_work_dir(work_dir: Path, fp: Fingerprint) -> None:
    """Create ``work_dir`` and record which inputs its checkpoints belong to."""
    work_dir.mkdir(parents=True, exist_ok=True)
    write_json(work_dir / FINGERPRINT_FILE, fp.as_json())


def clear_work_dir(work_dir: Path) -> None:
    """Remove what training put in ``work_dir`` (and nothing else a user may keep there)."""
    for entry in work_dir.iterdir():
        ours = entry.name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") or entry.name in _WORK_DIR_ENTRIES
        if not ours:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def drop_incomplete_checkpoints(work_dir: Path) -> list[Path]:
    """Remove the checkpoints in ``work_dir`` that the trainer did not finish saving (it writes
    ``trainer_state.json`` last); returns them."""
    dropped = [c for c in sorted(Path(work_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"))
               if c.is_dir() and not (c / "trainer_state.json").is_file()]
    for ckpt in dropped:
        shutil.rmtree(ckpt, ignore_errors=True)
    return dropped


def find_resumable(work_dir: Path, fp: Fingerprint, log: Callable[[str], None]) -> str | None:
    """The newest checkpoint in ``work_dir`` stamped with ``fp``, or None. Checkpoints of other
    inputs are cleared; an unstamped newest checkpoint (interrupted between saving and stamping)
    is dropped and the next tried."""
    if not work_dir.is_dir():
        return None
    run_stamp = (read_json(work_dir / FINGERPRINT_FILE) or {}).get("fingerprint")
    if run_stamp != fp.value:
        if any(work_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")):
            log(f"{fp.stage}: {work_dir} holds checkpoints of other inputs/config; starting fresh")
        clear_work_dir(work_dir)
        return None
    while (last := get_last_checkpoint(str(work_dir))) is not None:
        stamp = (read_json(Path(last) / FINGERPRINT_FILE) or {}).get("fingerprint")
        if stamp == fp.value and (Path(last) / "trainer_state.json").is_file():
            return last
        if stamp is not None and stamp != fp.value:
            log(f"{fp.stage}: {last} was trained with other inputs/config; starting fresh")
            clear_work_dir(work_dir)
            return None
        log(f"{fp.stage}: dropping incomplete checkpoint {last}")
        shutil.rmtree(last)
    return None


class StampCheckpoints(TrainerCallback):
    """Writes the run's fingerprint into each checkpoint once the trainer has saved it."""

    def __init__(self, fp: Fingerprint):
        self.fp = fp

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if ckpt.is_dir():
                write_json(ckpt / FINGERPRINT_FILE, self.fp.as_json())
