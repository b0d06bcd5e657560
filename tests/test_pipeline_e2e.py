"""One tiny end-to-end materialization through the `salmon` CLI, then the staleness contract.

Runs the real CLI in subprocesses against a temporary warehouse and principles folder, with the
tiny profile shortened to a few pre-training steps (tests/profiles/ci.yaml).
"""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from projects import copy_project, salmon, states

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
BENCHMARKS = {"benchmark_scores", "benchmark_outputs"}
# everything downstream of the RL principles
RL_SIDE = {"ppo_policy", "ppo_steps", "ppo_samples", *BENCHMARKS}


# the benchmark view of sql/views.sql, as the README shows it
README_QUERY = "select * from benchmark_table"


def test_everything_materialized_and_queryable(project):
    root, _ = project
    st = states(project)
    assert set(st) >= {"principles/self_align", "principles/reward_model", "principles/rl",
                       "prompt_pool", "prompt_pool_rejects", "base_model",
                       "self_align_sft_data", "sft_model", "response_pairs",
                       "synthetic_preferences", "rm_training_data", "reward_model", "reward_model_eval", "rm_benchmarks",
                       "ppo_policy", "ppo_steps", "ppo_samples", *BENCHMARKS}
    assert set(st.values()) == {"materialized"}, st

    out = salmon(project, "sql", "select question_type, count(*) as n from prompt_pool group by 1 order by 1",
                 "--format", "json").stdout
    counts = {r["question_type"]: r["n"] for r in json.loads(out)}
    assert set(counts) == {"general", "reasoning", "red_teaming"} and min(counts.values()) > 20

    out = salmon(project, "sql", "select file_kind, count(*) from principles group by 1 order by 1",
                 "--format", "csv").stdout
    assert out.splitlines()[0] == "file_kind,count_star()" and len(out.splitlines()) == 4

    pool = pl.read_parquet(root / "warehouse" / "prompt_pool" / "data.parquet")
    for col in ("run_id", "config_hash", "code_version"):
        assert pool[col].null_count() == 0
    rl = pl.read_parquet(root / "warehouse" / "principles" / "rl" / "data.parquet")
    assert rl["principle_hash"].n_unique() == 1

    from salmon_dag.base_model import load_causal_lm, load_tokenizer
    from salmon_dag.model_ref import read_model_ref
    from salmon_dag.warehouse import Warehouse

    ref = read_model_ref(Warehouse(root / "warehouse"), "base_model")
    model = load_causal_lm(ref.model_id)
    load_tokenizer(ref.model_id)  # the saved tokenizer loads too
    assert model.config.hidden_size // model.config.num_attention_heads == 64
    assert ref.lineage["run_id"] and ref.info["n_params"] > 0


def test_self_align_stage(project):
    root, _ = project
    reasons = json.loads(salmon(project, "sql", "select coalesce(filter_reason, 'kept') as reason, count(*) as n "
                                "from self_align_sft_data group by 1", "--format", "json").stdout)
    assert sum(r["n"] for r in reasons) == 6  # ci.yaml: self_align.max_prompts
    data = pl.read_parquet(root / "warehouse" / "self_align_sft_data" / "data.parquet")
    assert data["principle_hash"].n_unique() == 1 and data["model_id"][0].endswith("base_model")
    assert (data["prompt_tokens"] > 1000).all()  # principles + exemplars were in context

    from salmon_dag.model_ref import read_model_ref
    from salmon_dag.warehouse import Warehouse

    sft = read_model_ref(Warehouse(root / "warehouse"), "sft_model")
    adapter = Path(sft.adapter_path)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "loss.png").is_file()
    assert sft.info["steps"] == 4 and sft.lineage["principle_hash"] == data["principle_hash"][0]

    pairs = pl.read_parquet(root / "warehouse" / "response_pairs" / "data.parquet")
    assert pairs.height > 0 and (pairs["response_a"] != pairs["response_b"]).all()
    assert pairs["model_id"][0] == sft.adapter_path


def test_preference_stage(project):
    root, _ = project
    prefs = pl.read_parquet(root / "warehouse" / "synthetic_preferences" / "data.parquet")
    pairs = pl.read_parquet(root / "warehouse" / "response_pairs" / "data.parquet")
    assert prefs.height == pairs.height * 19  # every pair under every reward-model principle (ci.yaml)
    rm = pl.read_parquet(root / "warehouse" / "rm_training_data" / "data.parquet")
    assert rm.height > 0 and set(rm["preferred"].to_list()) <= {1, 2}
    out = json.loads(salmon(project, "sql", "select deciding_principle, count(*) as n from rm_training_data "
                            "group by 1 order by n desc", "--format", "json").stdout)
    assert sum(r["n"] for r in out) == rm.height


