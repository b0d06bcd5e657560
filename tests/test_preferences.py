"""Synthetic preferences: order consistency, rule verdicts, and incremental judging."""

import numpy as np
import polars as pl
import pytest

from salmon_dag.config import EngineConfig
from salmon_dag.engine import create_engine
from salmon_dag.preferences import combine, judge_preferences, rule_verdicts
from salmon_dag.principles import RewardModelPrinciple

PAIRS = pl.DataFrame({
    "pair_id": ["p1", "p2", "p3"], "prompt_id": ["q1", "q2", "q3"],
    "prompt": ["Say hi.", "Name a planet.", "Quelle est la meilleure saison pour visiter la Bretagne ?"],
    "response_a": ["Hi there!", "As an AI language model, I cannot name planets.",
                   "La meilleure saison pour visiter la Bretagne est la fin du printemps."],
    "response_b": ["Hello.", "Mars is a planet.", "The best season to visit Brittany is late spring."],
})


def principle(name, definition="The reply is good.", rule=None):
    return RewardModelPrinciple(name=name, definition=definition, negative_definition="The reply is bad.", rule=rule)


P = [principle("Helpful"), principle("Honest"),
     principle("No Boilerplate", rule={"type": "forbidden_phrase", "phrases": ["As an AI language model"]})]


class Counting:
    """Wraps an engine and counts the (prefix, principle) prompts it scores."""

    def __init__(self, engine):
        self.engine, self.scored = engine, 0
        self.tokenizer = engine.tokenizer
        self.encode_shared = engine.encode_shared

    def shared_prefix_logits(self, prefixes, suffixes, candidates):
        self.scored += sum(len(s) for s in suffixes)
        return self.engine.shared_prefix_logits(prefixes, suffixes, candidates)


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return create_engine(EngineConfig(backend="hf", device="cpu", dtype="float32"), str(tiny_checkpoint))


def test_combine_needs_both_orders_to_agree():
    consistent, score = combine(np.array([2.0, 1.0, -1.0, 0.0]), np.array([4.0, -1.0, -3.0, 1.0]))
    assert consistent.tolist() == [True, False, True, False]
    assert score.tolist() == [3.0, 0.0, -2.0, 0.0]
    # "mean" keeps every pair: a constant bias towards letter (a) (+1 on score_ab, -1 on score_ba) cancels
    _, debiased = combine(np.array([1.5, 0.5]), np.array([-0.5, -1.5]), "mean")
    assert debiased.tolist() == [0.5, -0.5]


def test_rule_verdicts():
    assert rule_verdicts(P[2], "q", "As an AI language model, no.", "Sure.") == ("forbidden_phrase", False, True, -1)
    assert rule_verdicts(P[0], "q", "a", "b") == (None, None, None, None)
    lang = principle("Same Language", rule={"type": "language_match"})
    assert rule_verdicts(lang, PAIRS["prompt"][2], PAIRS["response_a"][2], PAIRS["response_b"][2])[3] == 1
    # a comparative rule marks the preferred one of the two responses
    concise = principle("Concise", rule={"type": "length", "prefer": "shorter", "min_relative_difference": 0.2})
    assert rule_verdicts(concise, "q", "Mars is a planet.", "Mars is the fourth planet from the sun.") == ("length", True, False, 1)
    assert rule_verdicts(concise, "q", "One two three.", "Three two one.") == ("length", False, False, 0)


def test_incremental_judging_counts_judge_calls(engine):
    judge = Counting(engine)
    first, counts = judge_preferences(judge, PAIRS, P, "judge@1", log=lambda _: None)
    assert first.height == 9 and counts == {"judged": 9, "reused": 0, "resumed": 0}
    assert judge.scored == 9 * 2  # both orders
    assert first.filter(pl.col("principle") == "No Boilerplate")["rule_score"].to_list() == [0, -1, 0]
    assert first.filter(pl.col("principle") == "Helpful")["rule_score"].null_count() == 3

    # adding a principle judges only that principle
    judge.scored = 0
    added, counts = judge_preferences(judge, PAIRS, P + [principle("Concise")], "judge@1", cached=first, log=lambda _: None)
    assert counts == {"judged": 3, "reused": 9, "resumed": 0} and judge.scored == 3 * 2
    old = first.sort("pair_id", "principle")
    kept = added.filter(pl.col("principle") != "Concise").sort("pair_id", "principle")
    assert kept.equals(old)  # reused rows are byte-for-byte the old judgements

    # editing one principle's text re-judges only it
    judge.scored = 0
    edited = [P[0], principle("Honest", definition="The reply is true."), P[2]]
    _, counts = judge_preferences(judge, PAIRS, edited, "judge@1", cached=added, log=lambda _: None)
    assert counts == {"judged": 3, "reused": 6, "resumed": 0} and judge.scored == 6

    # removing a principle drops its rows without any judging
    judge.scored = 0
    fewer, counts = judge_preferences(judge, PAIRS, P[:2], "judge@1", cached=added, log=lambda _: None)
    assert counts == {"judged": 0, "reused": 6, "resumed": 0} and judge.scored == 0
    assert set(fewer["principle"].to_list()) == {"Helpful", "Honest"}

    # a different judge model invalidates everything
    _, counts = judge_preferences(judge, PAIRS, P[:1], "judge@2", cached=added, log=lambda _: None)
    assert counts == {"judged": 3, "reused": 0, "resumed": 0}


