"""Read prompt sources and turn their records into raw prompts.

A source (:class:`~salmon_dag.config.PromptSource`) names a reader (``type``) and a record
format (``format``). Readers yield ``(source_row, record)`` pairs; a format adapter turns one
record into prompt text. Rows that cannot be used become :class:`Reject` rows with a reason, so
nothing disappears silently (except non-root oasst1 messages, which are not prompts at all).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import Any

import polars as pl

from salmon_dag.config_base import QUESTION_TYPES
from salmon_dag.paths import resolve_local
from salmon_dag.prompt_pool.config import PromptSource

BUNDLED_FILE = "default_prompts.jsonl"
# Rejects keep only the start of a bad row: enough to find it, small enough to store.
MAX_REJECT_TEXT = 500

# Formats whose prompts have a known type when the source does not say otherwise.
FORMAT_QUESTION_TYPES: dict[str, str] = {
    "math": "reasoning",
    "gsm8k": "reasoning",
    "hh_rlhf": "red_teaming",
}

# Local files that the ``hf`` reader hands to a datasets builder (load_dataset needs the builder
# name for a single file; directories and Hub ids go straight through).
_HF_BUILDERS: dict[str, str] = {
    ".jsonl": "json", ".json": "json", ".jsonl.gz": "json", ".json.gz": "json",
    ".csv": "csv", ".parquet": "parquet", ".txt": "text", ".arrow": "arrow",
}


@dataclass(frozen=True)
class RawPrompt:
    """One prompt as read from a source, before cleaning."""

    source: str
    source_row: int
    text: str
    question_type: str | None


@dataclass(frozen=True)
class Reject:
    """A row that did not become a prompt, and why."""

    source: str
    source_row: int
    text: str
    reason: str
    detail: str


class RecordError(ValueError):
    """A record cannot be used; ``reason`` is the Reject reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- format adapters
# Each adapter maps one record to prompt text, returns None for a record that is not a prompt
# (skipped silently), or raises RecordError. They are pure: no I/O, no source state.
Adapter = Callable[[Mapping[str, Any], str], str | None]


def _field(record: Mapping[str, Any], name: str) -> str:
    value = record.get(name)
    if not isinstance(value, str):
        got = "absent" if name not in record else type(value).__name__
        raise RecordError("missing_field", f"field '{name}' must be a string ({got})")
    return value


def _join(first: str, extra: Any) -> str:
    """Append optional extra input after a blank line (dolly context, self-instruct input)."""
    if isinstance(extra, str) and extra.strip():
        return f"{first}\n\n{extra}"
    return first


def adapt_plain(record: Mapping[str, Any], text_field: str = "prompt") -> str | None:
    return _field(record, text_field)


def adapt_oasst1(record: Mapping[str, Any], text_field: str = "prompt") -> str | None:
    # Only conversation roots are user prompts; replies are not, so they are skipped, not rejected.
    if record.get("role") != "prompter" or record.get("parent_id") is not None:
        return None
    return _field(record, "text")


def adapt_dolly(record: Mapping[str, Any], text_field: str = "prompt") -> str | None:
    return _join(_field(record, "instruction"), record.get("context"))


def adapt_sharegpt(record: Mapping[str, Any], text_field: str = "prompt") -> str | None:
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise RecordError("missing_field", "field 'conversations' must be a list")
    for turn in turns:
        if isinstance(turn, Mapping) and turn.get("from") in ("human", "user"):
            return _field(turn, "value")
    raise RecordError("missing_field", "field 'conversations' has no human/user turn")


def adapt_openorca(record: Mapping[str, Any], text_field: str = "prompt") -> str | None:
    return _field(record, "question")


def adapt_math(record: Mapping[str, Any], text_field: str = "prompt") -> str | None:
    return _field(record, "problem")


def adapt_self_instruct(record: Mapping[str, Any], text_field: str = "prompt") -> str | None:
    instruction = _field(record, "instruction")
    instances = record.get("instances")
    if isinstance(instances, list) and instances and isinstance(instances[0], Mapping):
        return _join(instruction, instances[0].get("input"))
    return instruction


def adapt_gsm8k(record: Mapping[str, Any], text_field: str = "prompt") -> str | None:
    return _field(record, "question")


def adapt_hh_rlhf(record: Mapping[str, Any], text_field: str = "prompt") -> str | None:
    # The dialogue reads "\n\nHuman: ...\n\nAssistant: ...": the prompt is the first Human turn.
    dialogue = _field(record, "chosen")
    start = dialogue.find("Human:")
    if start < 0:
        raise RecordError("missing_field", "field 'chosen' has no 'Human:' turn")
    rest = dialogue[start + len("Human:"):]
    ends = [i for i in (rest.find("\n\nAssistant:"), rest.find("\n\nHuman:")) if i >= 0]
    return (rest[: min(ends)] if ends else rest).strip()


ADAPTERS: dict[str, Adapter] = {
    "plain": adapt_plain,
    "oasst1": adapt_oasst1,
    "dolly": adapt_dolly,
    "sharegpt": adapt_sharegpt,
    "openorca": adapt_openorca,
    "math": adapt_math,
    "self_instruct": adapt_self_instruct,
    "gsm8k": adapt_gsm8k,
    "hh_rlhf": adapt_hh_rlhf,
}


