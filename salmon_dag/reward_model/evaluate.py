"""Evidence that the reward model follows its principles (rows of ``reward_model_eval``).

- ``heldout_accuracy``: held-out ``rm_training_data`` examples the RM orders as labelled.
- ``negation_flip_rate``: held-out examples whose preference flips when every listed principle
  is replaced by its negation (an RM that ignores the principles never flips).
- ``probe/<principle>/<direction>``: held-out response pairs on which a principle's verifiable
  rule decides (one reply satisfies it, the other not). ``principle``: the RM, shown only that
  principle, prefers the rule's choice; ``negation``: shown only its negation, it prefers the
  other reply. Same model, only the principle text changes.
- ``pairs/<principle>/<direction>``: the same two probes on hand-written (prompt, chosen,
  rejected) pairs (``reward_model.principle_pairs``), text the policy never wrote.
- ``hh_harmless_agreement``: agreement with human labels on held-out HH-RLHF pairs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from salmon_dag.principles import PrincipleText
from salmon_dag.reward_model.data import ReviewPair
from salmon_dag.rules import compare_rule

if TYPE_CHECKING:  # torch: the Dagster definitions import this module
    from salmon_dag.reward_model.scoring import RewardScorer

EVAL_SCHEMA: dict[str, pl.DataType] = {"metric": pl.Utf8, "value": pl.Float64, "n": pl.Int64}
DIRECTIONS = ("principle", "negation")


@dataclass(frozen=True)
class Metric:
    metric: str
    value: float
    n: int


def _score_both(scorer: RewardScorer, prompts, first, second, principles) -> tuple[list[float], list[float]]:
    """The RM's scores of ``first`` and of ``second`` for each row (one batched call)."""
    n = len(prompts)
    if n == 0:
        return [], []
    per_row = principles if principles is None or isinstance(principles[0], str) else list(principles) * 2
    scores = scorer.score(list(prompts) * 2, list(first) + list(second), per_row)
    return scores[:n], scores[n:]


def _prefers_first(scorer: RewardScorer, prompts, first, second, principles) -> list[bool]:
    """For each row, whether the RM scores ``first`` above ``second`` (one batched call)."""
    a, b = _score_both(scorer, prompts, first, second, principles)
    return [x > y for x, y in zip(a, b)]


def pair_scores(scorer: RewardScorer, pairs: Sequence[ReviewPair]) -> tuple[list[float], list[float]]:
    """The RM's scores of every pair's chosen and rejected reply, each under the pair's principles."""
    per_row = [p.principles for p in pairs]
    if any(p is None for p in per_row):
        if not all(p is None for p in per_row):
            raise ValueError("pair_scores: mix of principle-free and principled pairs")
        per_row = None
    return _score_both(scorer, [p.prompt for p in pairs], [p.chosen for p in pairs],
                       [p.rejected for p in pairs], per_row)


def pairwise_accuracy(scorer: RewardScorer, pairs: Sequence[ReviewPair]) -> Metric:
    """Share of pairs whose chosen reply scores above the rejected one."""
    chosen, rejected = pair_scores(scorer, pairs)
    wins = [c > r for c, r in zip(chosen, rejected)]
    return Metric("accuracy", sum(wins) / len(wins) if wins else float("nan"), len(wins))


