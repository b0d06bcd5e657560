"""Reading benchmark inputs: local files, files bundled with salmon, or Hub datasets.

One reader for every benchmark, so a user's own question or instruction file works by changing
``source`` in the profile: ``bundled:<name>`` (salmon_dag/data/benchmarks, what the tiny profile
uses), a local ``.jsonl`` / ``.jsonl.gz`` / ``.json`` / ``.parquet`` file, one data file of a Hub
repository (``hf://datasets/<owner>/<name>/<file>``), or anything else as a Hub dataset id or local
dataset folder for ``datasets.load_dataset``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from salmon_dag.paths import DATA_DIR

BUNDLED_DIR = DATA_DIR / "benchmarks"
BUNDLED_PREFIX = "bundled:"
HF_PREFIX = "hf://"
_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


def resolve_path(source: str) -> Path | None:
    """The local file behind ``source``, or None when it names a Hub dataset / dataset folder."""
    if source.startswith(BUNDLED_PREFIX):
        return Path(unbundled(source))
    if source.startswith(HF_PREFIX):
        return None
    path = Path(source).expanduser()
    # any other existing file is read as JSON Lines (e.g. a HumanEval problem file named .txt)
    return path if source.endswith(_FILE_SUFFIXES) or path.is_file() else None


def unbundled(source: str) -> str:
    """``bundled:<name>`` as the path of that file (for readers that take paths, such as lm-eval);
    any other source unchanged."""
    return str(BUNDLED_DIR / source[len(BUNDLED_PREFIX):]) if source.startswith(BUNDLED_PREFIX) else source


def source_exists(source: str) -> bool:
    """False only for a local file (or bundled name) that is not there; Hub ids count as present."""
    path = resolve_path(source)
    if path is not None:
        return path.is_file()
    if source.startswith(("/", ".", "~")):
        return Path(source).expanduser().exists()
    return True


def read_records(source: str, split: str = "test", subset: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(1-based row, record)`` for every row of ``source``. A line that is not JSON is a one-line
    ``ValueError`` naming the file and line; a missing local file a ``FileNotFoundError``."""
    path = resolve_path(source)
    if source.startswith(HF_PREFIX):  # one file of a Hub repository, read by datasets' file loaders
        import datasets

        builder = "parquet" if source.endswith(".parquet") else "json"
        yield from enumerate(datasets.load_dataset(builder, data_files=source, split="train"), start=1)
        return
    if path is None:
        if source.startswith(("/", ".", "~")) and not Path(source).expanduser().exists():
            raise FileNotFoundError(f"benchmark dataset folder not found: {source}")
        import datasets  # heavy import: only when a dataset is loaded

        target = str(Path(source).expanduser()) if Path(source).expanduser().exists() else source
        yield from enumerate(datasets.load_dataset(target, subset, split=split), start=1)
        return
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    if path.name.endswith(".parquet"):
        import polars as pl

        yield from enumerate(pl.read_parquet(path).to_dicts(), start=1)
        return
    if path.name.endswith(".json"):
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: a .json benchmark file must hold a list of objects")
        yield from enumerate(rows, start=1)
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {number}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}: line {number}: expected a JSON object")
                yield number, row


def where(source: str) -> str:
    """How to name ``source`` in an error message."""
    path = resolve_path(source)
    return str(path) if path is not None else source
