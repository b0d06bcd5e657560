"""`salmon score --input`: files of replies or of RewardBench-style comparisons, scored in one go."""

from __future__ import annotations

import json

import polars as pl
import pytest

from projects import CI_PROFILE, ROOT, copy_project, salmon
from salmon_dag.principles import PrincipleText
from salmon_dag.reward_model.files import ScoreFileError, read_rows, score_rows

KNOWN = {"Concise": PrincipleText("Concise", "The reply is short.", "The reply is long.")}
MINI = ROOT / "salmon_dag" / "data" / "benchmarks" / "rm_bench_mini.jsonl"


class ShortIsBetter:
    """Scores a reply by minus its length; records the principle texts it was given."""

    def __init__(self):
        self.texts = []

    def score(self, prompts, responses, texts):
        self.texts.extend(texts)
        return [-float(len(r)) for r in responses]


def test_replies_get_a_score_and_comparisons_an_accuracy_per_subset(tmp_path):
    scorer = ShortIsBetter()
    replies = pl.DataFrame({"prompt": ["a", "b"], "response": ["xx", "x"]})
    scored, summary = score_rows(scorer, replies, ["The reply is kind."], KNOWN)
    assert scored["score"].to_list() == [-2.0, -1.0] and summary == {"rows": 2}
    assert scorer.texts == [["The reply is kind."]] * 2  # rows without principles: the default

    pairs = read_rows(MINI)
    scored, summary = score_rows(ShortIsBetter(), pairs, [], {})
    assert summary["rows"] == pairs.height == 16 and set(summary["subsets"]) == {"length", "boilerplate", "language",
                                                                                  "sign-off"}
    # the shorter reply wins every pair but the language ones (the English reply is the shorter there)
    assert {s: v["accuracy"] for s, v in summary["subsets"].items()} == {"length": 1.0, "boilerplate": 1.0,
                                                                        "sign-off": 1.0, "language": 0.0}
    assert scored["correct"].dtype == pl.Boolean
    scorer = ShortIsBetter()
    score_rows(scorer, pl.DataFrame({"prompt": ["a"], "response": ["b"], "principles": [["Concise", "Own text."]]}), [], KNOWN)
    assert scorer.texts == [["The reply is short.", "Own text."]]  # names resolved, texts kept


def test_files_that_cannot_be_scored_are_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "a", "answer": "b"}) + "\n")
    with pytest.raises(ScoreFileError, match="bad.jsonl: expected columns prompt \\+ response"):
        score_rows(ShortIsBetter(), read_rows(bad), ["p"], {}, str(bad))
    with pytest.raises(ScoreFileError, match="row 0: no principles"):
        score_rows(ShortIsBetter(), pl.DataFrame({"prompt": ["a"], "response": ["b"]}), [], {}, "f")
    with pytest.raises(ScoreFileError, match="expected a .jsonl or .parquet"):
        (tmp_path / "x.csv").write_text("a")
        read_rows(tmp_path / "x.csv")


