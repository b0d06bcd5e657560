"""The two tables every benchmark writes into: per-item outputs and aggregate scores."""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

OUTPUT_SCHEMA: dict[str, pl.DataType] = {
    "policy": pl.Utf8, "benchmark": pl.Utf8, "item_id": pl.Utf8, "turn": pl.Int32, "sample": pl.Int32,
    "category": pl.Utf8, "prompt": pl.Utf8, "answer": pl.Utf8, "reference": pl.Utf8,
    "judge_output": pl.Utf8, "score": pl.Float64,
}
SCORE_SCHEMA: dict[str, pl.DataType] = {
    "policy": pl.Utf8, "benchmark": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64, "n": pl.Int64,
    "stderr": pl.Float64, "model": pl.Utf8, "judge": pl.Utf8,
}


@dataclass(frozen=True)
class ItemResult:
    """One graded item: what the policy was asked, what it answered, what the judge said, the score
    (None when the judge's output could not be read: recorded, excluded from the means)."""

    benchmark: str
    item_id: str
    prompt: str
    answer: str
    score: float | None
    judge_output: str = ""
    reference: str | None = None
    turn: int = 1
    sample: int = 0
    category: str = ""


@dataclass(frozen=True)
class Score:
    """One aggregate number of a benchmark (``stderr`` None where it has none)."""

    benchmark: str
    metric: str
    value: float
    n: int
    stderr: float | None = None


def mean_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n)); NaN when empty."""
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def outputs_frame(policy: str, items: list[ItemResult]) -> pl.DataFrame:
    rows = [{"policy": policy, "benchmark": i.benchmark, "item_id": i.item_id, "turn": i.turn, "sample": i.sample,
             "category": i.category, "prompt": i.prompt, "answer": i.answer, "reference": i.reference,
             "judge_output": i.judge_output, "score": i.score} for i in items]
    return pl.DataFrame(rows, schema=OUTPUT_SCHEMA)


def scores_frame(policy: str, scores: list[Score], model: str, judge: str,
                 judged_by: dict[str, str] | None = None) -> pl.DataFrame:
    """``judge`` for every row, except benchmarks that ``judged_by`` names their own grader for."""
    judged_by = judged_by or {}
    rows = [{"policy": policy, "benchmark": s.benchmark, "metric": s.metric,
             "value": None if s.value is None or math.isnan(s.value) else float(s.value), "n": s.n,
             "stderr": None if s.stderr is None or math.isnan(s.stderr) else float(s.stderr),
             "model": model, "judge": judged_by.get(s.benchmark, judge)} for s in scores]
    return pl.DataFrame(rows, schema=SCORE_SCHEMA)
