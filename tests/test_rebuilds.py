"""Principles drive rebuilds (issue 12): an edit of each principle file makes exactly its side of
the graph stale, ``salmon run`` rebuilds exactly that, once each, reusing the judgements it can,
and with the daemon running the same edit is rebuilt without a click.

Each test works on its own copy of the session's materialized project (tests/projects.py) and
reads the copy's Dagster instance (``<copy>/warehouse/.dagster``) directly: materializations per
asset before and after, their run tags and metadata.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from projects import (
    CI_PROFILE,
    ROOT,
    Project,
    copy_project,
    free_port,
    group_alive,
    instance_of,
    salmon,
    states,
    stop_group,
)

pytestmark = pytest.mark.slow

# The contract, spelled out (README "Principles drive rebuilds"); the tests also derive each set
# from the asset graph (everything downstream of the file's observable source) and compare.
RL_SIDE = {"ppo_policy", "ppo_steps", "ppo_samples", "benchmark_scores", "benchmark_outputs"}
RM_SIDE = {"synthetic_preferences", "rm_training_data", "reward_model", "reward_model_eval", "rm_benchmarks"}
SA_SIDE = {"self_align_sft_data", "sft_model", "response_pairs"}
EXPECTED_STALE = {
    "rl": {"principles/rl", *RL_SIDE},
    "reward_model": {"principles/reward_model", *RM_SIDE, *RL_SIDE},
    "self_align": {"principles/self_align", *SA_SIDE, *RM_SIDE, *RL_SIDE},
}
SHIPPED_RM_PRINCIPLES = 19
NEW_RM_PRINCIPLE = ("\n  - name: Mentions Water\n    definition: The reply mentions water.\n"
                    "    negative_definition: The reply never mentions water.\n")
AUTOMATION_SENSOR = "salmon_automation"
PRINCIPLE_SENSOR = "principle_file_sensor"


def _prepend_to_first_definition(text: str, words: str) -> str:
    """``words`` at the start of the first folded ``definition: >-`` block: a real wording change."""
    edited, n = re.subn(r"(\n\s+definition: >-\n\s+)", lambda m: m.group(1) + words, text, count=1)
    assert n == 1
    return edited


EDITS = {
    # the first Self-Align principle ("Ethical") gets a new definition
    "self_align": lambda text: _prepend_to_first_definition(text, "Always, "),
    # a 19th reward-model principle
    "reward_model": lambda text: text.rstrip() + NEW_RM_PRINCIPLE,
    # the first always-on RL line ("Answers Without Self-Commentary") gets a new definition
    "rl": lambda text: _prepend_to_first_definition(text, "Above all, "),
}
# how each edited definition starts in the rebuilt principles/<kind> table
EDITED_DEFINITIONS = {"self_align": "Always, Refuse", "reward_model": "The reply mentions water.",
                      "rl": "Above all, The AI answers"}


def edit(project: Project, kind: str) -> None:
    path = project[0] / "principles" / f"{kind}.yaml"
    before = path.read_text()
    after = EDITS[kind](before)
    assert after != before
    path.write_text(after)


# -- the copy's Dagster instance ---------------------------------------------------------------


def asset_events(project: Project, kind: str = "materializations", after: int | None = None) -> list:
    """Every materialization (or observation) record of every asset, after storage id ``after``."""
    with instance_of(project) as instance:
        fetch = instance.fetch_materializations if kind == "materializations" else instance.fetch_observations
        records = []
        for key in instance.get_asset_keys():
            records += fetch(dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=10_000).records
    return sorted(records, key=lambda r: r.storage_id)


def key_of(record) -> str:
    return record.asset_key.to_user_string()


def counts(records) -> Counter:
    return Counter(key_of(r) for r in records)


def last_storage_id(project: Project) -> int:
    with instance_of(project) as instance:
        return instance.event_log_storage.get_maximum_record_id() or 0


def metadata(record) -> dict:
    mat = record.event_log_entry.asset_materialization
    return {k: v.value for k, v in mat.metadata.items()}


def observed_version(record) -> str | None:
    return (record.event_log_entry.asset_observation.tags or {}).get("dagster/data_version")


def _previous_version(project: Project, record) -> str | None:
    """The data version recorded for the same source before ``record``."""
    earlier = [r for r in asset_events(project, "observations")
               if key_of(r) == key_of(record) and r.storage_id < record.storage_id]
    return observed_version(earlier[-1]) if earlier else None


def asset_graph(project: Project):
    from assets_defs.definitions import build_definitions
    from salmon_dag.settings import Settings

    root = project[0]
    return build_definitions(Settings(str(CI_PROFILE), str(root / "warehouse"), str(root / "principles"))).resolve_asset_graph()


def downstream_of_file(project: Project, kind: str) -> set[str]:
    """The asset graph's answer: everything downstream of ``principle_files/<kind>``."""
    from assets_defs.principles import FILE_KEYS

    graph = asset_graph(project)
    seen, todo = set(), [FILE_KEYS[kind]]
    while todo:
        for child in graph.get(todo.pop()).child_keys:
            if child not in seen:
                seen.add(child)
                todo.append(child)
    assert all(graph.get(k).is_materializable for k in seen)
    return {k.to_user_string() for k in seen}