def test_reward_model_stage(project):
    root, _ = project
    from salmon_dag.model_ref import read_model_ref
    from salmon_dag.reward_model.checkpoint import load_reward_model
    from salmon_dag.warehouse import Warehouse

    ref = read_model_ref(Warehouse(root / "warehouse"), "reward_model")
    assert ref.adapter_path is None and ref.info["steps"] == 4  # tiny: full fine-tune, saved whole
    _, _, manifest = load_reward_model(ref.model_id)
    assert manifest.kind == "merged" and (Path(ref.model_id) / "loss.png").is_file()
    rm = pl.read_parquet(root / "warehouse" / "rm_training_data" / "data.parquet")
    assert ref.lineage["principle_hash"] == rm["principle_hash"][0]

    rows = json.loads(salmon(project, "sql", "select metric, value, n, run_id from reward_model_eval",
                             "--format", "json").stdout)
    metrics = {r["metric"]: r for r in rows}
    assert all(r["run_id"] and r["n"] > 0 and 0 <= r["value"] <= 1 for r in rows)
    assert {"heldout_accuracy", "negation_flip_rate"} <= set(metrics)  # a held-out group even on 6 prompts
    if (ROOT.parent / "shared" / "data").is_dir():  # human pairs: half for PMP, half for agreement
        assert metrics["hh_harmless_agreement"]["n"] == 16 and ref.info["pmp_steps"] == 2

    out = json.loads(salmon(project, "score", "--prompt", "Name a colour.", "--response", "Blue.",
                            "--principle", "Concise", "--principle", "Harmless", "--format", "json").stdout)
    assert [p["principle"] for p in out["principles"]] == ["Concise", "Harmless"]
    assert all(p["score"] != p["negated_score"] for p in out["principles"])
    default = salmon(project, "score", "--prompt", "Name a colour.", "--response", "Blue.")
    table = default.stdout
    assert "Matches User Language" in table and "negated" in table
    # without --principle a total a user can read: under the principles RL shows at every step
    assert "under rl.yaml's 3 always-on principles" in table and "do not fit" not in table
    assert "Loading weights" not in default.stderr and "it/s]" not in default.stderr
    bad = salmon(project, "score", "--prompt", "x", "--response", "y", "--principle", "Nope", check=False)
    assert bad.returncode == 1 and bad.stderr.count("error:") == 1 and "unknown principle(s) 'Nope'" in bad.stderr


def test_rl_stage(project):
    root, _ = project
    from salmon_dag.model_ref import read_model_ref
    from salmon_dag.warehouse import Warehouse

    ref = read_model_ref(Warehouse(root / "warehouse"), "ppo_policy")
    assert ref.info["algorithm"] == "ppo" and ref.info["steps"] == 3 and not ref.info["is_adapter"]
    assert (Path(ref.model_id) / "rl_curves.png").is_file()
    steps = json.loads(salmon(project, "sql", "select step, metric, value from ppo_steps where metric like 'objective/%'",
                              "--format", "json").stdout)
    assert {r["step"] for r in steps} == {0, 1, 2}
    assert {"objective/rm_score", "objective/kl", "objective/response_tokens"} <= {r["metric"] for r in steps}
    samples = pl.read_parquet(root / "warehouse" / "ppo_samples" / "data.parquet")
    assert set(samples["step"]) == {0, 2} and samples["run_id"].null_count() == 0
    # tiny: rl.yaml's 3 always-on lines, then the RM's own "Concise" (named with the question type
    # outside "general")
    for names in samples["principles"].to_list():
        assert len(names) == 4 and names[3].split(" (")[0] == "Concise", names