def record_question_type(
    record: Mapping[str, Any], source: PromptSource, type_field: str | None
) -> str | None:
    """The record's question type: its ``type_field``, else the source's, else the format's.

    An absent or null ``type_field`` value falls through to the next level; any other value
    must name a question type (case, spaces and hyphens are forgiven: "Red-Teaming" is fine).
    """
    if type_field is not None and record.get(type_field) is not None:
        value = record[type_field]
        key = value.strip().lower().replace("-", "_").replace(" ", "_") if isinstance(value, str) else None
        if key not in QUESTION_TYPES:
            raise RecordError(
                "bad_question_type",
                f"field '{type_field}' = {value!r} is not one of {', '.join(QUESTION_TYPES)}",
            )
        return key
    return source.question_type or FORMAT_QUESTION_TYPES.get(source.format)


# --------------------------------------------------------------------------- readers
def _clip(text: str) -> str:
    return text[:MAX_REJECT_TEXT]


def _dump(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False, default=str)


def _read_jsonl(path: Path, limit: int | None) -> Iterator[tuple[int, Any, str]]:
    """Yield (line number, parsed object or RecordError, raw line); blank lines are skipped."""
    opener = gzip.open if path.name.endswith(".gz") else open
    read = 0
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if limit is not None and read >= limit:
                return
            if not raw.strip():
                continue
            read += 1
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM that editors put on line 1
            # Decode per line so one bad byte sequence rejects one row, not the whole file.
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield lineno, RecordError("malformed_row", f"invalid JSON: {exc}"), line
                continue
            if not isinstance(obj, dict):
                problem = f"expected a JSON object, got {type(obj).__name__}"
                yield lineno, RecordError("malformed_row", problem), line
                continue
            yield lineno, obj, line


def _read_frame(frame: pl.DataFrame) -> Iterator[tuple[int, Any, str]]:
    for row, record in enumerate(frame.iter_rows(named=True), start=1):
        yield row, record, ""


def _read_hf(source: PromptSource, path: Path | None) -> Iterator[tuple[int, Any, str]]:
    # Not a generator: loading happens here, so Hub errors surface where load_source expects them.
    import datasets  # heavy import: only when an hf source is used

    if path is not None and path.is_file():
        builder = next((b for ext, b in _HF_BUILDERS.items() if path.name.endswith(ext)), None)
        if builder is None:
            raise ValueError(f"source '{source.label}': no datasets builder for file {path}")
        ds = datasets.load_dataset(builder, data_files={source.split: str(path)}, split=source.split)
    else:
        target = str(path) if path is not None else str(source.path)
        ds = datasets.load_dataset(target, source.subset, split=source.split)
    rows = ds if source.limit is None else islice(ds, source.limit)
    return ((row, record, "") for row, record in enumerate(rows, start=1))


def _looks_local(path_str: str) -> bool:
    """True when an hf ``path`` is meant as a local path rather than a Hub id."""
    if path_str.startswith(("/", ".", "~")) or "\\" in path_str:
        return True
    return any(path_str.endswith(ext) for ext in _HF_BUILDERS)


def _bundled_path() -> Path:
    return Path(str(resources.files("salmon_dag") / "data" / BUNDLED_FILE))


def source_path(source: PromptSource) -> Path | None:
    """The local file or folder a source reads, or None for a Hub dataset id."""
    if source.type == "bundled":
        return _bundled_path()
    assert source.path is not None  # guaranteed by PromptSource validation
    if source.type == "hf":
        local = Path(source.path).expanduser()
        return local if local.exists() or _looks_local(source.path) else None
    return resolve_local(source.path)


def source_missing(source: PromptSource) -> bool:
    """True when the source names a local path that does not exist."""
    path = source_path(source)
    return path is not None and not path.exists()


def _rows(source: PromptSource, path: Path | None) -> Iterator[tuple[int, Any, str]]:
    if source.type in ("bundled", "jsonl"):
        assert path is not None
        return _read_jsonl(path, source.limit)
    if source.type == "parquet":
        return _read_frame(pl.read_parquet(path, n_rows=source.limit))
    if source.type == "csv":
        # All columns as text: prompts are text, and type inference can mangle them.
        return _read_frame(pl.read_csv(path, n_rows=source.limit, infer_schema=False))
    return _read_hf(source, path)


def load_source(source: PromptSource) -> tuple[list[RawPrompt], list[Reject]]:
    """Read one source into raw prompts and reject rows.

    ``source_row`` is 1-based: the line number for JSONL, the data row otherwise. ``limit`` caps
    the rows read (before format adaptation). A missing local path raises FileNotFoundError,
    unless the source is ``optional``, which gives two empty lists (the caller logs the skip).
    An optional ``hf`` source that cannot be fetched from the Hub is also skipped.
    """
    label = source.label
    path = source_path(source)
    if path is not None and not path.exists():
        if source.optional:
            return [], []
        raise FileNotFoundError(f"prompt source '{label}': file not found: {path}")

    # The bundled file carries its own types in "question_type".
    type_field = source.type_field or ("question_type" if source.type == "bundled" else None)
    adapter = ADAPTERS[source.format]
    prompts: list[RawPrompt] = []
    rejects: list[Reject] = []
    try:
        rows = _rows(source, path)
    except Exception as exc:
        # A Hub dataset that cannot be fetched (offline, unknown id) skips an optional source.
        if source.type == "hf" and path is None and source.optional:
            return [], []
        exc.add_note(f"while loading prompt source '{label}'")
        raise
    for row, record, line in rows:
        if isinstance(record, RecordError):
            rejects.append(Reject(label, row, _clip(line), record.reason, record.detail))
            continue
        try:
            text = adapter(record, source.text_field)
            if text is None:
                continue
            qtype = record_question_type(record, source, type_field)
        except RecordError as err:
            rejects.append(Reject(label, row, _clip(line or _dump(record)), err.reason, err.detail))
            continue
        prompts.append(RawPrompt(label, row, text, qtype))
    return prompts, rejects
