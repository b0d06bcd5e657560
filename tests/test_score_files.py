"""`salmon score --input`: files of replies or of RewardBench-style comparisons, scored in one go."""

from __future__ import annotations

import json

import polars as pl
import pytest

from projects import ROOT, salmon
from salmon_dag.principles import PrincipleText
from salmon_dag.reward_model.files import ScoreFileError, read_rows, score_rows

KNOWN = {"Concise": PrincipleText("Concise", "The reply is short.", "The reply is long.")}
MINI = ROOT / "salmon_dag" / "data" / "rm_bench_mini.jsonl"


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
    assert summary["rows"] == pairs.height == 12 and set(summary["subsets"]) == {"length", "boilerplate", "language",
                                                                                  "sign-off"}
    # the shorter reply wins every pair but the three language ones (same length class, other language)
    assert summary["subsets"]["length"]["accuracy"] == 1.0 and scored["correct"].dtype == pl.Boolean
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


@pytest.mark.slow
def test_salmon_score_input_scores_the_bundled_comparisons(project, tmp_path):
    out = tmp_path / "scored.parquet"
    summary = json.loads(salmon(project, "score", "--input", str(MINI), "--output", str(out), "--format", "json").stdout)
    assert summary["rows"] == 12 and 0 <= summary["accuracy"] <= 1 and summary["subsets"]["language"]["n"] == 3
    scored = pl.read_parquet(out)
    assert scored.height == 12 and {"score_chosen", "score_rejected", "correct"} <= set(scored.columns)
    assert scored["correct"].mean() == pytest.approx(summary["accuracy"], abs=1e-4)
    # a reward model transformers loads (here: a sequence classifier on the project's base model), side by side
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base, other = project[0] / "warehouse" / "models" / "base_model", tmp_path / "other_rm"
    AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).save_pretrained(other)
    AutoTokenizer.from_pretrained(base).save_pretrained(other)
    both = json.loads(salmon(project, "score", "--input", str(MINI), "--compare", str(other), "--format", "json").stdout)
    theirs = both["compare"][str(other)]
    assert both["accuracy"] == summary["accuracy"] and theirs["rows"] == 12 and set(theirs["subsets"]) == set(summary["subsets"])
    table = salmon(project, "score", "--input", str(MINI), "--compare", str(other)).stdout
    assert "salmon" in table and str(other)[:20] in table.replace("\n", "")
    bad = salmon(project, "score", "--input", str(tmp_path / "none.jsonl"), check=False)
    assert bad.returncode == 1 and "none.jsonl: no such file" in bad.stderr