def test_benchmark_stage(project):
    root, _ = project
    scores = pl.read_parquet(root / "warehouse" / "benchmark_scores" / "data.parquet")
    outputs = pl.read_parquet(root / "warehouse" / "benchmark_outputs" / "data.parquet")
    policies = ("base_model", "sft_model", "ppo_policy")
    for policy in policies:
        mine = scores.filter(pl.col("policy") == policy)
        assert {"mt_bench", "gsm8k", "humaneval"} <= set(mine["benchmark"]), policy
        assert {"rm_score/turn_1", "rm_score/turn_2", "rm_score/overall", "exact_match_strict", "exact_match_flexible",
                "pass@1"} <= set(mine["metric"])
    # the win rate is against the SFT policy: reported for the other two only
    assert set(scores.filter(pl.col("benchmark") == "win_rate")["policy"]) == {"base_model", "ppo_policy"}
    counts = dict(outputs.group_by("policy", "benchmark").len().select(
        pl.concat_str("policy", "benchmark", separator="/"), "len").iter_rows())
    for policy in policies:  # tests/profiles/ci.yaml: 2 two-turn questions, 4 instructions, 4 problems, 2 programs
        assert counts[f"{policy}/mt_bench"] == 4 and counts[f"{policy}/gsm8k"] == 4 and counts[f"{policy}/humaneval"] == 2
    assert counts["ppo_policy/win_rate"] == 4 and "sft_model/win_rate" not in counts
    assert outputs["run_id"].null_count() == 0 and scores["config_hash"].n_unique() == 1
    if (ROOT.parent / "shared" / "data").is_dir():  # human pairs present: the RM's agreement is scored
        rm = scores.filter(pl.col("policy") == "reward_model")
        assert set(rm["metric"]) == {"hh_harmless_agreement", "hh_harmless_agreement/principle_free"}
        assert set(rm["n"]) == {16}
        # taken from reward_model_eval, not scored again
        ev = pl.read_parquet(root / "warehouse" / "reward_model_eval" / "data.parquet")
        assert dict(zip(rm["metric"], rm["value"])) == dict(
            ev.filter(pl.col("metric").str.starts_with("hh_harmless_agreement")).select("metric", "value").iter_rows())
        assert not any(key.startswith("reward_model/") for key in counts)
    # the README's comparison query, verbatim
    assert README_QUERY in (ROOT / "README.md").read_text()
    rows = json.loads(salmon(project, "sql", README_QUERY, "--format", "json").stdout)
    assert {"benchmark", "metric", "base", "sft", "rl"} <= set(rows[0]) and len(rows) == scores.select("benchmark", "metric").n_unique()


def test_unseen_question_files_run_by_configuration_only(project, tmp_path):
    root, env = project
    questions = tmp_path / "my_questions.jsonl"  # plain instruction format, one turn each
    questions.write_text('{"id": "q-a", "instruction": "Name three colours of autumn leaves."}\n'
                         '{"id": "q-b", "question": "Why do cats purr?", "category": "stem"}\n')
    instructions = tmp_path / "my_instructions.jsonl"  # MT-Bench format
    instructions.write_text('{"question_id": 501, "category": "writing", "turns": ["Write a two-line poem about rain."]}\n')
    profile = tmp_path / "my_benchmarks.yaml"
    profile.write_text(
        f"extends: {ROOT / 'tests' / 'profiles' / 'ci.yaml'}\n"
        f"benchmarks:\n  mt_bench: {{questions: {{source: {questions}}}}}\n"
        f"  win_rate: {{instructions: {{source: {instructions}}}}}\n"
    )
    warehouse = tmp_path / "wh"
    shutil.copytree(root / "warehouse", warehouse)
    other = (root, {**env, "SALMON_PROFILE": str(profile), "SALMON_WAREHOUSE": str(warehouse)})
    stale = {a for a, s in states(other).items() if s != "materialized"}
    assert stale == BENCHMARKS
    salmon(other, "run", "--quiet")
    outputs = pl.read_parquet(warehouse / "benchmark_outputs" / "data.parquet")
    assert set(outputs.filter(pl.col("benchmark") == "mt_bench")["item_id"]) == {"q-a", "q-b"}
    assert set(outputs.filter(pl.col("benchmark") == "win_rate")["item_id"]) == {"501"}


def test_self_align_edit_makes_its_side_stale(project, tmp_path):
    project = copy_project(project, tmp_path / "p")
    root, _ = project
    sa = root / "principles" / "self_align.yaml"
    original = sa.read_text()
    try:
        sa.write_text(original.replace("definition: ", "definition: Always, ", 1))
        stale = {a for a, s in states(project).items() if s != "materialized"}
        assert stale == {"principles/self_align", "self_align_sft_data", "sft_model", "response_pairs",
                         "synthetic_preferences", "rm_training_data", "reward_model", "reward_model_eval", "rm_benchmarks",
                         *RL_SIDE}
    finally:
        sa.write_text(original)
    assert set(states(project).values()) == {"materialized"}  # staleness follows the content


def test_second_run_is_a_no_op(project):
    out = salmon(project, "run", "--quiet").stdout
    assert "nothing to do" in out


