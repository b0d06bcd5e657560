"""The SFT (principle engraving) stage as a job: it reads the kept rows of ``self_align_sft_data``
and the base model, and trains with :func:`salmon_dag.training.sft.train_sft` on every rank."""

from __future__ import annotations

from pathlib import Path

from salmon_dag.stage import Reads, StageRun, TrainingStage, from_plain, plain, register


def run(job: StageRun):
    """inputs: ``base`` (ModelRef fields), ``data`` (self_align_sft_data's Parquet file)."""
    import polars as pl

    from salmon_dag.training.config import SFTStageConfig
    from salmon_dag.model_ref import ModelRef
    from salmon_dag.training.sft import sft_examples, train_sft
    from salmon_dag.warehouse import read_table_file

    cfg = job.section("sft", SFTStageConfig)
    base = ModelRef(**job.inputs["base"])
    data = read_table_file(job.inputs["data"], "self_align_sft_data").filter(pl.col("filter_reason").is_null())
    if data.height == 0:
        raise RuntimeError(
            "self_align_sft_data kept no answers to train on; see its filter_reason column "
            "(salmon sql \"select filter_reason, count(*) from self_align_sft_data group by 1\")"
        )
    return train_sft(base.model_id, sft_examples(data["prompt"].to_list(), data["response"].to_list()), cfg,
                     Path(job.out_dir), seed=job.seed, log=job.log, device=job.device, revision=base.revision,
                     trust_remote_code=base.trust_remote_code)


def _decode(data: dict):
    from salmon_dag.training.harness import TrainResult

    return from_plain(TrainResult, data)


# training reads the engine's device only (it trains there)
STAGE = register(TrainingStage(
    name="sft", module=__name__,
    reads=Reads(("sft", "engine.device"), ("self_align_sft_data", "base_model")),
    inputs=("base", "data"), run=run, encode=plain, decode=_decode))
