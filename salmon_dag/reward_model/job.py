"""The reward-model stage as a job: optional PMP on human pairs, then the principle fine-tune on
``rm_training_data`` (:func:`salmon_dag.reward_model.stage.train_stage`) on every rank. Its result
is the fine-tune's ``TrainResult`` and PMP's (or None)."""

from __future__ import annotations

from pathlib import Path

from salmon_dag.stage import Reads, StageRun, TrainingStage, from_plain, plain, register


def run(job: StageRun):
    """inputs: ``base`` (ModelRef fields), ``data`` (rm_training_data's Parquet file)."""
    from salmon_dag.reward_model.config import RewardModelConfig
    from salmon_dag.model_ref import ModelRef
    from salmon_dag.reward_model.stage import train_stage
    from salmon_dag.warehouse import read_table_file

    cfg = job.section("reward_model", RewardModelConfig)
    examples = read_table_file(job.inputs["data"], "rm_training_data")
    return train_stage(ModelRef(**job.inputs["base"]), examples, cfg, Path(job.out_dir), job.seed, device=job.device,
                       log=job.log)


def _encode(result) -> dict:
    main, pmp = result
    return {"result": plain(main), "pmp": plain(pmp) if pmp is not None else None}


def _decode(data: dict):
    from salmon_dag.training.harness import TrainResult

    pmp = data.get("pmp")
    return from_plain(TrainResult, data["result"]), from_plain(TrainResult, pmp) if pmp else None


# reward_model_eval reads the same sections (it scores with the trained model on that device)
STAGE = register(TrainingStage(
    name="reward_model", module=__name__,
    reads=Reads(("reward_model", "engine.device"), ("rm_training_data", "base_model")),
    inputs=("base", "data"), run=run, encode=_encode, decode=_decode))
