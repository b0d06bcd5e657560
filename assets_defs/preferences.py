"""Stage 3: synthetic preferences and reward-model training data (SALMON §1.2–1.3)."""

import json

import dagster as dg
import polars as pl

from assets_defs.base_model import KEY as BASE_MODEL
from assets_defs.decl import AssetDecl
from assets_defs.models import read_model
from assets_defs.principles import TABLE_KEYS, materialized_principles
from assets_defs.resources import SalmonResource
from assets_defs.self_align import PAIRS, SFT_MODEL
from assets_defs.tables import materialize_table, read_table
from salmon_dag.engine import create_engine
from salmon_dag.model_ref import ModelRef
from salmon_dag.settings import ACCELERATOR_POOL, Settings
from salmon_dag.templates import JUDGE_TEMPLATE_VERSION
from salmon_dag.warehouse import WarehouseError

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
PIPELINE_JUDGES = {"sft_model": SFT_MODEL, "base_model": BASE_MODEL}


def judge_deps(settings: Settings) -> tuple[dg.AssetKey, ...]:
    """The pipeline model ``judge.model`` names, as a dependency (none for a Hub id or a path:
    its name is in the judge section's hash)."""
    judge = settings.profile.judge.model
    return (PIPELINE_JUDGES[judge],) if judge in PIPELINE_JUDGES else ()


PREFS_ASSET = AssetDecl(PREFS, STAGE_VERSION, sections=("judge", "engine"), deps=(PAIRS, RM_PRINCIPLES),
                        extra_version=lambda _settings: JUDGE_TEMPLATE_VERSION, profile_deps=judge_deps)
RM_DATA_ASSET = AssetDecl(RM_DATA, STAGE_VERSION, sections=("aggregation",), deps=(PREFS, PAIRS, RM_PRINCIPLES))


def judge_model(salmon: SalmonResource, name: str) -> tuple[ModelRef, str]:
    """(model to load, cache identity). Pipeline models are identified by the run that built them,
    so a retrained SFT policy never reuses the old policy's judgements."""
    if name in PIPELINE_JUDGES:
        ref = read_model(salmon.warehouse, PIPELINE_JUDGES[name])
        return ref, f"{name}@{ref.lineage.get('run_id', '')}"
    return ModelRef(name="judge", model_id=name), name


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
        from salmon_dag.preferences import judge_preferences

        profile = salmon.load_profile()
        pset = materialized_principles(salmon, "reward_model")
        pairs = read_table(salmon.warehouse, PAIRS).sort("pair_id")
        if profile.judge.max_pairs:
            pairs = pairs.head(profile.judge.max_pairs)
        try:
            cached = read_table(salmon.warehouse, PREFS)
        except WarehouseError:
            cached = None
        ref, judge_id = judge_model(salmon, profile.judge.model)
        principles = [p for _, p in pset.principles()]
        if profile.judge.principles is not None:
            unknown = sorted(set(profile.judge.principles) - {p.name for p in principles})
            if unknown:
                raise ValueError(f"judge.principles: unknown principle(s) {', '.join(map(repr, unknown))} in {pset.path}")
            principles = [p for p in principles if p.name in profile.judge.principles]
        with create_engine(profile.engine, ref.model_id, ref.revision, ref.adapter_path, ref.trust_remote_code) as engine:
            df, counts = judge_preferences(engine, pairs, principles, judge_id, cached, log=context.log.info,
                                           inconsistent=profile.judge.inconsistent)
        context.log.info(f"synthetic_preferences: {df.height} judgements, {counts}")
        consistency = dict(df.group_by("principle").agg(pl.col("consistent").mean()).iter_rows())
        lineage = PREFS_ASSET.lineage(context, profile, principle_hash=pset.content_hash, model_id=judge_id)
        return materialize_table(salmon.warehouse, PREFS, df, lineage, extra_metadata={
            "judged": counts["judged"], "reused_from_cache": counts["reused"],
            "consistency_rate": round(float(df["consistent"].mean() or 0), 3),
            "consistency_per_principle": dg.MetadataValue.json({k: round(v, 3) for k, v in sorted(consistency.items())}),
        })

    @RM_DATA_ASSET.asset(
        settings,
        description="Reward-model training examples: sampled principle subsets with negations, the label "
        "from the dominant principle (or a rule), random response order and label noise.",
        group_name=GROUP,
        kinds={"parquet", "polars"},
    )
    def rm_training_data(context: dg.AssetExecutionContext, salmon: SalmonResource) -> dg.MaterializeResult:
        from salmon_dag.aggregation import aggregate
        from salmon_dag.principles import principle_texts

        profile = salmon.load_profile()
        pset = materialized_principles(salmon, "reward_model")
        prefs = read_table(salmon.warehouse, PREFS)
        pairs = read_table(salmon.warehouse, PAIRS)
        texts = principle_texts(pset)
        df, stats = aggregate(prefs.select("pair_id", "principle", "score_ab", "score_ba", "score", "rule_a", "rule_b"),
                              pairs, texts, profile.aggregation, profile.seed)
        context.log.info(f"rm_training_data: {stats}")
        lineage = RM_DATA_ASSET.lineage(context, profile, principle_hash=pset.content_hash,
                                        model_id=prefs["judge_model"][0] if prefs.height else None)
        deciding = dict(df.group_by("deciding_principle").len().iter_rows()) if df.height else {}
        return materialize_table(salmon.warehouse, RM_DATA, df, lineage, extra_metadata={
            **{k: int(v) for k, v in stats.items()},
            "share_preferred_1": round(float((df["preferred"] == 1).mean()), 3) if df.height else 0.0,
            "share_rule_decided": round(float(df["rule_decided"].mean()), 3) if df.height else 0.0,
            "deciding_principles": dg.MetadataValue.json(dict(sorted(deciding.items()))),
        })

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
