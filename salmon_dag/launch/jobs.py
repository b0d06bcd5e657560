"""A training run as data: :class:`TrainJob` names the stage (and the module that declares it),
the profile sections it reads and its inputs (file paths and model references, all JSON-able), so
the same run can happen in the calling process or in every rank of an ``accelerate launch`` (each
rank reads the job file and calls :func:`run_job`).

Nothing here names a stage: each is a :class:`salmon_dag.stage.TrainingStage` that its module
registers; its result crosses the process boundary as JSON through the stage's own codec
(:func:`encode_result` / :func:`decode_result`). Plain Python: no dagster import here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from salmon_dag.stage import StageRun, TrainingStage, find
from salmon_dag.warehouse import atomic_path

Log = Callable[[str], None]

# A job file and a launched run's result name paths inside the warehouse as this token plus their
# path in it, and the job file says where the warehouse is relative to itself: a pod that mounts the
# warehouse elsewhere (kubernetes.warehouse_mount) reads the same job, and its result names the
# Dagster side's paths again once read there.
WAREHOUSE_TOKEN = "$WAREHOUSE"


def warehouse_relative(value: Any, root: Path | str) -> Any:
    """``value`` (JSON data) with every absolute path inside ``root`` written as the token path."""
    if isinstance(value, dict):
        return {k: warehouse_relative(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [warehouse_relative(v, root) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        path, root = Path(value), Path(root)
        if path == root:
            return WAREHOUSE_TOKEN
        if path.is_relative_to(root):
            return f"{WAREHOUSE_TOKEN}/{path.relative_to(root).as_posix()}"
    return value


def resolve_warehouse(value: Any, root: Path | str) -> Any:
    """:func:`warehouse_relative`'s inverse, against the warehouse ``root`` of this side."""
    if isinstance(value, dict):
        return {k: resolve_warehouse(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_warehouse(v, root) for v in value]
    if value == WAREHOUSE_TOKEN:
        return str(root)
    if isinstance(value, str) and value.startswith(WAREHOUSE_TOKEN + "/"):
        return str(Path(root) / value[len(WAREHOUSE_TOKEN) + 1:])
    return value


def job_warehouse(job_file: Path | str) -> Path | None:
    """The warehouse root a job file names relative to itself (None for a job written without one)."""
    try:
        return _warehouse_of(job_file, json.loads(Path(job_file).read_text(encoding="utf-8")).get("warehouse"))
    except (OSError, ValueError):
        return None


def _warehouse_of(job_file: Path | str, rel: str | None) -> Path | None:
    return Path(os.path.normpath(Path(job_file).parent / rel)) if rel else None


@dataclass(frozen=True)
class TrainJob:
    """``stage`` / ``module``: the stage's name and where it is declared; ``config``: the profile
    sections the stage declares (name -> JSON value); ``inputs``: what the asset resolved for it
    (the stage's declared input keys)."""

    stage: str
    module: str
    out_dir: str
    seed: int
    device: str
    config: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spec().check_inputs(self.inputs)

    def spec(self) -> TrainingStage:
        """The stage this job runs (its module imported on first use)."""
        return find(self.stage, self.module)

    @classmethod
    def for_stage(cls, profile: Any, stage: TrainingStage, out_dir: Path, **inputs: Any) -> "TrainJob":
        """The job of ``stage`` under ``profile``: its declared sections, the seed, ``engine.device``."""
        return cls(stage.name, stage.module, str(out_dir), profile.seed, profile.engine.device,
                   profile.section_values(*stage.sections), inputs)

    def write(self, path: Path, warehouse: Path | str | None = None) -> Path:
        """Write the job to ``path``; with ``warehouse``, its paths inside it relative to it (and
        it relative to the job file), so the job reads the same wherever the warehouse is mounted."""
        data: dict[str, Any] = asdict(self)
        if warehouse is not None:
            data = {**warehouse_relative(data, warehouse), "warehouse": os.path.relpath(warehouse, Path(path).parent)}
        with atomic_path(Path(path)) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        return Path(path)

    @classmethod
    def read(cls, path: Path | str) -> "TrainJob":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            root = _warehouse_of(path, data.pop("warehouse", None))
            return cls(**(resolve_warehouse(data, root) if root is not None else data))
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable train job ({exc})") from None


# --------------------------------------------------------------------------- running
def run_job(job: TrainJob, log: Log = print) -> Any:
    """Run ``job`` here and return its stage's result. Under ``accelerate launch`` every rank calls
    this; the stages write files from the main process only."""
    _bind_local_gpu()
    _no_cpu_shm_comm(job.device)
    return job.spec().run(StageRun(Path(job.out_dir), job.seed, job.device, job.config, job.inputs, log))


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


def _no_cpu_shm_comm(device: str) -> None:
    """DeepSpeed on CPU ranks compiles its shared-memory all-reduce kernel (a C++ build, ~25 s on a
    fresh machine) when it starts its process group, yet only its inference all-reduce uses it,
    which training never calls: mark the kernel unavailable (DeepSpeed keeps this dict in the module
    so that edits persist), and the ranks communicate over gloo as they do without DeepSpeed."""
    if device != "cpu" or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


# --------------------------------------------------------------------------- results as JSON
def encode_result(job: TrainJob, result: Any) -> dict[str, Any]:
    """The JSON form of what :func:`run_job` returned for ``job``."""
    return job.spec().encode(result)


def decode_result(job: TrainJob, data: dict[str, Any]) -> Any:
    """:func:`encode_result`'s inverse."""
    return job.spec().decode(data)


# --------------------------------------------------------------------------- what ranks leave behind
RESULT_FILE = "result.json"
_ERROR_GLOB = "rank-*.error"


def write_result(launch_dir: Path, job: TrainJob, result: Any, warehouse: Path | None = None) -> dict[str, Any]:
    """The main rank's result as JSON in ``launch_dir`` (for a by-hand run; Pipes gets it too), its
    paths inside ``warehouse`` (this side's mount) warehouse-relative."""
    data = encode_result(job, result)
    if warehouse is not None:
        data = warehouse_relative(data, warehouse)
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