def test_corrupt_principle_file_fails_cleanly(project, tmp_path):
    project = copy_project(project, tmp_path / "p")
    root, _ = project
    table = root / "warehouse" / "principles" / "reward_model" / "data.parquet"
    before = table.read_bytes()
    rm = root / "principles" / "reward_model.yaml"
    good = rm.read_text()
    try:
        rm.write_text(good + "\n  - name: Honest and Accurate\n    definition: again\n    negative_definition: not again\n")
        proc = salmon(project, "run", "--quiet", "--select", "key:principles/reward_model", check=False)
        assert proc.returncode == 1
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, proc.stderr[-3000:]
        assert errors[0].startswith("error: principles: /"), errors[0]
        assert "reward_model.yaml: principles[19] 'Honest and Accurate'.name: duplicate of principles[0]" in errors[0]
        assert table.read_bytes() == before
        assert [p.name for p in table.parent.iterdir()] == ["data.parquet"]
        assert states(project)["principles/reward_model"] == "stale"
    finally:
        rm.write_text(good)


def test_broken_prompt_rows_become_rejects(project, tmp_path):
    root, env = copy_project(project, tmp_path / "p")
    prompts = tmp_path / "mine.jsonl"
    prompts.write_text(
        '{"prompt": "How do I repot a cactus without hurting my hands?"}\n'
        "{not json\n"
        '{"text": "wrong field"}\n'
        '{"prompt": "   "}\n'
    )
    profile = tmp_path / "with_file.yaml"
    profile.write_text(
        f"extends: {ROOT / 'tests' / 'profiles' / 'ci.yaml'}\n"
        "prompt_pool:\n  sources:\n    - {type: bundled}\n"
        f"    - {{type: jsonl, path: {prompts}, name: mine}}\n"
    )
    proj = (root, {**env, "SALMON_PROFILE": str(profile)})
    salmon(proj, "run", "--quiet", "--select", "prompt_pool")
    rejects = json.loads(salmon(proj, "sql", "select source_row, reason from prompt_pool_rejects "
                                "where source = 'mine' order by source_row", "--format", "json").stdout)
    assert [(r["source_row"], r["reason"]) for r in rejects] == [
        (2, "malformed_row"), (3, "missing_field"), (4, "empty")]
    kept = salmon(proj, "sql", "select count(*) from prompt_pool where source = 'mine'", "--format", "csv").stdout
    assert kept.splitlines()[1] == "1"


def test_cli_errors_are_one_line(project):
    root, env = project
    proc = salmon(project, "run", "--profile", "nope", check=False)
    assert proc.returncode == 1 and "unknown profile 'nope'" in proc.stderr
    proc = salmon(project, "sql", "select * from no_such_table", check=False)
    assert proc.returncode == 1 and "no_such_table" in proc.stderr
    proc = salmon(project, "status", "--format", "xml", check=False)
    assert proc.returncode == 1 and "--format" in proc.stderr
    proc = salmon(project, "run", "--select", "key:nothing_like_this", check=False)
    assert proc.returncode == 1 and "matches no buildable asset" in proc.stderr


def test_rebuild_is_deterministic_but_for_the_run_id(project, tmp_path):
    project = copy_project(project, tmp_path / "p")
    root, _ = project
    path = root / "warehouse" / "prompt_pool" / "data.parquet"
    salmon(project, "run", "--quiet", "--select", "prompt_pool")
    before = pl.read_parquet(path)
    salmon(project, "run", "--quiet", "--select", "prompt_pool")
    after = pl.read_parquet(path)
    assert before["run_id"][0] != after["run_id"][0]
    assert before.drop("run_id").equals(after.drop("run_id"))


def test_real_profile_validates_a_local_checkpoint_without_copying(project, tmp_path):
    root, env = project
    checkpoint = root / "warehouse" / "models" / "base_model"
    profile = tmp_path / "local_model.yaml"
    profile.write_text(
        f"extends: {ROOT / 'tests' / 'profiles' / 'ci.yaml'}\n"
        f"base_model:\n  kind: pretrained\n  model_id: {checkpoint}\n"
    )
    other = (root, {**env, "SALMON_PROFILE": str(profile), "SALMON_WAREHOUSE": str(tmp_path / "wh")})
    salmon(other, "run", "--quiet", "--select", "base_model")
    manifest = json.loads((tmp_path / "wh" / "models" / "base_model.json").read_text())
    assert manifest["model_id"] == str(checkpoint)
    assert manifest["info"]["head_dim"] == 64 and manifest["info"]["is_local"] is True
    assert not (tmp_path / "wh" / "models" / "base_model").exists()  # validated, not copied

    profile.write_text(profile.read_text().replace(str(checkpoint), str(tmp_path / "nowhere")))
    proc = salmon(other, "run", "--quiet", "--select", "base_model", check=False)
    assert proc.returncode == 1
    assert f"base_model.model_id: local path {tmp_path / 'nowhere'} does not exist" in proc.stderr
