"""Scoring files with the reward model (``salmon score --input``).

Two row shapes, told apart by their columns: replies (``prompt``, ``response``[, ``principles``])
get a ``score``; comparisons in RewardBench's format (``prompt``, ``chosen``, ``rejected``[,
``subset``]) get ``score_chosen``, ``score_rejected`` and ``correct`` (chosen scored higher), with
the accuracy overall and per subset. ``principles`` in a row: a list of names of
``reward_model.yaml`` or texts; rows without them use the caller's. JSON Lines or Parquet, by suffix.
Plain Python: no dagster import.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from salmon_dag.errors import first_line
from salmon_dag.principles import PrincipleText


class ScoreFileError(ValueError):
    """A file that cannot be scored (the message names the file and the row or column)."""


def read_rows(path: Path | str) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ScoreFileError(f"{path}: no such file")
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        if path.suffix in (".jsonl", ".json"):
            return pl.read_ndjson(path)
    except Exception as exc:  # noqa: BLE001 - polars raises several kinds
        raise ScoreFileError(f"{path}: unreadable ({first_line(exc)})") from None
    raise ScoreFileError(f"{path}: expected a .jsonl or .parquet file")


def write_rows(df: pl.DataFrame, path: Path | str) -> None:
    from salmon_dag.warehouse import atomic_path

    path = Path(path)
    if path.suffix not in (".jsonl", ".parquet"):
        raise ScoreFileError(f"{path}: write .jsonl or .parquet")
    with atomic_path(path) as tmp:
        df.write_parquet(tmp) if path.suffix == ".parquet" else df.write_ndjson(tmp)


def _texts(row_principles: Any, default: Sequence[str], known: dict[str, PrincipleText], where: str) -> list[str]:
    if row_principles is None:
        if not default:
            raise ScoreFileError(f"{where}: no principles in the row and none given (--principle)")
        return list(default)
    if isinstance(row_principles, str):
        row_principles = [row_principles]
    return [known[p].definition if p in known else p for p in row_principles]


def score_rows(scorer, df: pl.DataFrame, default: Sequence[str], known: dict[str, PrincipleText],
               source: str = "input") -> tuple[pl.DataFrame, dict[str, Any]]:
    """``df`` with its scores, and a summary (rows; for comparisons the accuracy, overall and per
    subset). ``default``: principle texts for rows that name none."""
    cols = set(df.columns)
    pairs = {"prompt", "chosen", "rejected"} <= cols
    if not pairs and not {"prompt", "response"} <= cols:
        raise ScoreFileError(f"{source}: expected columns prompt + response, or prompt + chosen + rejected "
                             f"(RewardBench); got {', '.join(sorted(cols))}")
    rows = df.to_dicts()
    texts = [_texts(r.get("principles"), default, known, f"{source} row {i}") for i, r in enumerate(rows)]
    prompts = [str(r["prompt"]) for r in rows]
    if not pairs:
        scores = scorer.score(prompts, [str(r["response"]) for r in rows], texts)
        return df.with_columns(pl.Series("score", scores, dtype=pl.Float64)), {"rows": len(rows)}
    chosen = scorer.score(prompts, [str(r["chosen"]) for r in rows], texts)
    rejected = scorer.score(prompts, [str(r["rejected"]) for r in rows], texts)
    out = df.with_columns(pl.Series("score_chosen", chosen, dtype=pl.Float64),
                          pl.Series("score_rejected", rejected, dtype=pl.Float64),
                          pl.Series("correct", [c > r for c, r in zip(chosen, rejected)], dtype=pl.Boolean))
    summary: dict[str, Any] = {"rows": len(rows), "accuracy": round(float(out["correct"].mean()), 4)}
    if "subset" in cols:
        by = out.group_by("subset").agg(pl.col("correct").mean().alias("accuracy"), pl.len().alias("n")).sort("subset")
        summary["subsets"] = {s: {"accuracy": round(float(a), 4), "n": n} for s, a, n in by.iter_rows()}
    return out, summary


class PlainRewardModel:
    """Any reward model transformers loads as a sequence classifier (a Hub id or a folder), scored
    the way it was trained: the conversation through its own chat template (else the project's
    chat layout), its first logit read. It takes no principles: the same file, scored side by side
    with ours (``salmon score --input ... --compare MODEL``)."""

    def __init__(self, model_id: str, device: str = "cpu", batch_size: int = 8, max_len: int = 2048):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_id)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(model_id).to(device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device, self.batch_size, self.max_len, self._torch = device, batch_size, max_len, torch

    def _text(self, prompt: str, response: str) -> str:
        from salmon_dag.templates import ASSISTANT_TAG, USER_TAG

        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False)
        return f"{USER_TAG} {prompt}\n\n{ASSISTANT_TAG} {response}"

    def score(self, prompts: Sequence[str], responses: Sequence[str], _principles: Any = None) -> list[float]:
        texts = [self._text(p, r) for p, r in zip(prompts, responses)]
        out: list[float] = []
        with self._torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                # a chat template writes its own BOS: the tokenizer must not add a second one
                batch = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                       truncation=True, max_length=self.max_len,
                                       add_special_tokens=not self.tokenizer.chat_template).to(self.device)
                out.extend(self.model(**batch).logits[:, 0].float().tolist())
        return out
