"""Project-level operations the CLI needs: observe, status, and in-process runs.

They work on the same Dagster instance (DAGSTER_HOME inside the warehouse) that ``dagster dev``
uses, so staleness and run history agree between the CLI and the UI.
"""

import fcntl
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._time import get_current_datetime

from assets_defs.automation import record_observations
from assets_defs.principles import observe_versions
from salmon_dag.settings import ACCELERATOR_POOL, Settings
from salmon_dag.warehouse import Warehouse

MATERIALIZED, MISSING, STALE = "materialized", "missing", "stale"
# Tags of a `salmon run`: who started it, where, and which process runs it.
LAUNCHED_BY_TAG, HOST_TAG, PID_TAG = "salmon/launched_by", "salmon/host", "salmon/pid"


@dataclass
class AssetState:
    asset: str
    state: str
    causes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"asset": self.asset, "state": self.state, "causes": self.causes}


def observe(settings: Settings, instance: dg.DagsterInstance) -> list[str]:
    """Record the principle files' current hashes; returns the files whose hash changed."""
    return [k.to_user_string() for k in record_observations(instance, observe_versions(settings))]


def asset_states(defs: dg.Definitions, instance: dg.DagsterInstance, warehouse: Warehouse | None = None) -> list[AssetState]:
    """materialized / missing / corrupt / stale for every buildable asset, in topological order.

    Dagster flags only the direct dependents of a change as STALE; an asset downstream of a stale
    or missing one is reported stale here too, since it will be rebuilt with it. With ``warehouse``,
    an asset the run records call materialized is also checked on disk (salmon_dag.integrity: its
    table's Parquet footer, its checkpoint files' headers): a deleted file is ``missing``, a
    damaged one ``corrupt``, each with the path.
    """
    from salmon_dag.integrity import artifact_problem

    graph: AssetGraph = defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    states: dict[dg.AssetKey, AssetState] = {}
    for level in graph.toposorted_asset_keys_by_level:
        for key in sorted(level, key=lambda k: k.to_user_string()):
            node = graph.get(key)
            if not node.is_materializable:
                continue
            name = key.to_user_string()
            status = resolver.get_status(key)
            if status == StaleStatus.MISSING:
                states[key] = AssetState(name, MISSING)
                continue
            problem = artifact_problem(warehouse, name, "huggingface" in node.kinds) if warehouse else None
            if problem:
                states[key] = AssetState(name, problem[0], [problem[1]])
                continue
            causes = [
                f"{c.key.asset_key.to_user_string()}: {c.reason}" for c in resolver.get_stale_causes(key)
            ]
            for parent in node.parent_keys:
                if parent in states and states[parent].state != MATERIALIZED:
                    causes.append(f"upstream {parent.to_user_string()} is {states[parent].state}")
            states[key] = AssetState(name, STALE if (status == StaleStatus.STALE or causes) else MATERIALIZED, causes)
    return list(states.values())


def resolve_selection(defs: dg.Definitions, selection: str) -> list[dg.AssetKey]:
    """Keys picked by a Dagster selection string (``prompt_pool``, ``key:principles/*+``, ...)."""
    graph = defs.resolve_asset_graph()
    try:
        keys = dg.AssetSelection.from_string(selection).resolve(graph)
    except Exception as exc:  # dagster raises several types for bad selections
        raise ValueError(f"bad asset selection {selection!r}: {str(exc).splitlines()[0]}") from None
    keys = {k for k in keys if graph.get(k).is_materializable}
    if not keys:
        raise ValueError(f"asset selection {selection!r} matches no buildable asset")
    return with_required_neighbors(defs, keys)


def with_required_neighbors(defs: dg.Definitions, keys) -> list[dg.AssetKey]:
    """Add the sibling outputs that a multi-asset cannot be run without (prompt_pool + rejects)."""
    graph = defs.resolve_asset_graph()
    full = dg.AssetSelection.assets(*keys).required_multi_asset_neighbors().resolve(graph)
    return sorted(full, key=lambda k: k.to_user_string())


@dataclass
class RunSummary:
    run_id: str
    success: bool
    materialized: list[tuple[str, dict]]
    checks: list[tuple[str, str, bool, str]]  # asset, check, passed, reason (check_reason)
    errors: list[str]


