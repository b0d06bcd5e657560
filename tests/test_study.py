"""The multi-seed study (``salmon bench seeds``, salmon_dag/study.py): claims read from synthetic
warehouse tables, aggregation over seeds, derived profiles, the ``seed_study`` table and its
summary view, the orchestration with a stand-in CLI, and one real run on the CI project."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from salmon_dag import claims, study
from salmon_dag.benchmarks.report import below_reference
from salmon_dag.config import PROFILES_DIR, load_profile
from salmon_dag.warehouse import Warehouse

CI_PROFILE = Path(__file__).resolve().parent / "profiles" / "ci.yaml"


def by_claim(rows: list[dict]) -> dict[str, dict]:
    return {r["claim"]: r for r in rows}


def eval_table() -> pl.DataFrame:
    return pl.DataFrame({
        "metric": ["heldout_accuracy", "negation_flip_rate", "probe/Concise/negation", "probe/Concise/principle",
                   "hh_harmless_agreement", "pairs/Concise/principle"],
        "value": [0.84, 0.83, 0.80, 0.90, 0.5, 0.75],
        "n": [336, 336, 48, 48, 16, 8],
    })


def steps_table() -> pl.DataFrame:
    # rm_score rises over 8 steps (stored out of order); another metric that must not count
    values = {3: 0.5, 0: -1.0, 1: 0.0, 2: 0.2, 7: 2.0, 6: 1.0, 4: 0.8, 5: 0.9}
    rows = [(s, "objective/rm_score", v) for s, v in values.items()] + [(s, "objective/kl", 100.0) for s in range(8)]
    return pl.DataFrame(rows, schema={"step": pl.Int64, "metric": pl.Utf8, "value": pl.Float64}, orient="row")


def scores_table() -> pl.DataFrame:
    rows = [
        ("sft_model", "mt_bench", "rating/overall", 5.0), ("ppo_policy", "mt_bench", "rating/overall", 6.0),
        ("ppo_policy", "win_rate", "win_rate", 0.4),
        ("sft_model", "gsm8k", "exact_match_strict", 0.2), ("ppo_policy", "gsm8k", "exact_match_strict", 0.1),
        ("reward_model", "rm_agreement", "hh_harmless_agreement", 0.6),
    ]
    return pl.DataFrame([{"policy": p, "benchmark": b, "metric": m, "value": v, "n": 4, "stderr": None}
                         for p, b, m, v in rows], schema_overrides={"stderr": pl.Float64})


def test_probe_claims_threshold_every_probe_and_inform_the_rest():
    rows = by_claim(claims.probe_claims(eval_table()))
    assert set(rows) == {"rm/probe/Concise/principle", "rm/probe/Concise/negation", "rm/heldout_accuracy",
                         "rm/negation_flip_rate", "rm/pairs/Concise/principle"}
    assert rows["rm/pairs/Concise/principle"]["passed"] is None  # hand-written pairs: information
    assert rows["rm/probe/Concise/principle"] == {
        "claim": "rm/probe/Concise/principle", "value": 0.9, "threshold": 0.85, "direction": ">=", "passed": True,
        "detail": "n=48"}
    assert rows["rm/probe/Concise/negation"]["passed"] is False
    assert rows["rm/heldout_accuracy"]["threshold"] is None and rows["rm/heldout_accuracy"]["passed"] is None


def test_rl_claims_rise_is_last_minus_first_quarter_by_step():
    rows = by_claim(claims.rl_claims(steps_table()))
    assert rows["rl/rm_score_first_quarter"]["value"] == pytest.approx(-0.5)  # steps 0, 1
    assert rows["rl/rm_score_last_quarter"]["value"] == pytest.approx(1.5)  # steps 6, 7
    rise = rows["rl/rm_score_rise"]
    assert rise["value"] == pytest.approx(2.0) and (rise["threshold"], rise["direction"], rise["passed"]) == (0.0, ">", True)
    flat = steps_table().with_columns(pl.lit(1.0).alias("value"))
    assert by_claim(claims.rl_claims(flat))["rl/rm_score_rise"]["passed"] is False  # no rise is not a rise


def test_benchmark_claims_agree_with_the_asset_check():
    scores = scores_table()
    rows = by_claim(claims.benchmark_claims(scores, "sft_model"))
    assert set(rows) == {f"bench/{b}/rl_not_below_sft" for b in ("mt_bench", "win_rate", "gsm8k")}
    assert rows["bench/mt_bench/rl_not_below_sft"]["value"] == pytest.approx(1.0)
    assert rows["bench/win_rate/rl_not_below_sft"]["value"] == pytest.approx(-0.1)  # against par 0.5
    assert rows["bench/gsm8k/rl_not_below_sft"]["value"] == pytest.approx(-0.1)
    below = {line.split()[0] for line in below_reference(scores, "ppo_policy", "sft_model")}
    assert {c.split("/")[1] for c, r in rows.items() if not r["passed"]} == below == {"win_rate", "gsm8k"}


def test_check_and_steer_claims():
    failed = claims.check_claims(["benchmark_scores:rl_not_below_sft", "ppo_steps:rm_score_rises"])[0]
    assert (failed["value"], failed["passed"]) == (2.0, False) and "ppo_steps:rm_score_rises" in failed["detail"]
    assert claims.check_claims([])[0]["passed"] is True

    means = {"sft": 20.0, "Concise": 10.0, "Complete and Thorough": 30.0}
    rows = by_claim(claims.steer_claims(means))
    assert rows["steer/order"]["passed"] is True
    assert rows["steer/Concise/mean_tokens"]["value"] == 10.0 and rows["steer/sft/mean_tokens"]["passed"] is None
    assert "steer/Concise/near_empty_share" not in rows
    rows = by_claim(claims.steer_claims({**means, "Concise": 25.0, "Concise/near_empty_share": 0.6,
                                        "sft/near_empty_share": 0.7}))
    assert rows["steer/order"]["value"] == 0.0 and rows["steer/order"]["passed"] is False
    assert (rows["steer/Concise/near_empty_share"]["threshold"], rows["steer/Concise/near_empty_share"]["passed"]) == (0.5, False)
    assert rows["steer/sft/near_empty_share"]["passed"] is None
    rows = by_claim(claims.steer_claims({**means, "Complete and Thorough/stop_rate": 0.97, "sft/stop_rate": 0.5}))
    assert rows["steer/Complete and Thorough/stop_rate"]["value"] == 0.97
    assert rows["steer/sft/stop_rate"]["passed"] is None  # information: the cause of the order, not a claim


def test_warehouse_claims_read_the_seed_tables(tmp_path):
    wh = Warehouse(tmp_path)
    wh.write_table("reward_model_eval", eval_table())
    wh.write_table("ppo_steps", steps_table())
    wh.write_table("benchmark_scores", scores_table())
    rows = claims.warehouse_claims(wh, "sft_model", ["x:y"])
    names = [r["claim"] for r in rows]
    assert names[0].startswith("rm/probe/") and names[-1] == "checks/failed" and len(names) == 5 + 3 + 3 + 1
    # with rm_benchmarks: the reward model's accuracies (not the compared models')
    wh.write_table("rm_benchmarks", pl.DataFrame({"file": ["mini"] * 3, "subset": ["overall", "length", "overall"],
                                                  "model": ["reward_model", "reward_model", "other"],
                                                  "n": [4, 2, 4], "accuracy": [0.75, 1.0, 0.5]}))
    bench = {r["claim"]: r["value"] for r in claims.warehouse_claims(wh, "sft_model", []) if "/bench/" in r["claim"]}
    assert bench == {"rm/bench/mini/overall": 0.75, "rm/bench/mini/length": 1.0}
    frame = study.claims_frame(rows, seed=3, precision="auto", shared_data=False)
    assert frame.schema == pl.Schema(study.STUDY_SCHEMA) and frame["seed"].unique().to_list() == [3]


def study_rows(seed: int, values: dict[str, float], precision: str = "auto") -> pl.DataFrame:
    rows = [claims.claim("rm/probe/Concise/principle", values["probe"], 0.85, ">="),
            claims.claim("rm/heldout_accuracy", values["acc"]),
            claims.claim("checks/failed", values["checks"], 0.0, "<=")]
    return study.claims_frame(rows, seed, precision, shared_data=False)


SEEDS = {1: {"probe": 0.9, "acc": 0.8, "checks": 0.0}, 2: {"probe": 0.95, "acc": 0.7, "checks": 0.0},
         3: {"probe": 0.8, "acc": 0.9, "checks": 0.0}}


def test_aggregate_mean_std_and_pass_in_every_seed():
    rows = pl.concat([study_rows(s, v) for s, v in reversed(SEEDS.items())])
    summary = {r["claim"]: r for r in study.aggregate(rows).iter_rows(named=True)}
    probe = summary["rm/probe/Concise/principle"]
    assert probe["seed"] == [1, 2, 3] and probe["values"] == [0.9, 0.95, 0.8] and probe["n"] == 3
    assert probe["mean"] == pytest.approx(0.883333, abs=1e-6)
    assert probe["std"] == pytest.approx(pl.Series([0.9, 0.95, 0.8]).std(ddof=1))
    assert (probe["min"], probe["max"], probe["passed_all"]) == (0.8, 0.95, False)  # seed 3 fails
    assert summary["checks/failed"]["passed_all"] is True and summary["checks/failed"]["std"] == 0.0
    assert summary["rm/heldout_accuracy"]["passed_all"] is None  # informational
    one = study.aggregate(study_rows(1, SEEDS[1]))
    assert one["std"].to_list() == [0.0, 0.0, 0.0] and one["passed_all"].to_list() == [True, None, True]


def test_store_replaces_by_key_and_the_summary_view_agrees(tmp_path):
    wh = Warehouse(tmp_path)
    study.store(wh, pl.concat([study_rows(s, SEEDS[s]) for s in (1, 2)]))
    rerun = {"probe": 0.5, "acc": 0.6, "checks": 2.0}
    table = study.store(wh, pl.concat([study_rows(2, rerun), study_rows(1, SEEDS[1], precision="float32")]))
    assert table.height == 9 and table.equals(wh.read_table(study.STUDY_TABLE))
    auto = table.filter(pl.col("precision") == "auto")
    assert auto.filter(pl.col("seed") == 1)["value"].to_list() == [0.9, 0.8, 0.0]  # kept
    assert auto.filter(pl.col("seed") == 2)["value"].to_list() == [0.5, 0.6, 2.0]  # replaced

    cols, rows = wh.query("select * from seed_study_summary where precision = 'auto'")
    assert cols == ["claim", "precision", "shared_data", "n", "mean", "std", "min", "max", "threshold", "direction",
                    "passed_all"]
    view = {r[0]: dict(zip(cols, r)) for r in rows}
    for expected in study.aggregate(auto).iter_rows(named=True):
        got = view[expected["claim"]]
        assert got["n"] == expected["n"] == 2 and got["passed_all"] == expected["passed_all"]
        for key in ("mean", "std", "min", "max"):
            assert got[key] == pytest.approx(expected[key], abs=1e-4), key
    assert view["checks/failed"]["passed_all"] is False and view["rm/heldout_accuracy"]["passed_all"] is None
    _, rows = wh.query("select n, std from seed_study_summary where precision = 'float32' and claim = 'checks/failed'")
    assert rows == [(1, 0.0)]


def test_derived_profile_extends_the_chosen_one(tmp_path):
    assert study.profile_file("tiny") == PROFILES_DIR / "tiny.yaml"
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(study.derived_profile(study.profile_file(str(CI_PROFILE)), 7, "float32")))
    profile, parent = load_profile(str(path)), load_profile(str(CI_PROFILE))
    assert (profile.seed, profile.base_model.tiny.precision) == (7, "float32")
    assert profile.base_model.tiny.steps == parent.base_model.tiny.steps == 12  # the rest is the CI profile's
    assert profile.name == "ci-seed7"
    path.write_text(yaml.safe_dump(study.derived_profile(study.profile_file("tiny"), 2, None)))
    assert load_profile(str(path)).base_model == load_profile("tiny").base_model
    assert load_profile(str(path)).seed == 2


def test_seed_list():
    assert study.seed_list(3, None) == [1, 2, 3]
    assert study.seed_list(5, "4, 9") == [4, 9]
    for bad in ("1,x", "2,2", ","):
        with pytest.raises(study.StudyError, match="--seed-list"):
            study.seed_list(5, bad)


def test_copy_warehouse_points_manifests_at_the_copy_and_leaves_the_study_behind(tmp_path):
    src = tmp_path / "warehouse"
    wh = Warehouse(src)
    wh.write_table("ppo_steps", steps_table())
    wh.write_table(study.STUDY_TABLE, study_rows(1, SEEDS[1]))
    (src / "models").mkdir()
    (src / "models" / "sft_model.json").write_text(json.dumps({"model_id": str(src / "models" / "sft_model")}))
    (src / ".study" / "auto-seed1").mkdir(parents=True)
    dst = src / ".study" / "auto-seed2" / "warehouse"
    study.copy_warehouse(src, dst, skip=src / ".study")
    assert Warehouse(dst).tables() == ["ppo_steps"] and not (dst / ".study").exists()
    assert json.loads((dst / "models" / "sft_model.json").read_text())["model_id"] == str(dst / "models" / "sft_model")
    assert Warehouse(dst).query("select count(*) from ppo_steps")[1] == [(16,)]


def test_a_failing_seed_run_is_one_line_with_the_log(tmp_path):
    project = study.SeedProject(tmp_path, 3, tmp_path)
    lines: list[str] = []
    with pytest.raises(study.StudyError) as exc:
        project.salmon(["sql", "select 1"], lines.append)  # the real CLI: no warehouse database there
    message = str(exc.value)
    assert "\n" not in message and message.startswith("seed 3: salmon sql exited with 1: no warehouse database")
    assert message.endswith(f"(log: {project.log_path})") and lines and lines[-1].startswith("error:")
    assert project.log_path.read_text().startswith("$ salmon sql select 1\n")


def fake_salmon(calls: list):
    """A stand-in for the CLI subprocess: a run leaves the claim tables in the seed's warehouse."""

    def salmon(self: study.SeedProject, args: list[str], progress) -> None:
        calls.append((self.seed, args, load_profile(str(self.profile)).seed))
        progress(f"salmon {' '.join(args)}")
        wh = Warehouse(self.warehouse)
        wh.write_table("reward_model_eval", eval_table())
        wh.write_table("ppo_steps", steps_table())
        wh.write_table("benchmark_scores", scores_table().filter(pl.col("benchmark") == "mt_bench"))

    return salmon


