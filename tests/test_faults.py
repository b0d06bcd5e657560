"""Faults on a copy of a materialized project (issue 23): what `salmon status` and `salmon run` do
when a table or a checkpoint on disk is deleted or damaged behind the run records' back."""

from __future__ import annotations

import json

import pytest

from projects import copy_project, salmon


def _states(project) -> dict[str, dict]:
    return {s["asset"]: s for s in json.loads(salmon(project, "status", "--format", "json").stdout)}


@pytest.mark.slow
def test_a_damaged_table_and_checkpoint_are_reported_with_their_paths_and_rebuilt(project, tmp_path):
    copy = copy_project(project, tmp_path)
    wh = tmp_path / "warehouse"
    scores = wh / "benchmark_scores" / "data.parquet"
    scores.write_bytes(scores.read_bytes()[: scores.stat().st_size // 2])  # truncated
    adapter = wh / "models" / "ppo_policy" / "model.safetensors"  # the merged policy
    adapter.write_bytes(adapter.read_bytes()[: adapter.stat().st_size - 1000])  # header intact, weights cut
    (wh / "reward_model_eval" / "data.parquet").unlink()
    untouched = {p: p.read_bytes() for p in (wh / "response_pairs" / "data.parquet", wh / "rm_training_data" / "data.parquet")}

    states = _states(copy)
    assert states["benchmark_scores"]["state"] == "corrupt" and str(scores) in states["benchmark_scores"]["causes"][0]
    assert states["ppo_policy"]["state"] == "corrupt" and "truncated" in states["ppo_policy"]["causes"][0]
    assert states["reward_model_eval"]["state"] == "missing"
    assert states["reward_model"]["state"] == "materialized" and states["response_pairs"]["state"] == "materialized"

    proc = salmon(copy, "run", "-q")
    # -q is quiet in fact: no library load reports or progress bars, and the whole log in its file
    assert "Loading weights" not in proc.stdout + proc.stderr and "it/s]" not in proc.stdout + proc.stderr
    log = proc.stdout.split("full log: ", 1)[1].split()[0]
    assert "benchmark_scores" in open(log).read()
    built = proc.stdout.split("materializing ", 1)[1].splitlines()[0]
    assert {"benchmark_scores", "ppo_policy", "reward_model_eval"} <= set(built.split(", "))
    assert "reward_model," not in built and "response_pairs" not in built
    assert all(s["state"] == "materialized" for s in _states(copy).values())
    assert all(p.read_bytes() == data for p, data in untouched.items())


@pytest.mark.slow
def test_a_moved_warehouse_keeps_working_after_the_original_is_deleted(project, tmp_path):
    """status, sql, score and a downstream rebuild on a plain copy (cp -r), the original gone."""
    import shutil

    from projects import project_env

    first = copy_project(project, tmp_path / "first")
    moved = tmp_path / "moved"
    shutil.copytree(first[0] / "principles", moved / "principles")
    shutil.copytree(first[0] / "warehouse", moved / "warehouse")
    shutil.rmtree(first[0])
    copy = (moved, project_env(moved))
    for manifest in (moved / "warehouse" / "models").glob("*.json"):  # what loads names no old place
        data = json.loads(manifest.read_text())
        assert not any(str(first[0]) in str(data.get(k)) for k in ("model_id", "adapter_path")), manifest

    assert all(s["state"] == "materialized" for s in _states(copy).values()), _states(copy)
    out = salmon(copy, "sql", "select count(*) as n from response_pairs", "--format", "json").stdout
    assert json.loads(out)[0]["n"] > 0
    score = json.loads(salmon(copy, "score", "--prompt", "Hi", "--response", "Hello there.", "--principle", "Concise",
                              "--format", "json").stdout)
    assert score["score"] is not None
    # zero the copy's reward model: the copy's score must change (it loads its own, not the old one)
    from safetensors.torch import load_file, save_file

    weights = moved / "warehouse" / "models" / "reward_model" / "model.safetensors"
    save_file({k: v * 0 for k, v in load_file(weights).items()}, weights)
    zeroed = json.loads(salmon(copy, "score", "--prompt", "Hi", "--response", "Hello there.", "--principle", "Concise",
                               "--format", "json").stdout)
    assert zeroed["score"] != score["score"]
    salmon(copy, "run", "--select", "benchmark_scores", "-q")


@pytest.mark.slow
def test_a_run_killed_mid_judging_redoes_at_most_one_chunk(project, tmp_path):
    """SIGKILL after the second judge call saved its judgements: the rerun judges only the rest,
    gives the uninterrupted run's table, and leaves nothing of the killed run behind."""
    import os
    import signal

    import polars as pl

    from projects import CI_PROFILE
    from salmon_dag.preferences.stage import PREFERENCE_SCHEMA
    from salmon_dag.resume import KILL_AFTER_ENV

    root, env = copy_project(project, tmp_path)
    wh = root / "warehouse"
    table = wh / "synthetic_preferences" / "data.parquet"
    whole = pl.read_parquet(table)
    table.unlink()  # judged from scratch: no previous table to reuse
    others = {p: p.read_bytes() for p in wh.rglob("*.parquet")}
    profile = tmp_path / "one_pair_per_call.yaml"
    profile.write_text(f"extends: {CI_PROFILE}\njudge:\n  chunk_pairs: 1\n")
    chunked = (root, {**env, "SALMON_PROFILE": str(profile)})

    killed = salmon((root, {**chunked[1], KILL_AFTER_ENV: "2"}), "run", "--select", "synthetic_preferences", "-q",
                    check=False)
    assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL, 1), killed.stdout + killed.stderr
    saved = sorted((wh / ".partial" / "synthetic_preferences").glob("*.json"))
    assert len(saved) == 2 and not table.exists()

    proc = salmon(chunked, "run", "--select", "synthetic_preferences", "-q")
    assert "was killed; marked failed" in proc.stdout + proc.stderr
    log = open(proc.stdout.split("full log: ", 1)[1].split()[0]).read()
    principles = whole["principle"].n_unique()
    pairs = whole["pair_id"].n_unique()
    assert f"'resumed': {2 * principles}" in log and f"'judged': {(pairs - 2) * principles}" in log, log[-3000:]
    resumed = pl.read_parquet(table)
    key, scores = ["pair_id", "principle"], ["score_ab", "score_ba", "score"]
    same = [c for c in PREFERENCE_SCHEMA if c not in scores]  # the judgement, not the run's lineage
    assert resumed.sort(key).select(same).equals(whole.sort(key).select(same))
    for col in scores:  # one pair per call vs all in one: float rounding only
        assert (resumed.sort(key)[col] - whole.sort(key)[col]).abs().max() < 1e-4
    assert not (wh / ".partial" / "synthetic_preferences").exists()
    assert all(p.read_bytes() == data for p, data in others.items())
    assert os.listdir(wh / "synthetic_preferences") == ["data.parquet"]


@pytest.mark.slow
def test_optional_data_missing_on_this_machine_does_not_make_what_was_built_with_it_stale(tmp_path):
    """A warehouse built with an optional human-pair file, then looked at where that file is absent
    (a checkout without ../shared): nothing is stale, and the artifacts say what they were built
    from. The file back but edited: what reads it is stale."""
    import shutil

    from projects import CI_PROFILE, ROOT, project_env

    data = tmp_path / "data" / "hh_pairs.jsonl"
    data.parent.mkdir()
    shutil.copy(ROOT / "salmon_dag" / "data" / "rehearsal" / "hh_rlhf_mini.jsonl", data)
    profile = tmp_path / "with_data.yaml"
    profile.write_text(f"extends: {CI_PROFILE}\nreward_model:\n  human_eval: {{source: {data}, optional: true}}\n")
    root = tmp_path / "project"
    shutil.copytree(ROOT / "principles", root / "principles")
    project = (root, project_env(root, profile))
    salmon(project, "run", "-q", "--select", "*reward_model_eval")  # what reads the file, and upstream
    manifest = json.loads((root / "warehouse" / "models" / "reward_model.json").read_text())
    assert manifest["lineage"]["data_files"]["files"]["hh_pairs.jsonl"]  # built with it, its digest recorded

    kept = data.read_bytes()
    data.unlink()
    states = _states(project)
    assert states["reward_model_eval"]["state"] == "materialized", states
    assert not [name for name, s in states.items() if s["state"] == "stale"], states

    data.write_bytes(kept.replace(b"\n", b"\n\n", 1))  # back, edited
    stale = {name for name, s in _states(project).items() if s["state"] == "stale"}
    assert {"reward_model", "reward_model_eval"} <= stale and "response_pairs" not in stale


def _mount_small_disk(path, size: int) -> None:
    import subprocess

    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_a_failed_run_a_free_slot_and_nothing_half_written(project, tmp_path):
    """The warehouse on a small filesystem with 12 MiB left and its reward model gone; rebuilding it
    needs more (each checkpoint is ~22 MB)."""
    import shutil
    import subprocess

    from projects import instance_of

    source = sum(p.stat().st_size for p in project[0].rglob("*") if p.is_file())
    disk = tmp_path / "small_disk"
    _mount_small_disk(disk, source + (64 << 20))
    try:
        copy = copy_project(project, disk / "project")
        wh = disk / "project" / "warehouse"
        # no model, no PMP stage's model, no checkpoints to resume from: it must train and save
        for work in [*(wh / "models").glob(".*.work"), wh / "models" / "reward_model", wh / "models" / ".reward_model.pmp"]:
            shutil.rmtree(work, ignore_errors=True)
        (wh / "models" / "reward_model.json").unlink()
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - (12 << 20)))
        before = {p: p.read_bytes() for p in wh.rglob("*") if p.is_file() and ".dagster" not in p.parts
                  and p.suffix != ".lock" and p.name != "salmon.duckdb"}

        proc = salmon(copy, "run", "--select", "reward_model", "-q", check=False)
        said = proc.stdout + proc.stderr
        assert proc.returncode == 1 and "Traceback" not in said, said
        errors = [line for line in said.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"no space left on device writing {wh}" in errors[0], said
        assert "it/s]" not in said  # the failed step's progress bar stayed in the log

        with instance_of(copy) as instance:  # the run is failed and holds no accelerator slot
            assert str(instance.get_runs(limit=1)[0].status) == "DagsterRunStatus.FAILURE"
            assert instance.event_log_storage.get_concurrency_info("accelerator").claimed_slots == []
        # nothing half-written: every file as it was, no temporary or cut-off checkpoint left
        assert all(p.read_bytes() == data for p, data in before.items())
        assert not [p for p in wh.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
        checkpoints = [c for c in (wh / "models").glob(".*.work/checkpoint-*")]
        assert all((c / "trainer_state.json").is_file() for c in checkpoints), checkpoints
        assert not (wh / "models" / "reward_model").exists() and not (wh / "models" / "reward_model.json").exists()
        filler.unlink()
        states = _states(copy)
        assert states["reward_model"]["state"] == "missing" and states["response_pairs"]["state"] == "materialized"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_a_reward_model_rebuilt_again_and_again_trains_no_further_step(project, tmp_path):
    """Forced rebuilds of a finished reward model (PMP, then the principle fine-tune) with the same
    inputs: nothing trained, the same steps and weights, every other table untouched."""
    copy = copy_project(project, tmp_path)
    wh = tmp_path / "warehouse"
    model = wh / "models" / "reward_model"
    steps = json.loads((model / "training_log.json").read_text())["steps"]
    tables = {p: p.read_bytes() for p in wh.rglob("*.parquet")}
    weights = []
    for _ in range(2):
        proc = salmon(copy, "run", "--select", "reward_model", "-q")
        log = open(proc.stdout.split("full log: ", 1)[1].split()[0]).read()
        # a copy (other paths, new file times) of what these inputs train: no training at all
        assert "pmp: " in log and log.count("nothing to train") == 2, log[-2000:]
        assert json.loads((model / "training_log.json").read_text())["steps"] == steps
        weights.append((model / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]
    assert all(p.read_bytes() == data for p, data in tables.items())
