"""A training run as data: :class:`TrainJob` names the stage, its config and its inputs (file paths
and model references, all JSON-able), so the same run can happen in the calling process or in every
rank of an ``accelerate launch`` (each rank reads the job file and calls :func:`run_job`).

The stage functions are the ones the in-process assets always called (``train_sft``, the reward
model's ``train_stage``, ``train_policy``); their results cross the process boundary as JSON
(:func:`encode_result` / :func:`decode_result`). Plain Python: no dagster import here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from salmon_dag.warehouse import atomic_path

Stage = Literal["sft", "reward_model", "ppo"]
STAGES: tuple[str, ...] = ("sft", "reward_model", "ppo")
Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainJob:
    """``config``: the stage's section of the profile (``sft``, ``reward_model``, ``ppo``) dumped as
    JSON; ``inputs``: what the stage reads (see :func:`run_job` for each stage's keys)."""

    stage: Stage
    out_dir: str
    seed: int
    device: str
    config: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"train job: unknown stage {self.stage!r} (one of {', '.join(STAGES)})")

    @classmethod
    def for_stage(cls, profile: Any, stage: Stage, out_dir: Path, **inputs: Any) -> "TrainJob":
        """The job of ``stage`` under ``profile`` (its section, seed and ``engine.device``)."""
        return cls(stage, str(out_dir), profile.seed, profile.engine.device,
                   getattr(profile, stage).model_dump(mode="json"), inputs)

    def write(self, path: Path) -> Path:
        with atomic_path(Path(path)) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True), encoding="utf-8")
        return Path(path)

    @classmethod
    def read(cls, path: Path | str) -> "TrainJob":
        try:
            return cls(**json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable train job ({exc})") from None


# --------------------------------------------------------------------------- running
def run_job(job: TrainJob, log: Log = print) -> Any:
    """Run ``job`` here and return the stage's result: a ``TrainResult`` (sft), a (result, PMP
    result or None) pair (reward_model), an ``RLResult`` (ppo). Under ``accelerate launch`` every
    rank calls this; the stages write files from the main process only."""
    _bind_local_gpu()
    return _RUNNERS[job.stage](job, log)


def _bind_local_gpu() -> None:
    """Under torchrun / accelerate launch each rank owns GPU ``LOCAL_RANK``: make it the default
    CUDA device, so every "cuda" placement (policy, value model, RM scorer, 4-bit loads on the
    current device) lands on it instead of all ranks piling onto GPU 0."""
    local = os.environ.get("LOCAL_RANK")
    if local is None:
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(int(local))


def _run_sft(job: TrainJob, log: Log):
    """inputs: ``base`` (ModelRef fields), ``data`` (self_align_sft_data's Parquet file)."""
    from salmon_dag.config import SFTStageConfig
    from salmon_dag.model_ref import ModelRef
    from salmon_dag.training import sft_examples, train_sft

    cfg = SFTStageConfig.model_validate(job.config)
    base = ModelRef(**job.inputs["base"])
    data = pl.read_parquet(job.inputs["data"]).filter(pl.col("filter_reason").is_null())
    if data.height == 0:
        raise RuntimeError(
            "self_align_sft_data kept no answers to train on; see its filter_reason column "
            "(salmon sql \"select filter_reason, count(*) from self_align_sft_data group by 1\")"
        )
    return train_sft(base.model_id, sft_examples(data["prompt"].to_list(), data["response"].to_list()), cfg,
                     Path(job.out_dir), seed=job.seed, log=log, device=job.device, revision=base.revision,
                     trust_remote_code=base.trust_remote_code)


def _run_reward_model(job: TrainJob, log: Log):
    """inputs: ``base`` (ModelRef fields), ``data`` (rm_training_data's Parquet file)."""
    from salmon_dag.config import RewardModelConfig
    from salmon_dag.model_ref import ModelRef
    from salmon_dag.reward_model.stage import train_stage

    cfg = RewardModelConfig.model_validate(job.config)
    return train_stage(ModelRef(**job.inputs["base"]), pl.read_parquet(job.inputs["data"]), cfg, Path(job.out_dir),
                       job.seed, device=job.device, log=log)


def _run_ppo(job: TrainJob, log: Log):
    """inputs: ``source`` (PolicySource fields), ``reward_checkpoint``, ``principles_dir`` and the
    ``principle_hash`` the caller checked, ``prompts`` (prompt_pool's Parquet file; its train
    split is used), ``rl`` and ``engine`` (those profile sections)."""
    from salmon_dag.config import EngineConfig, PPOConfig, RLConfig
    from salmon_dag.principles import load_principles
    from salmon_dag.rl.models import PolicySource
    from salmon_dag.rl.stage import train_policy
    from salmon_dag.rl.principle_set import rl_principle_set

    inputs = job.inputs
    rl = RLConfig.model_validate(inputs["rl"])
    pdir = inputs["principles_dir"]
    pset = rl_principle_set(load_principles(pdir, "rl"), load_principles(pdir, "reward_model"), rl)
    if pset.content_hash != inputs["principle_hash"]:
        raise RuntimeError(f"{pdir}: the RL principles changed after the job was made; run the stage again")
    prompts = pl.read_parquet(inputs["prompts"]).filter(pl.col("split") == "train").sort("prompt_id")
    return train_policy(PolicySource(**inputs["source"]), inputs["reward_checkpoint"], pset, prompts,
                        PPOConfig.model_validate(job.config), rl, Path(job.out_dir), job.seed, device=job.device,
                        log=log, engine=EngineConfig.model_validate(inputs["engine"]))


_RUNNERS: dict[str, Callable[[TrainJob, Log], Any]] = {
    "sft": _run_sft, "reward_model": _run_reward_model, "ppo": _run_ppo,
}


# --------------------------------------------------------------------------- results as JSON
def encode_result(stage: str, result: Any) -> dict[str, Any]:
    """The JSON form of what :func:`run_job` returned for ``stage``."""
    if stage == "reward_model":
        main, pmp = result
        return {"result": _plain(main), "pmp": _plain(pmp) if pmp is not None else None}
    return _plain(result)


def decode_result(stage: str, data: dict[str, Any]) -> Any:
    """:func:`encode_result`'s inverse."""
    from salmon_dag.training.harness import TrainResult

    if stage == "reward_model":
        pmp = data.get("pmp")
        return _train_result(TrainResult, data["result"]), _train_result(TrainResult, pmp) if pmp else None
    if stage == "sft":
        return _train_result(TrainResult, data)
    from salmon_dag.rl.stage import RLResult

    return RLResult(**{**data, "out_dir": Path(data["out_dir"])})


def _plain(result: Any) -> dict[str, Any]:
    out = asdict(result)
    out["out_dir"] = str(out["out_dir"])
    return out


def _train_result(cls, data: dict[str, Any]):
    return cls(**{**data, "out_dir": Path(data["out_dir"]),
                  "losses": [tuple(p) for p in data["losses"]]})


# --------------------------------------------------------------------------- what ranks leave behind
RESULT_FILE = "result.json"
_ERROR_GLOB = "rank-*.error"


def write_result(launch_dir: Path, stage: str, result: Any) -> dict[str, Any]:
    """The main rank's result as JSON in ``launch_dir`` (for a by-hand run; Pipes gets it too)."""
    data = encode_result(stage, result)
    with atomic_path(Path(launch_dir) / RESULT_FILE) as tmp:
        tmp.write_text(json.dumps(data), encoding="utf-8")
    return data


def write_failure(launch_dir: Path, rank: int, exc: BaseException, trace: str) -> Path:
    """``rank-<rank>.error``: the exception on the first line, the traceback after it."""
    path = Path(launch_dir) / f"rank-{rank}.error"
    first = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    path.write_text(f"{first}\n{trace}", encoding="utf-8")
    return path


def rank_failures(launch_dir: Path) -> list[tuple[int, str, Path]]:
    """(rank, first line, file) of every rank that failed, lowest rank first."""
    found = []
    for path in Path(launch_dir).glob(_ERROR_GLOB):
        text = path.read_text(encoding="utf-8", errors="replace")
        found.append((int(path.stem.split("-")[1]), text.splitlines()[0] if text else "failed", path))
    return sorted(found)
