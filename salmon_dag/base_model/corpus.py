"""The pre-training corpus of the tiny base model.

Documents come from the bundled corpus (``salmon_dag/data/corpus``), texts the pipeline passes in
(principles, bundled prompts) and, when available, real public data in a "shared data" folder.
Every dialogue is written with :func:`salmon_dag.templates.format_dialogue`, so the base model
learns the exact turn markers that later stages prompt with and stop on.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from salmon_dag.base_model.tiny_world import world_dialogues
from salmon_dag.paths import DATA_DIR, resolve_local
from salmon_dag.templates import format_dialogue

BUNDLED_CORPUS_DIR = DATA_DIR / "corpus"
BUNDLED_DIALOGUES = "dialogues.jsonl"
BUNDLED_PASSAGES = "passages.txt"

# At most this many documents per shared file, so tiny pre-training stays a few minutes.
SHARED_FILE_CAP = 2000

_CALCULATOR = re.compile(r"<<[^>]*>>")
_FINAL_ANSWER = re.compile(r"\n?####\s*(.+?)\s*$", re.DOTALL)
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_BLANK_LINE = re.compile(r"\n\s*\n")

Turns = list[tuple[str, str]]


# --------------------------------------------------------------------------- readers
def _jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None


def _gsm8k(record: dict) -> Turns | None:
    question, answer = record.get("question"), record.get("answer")
    if not question or not answer:
        return None
    answer = _CALCULATOR.sub("", answer)
    answer = _FINAL_ANSWER.sub(lambda m: f"\nThe answer is {m.group(1)}.", answer).strip()
    return [("user", question), ("assistant", answer)]


def _self_instruct(record: dict) -> Iterator[Turns]:
    instruction = (record.get("instruction") or "").strip()
    for inst in record.get("instances") or []:
        output = (inst.get("output") or "").strip()
        if not instruction or not output:
            continue
        extra = (inst.get("input") or "").strip()
        user = f"{instruction}\n\n{extra}" if extra else instruction
        yield [("user", user), ("assistant", output)]


def hh_to_turns(text: str) -> Turns:
    """Split an HH-RLHF dialogue (``\\n\\nHuman: ...\\n\\nAssistant: ...``) into our turns."""
    parts = _HH_TURN.split(text)
    # parts = [preamble, role, text, role, text, ...]; the preamble is empty in HH-RLHF.
    turns: Turns = []
    for role, body in zip(parts[1::2], parts[2::2]):
        if body.strip():
            turns.append(("user" if role == "Human" else "assistant", body))
    return turns


def _hh_rlhf(record: dict) -> Turns | None:
    turns = hh_to_turns(record.get("chosen") or "")
    return turns if any(role == "assistant" for role, _ in turns) else None


def _flatten(fn: Callable[[dict], Turns | None]) -> Callable[[dict], Iterator[Turns]]:
    def reader(record: dict) -> Iterator[Turns]:
        turns = fn(record)
        if turns:
            yield turns

    return reader


# File name → record-to-dialogues reader. Order here is the order in the corpus.
SHARED_FILES: dict[str, Callable[[dict], Iterator[Turns]]] = {
    "gsm8k_train.jsonl.gz": _flatten(_gsm8k),
    "self_instruct_seed_tasks.jsonl": _self_instruct,
    "self_instruct_user_oriented_instructions.jsonl": _self_instruct,
    "hh_rlhf_harmless_base_test.jsonl.gz": _flatten(_hh_rlhf),
}


# --------------------------------------------------------------------------- public
def resolve_shared_dir(shared_data_dir: str | None) -> Path | None:
    """The shared data folder if it exists, else None.

    A relative path is tried from the working directory, then from the project root (profiles
    write ``../shared/data`` relative to the project, and Dagster may run from elsewhere).
    """
    if not shared_data_dir:
        return None
    path = resolve_local(shared_data_dir)
    return path.resolve() if path.is_dir() else None


def corpus_sources(shared_data_dir: str | None, bundled_dir: Path = BUNDLED_CORPUS_DIR) -> list[str]:
    """Absolute paths of the files :func:`build_corpus` reads (bundled, then shared), for lineage."""
    files = [bundled_dir / BUNDLED_DIALOGUES, bundled_dir / BUNDLED_PASSAGES]
    shared = resolve_shared_dir(shared_data_dir)
    if shared is not None:
        files += [shared / name for name in SHARED_FILES]
    return [str(f.resolve()) for f in files if f.is_file()]


def bundled_dialogues(bundled_dir: Path = BUNDLED_CORPUS_DIR) -> Turns:
    """(user, assistant) of every bundled dialogue; also the benchmarks' requests and replies."""
    path = bundled_dir / BUNDLED_DIALOGUES
    if not path.is_file():
        return []
    return [(rec["user"], rec["assistant"]) for rec in _jsonl(path) if rec.get("user") and rec.get("assistant")]


def bundled_documents(bundled_dir: Path = BUNDLED_CORPUS_DIR) -> list[str]:
    """The tiny world's dialogues (formatted: :mod:`salmon_dag.base_model.tiny_world`) then the
    bundled passages; missing files give nothing."""
    world = world_dialogues(bundled_dialogues(bundled_dir), bundled_dir)
    docs = [format_dialogue([("user", user), ("assistant", reply)]) for user, reply in world]
    passages = bundled_dir / BUNDLED_PASSAGES
    if passages.is_file():
        text = passages.read_text(encoding="utf-8")
        docs.extend(p.strip() for p in _BLANK_LINE.split(text) if p.strip())
    return docs


def shared_documents(shared_dir: Path, cap: int = SHARED_FILE_CAP) -> list[str]:
    """Dialogues from the public files in ``shared_dir``: the first ``cap`` of each file."""
    docs: list[str] = []
    for name, reader in SHARED_FILES.items():
        path = shared_dir / name
        if not path.is_file():
            continue
        taken = 0
        for rec in _jsonl(path):
            for turns in reader(rec):
                docs.append(format_dialogue(turns))
                taken += 1
                if taken >= cap:
                    break
            if taken >= cap:
                break
    return docs


def build_corpus(
    shared_data_dir: str | None,
    extra_texts: Sequence[str] = (),
    *,
    bundled_dir: Path = BUNDLED_CORPUS_DIR,
) -> list[str]:
    """All pre-training documents, in a fixed order: bundled, ``extra_texts``, shared data.

    ``shared_data_dir`` that is None or does not exist is ignored (a user's machine has no
    shared folder); :func:`corpus_sources` says which files were actually read.
    """
    docs = bundled_documents(bundled_dir)
    docs.extend(t.strip() for t in extra_texts if t and t.strip())
    shared = resolve_shared_dir(shared_data_dir)
    if shared is not None:
        docs.extend(shared_documents(shared))
    return docs
