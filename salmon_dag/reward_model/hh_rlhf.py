"""Human preference pairs in Anthropic HH-RLHF format (and Stanford SHP's, for PMP).

Each HH-RLHF row holds two whole dialogues, ``chosen`` and ``rejected``, written as
``\\n\\nHuman: ...\\n\\nAssistant: ...``; they share every turn but the last assistant reply. The
pairs serve two purposes:

* optional preference-model pre-training (PMP) of the reward model, with a principle-free prompt;
* measuring how often the reward model agrees with the human label.

:func:`read_hh_pairs` turns rows into :class:`HumanPair` (shared context rendered in our dialogue
format, plus the two replies) and :func:`disjoint_split` splits them, by content, into a PMP part
and an evaluation part that never share a row.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from salmon_dag.base_model.corpus import Turns, hh_to_turns
from salmon_dag.templates import ASSISTANT_TAG, format_dialogue

HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN_MARKER = re.compile(r"\n\n(?:Human|Assistant):")
_LOCAL_SUFFIXES = (".jsonl", ".jsonl.gz")

# Reasons a row is skipped by read_hh_pairs (keys of its ``skipped`` counts).
INVALID_JSON = "invalid_json"
MISSING_FIELD = "missing_field"
NO_ASSISTANT_TURN = "no_assistant_turn"
EMPTY_CONTEXT = "empty_context"
EMPTY_REPLY = "empty_reply"
MULTI_TURN_REPLY = "multi_turn_reply"
IDENTICAL_REPLIES = "identical_replies"
LOW_SCORE_RATIO = "score_ratio_not_above"  # SHP: the two replies' scores too close


class HHPairError(ValueError):
    """A chosen/rejected pair that cannot be split; ``reason`` is one of the constants above."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class HumanPair:
    """One human preference pair.

    ``row`` is the 1-based row of the source (line number of a .jsonl file). ``context`` is the
    shared dialogue in our format, ending with ``ASSISTANT_TAG``: the prompt a reward model scores
    a reply to. ``chosen`` / ``rejected`` are the two final assistant replies, stripped.
    """

    row: int
    context: str
    chosen: str
    rejected: str


def split_hh_pair(chosen_dialogue: str, rejected_dialogue: str) -> tuple[Turns, str, str]:
    """Split two HH dialogues into the shared turns and the two differing final replies.

    As SALMON does, the split is at the longest common prefix of the two dialogues, backed off to
    end right after the last ``\\n\\nAssistant:`` inside it; each reply is the rest of its dialogue.
    Returns ``(context_turns, chosen_reply, rejected_reply)``: the turns before that assistant turn
    (``("user" | "assistant", text)``) and both replies, stripped.

    Raises :class:`HHPairError` (a ``ValueError``) if the common prefix has no assistant turn, no
    turn precedes it, a reply is empty, or a reply runs on into further turns.
    """
    common = _common_prefix(chosen_dialogue, rejected_dialogue)
    at = common.rfind(HH_ASSISTANT)
    if at < 0:
        raise HHPairError(NO_ASSISTANT_TURN, "the two dialogues share no assistant turn")
    turns = hh_to_turns(common[:at])
    if not turns:
        raise HHPairError(EMPTY_CONTEXT, "no dialogue turn precedes the differing assistant turn")
    cut = at + len(HH_ASSISTANT)
    replies = []
    for name, dialogue in (("chosen", chosen_dialogue), ("rejected", rejected_dialogue)):
        reply = dialogue[cut:]
        if _HH_TURN_MARKER.search(reply):
            raise HHPairError(MULTI_TURN_REPLY, f"the {name} reply runs on into further dialogue turns")
        if not reply.strip():
            raise HHPairError(EMPTY_REPLY, f"the {name} reply is empty")
        replies.append(reply.strip())
    return turns, replies[0], replies[1]


def render_context(turns: Turns) -> str:
    """The shared turns in our format, ending where the assistant's reply begins."""
    return f"{format_dialogue(turns)}\n\n{ASSISTANT_TAG}"


def pair_from_record(row: int, record: Any) -> HumanPair:
    """One HH-RLHF record (``{"chosen": ..., "rejected": ...}``) as a :class:`HumanPair`.

    Raises :class:`HHPairError` for a missing or non-text field, an unsplittable pair or two
    identical replies.
    """
    if not isinstance(record, dict):
        raise HHPairError(MISSING_FIELD, "row is not a JSON object")
    for field in ("chosen", "rejected"):
        if not isinstance(record.get(field), str) or not record[field].strip():
            raise HHPairError(MISSING_FIELD, f"field {field!r} is missing or not text")
    turns, chosen, rejected = split_hh_pair(record["chosen"], record["rejected"])
    if chosen == rejected:
        raise HHPairError(IDENTICAL_REPLIES, "chosen and rejected replies are identical")
    return HumanPair(row=row, context=render_context(turns), chosen=chosen, rejected=rejected)