def test_run_study_runs_each_seed_in_its_own_project(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(study.SeedProject, "salmon", fake_salmon(calls))

    def run_intervention_claims(seed_dir: Path, run_salmon) -> list[dict]:
        (seed_dir / "principles" / "rl.yaml").write_text("edited")
        run_salmon(["run", "-q", "--select", "key:principles/rl+"])
        return [{"claim": "intervention/moved", "value": 1.0, "threshold": 0.5, "direction": ">=", "passed": True,
                 "detail": "stand-in"}]

    monkeypatch.setattr(study, "run_intervention_claims", run_intervention_claims)
    principles = Path(__file__).resolve().parents[1] / "principles"
    plan = study.StudyPlan(profile=str(CI_PROFILE), warehouse=tmp_path / "warehouse", principles=principles,
                           out=tmp_path / "out", seeds=[4, 5], precision="float32", from_asset=None, steer=False,
                           intervention=True)
    progress, log = [], []
    rows = study.run_study(plan, lambda home: [], progress.append, log.append)
    assert [c[0] for c in calls] == [4, 4, 5, 5] and [c[2] for c in calls] == [4, 4, 5, 5]
    assert calls[0][1] == ["run", "-q"] and calls[1][1][-1] == "key:principles/rl+"
    for seed in (4, 5):
        root = tmp_path / "out" / f"float32-seed{seed}"
        assert (root / "principles" / "rl.yaml").read_text() == "edited"  # the seed's copy, not the project's
        assert load_profile(str(root / "profile.yaml")).base_model.tiny.precision == "float32"
    assert rows["seed"].unique().sort().to_list() == [4, 5] and set(rows["precision"]) == {"float32"}
    assert rows.filter(pl.col("claim") == "intervention/moved").height == 2
    assert progress[0] == "seed 4 (1/2): salmon run -q" and len(log) == 2 and log[0].startswith("seed 4 (1/2): ")

    plan = study.StudyPlan(**{**plan.__dict__, "from_asset": "reward_model", "intervention": False})
    with pytest.raises(study.StudyError, match="no tables: salmon run first"):
        study.run_study(plan, lambda home: [], progress.append, log.append)


def test_reuse_rebuilds_the_tail_in_each_seeds_own_warehouse(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(study.SeedProject, "salmon", fake_salmon(calls))
    principles = Path(__file__).resolve().parents[1] / "principles"
    plan = study.StudyPlan(profile=str(CI_PROFILE), warehouse=tmp_path / "warehouse", principles=principles,
                           out=tmp_path / "out", seeds=[4], precision=None, from_asset="response_pairs",
                           steer=False, intervention=False, reuse=True)
    with pytest.raises(study.StudyError, match="seed 4: --reuse needs an earlier study's warehouse"):
        study.run_study(plan, lambda home: [], lambda line: None, lambda line: None)
    study.run_study(study.StudyPlan(**{**plan.__dict__, "from_asset": None, "reuse": False}), lambda home: [],
                    lambda line: None, lambda line: None)
    root = tmp_path / "out" / "auto-seed4"
    (root / "warehouse" / "models").mkdir()
    (root / "warehouse" / "models" / "base_model.json").write_text("{}")  # the seed's own upstream
    (root / "principles" / "rl.yaml").write_text("stale copy")
    rows = study.run_study(plan, lambda home: [], lambda line: None, lambda line: None)
    assert calls[-1] == (4, ["run", "-q", "--select", "key:principles/* or key:response_pairs+"], 4)
    assert (root / "warehouse" / "models" / "base_model.json").read_text() == "{}"  # kept, not replaced
    assert (root / "principles" / "rl.yaml").read_text() == (principles / "rl.yaml").read_text()
    assert not (tmp_path / "warehouse").exists() and rows["seed"].to_list()[0] == 4
    with pytest.raises(study.StudyError, match="--reuse rebuilds a tail"):
        study.run_study(study.StudyPlan(**{**plan.__dict__, "from_asset": None}), lambda home: [],
                        lambda line: None, lambda line: None)


def test_plot_is_written(tmp_path):
    from PIL import Image

    path = tmp_path / "plots" / "seed_study.png"
    table = pl.concat([study_rows(s, v) for s, v in SEEDS.items()] + [study_rows(1, SEEDS[1], "float32")])
    study.plot_study(table, path)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 300
    assert [p.name for p in path.parent.iterdir()] == ["seed_study.png"]  # no temporary left


@pytest.mark.slow
def test_bench_seeds_on_the_ci_project(project, tmp_path):
    from projects import copy_project, salmon

    copy = copy_project(project, tmp_path)  # the study writes into the project warehouse: leave the shared one be
    # the CI profile with lighter benchmarks (two policies, no GSM8K / HumanEval): a shorter tail
    profile = tmp_path / "light.yaml"
    profile.write_text(yaml.safe_dump({"extends": str(CI_PROFILE), "benchmarks": {
        "policies": ["sft_model", "ppo_policy"], "gsm8k": {"enabled": False}, "humaneval": {"enabled": False}}}))
    proc = salmon(copy, "bench", "seeds", "--seed-list", "1", "--from", "reward_model", "--no-steer",
                  "--no-intervention", "--profile", str(profile), check=False, timeout=300)
    warehouse = tmp_path / "warehouse"
    seed_dir = warehouse / ".study" / "auto-seed1"
    assert Warehouse(warehouse).table_path(study.STUDY_TABLE).is_file(), proc.stdout + proc.stderr
    table = Warehouse(warehouse).read_table(study.STUDY_TABLE)
    assert table["seed"].unique().to_list() == [1] and table["shared_data"].unique().len() == 1
    claims = set(table["claim"])
    assert {"rl/rm_score_rise", "checks/failed", "rm/heldout_accuracy"} <= claims
    assert any(c.startswith("rm/probe/") for c in claims) and any(c.startswith("bench/") for c in claims)
    failed = table.filter(pl.col("passed").not_())["claim"].to_list()
    assert proc.returncode == (1 if failed else 0), proc.stdout + proc.stderr
    if failed:
        assert proc.stderr.count("\n") == 1 and "claim(s) failed" in proc.stderr and failed[0] in proc.stderr
    assert "mean ± std" in proc.stdout and "rl/rm_score_rise" in proc.stdout
    assert (seed_dir / "salmon.log").is_file() and (warehouse / "plots" / "seed_study.png").is_file()
    assert load_profile(str(seed_dir / "profile.yaml")).seed == 1
    # the seed rebuilt the tail in its own warehouse and reused what is upstream of it
    seed_wh, project_wh = Warehouse(seed_dir / "warehouse"), Warehouse(warehouse)
    run_ids = {t: (seed_wh.read_table(t)["run_id"][0], project_wh.read_table(t)["run_id"][0])
               for t in ("prompt_pool", "reward_model_eval", "benchmark_scores")}
    assert run_ids["prompt_pool"][0] == run_ids["prompt_pool"][1]
    assert run_ids["reward_model_eval"][0] != run_ids["reward_model_eval"][1]
    assert run_ids["benchmark_scores"][0] != run_ids["benchmark_scores"][1]
    summary = json.loads(salmon(copy, "sql", "select * from seed_study_summary", "--format", "json").stdout)
    assert {r["claim"] for r in summary} == claims and all(r["n"] == 1 for r in summary)
