"""Stage 4: the instructable reward model and the evidence that it follows principles (SALMON §1.4)."""

import dagster as dg
import polars as pl

from assets_defs.decl import AssetDecl
from assets_defs.models import materialize_trained_model
from assets_defs.preferences import RM_DATA
from assets_defs.resources import SalmonResource
from assets_defs.tables import read_table, table_name
from salmon_dag.config import Profile
from salmon_dag.lineage import DataFiles
from salmon_dag.paths import resolve_local
from salmon_dag.reward_model.bench import STAGE as BENCH_STAGE
from salmon_dag.reward_model.job import STAGE as RM_STAGE
from salmon_dag.reward_model.stage import EVAL_STAGE
from salmon_dag.settings import ACCELERATOR_POOL, Settings
from salmon_dag.templates import REWARD_TEMPLATE_VERSION

STAGE_VERSION = "1"
GROUP = "reward_model"
REWARD_MODEL = dg.AssetKey("reward_model")
RM_EVAL = dg.AssetKey("reward_model_eval")
RM_BENCH = dg.AssetKey("rm_benchmarks")


def _human_files(profile: Profile) -> DataFiles:
    """The local human-pair files (PMP / agreement data); those marked ``optional`` may be missing."""
    cfg = profile.reward_model
    configs = [c for c in (cfg.human_eval, *((cfg.pmp.data, *cfg.pmp.more_data) if cfg.pmp else ())) if c is not None]
    local = [(resolve_local(c.source), c.optional) for c in configs if c.source.endswith((".jsonl", ".jsonl.gz"))]
    return DataFiles.of(local)


def _comparison_files(profile: Profile) -> DataFiles:
    """The local comparison files of ``rm_benchmarks`` (bundled ones included): editing one makes
    the benchmark stale; those marked ``optional`` may be missing."""
    from salmon_dag.benchmarks.data import resolve_path

    local = [(path, src.optional) for src in profile.rm_benchmarks.files.values()
             if (path := resolve_path(src.source)) is not None]
    return DataFiles.of(local)


RM_ASSET = AssetDecl(REWARD_MODEL, STAGE_VERSION, reads=RM_STAGE.reads, extra_version=lambda _s: REWARD_TEMPLATE_VERSION,
                     data_files=_human_files)
RM_EVAL_ASSET = AssetDecl(RM_EVAL, STAGE_VERSION, reads=EVAL_STAGE.reads, extra_version=lambda _s: REWARD_TEMPLATE_VERSION,
                          data_files=_human_files)
RM_BENCH_ASSET = AssetDecl(RM_BENCH, STAGE_VERSION, reads=BENCH_STAGE.reads, extra_version=lambda _s: REWARD_TEMPLATE_VERSION,
                           data_files=_comparison_files)


def build_reward_model_assets(settings: Settings) -> list:
    @RM_ASSET.asset(
        settings,
        description="Instructable reward model: a scalar head read at the last token of a reviewer prompt "
        "(principles, request, reply, cue), trained with the Bradley-Terry loss on rm_training_data "
        "(TRL RewardTrainer, LoRA with the head trained), after optional PMP on human pairs.",
        group_name=GROUP,
        kinds={"pytorch", "huggingface"},
        pool=ACCELERATOR_POOL,
    )
    def reward_model(context: dg.AssetExecutionContext, salmon: SalmonResource) -> dg.MaterializeResult:
        from dataclasses import asdict

        from assets_defs.launch import train
        from salmon_dag.launch.jobs import TrainJob
        from salmon_dag.training.reporting import metric_points

        profile, inputs = salmon.load_profile(), salmon.stage_inputs(RM_STAGE)
        base, examples = inputs.model("base_model"), inputs.table("rm_training_data")
        out = salmon.warehouse.model_dir(table_name(REWARD_MODEL))
        job = TrainJob.for_stage(profile, RM_STAGE, out, base=asdict(base),
                                 data=str(salmon.warehouse.table_path(table_name(RM_DATA))))
        result, pmp = train(context, job, profile, salmon.warehouse)
        evals = metric_points(result.log_history, "eval_accuracy")
        info = {"pmp_steps": pmp.steps if pmp else 0, "pmp_pairs": pmp.train_examples if pmp else 0,
                "heldout_accuracy_during_training": round(evals[-1][1], 3) if evals else None}
        lineage = RM_ASSET.lineage(context, profile, principle_hash=examples["principle_hash"][0] if examples.height else None,
                                   model_id=base.model_id)
        rows = "\n".join(f"| {step} | {acc:.3f} |" for step, acc in evals)
        return materialize_trained_model(
            salmon.warehouse, REWARD_MODEL, lineage, base, result, extra_info=info,
            extra_metadata={"heldout_accuracy_curve": dg.MetadataValue.md(f"| step | held-out accuracy |\n|---|---|\n{rows}")},
        )

    @RM_EVAL_ASSET.asset(
        settings,
        description="Evidence that the reward model follows principles, on held-out data: heldout_accuracy, "
        "negation_flip_rate, probe/<principle>/<direction> from verifiable rules, hh_harmless_agreement.",
        group_name=GROUP,
        kinds={"parquet", "pytorch"},
        pool=ACCELERATOR_POOL,
    )
    def reward_model_eval(context: dg.AssetExecutionContext, salmon: SalmonResource) -> dg.MaterializeResult:
        made = EVAL_STAGE.run(salmon.stage_inputs(EVAL_STAGE), log=context.log.info)
        return RM_EVAL_ASSET.materialize(context, salmon.warehouse, salmon.load_profile(), made)

    @RM_BENCH_ASSET.asset(
        settings,
        description="The reward model and other reward models (rm_benchmarks.compare) side by side on comparison "
        "files in RewardBench's format (rm_benchmarks.files): accuracy per file, subset and model.",
        group_name=GROUP,
        kinds={"parquet", "pytorch"},
        pool=ACCELERATOR_POOL,
    )
    def rm_benchmarks(context: dg.AssetExecutionContext, salmon: SalmonResource) -> dg.MaterializeResult:
        made = BENCH_STAGE.run(salmon.stage_inputs(BENCH_STAGE), log=context.log.info)
        made.metadata["side_by_side"] = dg.MetadataValue.md(made.metadata["side_by_side"])
        return RM_BENCH_ASSET.materialize(context, salmon.warehouse, salmon.load_profile(), made)

    return [reward_model, reward_model_eval, rm_benchmarks, *_checks()]


def _checks() -> list:
    @dg.asset_check(asset=RM_EVAL, description="The RM follows principles both ways: at least "
                    "reward_model.probe_min_principles principles have both probes >= reward_model.probe_threshold.")
    def follows_principles_both_ways(salmon: SalmonResource) -> dg.AssetCheckResult:
        cfg = salmon.load_profile().reward_model
        df = read_table(salmon.warehouse, RM_EVAL).filter(pl.col("metric").str.starts_with("probe/"))
        by_principle: dict[str, list[float]] = {}
        for metric, value in df.select("metric", "value").iter_rows():
            by_principle.setdefault(metric.split("/")[1], []).append(value)
        passing = sorted(p for p, v in by_principle.items() if len(v) == 2 and min(v) >= cfg.probe_threshold)
        return dg.AssetCheckResult(
            passed=len(passing) >= cfg.probe_min_principles,
            metadata={"passing": str(passing), "needed": cfg.probe_min_principles, "probed": len(by_principle),
                      "threshold": cfg.probe_threshold},
        )

    return [follows_principles_both_ways]
