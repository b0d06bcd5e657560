"""Stage 6: benchmark_scores and benchmark_outputs, the base, SFT and RL policies side by side
(MT-Bench-style grading, open-ended win rate, GSM8K through lm-eval, HumanEval in a sandbox, and the
reward model's agreement with human labels)."""

import dagster as dg
import polars as pl

from assets_defs.decl import AssetDecl
from assets_defs.resources import SalmonResource
from assets_defs.tables import materialize_table, read_table
from salmon_dag.benchmarks.stage import STAGE as BENCH_STAGE
from salmon_dag.lineage import files_hash
from salmon_dag.settings import ACCELERATOR_POOL, Settings
from salmon_dag.templates import RATING_TEMPLATE_VERSION, REWARD_TEMPLATE_VERSION

STAGE_VERSION = "1"
GROUP = "benchmarks"
SCORES = dg.AssetKey("benchmark_scores")
OUTPUTS = dg.AssetKey("benchmark_outputs")


def _data_files(settings: Settings) -> str:
    """Template versions plus the content of every local benchmark file, so editing a question
    file makes the benchmarks stale."""
    from salmon_dag.benchmarks.data import resolve_path

    b = settings.profile.benchmarks
    sources = [b.mt_bench.questions.source, b.mt_bench.references, b.mt_bench.judge_prompts,
               b.win_rate.instructions.source,
               b.gsm8k.data.source, b.gsm8k.fewshot.source if b.gsm8k.fewshot else None, b.humaneval.problems]
    paths = [p for p in (resolve_path(s) for s in sources if s) if p is not None and p.is_file()]
    return f"{RATING_TEMPLATE_VERSION}.{REWARD_TEMPLATE_VERSION}.{files_hash(paths)}"


SCORES_ASSET = AssetDecl(SCORES, STAGE_VERSION, reads=BENCH_STAGE.reads, extra_version=_data_files)
OUTPUTS_ASSET = AssetDecl(OUTPUTS, STAGE_VERSION, reads=BENCH_STAGE.reads, extra_version=_data_files)


def build_benchmark_assets(settings: Settings) -> list:
    @dg.multi_asset(
        name="benchmark_scores",
        specs=[
            SCORES_ASSET.spec(settings, group_name=GROUP, kinds={"parquet"},
                              description="One row per policy × benchmark × metric: value, n, standard error, the "
                              "policy's model and the judge (base_model, sft_model, ppo_policy; reward_model for "
                              "its human agreement)."),
            OUTPUTS_ASSET.spec(settings, group_name=GROUP, kinds={"parquet"},
                               description="Every benchmark item of every policy: the prompt, the answer, the "
                               "reference, what the judge (or sandbox, or lm-eval filter) said, and the score."),
        ],
        pool=ACCELERATOR_POOL,
    )
    def benchmark_scores(context: dg.AssetExecutionContext, salmon: SalmonResource):
        from salmon_dag.benchmarks.report import bar_plot_markdown, comparison_markdown, headline

        profile = salmon.load_profile()
        run = BENCH_STAGE.run(salmon.stage_inputs(BENCH_STAGE), log=context.log.info)
        lineage = SCORES_ASSET.lineage(context, profile, principle_hash=run.principle_hash, model_id=run.model_id)
        benches = run.scores["benchmark"].unique(maintain_order=True).to_list()
        headlines = pl.concat([headline(run.scores, b) for b in benches])
        meta = {
            "comparison": dg.MetadataValue.md(comparison_markdown(run.scores)),
            **{f"plot/{b}": dg.MetadataValue.md(bar_plot_markdown(run.scores, b)) for b in benches},
            **{f"{r['policy']}/{r['benchmark']}/{r['metric']}": round(r["value"], 4)
               for r in headlines.iter_rows(named=True) if r["value"] is not None},
            "judge": run.judge,
            "seconds": dg.MetadataValue.json(run.seconds),
            "notes": "; ".join(run.notes) or "none",
        }
        yield materialize_table(salmon.warehouse, SCORES, run.scores, lineage, extra_metadata=meta)
        yield materialize_table(salmon.warehouse, OUTPUTS, run.outputs,
                                OUTPUTS_ASSET.lineage(context, profile, principle_hash=run.principle_hash,
                                                      model_id=run.model_id))

    return [benchmark_scores, *_checks()]


def _checks() -> list:
    @dg.asset_check(asset=SCORES, description="Warns when the RL policy scores below the reference (SFT) policy on a "
                    "benchmark's headline metric (a win rate against the reference below 0.5).")
    def rl_not_below_sft(salmon: SalmonResource) -> dg.AssetCheckResult:
        from salmon_dag.benchmarks.report import below_reference

        cfg = salmon.load_profile().benchmarks
        below = below_reference(read_table(salmon.warehouse, SCORES), "ppo_policy", cfg.reference_policy)
        return dg.AssetCheckResult(passed=not below, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"below": "; ".join(below) or "none"})

    return [rl_not_below_sft]
