"""Stage 1: the cleaned prompt pool and the rows it rejected, with their reasons."""

from pathlib import Path

from dataclasses import replace

import dagster as dg

from assets_defs.decl import AssetDecl
from assets_defs.resources import SalmonResource
from assets_defs.tables import materialize_table, read_table
from salmon_dag.config import QUESTION_TYPES
from salmon_dag.lineage import files_hash
from salmon_dag.paths import DATA_DIR
from salmon_dag.prompt_pool import STAGE as POOL_STAGE
from salmon_dag.settings import Settings

STAGE_VERSION = "1"
GROUP = "prompts"
POOL = dg.AssetKey("prompt_pool")
REJECTS = dg.AssetKey("prompt_pool_rejects")
BUNDLED_PROMPTS = DATA_DIR / "default_prompts.jsonl"


def _prompt_files_hash(settings: Settings) -> str:
    # The content of local prompt files decides the output along with the config.
    cfg = settings.profile.prompt_pool
    files = [BUNDLED_PROMPTS] + [
        Path(s.path) for s in cfg.sources if s.type in ("jsonl", "parquet", "csv") and s.path
    ]
    return files_hash(files)


POOL_ASSET = AssetDecl(POOL, STAGE_VERSION, reads=POOL_STAGE.reads, extra_version=_prompt_files_hash)
REJECTS_ASSET = replace(POOL_ASSET, key=REJECTS)


def build_prompt_pool_assets(settings: Settings) -> list:
    @dg.multi_asset(
        name="prompt_pool",
        specs=[
            POOL_ASSET.spec(
                settings,
                description="Cleaned, de-duplicated user prompts with language, question type and split.",
                group_name=GROUP,
                kinds={"parquet", "polars"},
            ),
            REJECTS_ASSET.spec(
                settings,
                description="Prompt rows dropped while loading or cleaning, with the reason.",
                group_name=GROUP,
                kinds={"parquet", "polars"},
            ),
        ],
    )
    def prompt_pool(context: dg.AssetExecutionContext, salmon: SalmonResource):
        profile = salmon.load_profile()
        made = POOL_STAGE.run(salmon.stage_inputs(POOL_STAGE), log=context.log.info)
        pool, rejects = made.pool, made.rejects
        by_type = dict(pool.group_by("question_type").len().iter_rows())
        by_reason = dict(rejects.group_by("reason").len().iter_rows())
        context.log.info(f"prompt_pool: {pool.height} kept {by_type}; {rejects.height} rejected {by_reason}")
        yield materialize_table(
            salmon.warehouse,
            POOL,
            pool,
            POOL_ASSET.lineage(context, profile),
            extra_metadata={
                **{f"count/{t}": by_type.get(t, 0) for t in QUESTION_TYPES},
                "count/eval": pool.filter(pool["split"] == "eval").height,
            },
        )
        yield materialize_table(
            salmon.warehouse,
            REJECTS,
            rejects,
            REJECTS_ASSET.lineage(context, profile),
            extra_metadata={f"reason/{r}": n for r, n in sorted(by_reason.items())},
        )

    return [prompt_pool, *_checks()]


def _checks() -> list:
    @dg.asset_check(asset=POOL, description="The pool has rows of every question type.")
    def covers_all_question_types(salmon: SalmonResource) -> dg.AssetCheckResult:
        df = read_table(salmon.warehouse, POOL)
        counts = dict(df.group_by("question_type").len().iter_rows())
        return dg.AssetCheckResult(
            passed=df.height > 0 and all(counts.get(t, 0) > 0 for t in QUESTION_TYPES),
            metadata={t: counts.get(t, 0) for t in QUESTION_TYPES},
        )

    @dg.asset_check(asset=POOL, description="prompt_id is unique.")
    def unique_prompt_ids(salmon: SalmonResource) -> dg.AssetCheckResult:
        ids = read_table(salmon.warehouse, POOL)["prompt_id"]
        dupes = ids.filter(ids.is_duplicated()).unique().to_list()
        return dg.AssetCheckResult(passed=not dupes, metadata={"duplicates": len(dupes), "sample": str(dupes[:5])})

    @dg.asset_check(asset=POOL, description="question_type and split take only their allowed values.")
    def valid_categories(salmon: SalmonResource) -> dg.AssetCheckResult:
        df = read_table(salmon.warehouse, POOL)
        bad_types = sorted(set(df["question_type"].to_list()) - set(QUESTION_TYPES))
        bad_splits = sorted(set(df["split"].to_list()) - {"train", "eval"})
        return dg.AssetCheckResult(
            passed=not bad_types and not bad_splits,
            metadata={"bad_question_types": str(bad_types), "bad_splits": str(bad_splits)},
        )

    return [covers_all_question_types, unique_prompt_ids, valid_categories]