def pair_from_shp_record(row: int, record: Any, score_ratio_above: float | None = None) -> HumanPair:
    """One SHP record (Stanford Human Preferences: a post ``history``, two replies ``human_ref_A`` /
    ``human_ref_B``, ``labels`` 1 when A is preferred, their ``score_A`` / ``score_B``) as a
    :class:`HumanPair` whose context is the post as one user turn.

    With ``score_ratio_above``, a pair whose higher score is not more than that many times the lower
    is skipped (SALMON's PMP keeps ``score_ratio > 2``). Raises :class:`HHPairError`.
    """
    if not isinstance(record, dict):
        raise HHPairError(MISSING_FIELD, "row is not a JSON object")
    for field in ("history", "human_ref_A", "human_ref_B"):
        if not isinstance(record.get(field), str) or not record[field].strip():
            raise HHPairError(MISSING_FIELD, f"field {field!r} is missing or not text")
    if record.get("labels") not in (0, 1):
        raise HHPairError(MISSING_FIELD, "field 'labels' must be 0 or 1")
    if score_ratio_above is not None:
        scores = [record.get("score_A"), record.get("score_B")]
        if not all(isinstance(x, (int, float)) and x > 0 for x in scores):
            raise HHPairError(MISSING_FIELD, "fields 'score_A' / 'score_B' must be positive numbers")
        if max(scores) / min(scores) <= score_ratio_above:
            raise HHPairError(LOW_SCORE_RATIO, f"score ratio not above {score_ratio_above}")
    a, b = record["human_ref_A"].strip(), record["human_ref_B"].strip()
    chosen, rejected = (a, b) if record["labels"] == 1 else (b, a)
    if chosen == rejected:
        raise HHPairError(IDENTICAL_REPLIES, "chosen and rejected replies are identical")
    return HumanPair(row=row, context=render_context([("user", record["history"].strip())]),
                     chosen=chosen, rejected=rejected)


def read_hh_pairs(
    source: str, split: str = "test", limit: int | None = None, *, format: str = "hh_rlhf",
    score_ratio_above: float | None = None,
) -> tuple[list[HumanPair], dict[str, int]]:
    """Read human preference pairs from ``source`` (``format``: ``hh_rlhf`` or ``shp``, see
    :func:`pair_from_record` and :func:`pair_from_shp_record`).

    ``source`` is a local ``.jsonl`` / ``.jsonl.gz`` file, or else a Hub dataset id or local
    dataset folder, loaded with ``datasets.load_dataset(source, split=split)`` (``split`` is used
    only then). Rows that are not valid pairs are skipped; returns ``(pairs, skipped)`` where
    ``skipped`` counts skipped rows by reason (see the module's reason constants). With ``limit``,
    reading stops once that many pairs are collected.

    Raises ``FileNotFoundError`` for a local path that does not exist.
    """
    if format not in ("hh_rlhf", "shp"):
        raise ValueError(f"format must be 'hh_rlhf' or 'shp', got {format!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    pairs: list[HumanPair] = []
    skipped: Counter[str] = Counter()
    if limit == 0:
        return pairs, {}
    for row, record in _records(source, split):
        if record is None:
            skipped[INVALID_JSON] += 1
            continue
        try:
            pairs.append(pair_from_record(row, record) if format == "hh_rlhf"
                         else pair_from_shp_record(row, record, score_ratio_above))
        except HHPairError as exc:
            skipped[exc.reason] += 1
            continue
        if limit is not None and len(pairs) >= limit:
            break
    return pairs, dict(skipped)


def disjoint_split(
    pairs: Sequence[HumanPair], pmp_fraction: float, seed: int
) -> tuple[list[HumanPair], list[HumanPair]]:
    """Split pairs into a PMP part and an evaluation part that never share a row.

    Each pair goes to PMP when a stable hash (sha256 of the seed, context, chosen and rejected) maps
    below ``pmp_fraction``, so the split is the same on every run, does not depend on the order of
    the pairs, and identical rows always land on the same side. Input order is kept in both parts.
    """
    if not 0.0 <= pmp_fraction <= 1.0:
        raise ValueError(f"pmp_fraction must be between 0 and 1, got {pmp_fraction}")
    pmp: list[HumanPair] = []
    evaluation: list[HumanPair] = []
    for pair in pairs:
        (pmp if _unit_hash(pair, seed) < pmp_fraction else evaluation).append(pair)
    return pmp, evaluation


# --------------------------------------------------------------------------- helpers
def _common_prefix(a: str, b: str) -> str:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return a[:i]


def _unit_hash(pair: HumanPair, seed: int) -> float:
    """A number in [0, 1) fixed by the pair's content and the seed (not by its row)."""
    key = json.dumps([seed, pair.context, pair.chosen, pair.rejected], ensure_ascii=False)
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _is_local_file(source: str) -> bool:
    return source.endswith(_LOCAL_SUFFIXES)


def _records(source: str, split: str) -> Iterator[tuple[int, Any]]:
    """``(1-based row, record)``; record is None for a line that is not valid JSON."""
    if _is_local_file(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"HH-RLHF file not found: {path}")
        return _jsonl_records(path)
    if source.startswith(("/", ".", "~")) and not Path(source).expanduser().exists():
        raise FileNotFoundError(f"HH-RLHF dataset folder not found: {source}")
    import datasets  # heavy import: only when a dataset is loaded

    target = str(Path(source).expanduser()) if Path(source).expanduser().exists() else source
    ds = datasets.load_dataset(target, split=split)
    return enumerate(ds, start=1)


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError:
                yield lineno, None