def other_reward_model(project, tmp_path):
    """A reward model that is not ours: a sequence classifier on the project's base model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base, other = project[0] / "warehouse" / "models" / "base_model", tmp_path / "other_rm"
    AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).save_pretrained(other)
    AutoTokenizer.from_pretrained(base).save_pretrained(other)
    return other


@pytest.mark.slow
def test_salmon_score_input_scores_the_bundled_comparisons(project, tmp_path):
    out = tmp_path / "scored.parquet"
    summary = json.loads(salmon(project, "score", "--input", str(MINI), "--output", str(out), "--format", "json").stdout)
    assert summary["rows"] == 16 and 0 <= summary["accuracy"] <= 1 and summary["subsets"]["language"]["n"] == 4
    scored = pl.read_parquet(out)
    assert scored.height == 16 and {"score_chosen", "score_rejected", "correct"} <= set(scored.columns)
    assert scored["correct"].mean() == pytest.approx(summary["accuracy"], abs=1e-4)
    # the rm_benchmarks asset (the tiny profile's file) says the same, overall and per subset
    table = json.loads(salmon(project, "sql", "select subset, n, accuracy from rm_benchmarks where model = 'reward_model'",
                              "--format", "json").stdout)
    assert {r["subset"]: (r["n"], r["accuracy"]) for r in table} == {
        "overall": (16, pytest.approx(summary["accuracy"], abs=1e-4)),
        **{s: (v["n"], pytest.approx(v["accuracy"], abs=1e-4)) for s, v in summary["subsets"].items()}}
    # a reward model transformers loads (here: a sequence classifier on the project's base model), side by side
    other = other_reward_model(project, tmp_path)
    both = json.loads(salmon(project, "score", "--input", str(MINI), "--compare", str(other), "--format", "json").stdout)
    theirs = both["compare"][str(other)]
    assert both["accuracy"] == summary["accuracy"] and theirs["rows"] == 16 and set(theirs["subsets"]) == set(summary["subsets"])
    table = salmon(project, "score", "--input", str(MINI), "--compare", str(other)).stdout
    assert "salmon" in table and str(other)[:20] in table.replace("\n", "")
    bad = salmon(project, "score", "--input", str(tmp_path / "none.jsonl"), check=False)
    assert bad.returncode == 1 and "none.jsonl: no such file" in bad.stderr


def test_rm_benchmarks_files_that_cannot_be_read_are_named(tmp_path):
    from salmon_dag.benchmarks.config import BenchmarkSource
    from salmon_dag.reward_model.bench import read_comparisons

    assert read_comparisons("mini", BenchmarkSource(source="bundled:rm_bench_mini.jsonl"), 5).height == 5
    assert read_comparisons("gone", BenchmarkSource(source=str(tmp_path / "gone.jsonl"), optional=True), None) is None
    with pytest.raises(ScoreFileError, match="rm_benchmarks.files.gone: .*gone.jsonl"):
        read_comparisons("gone", BenchmarkSource(source=str(tmp_path / "gone.jsonl")), None)
    replies = tmp_path / "replies.jsonl"
    replies.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n")
    with pytest.raises(ScoreFileError, match="rm_benchmarks.files.replies: .* lacks column.*chosen, rejected"):
        read_comparisons("replies", BenchmarkSource(source=str(replies)), None)


def test_rm_benchmarks_scoring_shows_its_progress():
    from salmon_dag.progress import parse_progress
    from salmon_dag.reward_model.bench import WithProgress

    lines = []
    scoring = WithProgress(ShortIsBetter(), "Org/some-rm on reward_bench", 2 * 16, lines.append, chunk=5)
    _, summary = score_rows(scoring, read_rows(MINI), [], {})
    assert summary["rows"] == 16 and len(lines) == 2 * 4  # 16 chosen, then 16 rejected, in chunks of 5
    last = parse_progress(lines[-1])  # the run view draws a bar from these lines
    assert (last.task, last.done, last.total) == ("rm_benchmarks", 32, 32) and "Org/some-rm" in lines[-1]


@pytest.mark.slow
def test_rm_benchmarks_asset_scores_ours_and_another_reward_model_side_by_side(project, tmp_path):
    from salmon_dag.config import load_profile
    from salmon_dag.reward_model.bench import STAGE
    from salmon_dag.reward_model.files import PlainRewardModel
    from salmon_dag.stage import StageInputs
    from salmon_dag.warehouse import Warehouse

    # another reward model in the profile: only rm_benchmarks is stale, and its table holds both
    copy = copy_project(project, tmp_path / "copy")
    other = other_reward_model(project, tmp_path)
    profile = tmp_path / "profiles" / CI_PROFILE.name
    profile.parent.mkdir()
    profile.write_text(f"extends: {CI_PROFILE}\nrm_benchmarks:\n  compare: [{other}]\n")
    copy = (copy[0], {**copy[1], "SALMON_PROFILE": str(profile)})
    stale = {s["asset"] for s in json.loads(salmon(copy, "status", "--format", "json").stdout) if s["state"] != "materialized"}
    assert stale == {"rm_benchmarks"}
    salmon(copy, "run", "-q")
    table = pl.read_parquet(copy[0] / "warehouse" / "rm_benchmarks" / "data.parquet")
    assert set(table["model"]) == {"reward_model", str(other)} and table.height == 2 * 5  # overall and four subsets, each model
    ours = pl.read_parquet(project[0] / "warehouse" / "rm_benchmarks" / "data.parquet")
    assert table.filter(pl.col("model") == "reward_model").select("subset", "n", "accuracy").equals(
        ours.select("subset", "n", "accuracy"))  # ours did not change
    _, theirs = score_rows(PlainRewardModel(str(other)), read_rows(MINI), [], {})
    got = table.filter(pl.col("model") == str(other), pl.col("subset") == "overall")["accuracy"].item()
    assert got == pytest.approx(theirs["accuracy"], abs=1e-4)

    # a principle the reward model does not have: named with the profile field
    profile.write_text(f"extends: {CI_PROFILE}\nrm_benchmarks:\n  principles: [Brevity]\n")
    inputs = StageInputs(STAGE.name, STAGE.reads, load_profile(str(profile)), Warehouse(copy[0] / "warehouse"),
                         copy[0] / "principles")
    with pytest.raises(ScoreFileError, match="rm_benchmarks.principles: unknown principle\\(s\\) 'Brevity'"):
        STAGE.run(inputs, log=lambda _: None)
