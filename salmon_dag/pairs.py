"""Response pairs (SALMON §1.2): two sampled SFT-policy responses per prompt, the judge's input."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import polars as pl

from salmon_dag.engine.base import Completion
from salmon_dag.rules import word_count

PAIR_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.Utf8,
    "prompt_id": pl.Utf8,
    "prompt": pl.Utf8,
    "question_type": pl.Utf8,
    "response_a": pl.Utf8,
    "response_b": pl.Utf8,
    "finish_reason_a": pl.Utf8,
    "finish_reason_b": pl.Utf8,
    "tokens_a": pl.Int64,
    "tokens_b": pl.Int64,
    "words_a": pl.Int64,
    "words_b": pl.Int64,
}


def pair_id(prompt_id: str, a: str, b: str) -> str:
    """Stable id of a pair: the judge cache keys on it, so it depends on content only."""
    return hashlib.sha256(f"{prompt_id}\x00{a}\x00{b}".encode()).hexdigest()[:16]


def make_pairs(prompts: pl.DataFrame, outputs: Sequence[Sequence[Completion]], min_words: int) -> tuple[pl.DataFrame, dict[str, int]]:
    """One row per prompt whose two completions are both at least ``min_words`` long and differ.

    ``prompts`` has prompt_id, prompt, question_type (row order = ``outputs`` order). Returns the
    pairs and a count of dropped prompts by reason (``too_short``, ``identical``).
    """
    rows, dropped = [], Counter()
    for (pid, prompt, qtype), comps in zip(prompts.select("prompt_id", "prompt", "question_type").iter_rows(), outputs):
        if len(comps) != 2:
            raise ValueError(f"prompt {pid}: expected 2 completions, got {len(comps)}")
        a, b = (c.text.strip() for c in comps)
        words = (word_count(a), word_count(b))
        if min(words) < min_words:
            dropped["too_short"] += 1
            continue
        if a == b:
            dropped["identical"] += 1
            continue
        rows.append({
            "pair_id": pair_id(pid, a, b), "prompt_id": pid, "prompt": prompt, "question_type": qtype,
            "response_a": a, "response_b": b,
            "finish_reason_a": comps[0].finish_reason, "finish_reason_b": comps[1].finish_reason,
            "tokens_a": len(comps[0].token_ids), "tokens_b": len(comps[1].token_ids),
            "words_a": words[0], "words_b": words[1],
        })
    return pl.DataFrame(rows, schema=PAIR_SCHEMA), dict(dropped)
