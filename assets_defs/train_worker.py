"""One rank of a launched training job: ``python -m assets_defs.train_worker <job.json>``, started by
``accelerate launch`` (salmon_dag.launch.command) on every rank.

Every rank runs the job (``salmon_dag.launch.jobs.run_job``). Rank 0 alone talks to Dagster through
Pipes (``accelerate`` hands the Pipes bootstrap variables to every rank, and two writers would mix
their messages): its log lines become the step's log events and its result a custom message the
asset turns into metadata. A rank that fails leaves ``rank-<k>.error`` beside the job file, so the
asset can name it. Imports ``dagster_pipes`` only, not Dagster.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def rank() -> int:
    """This process's global rank (torchrun / accelerate set RANK; 0 when run by hand)."""
    return int(os.environ.get("RANK", "0"))


def main(job_file: str, run: Callable[..., Any] | None = None) -> None:
    """Run the job in ``job_file`` as this rank; ``run`` replaces ``run_job`` (tests)."""
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    from salmon_dag.launch.jobs import TrainJob, job_warehouse, run_job, write_failure, write_result

    job = TrainJob.read(job_file)
    run = run or run_job
    here, me, warehouse = Path(job_file).parent, rank(), job_warehouse(job_file)
    try:
        if me == 0 and PipesEnvVarParamsLoader().is_dagster_pipes_process():
            with open_dagster_pipes() as pipes:
                result = run(job, pipes.log.info)
                pipes.report_custom_message(write_result(here, job, result, warehouse))
        elif me == 0:
            write_result(here, job, run(job, print), warehouse)
        else:
            run(job, lambda _line: None)  # rank 0 reports for all
    except BaseException as exc:
        write_failure(here, me, exc, traceback.format_exc())
        raise
    _leave_process_group()


def _leave_process_group() -> None:
    """Destroy the process group before the interpreter exits (what ``Accelerator.end_training``
    does): left to exit-time destructors, a rank of a 2-process ZeRO-3 run aborted once after the
    model was written ("terminate called without an active exception", exit -6), failing the step."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m assets_defs.train_worker <job.json>")
    main(sys.argv[1])