class Killed(Exception):
    pass


class DiesAfter(Counting):
    """A judge whose process is killed after ``calls`` judge calls."""

    def __init__(self, engine, calls):
        super().__init__(engine)
        self.calls = calls

    def shared_prefix_logits(self, prefixes, suffixes, candidates):
        if self.calls == 0:
            raise Killed
        self.calls -= 1
        return super().shared_prefix_logits(prefixes, suffixes, candidates)


def test_a_killed_judging_run_resumes_from_its_saved_chunks(engine, tmp_path):
    from salmon_dag.resume import ChunkStore

    whole, _ = judge_preferences(Counting(engine), PAIRS, P, "judge@1", log=lambda _: None, chunk_pairs=1)
    store = ChunkStore(tmp_path / "partial")
    with pytest.raises(Killed):
        judge_preferences(DiesAfter(engine, calls=2), PAIRS, P, "judge@1", log=lambda _: None, chunk_pairs=1, store=store)
    assert len(store) == 2  # the two finished calls, one pair each
    judge = Counting(engine)
    resumed, counts = judge_preferences(judge, PAIRS, P, "judge@1", log=lambda _: None, chunk_pairs=1, store=store)
    assert counts == {"judged": 3, "reused": 0, "resumed": 6} and judge.scored == 3 * 2  # only the third pair
    assert resumed.equals(whole)
    # saved judgements of another judge are never taken
    _, counts = judge_preferences(Counting(engine), PAIRS, P, "judge@2", log=lambda _: None, store=store)
    assert counts["resumed"] == 0 and counts["judged"] == 9


def test_a_killed_sampling_run_resumes_with_the_same_completions(engine, tmp_path):
    from salmon_dag.engine import SamplingParams, generate_in_chunks
    from salmon_dag.resume import ChunkStore

    prompts = [f"Question {i}: name a colour." for i in range(5)]
    params = SamplingParams(max_new_tokens=6, temperature=1.0, n=2, seed=3)
    whole = generate_in_chunks(engine, prompts, params, "t", log=lambda _: None, chunk=2)

    class Dies:
        tokenizer, calls = engine.tokenizer, []

        def generate(self, batch, p):
            self.calls.append(len(batch))
            if len(self.calls) == 2:
                raise Killed
            return engine.generate(batch, p)

    store = ChunkStore(tmp_path / "partial")
    with pytest.raises(Killed):
        generate_in_chunks(Dies(), prompts, params, "t", log=lambda _: None, chunk=2, store=store, model="m@1")
    again = Dies()
    again.calls = [0, 0, 0]  # counts only the calls of the rerun from here
    out = generate_in_chunks(again, prompts, params, "t", log=lambda _: None, chunk=2, store=store, model="m@1")
    assert again.calls[3:] == [2, 1]  # the first chunk came from the store
    assert out == whole
    # another model, or other sampling parameters, never take a saved chunk
    other = Dies()
    other.calls = [0, 0, 0]
    generate_in_chunks(other, prompts, params, "t", log=lambda _: None, chunk=2, store=store, model="m@2")
    assert other.calls[3:] == [2, 2, 1]


def test_a_rule_decides_labels_with_a_meaningless_judge():
    """With a judge that scores every pair the same, the forbidden-phrase rule still picks the
    answer without the boilerplate whenever its principle is drawn."""
    import json

    from salmon_dag.aggregation import aggregate
    from salmon_dag.principles import PrincipleText
    from salmon_dag.config import AggregationConfig

    rng = np.random.default_rng(0)
    rows = []
    for pair in PAIRS.iter_rows(named=True):
        for p in P:
            rule = rule_verdicts(p, pair["prompt"], pair["response_a"], pair["response_b"])[3]
            ab, ba = rng.normal(size=2)
            rows.append({"pair_id": pair["pair_id"], "principle": p.name, "score_ab": ab, "score_ba": ba,
                         "score": float((ab + ba) / 2), "rule_score": rule})
    prefs = pl.DataFrame(rows, schema={"pair_id": pl.Utf8, "principle": pl.Utf8, "score_ab": pl.Float64,
                                       "score_ba": pl.Float64, "score": pl.Float64, "rule_score": pl.Int64})
    texts = [PrincipleText(p.name, p.definition, p.negative_definition) for p in P]
    cfg = AggregationConfig(passes=200, subset_p=0.2, max_principles=3, label_noise=0.0, rule_label_noise=0.0)
    df, stats = aggregate(prefs, PAIRS, texts, cfg, seed=1)
    ruled = df.filter(pl.col("rule_decided"))
    assert stats["rule_decided"] == ruled.height > 0
    assert set(ruled["pair_id"].to_list()) == {"p2"} and set(ruled["deciding_principle"].to_list()) == {"No Boilerplate"}
    for row in ruled.iter_rows(named=True):
        preferred = row["response_1"] if row["preferred"] == 1 else row["response_2"]
        negated = next(p["negated"] for p in json.loads(row["principles"]) if p["name"] == "No Boilerplate")
        # a negated rule principle prefers the boilerplate answer: the flip follows the negation
        assert ("As an AI language model" in preferred) == negated
