"""The accelerator pool holds: steps that load a model wait for a free slot of the project's
instance (``instance.accelerator_pool_limit``, 1 by default), so two runs never load models onto
one GPU at once."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from projects import copy_project, instance_of, salmon

from assets_defs.project import (
    HOST_TAG,
    LAUNCHED_BY_TAG,
    PID_TAG,
    ensure_accelerator_pool,
    open_instance,
    release_dead_runs,
)
from salmon_dag.settings import ACCELERATOR_POOL, Settings, write_instance_config

# A run of one asset in the accelerator pool that records when it held the slot.
SLOW_ASSET_RUN = textwrap.dedent(f"""
    import json, os, socket, sys, time
    import dagster as dg

    @dg.asset(pool={ACCELERATOR_POOL!r})
    def loads_a_model():
        start = time.time()
        if sys.argv[3:] == ["--until-second"]:
            # hold the slot until a second run holds one too or waits for one (a fixed sleep
            # raced the second process's start-up on a slow box)
            storage, deadline = dg.DagsterInstance.get().event_log_storage, start + 120
            while time.time() < deadline:
                info = storage.get_concurrency_info({ACCELERATOR_POOL!r})
                if len(info.active_run_ids | info.pending_run_ids) >= 2:
                    break
                time.sleep(0.1)
        time.sleep(float(sys.argv[2]))
        with open(sys.argv[1], "a") as f:
            f.write(json.dumps([start, time.time()]) + "\\n")

    job = dg.Definitions(assets=[loads_a_model]).resolve_implicit_global_asset_job_def()
    tags = {{{LAUNCHED_BY_TAG!r}: "cli", {HOST_TAG!r}: socket.gethostname(), {PID_TAG!r}: str(os.getpid())}}
    assert job.execute_in_process(instance=dg.DagsterInstance.get(), tags=tags).success