def heldout_metrics(
    scorer: RewardScorer, examples: pl.DataFrame, principles: Sequence[PrincipleText]
) -> tuple[Metric, Metric]:
    """``heldout_accuracy`` and ``negation_flip_rate`` of ``examples`` (rm_training_data rows):
    the share ordered as labelled, and the share whose preferred reply changes when every listed
    principle is negated (negated ones turned back into their definitions). One scoring pass per
    principle list serves both."""
    by_name = {p.name: p for p in principles}
    prompts, r1, r2, listed, flipped_lists, first_preferred = [], [], [], [], [], []
    for row in examples.iter_rows(named=True):
        items = json.loads(row["principles"])
        try:
            flipped = [by_name[i["name"]].definition if i["negated"] else by_name[i["name"]].negative_definition
                       for i in items]
        except KeyError as exc:
            raise ValueError(f"rm_training_data row {row['example_id']}: unknown principle {exc.args[0]!r}") from None
        prompts.append(row["prompt"])
        r1.append(row["response_1"])
        r2.append(row["response_2"])
        listed.append([i["text"] for i in items])
        flipped_lists.append(flipped)
        first_preferred.append(row["preferred"] == 1)
    before = _prefers_first(scorer, prompts, r1, r2, listed)
    after = _prefers_first(scorer, prompts, r1, r2, flipped_lists)
    n = len(before)

    def share(hits) -> float:
        return sum(hits) / n if n else float("nan")

    return (Metric("heldout_accuracy", share(b == f for b, f in zip(before, first_preferred)), n),
            Metric("negation_flip_rate", share(b != a for b, a in zip(before, after)), n))


def rule_probes(scorer: RewardScorer, pairs: pl.DataFrame, principles: Sequence[PrincipleText]) -> list[Metric]:
    """``probe/<principle>/principle|negation`` for every principle with a rule that decides on
    some of ``pairs`` (response_pairs rows: prompt, response_a, response_b)."""
    out: list[Metric] = []
    rows = list(pairs.select("prompt", "response_a", "response_b").iter_rows())
    for p in principles:
        if p.rule is None:
            continue
        decided = []  # (prompt, rule's choice, the other)
        for prompt, a, b in rows:
            ok_a, ok_b = compare_rule(p.rule, prompt, a, b)
            if ok_a != ok_b:
                decided.append((prompt, a, b) if ok_a else (prompt, b, a))
        out += _direction_probes(scorer, "probe", p, decided)
    return out


def _direction_probes(scorer: RewardScorer, prefix: str, p: PrincipleText,
                      decided: Sequence[tuple[str, str, str]]) -> list[Metric]:
    """``<prefix>/<principle>/principle|negation`` on (prompt, the principle's choice, the other)."""
    if not decided:
        return []
    prompts, good, bad = (list(x) for x in zip(*decided))
    out = []
    for direction, text in zip(DIRECTIONS, (p.definition, p.negative_definition)):
        wins = _prefers_first(scorer, prompts, good, bad, [text])
        if direction == "negation":
            wins = [not w for w in wins]
        out.append(Metric(f"{prefix}/{p.name}/{direction}", sum(wins) / len(wins), len(wins)))
    return out


def principle_pair_probes(scorer: RewardScorer, source: str, principles: Sequence[PrincipleText]) -> list[Metric]:
    """``pairs/<principle>/principle|negation`` on a file of hand-written pairs (JSON Lines:
    ``principle``, ``prompt``, ``chosen`` = the reply the principle prefers, ``rejected``)."""
    from salmon_dag.benchmarks.data import read_records

    by_name = {p.name: p for p in principles}
    rows: dict[str, list[tuple[str, str, str]]] = {}
    for i, rec in read_records(source):
        missing = [k for k in ("principle", "prompt", "chosen", "rejected") if not isinstance(rec.get(k), str)]
        if missing:
            raise ValueError(f"{source}: row {i}: missing or non-text field(s) {', '.join(missing)}")
        if rec["principle"] not in by_name:
            raise ValueError(f"{source}: row {i}: unknown principle {rec['principle']!r}")
        rows.setdefault(rec["principle"], []).append((rec["prompt"], rec["chosen"], rec["rejected"]))
    return [m for name, decided in rows.items() for m in _direction_probes(scorer, "pairs", by_name[name], decided)]


def metrics_frame(metrics: Sequence[Metric]) -> pl.DataFrame:
    return pl.DataFrame([{"metric": m.metric, "value": float(m.value), "n": m.n} for m in metrics], schema=EVAL_SCHEMA)
