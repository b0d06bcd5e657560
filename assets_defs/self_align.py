"""Stage 2: Self-Align SFT data, principle engraving (SFT) and response pairs (SALMON §1.1–1.2)."""

import time

import dagster as dg
import polars as pl

from assets_defs.base_model import KEY as BASE_MODEL
from assets_defs.decl import AssetDecl
from assets_defs.models import materialize_trained_model, read_model
from assets_defs.principles import TABLE_KEYS, materialized_principles
from assets_defs.prompt_pool import POOL
from assets_defs.resources import SalmonResource
from assets_defs.tables import materialize_table, read_table, table_name
from salmon_dag.config import stable_hash
from salmon_dag.engine import SamplingParams, create_engine
from salmon_dag.pairs import contrast_rules as judged_contrast_rules
from salmon_dag.principles import PrincipleError, load_principles
from salmon_dag.progress import progress_line
from salmon_dag.settings import ACCELERATOR_POOL, Settings
from salmon_dag.training.sft_job import STAGE as SFT_STAGE

STAGE_VERSION = "1"
GROUP = "self_align"
SFT_DATA = dg.AssetKey("self_align_sft_data")
SFT_MODEL = dg.AssetKey("sft_model")
PAIRS = dg.AssetKey("response_pairs")
PRINCIPLES = TABLE_KEYS["self_align"]
# prompts per engine call: a progress line after each
CHUNK = 64

SFT_DATA_ASSET = AssetDecl(SFT_DATA, STAGE_VERSION, sections=("self_align", "engine"),
                           deps=(PRINCIPLES, POOL, BASE_MODEL))
SFT_MODEL_ASSET = AssetDecl(SFT_MODEL, STAGE_VERSION, sections=SFT_STAGE.sections, deps=(SFT_DATA, BASE_MODEL))


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


PAIRS_ASSET = AssetDecl(PAIRS, STAGE_VERSION, sections=("pairs", "engine"), deps=(SFT_MODEL, POOL),
                        extra_version=_contrast_rules_hash)


def train_prompts(salmon: SalmonResource, limit: int | None) -> pl.DataFrame:
    pool = read_table(salmon.warehouse, POOL).filter(pl.col("split") == "train").sort("prompt_id")
    return pool.head(limit) if limit else pool


def generate_in_chunks(context, engine, prompts: list[str], params: SamplingParams, what: str) -> list:
    """engine.generate over chunks, with a progress line per chunk."""
    out: list = []
    start = time.perf_counter()
    for i in range(0, len(prompts), CHUNK):
        out.extend(engine.generate(prompts[i : i + CHUNK], params))
        context.log.info(progress_line(what, len(out), len(prompts), f"prompts ({time.perf_counter() - start:.0f}s)"))
    return out


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
        from salmon_dag.self_align import build_prompt, filtered_counts, sft_data

        profile = salmon.load_profile()
        cfg = profile.self_align
        pset = materialized_principles(salmon, "self_align")
        base = read_model(salmon.warehouse, BASE_MODEL)
        prompts = train_prompts(salmon, cfg.max_prompts)
        texts = [build_prompt(pset, p) for p in prompts["prompt"].to_list()]
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                top_p=cfg.top_p, seed=profile.seed)
        with create_engine(profile.engine, base.model_id, base.revision, base.adapter_path, base.trust_remote_code) as engine:
            context.log.info(f"self-align prompt: {len(engine.encode(texts[0])) if texts else 0} tokens")
            outputs = generate_in_chunks(context, engine, texts, params, "self-align")
            prompt_tokens = [len(engine.encode(t)) for t in texts]
        df = sft_data(prompts, outputs, prompt_tokens, pset, cfg)
        kept, reasons = filtered_counts(df)
        context.log.info(f"self_align_sft_data: kept {kept}/{df.height}; filtered {reasons}")
        lineage = SFT_DATA_ASSET.lineage(context, profile, principle_hash=pset.content_hash, model_id=base.model_id)
        return materialize_table(salmon.warehouse, SFT_DATA, df, lineage, extra_metadata={
            "kept": kept, **{f"filtered/{r}": n for r, n in sorted(reasons.items())}})

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

        profile = salmon.load_profile()
        base = read_model(salmon.warehouse, BASE_MODEL)
        table = read_table(salmon.warehouse, SFT_DATA)
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
        from salmon_dag.pairs import make_pairs

        profile = salmon.load_profile()
        cfg = profile.pairs
        sft = read_model(salmon.warehouse, SFT_MODEL)
        prompts = train_prompts(salmon, cfg.max_prompts)
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                n=cfg.candidates, seed=profile.seed)
        with create_engine(profile.engine, sft.model_id, sft.revision, sft.adapter_path, sft.trust_remote_code) as engine:
            from salmon_dag.templates import format_chat_prompt

            outputs = generate_in_chunks(context, engine, [format_chat_prompt(p) for p in prompts["prompt"].to_list()],
                                         params, "response pairs")
        pairs, counts = make_pairs(prompts, outputs, min_words=cfg.min_words, min_chars=cfg.min_chars,
                                   contrast_rules=contrast_rules(salmon.settings()))
        context.log.info(f"response_pairs: {pairs.height} pairs from {prompts.height} prompts; {counts}")
        lineage = PAIRS_ASSET.lineage(context, profile, principle_hash=sft.lineage.get("principle_hash"),
                                      model_id=sft.adapter_path or sft.model_id)
        sampled = counts.get("candidates/sampled", 0)
        return materialize_table(salmon.warehouse, PAIRS, pairs, lineage, extra_metadata={
            "prompts": prompts.height,
            # how often the policy's samples are too short to use, shown rather than hidden
            "share_candidates_too_short": round(counts.get("candidates/too_short", 0) / sampled, 3) if sampled else 0.0,
            **{(k if k.startswith("candidates/") else f"dropped/{k}"): n for k, n in sorted(counts.items())},
        })

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
