"""Stage 5: RL against the instructable reward model (SALMON §2): the ppo_policy checkpoint, its
per-step metrics (ppo_steps) and decoded samples with their reward parts (ppo_samples)."""

import dagster as dg
import polars as pl

from assets_defs.decl import AssetDecl
from assets_defs.models import materialize_model
from assets_defs.principles import TABLE_KEYS
from assets_defs.resources import SalmonResource
from assets_defs.tables import loss_curve_markdown, materialize_table, read_table, table_name
from salmon_dag.images import plot_markdown
from salmon_dag.rl.job import STAGE as RL_STAGE
from salmon_dag.settings import ACCELERATOR_POOL, Settings

STAGE_VERSION = "1"
GROUP = "rl"
PPO_POLICY = dg.AssetKey("ppo_policy")
PPO_STEPS = dg.AssetKey("ppo_steps")
PPO_SAMPLES = dg.AssetKey("ppo_samples")
RL_PRINCIPLES = TABLE_KEYS["rl"]
RM_PRINCIPLES = TABLE_KEYS["reward_model"]

POLICY_ASSET = AssetDecl(PPO_POLICY, STAGE_VERSION, reads=RL_STAGE.reads)
STEPS_ASSET = AssetDecl(PPO_STEPS, STAGE_VERSION, reads=RL_STAGE.reads)
SAMPLES_ASSET = AssetDecl(PPO_SAMPLES, STAGE_VERSION, reads=RL_STAGE.reads)


def build_rl_assets(settings: Settings) -> list:
    @dg.multi_asset(
        name="ppo_policy",
        specs=[
            POLICY_ASSET.spec(settings, group_name=GROUP, kinds={"pytorch", "huggingface"},
                              description="The RL policy: the SFT policy trained against the instructable reward model "
                              "under principles sampled from rl.yaml (our PPO, or TRL RLOO/GRPO: rl.algorithm)."),
            STEPS_ASSET.spec(settings, group_name=GROUP, kinds={"parquet"},
                             description="Per rollout step: mean reward and each part, KL, entropy, response length, "
                             "clip fractions, losses, explained variance, time split (step, metric, value)."),
            SAMPLES_ASSET.spec(settings, group_name=GROUP, kinds={"parquet"},
                               description="Decoded responses every ppo.samples_every steps, with the principles the "
                               "reward model was shown and every part of their reward."),
        ],
        pool=ACCELERATOR_POOL,
    )
    def ppo_policy(context: dg.AssetExecutionContext, salmon: SalmonResource):
        from assets_defs.launch import train
        from salmon_dag.launch.jobs import TrainJob
        from salmon_dag.reward_model.checkpoint import checkpoint_dir
        from salmon_dag.rl.stage import PLOT, samples_frame, steps_frame
        from salmon_dag.rl.principle_set import rl_principle_set, unused_groups

        profile, inputs = salmon.load_profile(), salmon.stage_inputs(RL_STAGE)
        sft, rm = inputs.model("sft_model"), inputs.model("reward_model")
        pset = rl_principle_set(inputs.principles("rl"), inputs.principles("reward_model"), profile.rl)
        if warning := unused_groups(inputs.principles("rl"), profile.rl):
            context.log.warning(warning)  # and in the policy's metadata
        out = salmon.warehouse.model_dir(table_name(PPO_POLICY))
        job = TrainJob.for_stage(
            profile, RL_STAGE, out,
            source={"model_id": sft.model_id, "revision": sft.revision, "adapter_path": sft.adapter_path,
                    "trust_remote_code": sft.trust_remote_code},
            reward_checkpoint=str(checkpoint_dir(rm)),
            principles_dir=str(inputs.principles_dir), principle_hash=pset.content_hash,
            prompts=str(salmon.warehouse.table_path("prompt_pool")),
        )
        result = train(context, job, profile, salmon.warehouse)
        summary = result.summary()
        where = (dict(model_id=sft.model_id, revision=sft.revision, adapter_path=str(result.out_dir))
                 if result.is_adapter else dict(model_id=str(result.out_dir)))
        lineage = POLICY_ASSET.lineage(context, profile, principle_hash=pset.content_hash, model_id=sft.adapter_path or sft.model_id)
        yield materialize_model(
            salmon.warehouse, PPO_POLICY, lineage, **where, trust_remote_code=sft.trust_remote_code,
            info={"algorithm": result.algorithm, "steps": len(result.steps), "prompts": result.prompts,
                  "dropped_prompts": result.dropped_prompts, "seconds": round(result.seconds, 1),
                  "resumed_from": result.resumed_from or "", "is_adapter": result.is_adapter, **summary},
            info_prefix="rl", extra_metadata={
                **({"unused_rl_groups": warning} if warning else {}),
                "curves": dg.MetadataValue.path(str(result.out_dir / PLOT)),
                "plot": dg.MetadataValue.md(plot_markdown(result.out_dir / PLOT, "RL curves")),
                "rm_score_curve": loss_curve_markdown(
                    [(int(s["step"]) + 1, s["objective/rm_score"]) for s in result.steps], label="mean RM score")},
        )
        yield materialize_table(salmon.warehouse, PPO_STEPS, steps_frame(result.steps),
                                STEPS_ASSET.lineage(context, profile, principle_hash=pset.content_hash), extra_metadata=summary)
        yield materialize_table(salmon.warehouse, PPO_SAMPLES, samples_frame(result.samples),
                                SAMPLES_ASSET.lineage(context, profile, principle_hash=pset.content_hash))

    return [ppo_policy, *_checks()]


def _checks() -> list:
    @dg.asset_check(asset=PPO_STEPS, description="Mean RM score over the last quarter of the rollout steps is above "
                    "the first quarter's (the policy learned what the reward model asks for).")
    def rm_score_rises(salmon: SalmonResource) -> dg.AssetCheckResult:
        from salmon_dag.rl.stage import rise

        df = read_table(salmon.warehouse, PPO_STEPS).filter(pl.col("metric") == "objective/rm_score").sort("step")
        first, last = rise(df["value"].to_list())
        return dg.AssetCheckResult(passed=last > first, metadata={"first_quarter": round(first, 3), "last_quarter": round(last, 3)})

    return [rm_score_rises]
