"""The reward model's probes (salmon_dag.reward_model.evaluate): on held-out pairs a verifiable
rule decides, and on hand-written pairs (reward_model.principle_pairs), each both ways."""

from __future__ import annotations

import json

import polars as pl
import pytest

from salmon_dag.principles import PrincipleText
from salmon_dag.reward_model.evaluate import principle_pair_probes, rule_probes
from salmon_dag.rules import ForbiddenPhraseRule, LengthRule

SHORT = PrincipleText("Concise", "Be short.", "Be long.", LengthRule(type="length", prefer="shorter"))
CLEAN = PrincipleText("No Boilerplate", "No AI talk.", "AI talk.",
                      ForbiddenPhraseRule(type="forbidden_phrase", phrases=["As an AI"]))


class LengthScorer:
    """Prefers short replies under a text that says so, long ones otherwise: follows Concise both
    ways and knows nothing of boilerplate."""

    def score(self, prompts, responses, principles):
        texts = principles if isinstance(principles[0], list) else [principles] * len(responses)
        return [(-1.0 if "short" in " ".join(t) else 1.0) * len(r) for r, t in zip(responses, texts)]


def test_rule_probes_measure_both_directions_on_the_pairs_a_rule_decides():
    pairs = pl.DataFrame({"prompt": ["q"] * 3, "response_a": ["tiny", "a much longer reply here", "As an AI, hi"],
                          "response_b": ["a much longer reply here", "tiny", "hi there you all"]})
    metrics = {m.metric: (m.value, m.n) for m in rule_probes(LengthScorer(), pairs, [SHORT, CLEAN])}
    assert metrics["probe/Concise/principle"] == (1.0, 2) and metrics["probe/Concise/negation"] == (1.0, 2)
    # one boilerplate pair; the scorer prefers the longer reply there, which is the clean one under
    # "No AI talk." (not "short") and the clean one again under its negation: 1.0 and 0.0
    assert metrics["probe/No Boilerplate/principle"] == (1.0, 1)
    assert metrics["probe/No Boilerplate/negation"] == (0.0, 1)


def test_principle_pairs_from_a_file_both_ways_and_bad_rows_are_one_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"principle": "Concise", "prompt": "q", "chosen": "Yes.", "rejected": "Yes, and much more besides."},
            {"principle": "No Boilerplate", "prompt": "q", "chosen": "Blue is calm.",
             "rejected": "As an AI, I think blue is calm."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = {m.metric: m.value for m in principle_pair_probes(LengthScorer(), str(path), [SHORT, CLEAN])}
    assert metrics == {"pairs/Concise/principle": 1.0, "pairs/Concise/negation": 1.0,
                       "pairs/No Boilerplate/principle": 0.0, "pairs/No Boilerplate/negation": 1.0}
    path.write_text(json.dumps({**rows[0], "principle": "Brief"}) + "\n")
    with pytest.raises(ValueError, match=r"pairs\.jsonl: row 1: unknown principle 'Brief'"):
        principle_pair_probes(LengthScorer(), str(path), [SHORT, CLEAN])
    path.write_text(json.dumps({"principle": "Concise", "prompt": "q"}) + "\n")
    with pytest.raises(ValueError, match="row 1: missing or non-text field"):
        principle_pair_probes(LengthScorer(), str(path), [SHORT])


def test_the_bundled_hand_written_pairs_name_shipped_principles_and_their_rules_agree():
    from pathlib import Path

    from salmon_dag.principles import principle_texts
    from salmon_dag.benchmarks.data import read_records
    from salmon_dag.principles import load_principles
    from salmon_dag.rules import compare_rule

    root = Path(__file__).resolve().parents[1]
    by_name = {p.name: p for p in principle_texts(load_principles(root / "principles", "reward_model"))}
    rows = [r for _, r in read_records("bundled:principle_pairs_mini.jsonl")]
    assert len(rows) == 40 and len({r["principle"] for r in rows}) == 5
    for r in rows:  # the rule agrees with the hand-written label
        assert compare_rule(by_name[r["principle"]].rule, r["prompt"], r["chosen"], r["rejected"]) == (True, False), r
