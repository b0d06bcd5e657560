"""Reward-model training pairs from ``rm_training_data`` (and human pairs for PMP), tokenized.

Each example becomes one (chosen, rejected) pair of reviewer prompts that differ only in the
reply: the principles (as the example lists them, negated ones as negative definitions, in the
example's order) and the request are the same for both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from salmon_dag.reward_model.encode import encode_review, review_parts

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True)
class ReviewPair:
    """One preference: ``chosen`` is better than ``rejected`` for ``prompt`` under ``principles``
    (principle texts as shown to the RM; None = principle-free PMP prompt)."""

    group: str  # examples of one group (a response pair) stay on one side of the held-out split
    prompt: str
    principles: tuple[str, ...] | None
    chosen: str
    rejected: str


def example_principle_texts(principles_json: str) -> tuple[str, ...]:
    """Texts of an example's ``principles`` column (a JSON list of {name, negated, text})."""
    return tuple(p["text"] for p in json.loads(principles_json))


def pairs_from_examples(df: pl.DataFrame) -> list[ReviewPair]:
    """``rm_training_data`` rows as review pairs (``preferred`` = 1 or 2 picks the chosen reply)."""
    missing = {"pair_id", "prompt", "response_1", "response_2", "preferred", "principles"} - set(df.columns)
    if missing:
        raise ValueError(f"rm_training_data lacks column(s) {sorted(missing)}")
    out = []
    for row in df.iter_rows(named=True):
        if row["preferred"] not in (1, 2):
            raise ValueError(f"rm_training_data row {row.get('example_id')}: preferred must be 1 or 2")
        first, second = row["response_1"], row["response_2"]
        chosen, rejected = (first, second) if row["preferred"] == 1 else (second, first)
        out.append(ReviewPair(row["pair_id"], row["prompt"], example_principle_texts(row["principles"]), chosen, rejected))
    return out


def _heldout_value(group: str, seed: int) -> float:
    """A group's uniform draw in [0, 1), fixed by the seed and the group id (not by row order)."""
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def heldout_groups(groups: Iterable[str], fraction: float, seed: int) -> set[str]:
    """The held-out share of ``groups``: those whose draw is under ``fraction``, and at least the
    lowest draw when ``fraction`` > 0 and there are two groups or more. Pair ids hash the replies,
    which differ between machines, so a small run could otherwise hold out nothing on one box and
    evaluate on nothing."""
    values = {g: _heldout_value(g, seed) for g in set(groups)}
    held = {g for g, v in values.items() if v < fraction}
    if not held and fraction > 0 and len(values) >= 2:
        held = {min(values, key=values.__getitem__)}
    return held


def heldout_split(pairs: Sequence[ReviewPair], fraction: float, seed: int) -> tuple[list[ReviewPair], list[ReviewPair]]:
    """(train, held-out) by group, so no response pair is on both sides."""
    held_groups = heldout_groups((p.group for p in pairs), fraction, seed)
    train, held = [], []
    for p in pairs:
        (held if p.group in held_groups else train).append(p)
    return train, held


def tokenize_pairs(tok, pairs: Sequence[ReviewPair], max_len: int, layout: str = "standard") -> datasets.Dataset:
    """TRL's pre-tokenized preference format: ``chosen_ids`` / ``rejected_ids``, reviewer prompts
    in ``layout`` (``templates.REVIEWER_LAYOUTS``)."""
    import datasets  # here: the Dagster definitions import this module's dataclasses

    chosen, rejected = [], []
    for p in pairs:
        parts = review_parts(p.principles, layout)
        chosen.append(encode_review(tok, parts, p.prompt, p.chosen, max_len))
        rejected.append(encode_review(tok, parts, p.prompt, p.rejected, max_len))
    return datasets.Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})
