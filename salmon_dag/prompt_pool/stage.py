"""The prompt-pool stage: every configured source loaded, cleaned and split (``build_from_config``;
the stage's ``run`` calls it with the profile's section)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from salmon_dag.prompt_pool.config import PromptPoolConfig
from salmon_dag.prompt_pool.sources import RawPrompt, Reject, load_source, source_missing, source_path
from salmon_dag.stage import DataStage, Reads, StageInputs


def build_from_config(
    cfg: PromptPoolConfig, seed: int, log: Callable[[str], None] = print
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Load every source in ``cfg`` and clean them together into ``(pool, rejects)``.

    Sources are read in config order, which decides which copy of a duplicate is kept. The
    rejects frame holds both unreadable rows (from loading) and filtered prompts (from cleaning).
    """
    # here: the Dagster definitions import this module (STAGE), and cleaning imports datasketch
    from salmon_dag.prompt_pool.cleaning import build_prompt_pool, rejects_frame

    raw: list[RawPrompt] = []
    load_rejects: list[Reject] = []
    for source in cfg.sources:
        if source.optional and source_missing(source):
            log(f"prompt source '{source.label}': skipped (optional, not found: {source_path(source)})")
            continue
        prompts, rejects = load_source(source)
        if source.optional and not prompts and not rejects:
            log(f"prompt source '{source.label}': skipped (optional, nothing loaded)")
            continue
        log(f"prompt source '{source.label}': {len(prompts)} prompts, {len(rejects)} rows rejected on load")
        raw.extend(prompts)
        load_rejects.extend(rejects)

    pool, clean_rejects = build_prompt_pool(raw, cfg, seed)
    rejects = pl.concat([rejects_frame(load_rejects), clean_rejects]).sort(
        "source", "source_row", maintain_order=True
    )
    reasons = Counter(rejects["reason"].to_list())
    summary = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items())) or "none"
    log(f"prompt pool: {pool.height} prompts kept, {rejects.height} rejected ({summary})")
    return pool, rejects


@dataclass(frozen=True)
class PromptPoolResult:
    """The stage's two tables: the cleaned pool and every row it dropped, with the reason."""

    pool: pl.DataFrame
    rejects: pl.DataFrame


def run(inputs: StageInputs, log: Callable[[str], None] = print) -> PromptPoolResult:
    """The ``prompt_pool`` stage: :func:`build_from_config` on the profile's ``prompt_pool`` section."""
    return PromptPoolResult(*build_from_config(inputs.section("prompt_pool"), inputs.seed, log))


# prompt_pool and prompt_pool_rejects: the prompt_pool section only (and the prompt files' content)
STAGE = DataStage("prompt_pool", Reads(("prompt_pool",)), run)


def train_prompts(pool: pl.DataFrame, limit: int | None = None) -> pl.DataFrame:
    """The pool's training prompts in prompt-id order, the first ``limit`` when given."""
    train = pool.filter(pl.col("split") == "train").sort("prompt_id")
    return train.head(limit) if limit else train
