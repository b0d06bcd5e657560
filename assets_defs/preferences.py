"""Stage 3: synthetic preferences and reward-model training data (SALMON §1.2–1.3)."""

import json

import dagster as dg
import polars as pl

from assets_defs.decl import AssetDecl
from assets_defs.principles import TABLE_KEYS
from assets_defs.resources import SalmonResource
from assets_defs.tables import read_table
from salmon_dag.preferences import STAGE as PREFS_STAGE
from salmon_dag.rm_training_data import STAGE as RM_DATA_STAGE
from salmon_dag.settings import ACCELERATOR_POOL, Settings
from salmon_dag.templates import JUDGE_TEMPLATE_VERSION

# 2: SALMON's normaliser, rule scopes, comparative rules
STAGE_VERSION = "2"
GROUP = "preferences"
PREFS = dg.AssetKey("synthetic_preferences")
RM_DATA = dg.AssetKey("rm_training_data")
RM_PRINCIPLES = TABLE_KEYS["reward_model"]
# share of labels preferring response_1 allowed around one half before the balance check fails
BALANCE_TOLERANCE = 0.15
BALANCE_MIN_EXAMPLES = 40

# The judge template version is in the judgement cache key and in the code version: a new
# template makes existing judgements stale (read at build time, so a changed template counts).
PREFS_ASSET = AssetDecl(PREFS, STAGE_VERSION, reads=PREFS_STAGE.reads, extra_version=lambda _settings: JUDGE_TEMPLATE_VERSION)
RM_DATA_ASSET = AssetDecl(RM_DATA, STAGE_VERSION, reads=RM_DATA_STAGE.reads)


def build_preference_assets(settings: Settings) -> list:
    @PREFS_ASSET.asset(
        settings,
        description="One row per (response pair, reward-model principle): judge scores in both orders, "
        "order consistency, combined score, and the verdict of the principle's verifiable rule.",
        group_name=GROUP,
        kinds={"parquet", "pytorch"},
        pool=ACCELERATOR_POOL,
    )
    def synthetic_preferences(context: dg.AssetExecutionContext, salmon: SalmonResource) -> dg.MaterializeResult:
        made = PREFS_STAGE.run(salmon.stage_inputs(PREFS_STAGE), log=context.log.info)
        return PREFS_ASSET.materialize(context, salmon.warehouse, salmon.load_profile(), made)

    @RM_DATA_ASSET.asset(
        settings,
        description="Reward-model training examples: sampled principle subsets with negations, the label "
        "from the dominant principle (or a rule), random response order and label noise.",
        group_name=GROUP,
        kinds={"parquet", "polars"},
    )
    def rm_training_data(context: dg.AssetExecutionContext, salmon: SalmonResource) -> dg.MaterializeResult:
        made = RM_DATA_STAGE.run(salmon.stage_inputs(RM_DATA_STAGE), log=context.log.info)
        return RM_DATA_ASSET.materialize(context, salmon.warehouse, salmon.load_profile(), made)

    return [synthetic_preferences, rm_training_data, *_checks()]


def _checks() -> list:
    @dg.asset_check(asset=PREFS, description="Every (pair, principle) is judged exactly once.")
    def one_judgement_per_pair_and_principle(salmon: SalmonResource) -> dg.AssetCheckResult:
        df = read_table(salmon.warehouse, PREFS)
        dupes = df.height - df.select("pair_id", "principle").unique().height
        return dg.AssetCheckResult(passed=df.height > 0 and dupes == 0, metadata={"rows": df.height, "duplicates": dupes})

    @dg.asset_check(asset=RM_DATA, description="Labels prefer response 1 about half the time (order is randomised).")
    def label_balance(salmon: SalmonResource) -> dg.AssetCheckResult:
        df = read_table(salmon.warehouse, RM_DATA)
        share = float((df["preferred"] == 1).mean()) if df.height else 0.0
        ok = df.height > 0 and (df.height < BALANCE_MIN_EXAMPLES or abs(share - 0.5) <= BALANCE_TOLERANCE)
        return dg.AssetCheckResult(passed=ok, metadata={"examples": df.height, "share_preferred_1": round(share, 3)})

    @dg.asset_check(asset=RM_DATA, description="Every materialized reward-model principle that aggregation "
                    "samples (include_principles minus exclude_principles) appears in some example.")
    def covers_every_principle(salmon: SalmonResource) -> dg.AssetCheckResult:
        df = read_table(salmon.warehouse, RM_DATA)
        # the principle set the data was built from (the materialized table), not the file, which
        # may have been edited since
        table = read_table(salmon.warehouse, RM_PRINCIPLES)
        from salmon_dag.aggregation import sampled_principles

        names = table.filter(pl.col("entry_kind") == "principle")["name"].to_list()
        expected = set(sampled_principles(salmon.load_profile().aggregation, names))
        seen = {p["name"] for row in df["principles"].to_list() for p in json.loads(row)}
        missing = sorted(expected - seen)
        return dg.AssetCheckResult(passed=not missing, metadata={"missing": str(missing), "expected": len(expected)})

    return [one_judgement_per_pair_and_principle, label_balance, covers_every_principle]