""")


def overlaps(spans: list[tuple[float, float]]) -> bool:
    (a0, a1), (b0, b1) = sorted(spans)
    return b0 < a1


def test_the_project_instance_limits_the_accelerator_pool(tmp_path, monkeypatch):
    import dagster as dg

    profile = tmp_path / "two_gpus.yaml"
    profile.write_text("extends: tiny\ninstance:\n  accelerator_pool_limit: 2\n")
    home = tmp_path / "wh" / ".dagster"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: true\nretention:\n  schedule:\n    purge_after_days: 7\n")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for name, limit in (("tiny", 1), (str(profile), 2), (str(profile), 2)):  # the last: unchanged, idempotent
        Settings(profile_name=name, warehouse_dir=str(tmp_path / "wh")).export()
        instance = dg.DagsterInstance.from_config(str(home))
        pools = instance.get_concurrency_config().pool_config
        assert (pools.default_pool_limit, pools.pool_granularity.value) == (limit, "op")
        instance.dispose()
    text = (home / "dagster.yaml").read_text()
    assert "purge_after_days: 7" in text and "enabled: true" in text  # the user's own settings stay
    assert "nux:\n  enabled: false" in text


@pytest.mark.parametrize("limit", [1, 2])
def test_two_concurrent_runs_in_the_pool_serialize_under_a_limit_of_one(tmp_path, limit):
    import dagster as dg

    home = tmp_path / "home"
    home.mkdir()
    write_instance_config(home / "dagster.yaml", limit)
    with dg.DagsterInstance.from_config(str(home)) as instance:  # as `salmon run` / `salmon ui` do first
        ensure_accelerator_pool(instance)
        assert instance.event_log_storage.get_concurrency_info(ACCELERATOR_POOL).slot_count == limit
    script, spans = tmp_path / "run.py", tmp_path / "spans.jsonl"
    script.write_text(SLOW_ASSET_RUN)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    run = [sys.executable, str(script), str(spans), "1"]
    first = subprocess.Popen([*run, "--until-second"], env=env, stderr=subprocess.PIPE, text=True)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        wait_for_a_claim(instance, first)
    # the second run starts while the first holds a slot (not in the same millisecond: see
    # wait_for_a_claim), which it keeps until the second holds one too or waits for one
    second = subprocess.Popen(run, env=env, stderr=subprocess.PIPE, text=True)
    for p in (first, second):
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    recorded = [tuple(json.loads(line)) for line in spans.read_text().splitlines()]
    assert len(recorded) == 2
    assert overlaps(recorded) == (limit == 2)


def wait_for_a_claim(instance, proc, timeout: float = 120) -> None:
    """Until some step holds an accelerator slot.

    Tests start the second run only then: with Dagster's SQLite storage, two claims within the
    same few milliseconds can both take the last slot (SQLite ignores the SELECT ... FOR UPDATE
    of Dagster's claim); a Postgres instance has no such window (README).
    """
    deadline = time.monotonic() + timeout
    while instance.event_log_storage.get_concurrency_info(ACCELERATOR_POOL).active_slot_count == 0:
        assert time.monotonic() < deadline and proc_running(proc), "the first run never took a slot"
        time.sleep(0.2)


def proc_running(proc) -> bool:
    return proc.poll() is None if hasattr(proc, "poll") else proc.is_alive()


def test_processes_opening_a_new_instance_at_once_all_open_it(tmp_path):
    # Unlocked, four processes creating the SQLite databases at once fail ~1 in 3 (and leave the
    # instance unopenable): alembic's version table gets two rows, "more than one head present".
    home = tmp_path / "home"
    home.mkdir()
    write_instance_config(home / "dagster.yaml", 1)
    code = "import sys; from assets_defs.project import open_instance; open_instance(sys.argv[1]).dispose()"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(home)], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()[-2000:]
    later = subprocess.run([sys.executable, "-c", code, str(home)], capture_output=True, text=True, timeout=120)
    assert later.returncode == 0, later.stderr[-2000:]


def test_a_run_killed_while_holding_the_slot_does_not_block_the_next(tmp_path):
    import dagster as dg

    home = tmp_path / "home"
    home.mkdir()
    write_instance_config(home / "dagster.yaml", 1)
    script = tmp_path / "run.py"
    script.write_text(SLOW_ASSET_RUN)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    instance = open_instance(home)  # first, as `salmon run` does: creates the databases once
    victim = subprocess.Popen([sys.executable, str(script), str(tmp_path / "spans.jsonl"), "600"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_a_claim(instance, victim)
        assert release_dead_runs(instance) == []  # alive: left alone
        victim.kill()
        victim.wait()
        (run_id,) = release_dead_runs(instance)
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info(ACCELERATOR_POOL).active_slot_count == 0
        nxt = subprocess.run([sys.executable, str(script), str(tmp_path / "spans.jsonl"), "0"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert nxt.returncode == 0, nxt.stderr[-2000:]
    finally:
        if victim.poll() is None:
            victim.kill()
        instance.dispose()


def step_spans(instance, run_id: str) -> dict[str, tuple[float, float]]:
    """(start, end) wall-clock time of every step of a run, from its event log."""
    starts, ends = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            ends[event.step_key] = entry.timestamp
    return {k: (starts[k], ends[k]) for k in starts if k in ends}


@pytest.mark.slow
def test_two_salmon_runs_of_model_assets_take_turns_on_the_accelerator(project, tmp_path):
    import dagster as dg

    copy = copy_project(project, tmp_path / "p")
    outputs: dict[str, str] = {}

    def run(select: str) -> None:
        outputs[select] = salmon(copy, "run", "--select", select).stdout

    threads = [threading.Thread(target=run, args=(s,)) for s in ("reward_model_eval", "benchmark_scores")]
    with instance_of(copy) as instance:
        threads[0].start()
        wait_for_a_claim(instance, threads[0], timeout=600)
        threads[1].start()  # while the first one holds the slot
        for t in threads:
            t.join()
        assert set(outputs) == {"reward_model_eval", "benchmark_scores"}
        runs = instance.get_runs(dg.RunsFilter(tags={"salmon/launched_by": "cli"}), limit=2)
        spans = {}
        for r in runs:
            spans.update(step_spans(instance, r.run_id))
        model_steps = {k: v for k, v in spans.items() if k in ("reward_model_eval", "benchmark_scores")}
        assert len(model_steps) == 2, spans
        assert not overlaps(list(model_steps.values())), model_steps
        # a run that waited for the slot said so on the terminal (Dagster's blocked event, once)
        for r in runs:
            blocked = [e.step_key for e in instance.all_logs(r.run_id)
                       if (e.user_message or "").startswith("Step blocked by limit for pool")]
            for step in blocked:
                assert any(f"{step}: waiting for a free 'accelerator' slot" in out for out in outputs.values()), outputs