def check_reason(metadata: dict[str, Any], limit: int = 300) -> str:
    """A check evaluation's metadata as one line (``key=value; ...``): why it passed or failed."""
    parts = [f"{key}={getattr(value, 'value', value)}" for key, value in metadata.items()]
    text = "; ".join(parts).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def asset_steps(defs: dg.Definitions, keys: list[dg.AssetKey]) -> list[str]:
    """The step (op) that builds each of ``keys``, once each, in topological order."""
    graph = defs.resolve_asset_graph()
    order = {k: i for i, level in enumerate(graph.toposorted_asset_keys_by_level) for k in level}
    steps: list[str] = []
    for key in sorted(keys, key=lambda k: (order.get(k, 0), k.to_user_string())):
        name = graph.get(key).assets_def.node_def.name
        if name not in steps:
            steps.append(name)
    return steps


def step_error(event: dg.DagsterEvent) -> str:
    """The last line of a step failure's own error (not Dagster's wrapper around it)."""
    err = event.step_failure_data.error
    while err.cause is not None and err.cls_name in ("DagsterExecutionStepExecutionError",):
        err = err.cause
    message = err.message.strip().splitlines()[-1] if err.message.strip() else err.cls_name
    # Our own errors already name file/field: drop their class prefix.
    return re.sub(r"^(salmon_dag|assets_defs)[\w.]*\.\w+(Error): ", "", message)


def open_instance(dagster_home: str | Path | None = None) -> dg.DagsterInstance:
    """The project's Dagster instance (``DAGSTER_HOME`` unless ``dagster_home`` is given).

    Opened under a file lock: the first open creates the instance's SQLite databases, and two
    processes creating them at once (two `salmon run`s on a new warehouse) can both stamp
    alembic's version table, after which every open fails with "more than one head present".
    """
    home = Path(dagster_home or os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".instance.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return dg.DagsterInstance.from_config(str(home))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_accelerator_pool(instance: dg.DagsterInstance) -> None:
    """Create the accelerator pool's slots at the instance's default limit now, as Dagster would at
    the first claim; two runs claiming at once on a new instance could otherwise both create it.
    A limit someone set in the UI or with ``dagster instance concurrency set`` is left alone."""
    storage = instance.event_log_storage
    default = instance.get_concurrency_config().pool_config.default_pool_limit
    if default is None or not storage.supports_global_concurrency_limits:
        return
    pool = next((p for p in storage.get_pool_limits() if p.name == ACCELERATOR_POOL), None)
    if pool is None or (pool.from_default and pool.limit != default):
        storage.initialize_concurrency_limit_to_default(ACCELERATOR_POOL)


def release_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail the `salmon run`s of this host whose process is gone, and free their pool slots.

    A run killed hard (SIGKILL, out of memory) cannot release the accelerator slot it holds, and
    the next run would wait for it forever. Returns the ids of the runs released.
    """
    released = []
    runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED],
                                           tags={LAUNCHED_BY_TAG: "cli", HOST_TAG: socket.gethostname()}))
    for run in runs:
        pid = int(run.tags.get(PID_TAG, "0"))
        if pid and _alive(pid):
            continue
        instance.report_run_failed(run, f"salmon run process {pid} is gone; its pool slots are released")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
    return released


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def run_assets(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    keys: list[dg.AssetKey],
    log_level: str = "INFO",
    on_event: Callable[[Any], None] | None = None,
) -> RunSummary:
    """Materialize ``keys`` (and their checks) in this process; ``on_event`` sees every event-log
    entry of the run as it is stored."""
    from dagster._core.utils import make_new_run_id

    job = defs.resolve_implicit_global_asset_job_def()
    run_id = make_new_run_id()
    if on_event is not None:
        instance.add_event_listener(run_id, on_event)
    result = job.execute_in_process(
        instance=instance,
        asset_selection=keys,
        raise_on_error=False,
        run_id=run_id,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        tags={LAUNCHED_BY_TAG: "cli", HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())},
    )
    materialized = []
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        meta = {k: v.value for k, v in mat.metadata.items() if k in ("dagster/row_count", "model_id")}
        materialized.append((mat.asset_key.to_user_string(), meta))
    checks = [
        (ev.asset_key.to_user_string(), ev.check_name, ev.passed, check_reason(ev.metadata))
        for ev in result.get_asset_check_evaluations()
    ]
    errors = [f"{e.step_key}: {step_error(e)}" for e in result.all_events if e.is_step_failure]
    return RunSummary(result.run_id, result.success, materialized, checks, errors)
