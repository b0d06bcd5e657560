"""Stage 2: Self-Align SFT data, principle engraving (SFT) and response pairs (SALMON §1.1–1.2)."""

import dagster as dg
import polars as pl

from assets_defs.decl import AssetDecl
from assets_defs.models import materialize_trained_model
from assets_defs.resources import SalmonResource
from assets_defs.tables import read_table, table_name
from salmon_dag.config import stable_hash
from salmon_dag.pairs import STAGE as PAIRS_STAGE
from salmon_dag.pairs import contrast_rules as judged_contrast_rules
from salmon_dag.principles import PrincipleError, load_principles
from salmon_dag.self_align import STAGE as SFT_DATA_STAGE
from salmon_dag.settings import ACCELERATOR_POOL, Settings
from salmon_dag.training.sft_job import STAGE as SFT_STAGE

STAGE_VERSION = "1"
GROUP = "self_align"
SFT_DATA = dg.AssetKey("self_align_sft_data")
SFT_MODEL = dg.AssetKey("sft_model")
PAIRS = dg.AssetKey("response_pairs")

SFT_DATA_ASSET = AssetDecl(SFT_DATA, STAGE_VERSION, reads=SFT_DATA_STAGE.reads)
SFT_MODEL_ASSET = AssetDecl(SFT_MODEL, STAGE_VERSION, reads=SFT_STAGE.reads)


def contrast_rules(settings: Settings) -> list:
    """The rules the profile's pairs are picked by (salmon_dag.pairs.contrast_rules), read from
    this project's reward_model.yaml (none under ``select: first``, which reads no file)."""
    profile = settings.profile
    if profile.pairs.select != "rule_contrast":
        return []
    return judged_contrast_rules(load_principles(settings.principles_path, "reward_model"), profile.judge.principles)


def _contrast_rules_hash(settings: Settings) -> str:
    """Pairs read these rules from reward_model.yaml: a rule edit re-samples them, other edits do not
    (empty under ``select: first``, which reads no rules). A broken reward_model.yaml must not
    break loading the definitions: the principles asset reports it in one line when it runs."""
    try:
        rules = contrast_rules(settings)
    except PrincipleError:
        return "unreadable-principles"
    return stable_hash([r.model_dump(mode="json") for r in rules]) if rules else ""


PAIRS_ASSET = AssetDecl(PAIRS, STAGE_VERSION, reads=PAIRS_STAGE.reads, extra_version=_contrast_rules_hash)


def build_self_align_assets(settings: Settings) -> list:
    @SFT_DATA_ASSET.asset(
        settings,
        description="Base-model answers to training prompts with the self-align principles and exemplars in "
        "context; internal thoughts split off; every row kept with its filter_reason (null = used for SFT).",
        group_name=GROUP,
        kinds={"parquet", "pytorch"},
        pool=ACCELERATOR_POOL,
    )
    def self_align_sft_data(context: dg.AssetExecutionContext, salmon: SalmonResource) -> dg.MaterializeResult:
        made = SFT_DATA_STAGE.run(salmon.stage_inputs(SFT_DATA_STAGE), log=context.log.info)
        return SFT_DATA_ASSET.materialize(context, salmon.warehouse, salmon.load_profile(), made)

    @SFT_MODEL_ASSET.asset(
        settings,
        description="Principle engraving: the base model fine-tuned (LoRA, or in full when sft.lora is unset) "
        "on the kept self-align answers, without principles or exemplars in context; saved with its tokenizer.",
        group_name=GROUP,
        kinds={"pytorch", "huggingface"},
        pool=ACCELERATOR_POOL,
    )
    def sft_model(context: dg.AssetExecutionContext, salmon: SalmonResource) -> dg.MaterializeResult:
        from dataclasses import asdict

        from assets_defs.launch import train
        from salmon_dag.launch.jobs import TrainJob

        profile, inputs = salmon.load_profile(), salmon.stage_inputs(SFT_STAGE)
        base, table = inputs.model("base_model"), inputs.table("self_align_sft_data")
        out = salmon.warehouse.model_dir(table_name(SFT_MODEL))
        job = TrainJob.for_stage(profile, SFT_STAGE, out, base=asdict(base),
                                 data=str(salmon.warehouse.table_path(table_name(SFT_DATA))))
        result = train(context, job, profile, salmon.warehouse)
        lineage = SFT_MODEL_ASSET.lineage(context, profile, principle_hash=table["principle_hash"][0],
                                          model_id=base.model_id)
        return materialize_trained_model(salmon.warehouse, SFT_MODEL, lineage, base, result)

    @PAIRS_ASSET.asset(
        settings,
        description="Two sampled SFT-policy responses per training prompt (stop at the turn separator); pairs "
        "with a response shorter than pairs.min_words, or two identical responses, are dropped.",
        group_name=GROUP,
        kinds={"parquet", "pytorch"},
        pool=ACCELERATOR_POOL,
    )
    def response_pairs(context: dg.AssetExecutionContext, salmon: SalmonResource) -> dg.MaterializeResult:
        made = PAIRS_STAGE.run(salmon.stage_inputs(PAIRS_STAGE), contrast_rules(salmon.settings()), log=context.log.info)
        return PAIRS_ASSET.materialize(context, salmon.warehouse, salmon.load_profile(), made)

    return [self_align_sft_data, sft_model, response_pairs, *_checks()]


def _checks() -> list:
    @dg.asset_check(asset=SFT_DATA, description="Some answers kept; filtered share within self_align.max_filtered_share.")
    def filtered_share_within_bound(salmon: SalmonResource) -> dg.AssetCheckResult:
        df = read_table(salmon.warehouse, SFT_DATA)
        bound = salmon.load_profile().self_align.max_filtered_share
        filtered = df.filter(pl.col("filter_reason").is_not_null()).height
        share = filtered / df.height if df.height else 1.0
        return dg.AssetCheckResult(passed=df.height > filtered and share <= bound,
                                   metadata={"rows": df.height, "filtered_share": round(share, 3), "bound": bound})

    @dg.asset_check(asset=SFT_DATA, description="No kept answer echoes the principles block.")
    def no_prompt_leakage(salmon: SalmonResource) -> dg.AssetCheckResult:
        from salmon_dag.self_align import leaks_principles

        pset = load_principles(salmon.settings().principles_path, "self_align")
        kept = read_table(salmon.warehouse, SFT_DATA).filter(pl.col("filter_reason").is_null())
        leaks = [r for r in kept["response"].to_list() if leaks_principles(r, pset)]
        return dg.AssetCheckResult(passed=not leaks, metadata={"leaking_rows": len(leaks)})

    @dg.asset_check(asset=PAIRS, description="There are pairs, and each has two different responses.")
    def pairs_non_empty_and_distinct(salmon: SalmonResource) -> dg.AssetCheckResult:
        df = read_table(salmon.warehouse, PAIRS)
        same = df.filter(pl.col("response_a") == pl.col("response_b")).height
        return dg.AssetCheckResult(passed=df.height > 0 and same == 0, metadata={"pairs": df.height, "identical": same})

    return [filtered_share_within_bound, no_prompt_leakage, pairs_non_empty_and_distinct]
