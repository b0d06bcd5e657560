"""Run a training job where its stage's ``launcher`` says: in this step (``inprocess``), as an
``accelerate launch`` subprocess (``accelerate``), or in a Kubernetes pod (``k8s``), the last two
through Dagster Pipes: rank 0's log lines arrive as this step's log events and its result as a
Pipes message, which the asset turns into metadata exactly as for an in-process run.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import dagster as dg

from salmon_dag.config import Profile, TrainingConfig
from salmon_dag.launch.command import accelerate_command
from salmon_dag.launch.jobs import TrainJob, decode_result, rank_failures, resolve_warehouse, run_job
from salmon_dag.paths import PROJECT_ROOT
from salmon_dag.warehouse import Warehouse

# every launched rank runs this module: it runs the job and reports to Dagster through Pipes
WORKER_MODULE = "assets_defs.train_worker"


class LaunchError(RuntimeError):
    """A launched training job failed (the message names the rank and its error)."""


def launch_dir(warehouse: Warehouse, stage: str) -> Path:
    """Where the job file, rank errors and result of ``stage``'s launched run are kept (the last run's)."""
    return warehouse.dagster_home / "launch" / stage


def train(context: dg.AssetExecutionContext, job: TrainJob, profile: Profile, warehouse: Warehouse) -> Any:
    """Run ``job`` under its stage's ``launcher`` and return the stage's result (see ``run_job``)."""
    cfg: TrainingConfig = getattr(profile, job.stage)  # a stage's name is its profile section
    if cfg.launcher == "inprocess":
        return run_job(job, context.log.info)
    here = launch_dir(warehouse, job.stage)
    shutil.rmtree(here, ignore_errors=True)
    here.mkdir(parents=True)
    job_file = job.write(here / "job.json", warehouse.root)
    device = "cuda" if cfg.launcher == "k8s" else _local_device(job.device)
    command = launch_command(profile, cfg, job_file, warehouse, device)
    context.log.info(f"{job.stage}: {cfg.launcher} launch, {cfg.num_processes} process(es) on {device}: "
                     f"{shlex.join(command)}")
    # the ranks import this checkout's packages even when it is not pip-installed
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
           "TOKENIZERS_PARALLELISM": "false"}
    try:
        if cfg.launcher == "k8s":
            invocation = _k8s_client().run(context=context, **_pod_kwargs(profile, cfg, command, env, context))
        else:
            invocation = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT)).run(context=context, command=command, env=env)
    except Exception as exc:
        failures = rank_failures(here)
        if not failures:
            raise
        rank, line, path = failures[0]
        raise LaunchError(f"{job.stage}: rank {rank} of {cfg.num_processes} failed: {line} (traceback: {path})") from exc
    messages = invocation.get_custom_messages()
    if not messages:
        raise LaunchError(f"{job.stage}: the launched run ended without reporting a result (see {here})")
    return decode_result(job, resolve_warehouse(messages[-1], warehouse.root))


def launch_command(profile: Profile, cfg: TrainingConfig, job_file: Path, warehouse: Warehouse, device: str) -> list[str]:
    """The ``accelerate launch`` command of a job: with this interpreter here; in a pod with its
    image's python, the shipped files under its working dir and the job file where the pod mounts
    the warehouse (``kubernetes.warehouse_mount``, default the same path)."""
    if cfg.launcher != "k8s":
        return accelerate_command(cfg, job_file, device, WORKER_MODULE)
    k8s = profile.kubernetes
    pod_job = Path(k8s.warehouse_mount or warehouse.root) / job_file.relative_to(warehouse.root)
    return accelerate_command(cfg, pod_job, device, WORKER_MODULE, python="python", project_root=k8s.working_dir)


def _local_device(device: str) -> str:
    """The device the ranks will train on: ``auto`` is CUDA when this machine has it."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _k8s_client():
    from dagster_k8s import PipesK8sClient

    return PipesK8sClient()


def _pod_kwargs(profile: Profile, cfg: TrainingConfig, command: list[str], env: dict[str, str],
                context: dg.AssetExecutionContext) -> dict[str, Any]:
    from salmon_dag.launch.k8s import pod_run_kwargs

    # in the pod the project is the image's working dir, not this checkout
    env = {**env, "PYTHONPATH": profile.kubernetes.working_dir}
    labels = {"salmon/run-id": context.run.run_id[:63]}
    return pod_run_kwargs(profile.kubernetes, command, env, gpus=cfg.num_processes, labels=labels)
