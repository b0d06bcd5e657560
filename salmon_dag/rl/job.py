"""The RL stage as a job: the SFT policy trained against the instructable reward model under the
RL principles (:func:`salmon_dag.rl.stage.train_policy`; our PPO, or TRL's RLOO / GRPO) on every
rank. Its config is the ``ppo`` section (the optimisation), ``rl`` (algorithm, reward, principle
draws) and the whole ``engine`` section (rollouts run on its backend, dtype, context and threads)."""

from __future__ import annotations

from pathlib import Path

from salmon_dag.stage import Reads, StageRun, TrainingStage, from_plain, plain, register


def run(job: StageRun):
    """inputs: ``source`` (PolicySource fields), ``reward_checkpoint``, ``principles_dir`` and the
    ``principle_hash`` the caller resolved, ``prompts`` (prompt_pool's Parquet file; its train
    split is used)."""
    import polars as pl

    from salmon_dag.config import EngineConfig
    from salmon_dag.principles import load_principles
    from salmon_dag.rl.config import PPOConfig, RLConfig
    from salmon_dag.rl.models import PolicySource
    from salmon_dag.rl.principle_set import rl_principle_set
    from salmon_dag.rl.stage import train_policy
    from salmon_dag.warehouse import read_table_file

    inputs = job.inputs
    rl = job.section("rl", RLConfig)
    pdir = inputs["principles_dir"]
    # every rank reads the files itself: they must still be what the asset hashed into lineage
    pset = rl_principle_set(load_principles(pdir, "rl"), load_principles(pdir, "reward_model"), rl)
    if pset.content_hash != inputs["principle_hash"]:
        raise RuntimeError(f"{pdir}: the RL principles changed after the job was made; run the stage again")
    prompts = read_table_file(inputs["prompts"], "prompt_pool").filter(pl.col("split") == "train").sort("prompt_id")
    return train_policy(PolicySource(**inputs["source"]), inputs["reward_checkpoint"], pset, prompts,
                        job.section("ppo", PPOConfig), rl, Path(job.out_dir), job.seed, device=job.device,
                        log=job.log, engine=job.section("engine", EngineConfig))


def _decode(data: dict):
    from salmon_dag.rl.stage import RLResult

    return from_plain(RLResult, data)


STAGE = register(TrainingStage(
    name="ppo", module=__name__,
    reads=Reads(("ppo", "rl", "engine"),
                ("sft_model", "reward_model", "principles/rl", "principles/reward_model", "prompt_pool")),
    inputs=("source", "reward_checkpoint", "principles_dir", "principle_hash", "prompts"),
    run=run, encode=plain, decode=_decode))
