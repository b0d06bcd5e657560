"""The ``accelerate launch`` command line of a training job, from the stage's config.

One command for every non-inprocess launcher: run locally as a subprocess (``launcher:
accelerate``) or in a pod (``launcher: k8s``). Each rank runs ``python -m <worker> <job file>``, the worker module the caller names.
Plain Python: no dagster import here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from salmon_dag.config import TrainingConfig
from salmon_dag.paths import PROJECT_ROOT

DEEPSPEED_DIR = Path(__file__).resolve().parent / "deepspeed"


def deepspeed_config_file(stage: int) -> Path:
    """The ZeRO config shipped for ``stage`` (2 or 3). Batch sizes, accumulation, clipping and
    precision are "auto": the Hugging Face Trainer fills them from the stage's config."""
    path = DEEPSPEED_DIR / f"zero{stage}.json"
    if not path.is_file():
        raise ValueError(f"deepspeed_stage {stage}: no shipped config {path.name} (ZeRO-2 and ZeRO-3 are)")
    return path


def accelerate_command(
    cfg: TrainingConfig,
    job_file: Path | str,
    device: str,
    worker: str,
    *,
    python: str = sys.executable,
    project_root: str | None = None,
) -> list[str]:
    """``python -m accelerate.commands.launch ... -m <worker> <job_file>`` for ``cfg``: every rank
    runs module ``worker`` (the caller's: the Dagster layer's talks to Dagster through Pipes).

    ``device`` "cpu": CPU ranks (gloo); otherwise one rank per GPU (NCCL). With
    ``cfg.accelerate_config`` (an ``accelerate config`` file: multi-node, ...) that file supplies
    the defaults, and only the process count and the DeepSpeed config are set here. ``project_root``:
    where this project is where the command runs (a pod's working dir), for the shipped files.
    """
    cmd = [python, "-m", "accelerate.commands.launch"]
    if cfg.accelerate_config:
        cmd += ["--config_file", str(cfg.accelerate_config)]
    else:
        # every choice accelerate would otherwise read from ~/.cache/huggingface/accelerate or ask for;
        # precision is the stages' own (TrainingArguments bf16 on CUDA, autocast in PPO)
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--num_processes", str(cfg.num_processes)]
    if cfg.num_processes > 1 and not cfg.deepspeed_stage and not cfg.accelerate_config:
        # torchrun: one rank per GPU, or per CPU process (the stages ask accelerate for the CPU,
        # which then joins the ranks over gloo; `--cpu` would start a single process)
        cmd.append("--multi_gpu")
    elif device == "cpu" and not cfg.deepspeed_stage:  # accelerate refuses --cpu with DeepSpeed
        cmd.append("--cpu")
    if cfg.deepspeed_stage:
        shipped = deepspeed_config_file(cfg.deepspeed_stage)
        if project_root is not None:
            shipped = Path(project_root) / shipped.relative_to(PROJECT_ROOT)
        cmd += ["--use_deepspeed", "--deepspeed_config_file", str(shipped)]
    return [*cmd, "-m", worker, str(job_file)]