def n_rows(project: Project, table: str) -> int:
    return pl.read_parquet(project[0] / "warehouse" / table / "data.parquet").height


@pytest.fixture
def project_copy(project, tmp_path, request) -> Iterator[Project]:
    """This test's own copy of the session's project, removed when the test passes (each copy
    holds ~300 MB of checkpoints); kept under tmp_path for a look when it fails."""
    failed = request.session.testsfailed
    yield copy_project(project, tmp_path / "p")
    if request.session.testsfailed == failed:
        shutil.rmtree(tmp_path / "p", ignore_errors=True)


# -- 1. `salmon status` and `salmon run` after an edit of each file ----------------------------


def rebuild_after_edit(copy: Project, kind: str, edit_file: Callable[[], None]):
    """Edit ``kind``'s principle file with ``edit_file``, check what `salmon status` and then a plain
    `salmon run` do (exactly the file's side, stale, then rebuilt once each in one run), and return
    (the new materialization records, the run's output)."""
    expected = EXPECTED_STALE[kind]
    assert downstream_of_file(copy, kind) == expected  # the graph says the same as the contract
    mats_before = counts(asset_events(copy))
    start = last_storage_id(copy)

    edit_file()
    st = states(copy)
    assert {a for a, s in st.items() if s != "materialized"} == expected
    assert {st[a] for a in expected} == {"stale"}  # stale, not missing
    # the edit was observed (not materialized): one new data version of this file's source only
    observed = asset_events(copy, "observations", after=start)
    assert [key_of(r) for r in observed] == [f"principle_files/{kind}"]
    assert observed_version(observed[0]) != _previous_version(copy, observed[0])
    assert asset_events(copy, after=start) == []

    before_run = last_storage_id(copy)
    t0 = time.monotonic()
    proc = salmon(copy, "run")  # no --select: what is stale
    elapsed = time.monotonic() - t0
    new = asset_events(copy, after=before_run)
    # each stale asset exactly once, nothing else; the sources are only observed (not again: the
    # run's own observation finds the hash it already has)
    assert counts(new) == Counter(dict.fromkeys(expected, 1)), proc.stdout
    assert counts(asset_events(copy)) - mats_before == Counter(dict.fromkeys(expected, 1))
    assert len({r.run_id for r in new}) == 1  # one in-process run
    assert asset_events(copy, "observations", after=before_run) == []
    assert set(states(copy).values()) == {"materialized"}
    print(f"\n{kind}: salmon run rebuilt {len(new)} assets in {elapsed:.1f}s")
    return new, proc


