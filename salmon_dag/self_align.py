"""Principle-driven self-alignment (Dromedary): prompting, parsing and filtering of base-model answers.

The base model answers each training prompt with the self-align principles and exemplars in
context (``templates.self_align_prompt``). Its continuation holds internal thoughts, then the
answer after ``templates.ANSWER_TAG``; only the answer is kept for principle engraving (SFT
without the principles in context).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from salmon_dag.principles import PrincipleSet, SelfAlignFile
from salmon_dag.templates import (
    ANSWER_TAG,
    ASSISTANT_TAG,
    PRINCIPLES_HEADER,
    TURN_SEPARATOR,
    USER_TAG,
    self_align_prompt,
)

_WORD = re.compile(r"\w+", re.UNICODE)
# The smallest echo of a principle definition that counts as prompt leakage.
LEAK_MIN_CHARS = 40


def build_prompt(pset: PrincipleSet, user_prompt: str) -> str:
    """The self-align prompt for one request, from a validated ``self_align.yaml``."""
    data = pset.data
    if not isinstance(data, SelfAlignFile):
        raise TypeError(f"{pset.path}: expected the self_align principle file, got kind {pset.kind!r}")
    return self_align_prompt(
        data.preamble,
        [(p.name, p.definition) for p in data.principles],
        [(e.prompt, e.internal_thoughts, e.answer) for e in data.exemplars],
        user_prompt,
    )


@dataclass(frozen=True)
class ParsedAnswer:
    internal_thoughts: str | None
    answer: str


def parse_generation(text: str) -> ParsedAnswer:
    """Split a continuation into internal thoughts and the answer.

    Anything after a turn marker (the model starting the next turn) is dropped. Without an
    ``Answer:`` tag the whole text is the answer and there are no internal thoughts.
    """
    # A continuation that re-opens the assistant turn ("### Assistant: ...") skipped the thoughts.
    stripped = text.lstrip()
    if stripped.startswith(ASSISTANT_TAG):
        text = stripped[len(ASSISTANT_TAG) :]
    cut = len(text)
    for marker in (TURN_SEPARATOR, f"\n{USER_TAG}", f"\n{ASSISTANT_TAG}"):
        pos = text.find(marker)
        if pos >= 0:
            cut = min(cut, pos)
    text = text[:cut]
    if ANSWER_TAG in text:
        thoughts, answer = text.split(ANSWER_TAG, 1)
        return ParsedAnswer(thoughts.strip() or None, answer.strip())
    return ParsedAnswer(None, text.strip())


def distinct_ngram_ratio(text: str, n: int = 3) -> float:
    """Share of distinct word n-grams: near 1 for ordinary prose, low for looping text."""
    words = [w.lower() for w in _WORD.findall(text)]
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def leaks_principles(answer: str, pset: PrincipleSet) -> bool:
    """True when the answer echoes the principles block (its header or a principle definition)."""
    if PRINCIPLES_HEADER.lower() in answer.lower():
        return True
    low = " ".join(answer.lower().split())
    for _, p in pset.principles():
        definition = " ".join(p.definition.lower().split())
        probe = definition[:LEAK_MIN_CHARS]
        if len(probe) >= LEAK_MIN_CHARS and probe in low:
            return True
    return False


def filter_reason(
    answer: str,
    finish_reason: str,
    *,
    min_words: int,
    max_words: int,
    min_distinct_trigram_ratio: float,
    pset: PrincipleSet | None = None,
    keep_truncated: bool = False,
) -> str | None:
    """Why an answer is dropped (``empty``, ``truncated``, ``too_long``, ``too_short``,
    ``repetitive``, ``prompt_leak``), or None when it is kept."""
    words = len(_WORD.findall(answer))
    if not answer.strip():
        return "empty"
    if finish_reason != "stop" and not keep_truncated:
        return "truncated"
    if words > max_words:
        return "too_long"
    if words < min_words:
        return "too_short"
    if distinct_ngram_ratio(answer) < min_distinct_trigram_ratio:
        return "repetitive"
    if pset is not None and leaks_principles(answer, pset):
        return "prompt_leak"
    return None
