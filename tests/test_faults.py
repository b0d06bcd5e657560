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
    built = proc.stdout.split("materializing ", 1)[1].splitlines()[0]
    assert {"benchmark_scores", "ppo_policy", "reward_model_eval"} <= set(built.split(", "))
    assert "reward_model," not in built and "response_pairs" not in built
    assert all(s["state"] == "materialized" for s in _states(copy).values())
    assert all(p.read_bytes() == data for p, data in untouched.items())