@pytest.mark.parametrize("kind", ["reward_model", "self_align"])
def test_edit_rebuilds_exactly_its_side_once(project_copy, kind):
    copy = project_copy
    pairs_before = n_rows(copy, "response_pairs")
    pair_ids_before = set(pl.read_parquet(copy[0] / "warehouse" / "response_pairs" / "data.parquet")["pair_id"])
    judge_before = pl.read_parquet(copy[0] / "warehouse" / "synthetic_preferences" / "data.parquet")["judge_model"].unique()
    rm_table = pl.read_parquet(copy[0] / "warehouse" / "principles" / "reward_model" / "data.parquet")
    assert (rm_table["entry_kind"] == "principle").sum() == SHIPPED_RM_PRINCIPLES
    shipped = (copy[0] / "principles" / f"{kind}.yaml").read_text()

    new, _ = rebuild_after_edit(copy, kind, lambda: edit(copy, kind))
    table = pl.read_parquet(copy[0] / "warehouse" / "principles" / kind / "data.parquet")
    assert table["definition"].str.starts_with(EDITED_DEFINITIONS[kind]).sum() == 1

    (meta,) = [metadata(r) for r in new if key_of(r) == "synthetic_preferences"]
    judged, reused = meta["judged"], meta["reused_from_cache"]
    print(f"{kind}: synthetic_preferences judged {judged}, reused {reused} ({pairs_before} pairs before)")
    if kind == "reward_model":
        # only the new principle goes to the judge; the 19 shipped ones come from the cache
        assert n_rows(copy, "response_pairs") == pairs_before  # pairs were not rebuilt
        assert judged == pairs_before * 1 and reused == pairs_before * SHIPPED_RM_PRINCIPLES
        assert n_rows(copy, "synthetic_preferences") == pairs_before * (SHIPPED_RM_PRINCIPLES + 1)
        # back to the shipped file: the extra principle's rows go, nothing is judged again (the
        # judgements only: the stages after them were shown above to rebuild on this edit)
        (copy[0] / "principles" / "reward_model.yaml").write_text(shipped)
        start = last_storage_id(copy)
        salmon(copy, "run", "--quiet", "--select", "key:principles/reward_model or key:synthetic_preferences")
        (meta,) = [metadata(r) for r in asset_events(copy, after=start) if key_of(r) == "synthetic_preferences"]
        assert meta["judged"] == 0 and meta["reused_from_cache"] == pairs_before * SHIPPED_RM_PRINCIPLES
        assert n_rows(copy, "synthetic_preferences") == pairs_before * SHIPPED_RM_PRINCIPLES
    else:
        # A new Self-Align definition retrains the SFT policy, which is also the judge: a
        # judgement's cache key holds the judge's identity (``sft_model@<run id>``), which the
        # retraining changes, so nothing is reused and every pair is judged anew under the 18
        # principles (the file still has 18) -- even a pair whose id (a hash of the prompt and
        # both responses) comes out the same, as all six do after ci.yaml's 4 SFT steps.
        pairs_after = n_rows(copy, "response_pairs")
        same_ids = pair_ids_before & set(pl.read_parquet(copy[0] / "warehouse" / "response_pairs" / "data.parquet")["pair_id"])
        print(f"{kind}: {pairs_after} pairs after, {len(same_ids)} with an unchanged pair id")
        assert reused == 0 and judged == pairs_after * SHIPPED_RM_PRINCIPLES
        assert n_rows(copy, "synthetic_preferences") == pairs_after * SHIPPED_RM_PRINCIPLES
        judges = pl.read_parquet(copy[0] / "warehouse" / "synthetic_preferences" / "data.parquet")["judge_model"].unique()
        assert judges.to_list() == [f"sft_model@{new[0].run_id}"] and judge_before.to_list() != judges.to_list()


# -- 2. automatic mode: the daemon rebuilds an edit on its own ---------------------------------


def _ticks(instance: dg.DagsterInstance, name: str) -> list:
    """Completed ticks of sensor ``name``, oldest first."""
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == name:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1000)
            return sorted((t for t in ticks if t.status != TickStatus.STARTED), key=lambda t: t.timestamp)
    return []


