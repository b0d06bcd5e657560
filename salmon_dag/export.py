"""Warehouse tables as data other trainers take (``salmon export``).

- ``sft`` (``self_align_sft_data``): the kept Self-Align answers in TRL's conversational format,
  ``messages`` = [user, assistant], for ``SFTTrainer``.
- ``preferences`` (``rm_training_data``): SALMON's labelled examples as ``prompt`` / ``chosen`` /
  ``rejected`` conversations (the preferred response is ``chosen``), for ``DPOTrainer`` and
  ``RewardTrainer``, keeping what makes them SALMON's: the principles shown (``principles``, each
  with ``negated``), the deciding principle, whether a rule decided and whether label noise flipped it.

Formats: ``hf`` (``datasets.Dataset.save_to_disk``), ``jsonl``, ``parquet``. Written atomically
(a failed export leaves nothing). Plain Python: no dagster import.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from salmon_dag.warehouse import Warehouse, atomic_path

EXPORTS = {"sft": "self_align_sft_data", "preferences": "rm_training_data"}
FORMATS = ("hf", "jsonl", "parquet")
_SUFFIX = {"hf": "", "jsonl": ".jsonl", "parquet": ".parquet"}


def _message(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def sft_rows(df: pl.DataFrame) -> pl.DataFrame:
    """Kept answers (no ``filter_reason``) as ``messages`` conversations."""
    kept = df.filter(pl.col("filter_reason").is_null())
    return pl.DataFrame({
        "prompt_id": kept["prompt_id"].to_list(),
        "messages": [[_message("user", p), _message("assistant", r)]
                     for p, r in zip(kept["prompt"].to_list(), kept["response"].to_list())],
    })


def preference_rows(df: pl.DataFrame) -> pl.DataFrame:
    """Labelled examples as prompt / chosen / rejected conversations with their principles."""
    rows = []
    for r in df.iter_rows(named=True):
        first, second = r["response_1"], r["response_2"]
        chosen, rejected = (first, second) if r["preferred"] == 1 else (second, first)
        rows.append({
            "example_id": r["example_id"], "pair_id": r["pair_id"],
            "prompt": [_message("user", r["prompt"])],
            "chosen": [_message("assistant", chosen)], "rejected": [_message("assistant", rejected)],
            "principles": [{"name": p["name"], "negated": bool(p["negated"]), "text": p["text"]}
                           for p in json.loads(r["principles"])],
            "deciding_principle": r["deciding_principle"], "deciding_negated": r["deciding_negated"],
            "rule_decided": r["rule_decided"], "label_flipped": r["flipped"],
        })
    return pl.DataFrame(rows)


def export_table(warehouse: Warehouse, name: str, fmt: str, out: Path | str | None = None) -> tuple[Path, int]:
    """Export ``name`` (``sft`` / ``preferences`` or its table's name) as ``fmt``; returns the path
    written (default ``<warehouse>/exports/<name>[.jsonl|.parquet]``) and the row count."""
    table = EXPORTS.get(name, name)
    kinds = {v: k for k, v in EXPORTS.items()}
    if table not in kinds:
        raise ValueError(f"cannot export {name!r}: exportable are {', '.join(f'{k} ({v})' for k, v in EXPORTS.items())}")
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    kind = kinds[table]
    df = warehouse.read_table(table)
    rows = sft_rows(df) if kind == "sft" else preference_rows(df)
    path = Path(out) if out is not None else warehouse.root / "exports" / f"{kind}{_SUFFIX[fmt]}"
    with atomic_path(path) as tmp:
        if fmt == "hf":
            import datasets

            datasets.Dataset.from_list(rows.to_dicts()).save_to_disk(str(tmp))
        elif fmt == "jsonl":
            rows.write_ndjson(tmp)
        else:
            rows.write_parquet(tmp)
    return path, rows.height