def _wait_for(what: str, condition, timeout: float, log_path: Path, poll: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    tail = log_path.read_text()[-4000:] if log_path.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; dagster dev log:\n{tail}")


def _file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rl_time_intervention_rebuilds_only_the_rl_side_and_keeps_the_reward_model(project_copy):
    """The README's intervention: one always-on principle with a verifiable rule, added to rl.yaml
    (salmon_dag.rl.intervention), is rebuilt by a plain `salmon run`: the RL side once each, the
    reward model's checkpoint byte for byte as it was; every rollout's reward then counts the rule.
    The run is shown as people watch it: one line per step, then the report."""
    from salmon_dag.config import load_profile
    from salmon_dag.rl.intervention import INTERVENTION_NAME, apply_intervention, near_empty

    copy = project_copy
    rm_dir = copy[0] / "warehouse" / "models" / "reward_model"
    rm_before = _file_hashes(rm_dir)

    def intervene() -> None:
        apply_intervention(copy[0] / "principles")
        other = copy[0] / "principles" / "self_align.yaml"  # a comment-only edit changes nothing
        other.write_text("# a comment-only edit\n" + other.read_text())

    new, proc = rebuild_after_edit(copy, "rl", intervene)
    # the judgements, the SFT policy and the reward model are not touched
    assert not {"synthetic_preferences", "reward_model", "sft_model", "principles/reward_model"} & set(counts(new))
    assert _file_hashes(rm_dir) == rm_before
    table = pl.read_parquet(copy[0] / "warehouse" / "principles" / "rl" / "data.parquet")
    assert (table["name"] == INTERVENTION_NAME).sum() == 1

    samples = pl.read_parquet(copy[0] / "warehouse" / "ppo_samples" / "data.parquet")
    assert all(INTERVENTION_NAME in p for p in samples["principles"].to_list())
    penalty = load_profile(str(CI_PROFILE)).rl.reward.rule_penalty
    assert penalty < 0
    for row in samples.iter_rows(named=True):  # the RL set's other principles carry no rule
        assert row["rule_penalty"] == (penalty if near_empty(row["response"]) else 0.0), row["response"]
    rates = json.loads(salmon(copy, "sql", "select policy, near_empty_share from policy_answers", "--format", "json").stdout)
    assert {"sft_model", "ppo_policy", "rl_rollouts_first_quarter", "rl_rollouts_last_quarter"} <= {r["policy"] for r in rates}
    assert all(0.0 <= r["near_empty_share"] <= 1.0 for r in rates)

    # the run as shown: one line per step, no raw log lines or third-party progress bars, the report
    out = proc.stdout
    steps = re.findall(r"^✓ \[(\d)/(\d)\] (\w+) ", out, flags=re.M)
    assert steps == [("1", "3", "principles"), ("2", "3", "ppo_policy"), ("3", "3", "benchmark_scores")], out
    assert re.search(r"ppo_steps \d+ rows", out) and "ppo_policy (model)" in out
    assert " - dagster - " not in out and "Loading weights" not in out and "ppo: step" not in out
    for title in ("Tables", "Reward model: held-out accuracy", "RL: first vs last quarter",
                  "Policies' answers", "Benchmarks", "Next:"):
        assert title in out, title
    assert re.search(r"objective/rm_score\s*│\s*-?\d", out)
    log = Path(re.search(r"^full log: (.+)$", out, flags=re.M)[1])
    text = log.read_text()
    assert "ppo: step 3/3" in text and "dagster - INFO" in text  # everything went to the log file
    # -v: Dagster's own log instead of the view, and the same report
    verbose = salmon(copy, "run", "-v", "--select", "principles/rl")
    assert "dagster - INFO" in verbose.stderr and "✓" not in verbose.stdout and "Tables" in verbose.stdout


def test_daemon_rebuilds_an_rl_edit_on_its_own(project_copy, tmp_path):
    copy = project_copy
    root, env = copy
    # the CI profile with sensors every 5 s instead of 15 (its name kept: the graph is the same)
    fast = tmp_path / "profiles" / CI_PROFILE.name
    fast.parent.mkdir()
    fast.write_text(f"extends: {CI_PROFILE}\ninstance:\n  sensor_interval_s: 5\n")
    env = {**env, "DAGSTER_HOME": str(root / "warehouse" / ".dagster"), "SALMON_PROFILE": str(fast)}
    expected = EXPECTED_STALE["rl"]
    log_path = tmp_path / "dagster_dev.log"

    # salmon_automation is declared STOPPED: switch it on in the copy's instance (as the UI's
    # toggle does) before the daemon starts
    t0 = time.monotonic()
    started = subprocess.run([sys.executable, "-m", "dagster", "sensor", "start", AUTOMATION_SENSOR,
                              "-w", "workspace.yaml"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr[-3000:]
    t_sensor = time.monotonic() - t0

    with open(log_path, "w") as log:
        ui = subprocess.Popen([sys.executable, "-m", "assets_defs.cli", "ui", "--port", str(free_port())],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with instance_of(copy) as instance:
            # eager automation reacts to updates after its first evaluation only: edit after it
            _wait_for("the first ticks of both sensors",
                      lambda: _ticks(instance, AUTOMATION_SENSOR) and _ticks(instance, PRINCIPLE_SENSOR), 180, log_path)
            t_ready = time.monotonic() - t0
            mats_before = counts(asset_events(copy))
            runs_before = {r.run_id for r in instance.get_runs()}
            start = last_storage_id(copy)

            edit(copy, "rl")
            t_edit, t_edit_wall = time.monotonic(), time.time()

            def rebuilt():
                new = asset_events(copy, after=start)
                runs = [r for r in instance.get_runs() if r.run_id not in runs_before]
                done = expected <= set(counts(new)) and runs and all(r.is_finished for r in runs)
                return (new, runs) if done else None

            new, runs = _wait_for("the automation to rebuild the RL side", rebuilt, 300, log_path)
            t_rebuilt = time.monotonic() - t_edit
            t_first_run = min(r.create_timestamp for r in instance.get_run_records(
                dg.RunsFilter(run_ids=[r.run_id for r in runs])))
            # one more automation tick after the rebuild: nothing else is launched
            t_done = time.time()
            _wait_for("an automation tick after the rebuild",
                      lambda: any(t.timestamp > t_done for t in _ticks(instance, AUTOMATION_SENSOR)), 120, log_path)
            t_after = time.time() - t_done
            new_runs = [r for r in instance.get_runs() if r.run_id not in runs_before]
            automation_ticks = [t for t in _ticks(instance, AUTOMATION_SENSOR) if t.run_ids]
            evaluations = [e.dagster_event.event_specific_data for r in new_runs
                           for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
            checked = {(ev.asset_key.to_user_string(), ev.check_name) for ev in evaluations}
    finally:
        stop_group(ui)
    assert not group_alive(ui.pid)

    print(f"\nautomation: sensor on after {t_sensor:.0f}s, both sensors ticked {t_ready:.0f}s after the start; "
          f"first run created {t_first_run.timestamp() - t_edit_wall:.0f}s after the edit; RL side rebuilt "
          f"{t_rebuilt:.0f}s after the edit by {len(runs)} run(s); next automation tick {t_after:.0f}s later")
    # exactly the RL side, once each, and nothing else
    assert counts(new) == Counter(dict.fromkeys(expected, 1))
    assert counts(asset_events(copy)) - mats_before == Counter(dict.fromkeys(expected, 1))
    assert {r.run_id for r in new_runs} == {r.run_id for r in runs} == {r.run_id for r in new}
    for run in new_runs:
        # launched by the automation sensor, not by a person or the principle sensor
        assert run.status == dg.DagsterRunStatus.SUCCESS, run.run_id
        assert run.tags.get("dagster/sensor_name") == AUTOMATION_SENSOR, run.tags
        assert run.tags.get("dagster/from_automation_condition") == "true", run.tags
    assert set().union(*({k.to_user_string() for k in r.asset_selection or ()} for r in new_runs)) == expected
    assert {rid for t in automation_ticks for rid in t.run_ids} == {r.run_id for r in new_runs}
    # the rebuilt assets' checks ran with them
    graph = asset_graph(copy)
    assert checked == {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys
                       if k.asset_key.to_user_string() in expected}
    # the principle sensor observed the edit: one new data version, of principle_files/rl only
    observed = asset_events(copy, "observations", after=start)
    assert [key_of(r) for r in observed] == ["principle_files/rl"]
    assert observed_version(observed[0]) != _previous_version(copy, observed[0])
    assert set(states(copy).values()) == {"materialized"}
    table = pl.read_parquet(root / "warehouse" / "principles" / "rl" / "data.parquet")
    assert table["definition"].str.starts_with(EDITED_DEFINITIONS["rl"]).sum() == 1
