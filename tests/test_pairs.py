"""Response pairs: two distinct samples per prompt, short and identical pairs dropped."""

import polars as pl

from salmon_dag.config import EngineConfig
from salmon_dag.engine import SamplingParams, create_engine
from salmon_dag.engine.base import Completion
from salmon_dag.pairs import contrast_pair, make_pairs, pair_id, pick_pairs
from salmon_dag.rules import ForbiddenPhraseRule, LengthRule
from salmon_dag.templates import format_chat_prompt

PROMPTS = pl.DataFrame({"prompt_id": ["p1", "p2", "p3"], "prompt": ["a?", "b?", "c?"],
                        "question_type": ["general", "reasoning", "general"]})


def comp(text: str) -> Completion:
    return Completion(text=text, token_ids=(1, 2), finish_reason="stop")


def test_make_pairs_drops_short_and_identical():
    outputs = [[comp("one two three"), comp("four five six")], [comp("ok"), comp("long enough answer")],
               [comp("same words here"), comp("same words here")]]
    pairs, dropped = make_pairs(PROMPTS, outputs, min_words=3)
    assert pairs["prompt_id"].to_list() == ["p1"]
    assert dropped == {"too_short": 1, "identical": 1, "candidates/sampled": 6, "candidates/too_short": 1}
    assert pairs["pair_id"][0] == pair_id("p1", "one two three", "four five six")
    assert pairs["words_a"][0] == 3


def test_min_chars_as_in_salmon():
    # SALMON drops a pair when an output is under 16 characters
    outputs = [[comp("Fifteen chars!!"), comp("Sixteen chars!!!")], [comp("Sixteen chars!!!"), comp("Seventeen chars!!")]]
    pairs, dropped = make_pairs(PROMPTS[:2], outputs, min_chars=16)
    assert pairs["prompt_id"].to_list() == ["p2"] and dropped["too_short"] == 1


def test_spare_candidates_fill_a_pair():
    # the first two long-enough, different candidates make the pair; the others are spares
    outputs = [[comp("no"), comp("a long enough one"), comp("a long enough one"), comp("another long one"),
                comp("unused but long")]]
    pairs, counts = make_pairs(PROMPTS[:1], outputs, min_words=3)
    assert pairs.select("response_a", "response_b").row(0) == ("a long enough one", "another long one")
    assert counts == {"candidates/sampled": 5, "candidates/too_short": 1}


BOILERPLATE = ForbiddenPhraseRule(type="forbidden_phrase", phrases=["as an AI language model"])
SHORTER = LengthRule(type="length", prefer="shorter", min_relative_difference=0.2)
LONGER = LengthRule(type="length", prefer="longer", min_relative_difference=0.2)


def test_rule_contrast_picks_the_pair_the_rules_tell_apart():
    texts = ["plain short answer", "plain short reply", "As an AI language model, a plain reply here",
             "plain short answer with many more words in it"]
    # boilerplate differs (a single-response rule) and the lengths differ: beats length alone
    assert contrast_pair("q?", texts, [BOILERPLATE, SHORTER, LONGER]) == (0, 2)
    # the two length rules decide the same pairs: one count, the earliest such pair wins
    assert contrast_pair("q?", texts, [SHORTER, LONGER]) == (0, 2)
    # nothing tells them apart: the first two, as without rules
    assert contrast_pair("q?", texts[:2], [BOILERPLATE, SHORTER]) == (0, 1)
    outputs = [[comp("no"), *(comp(t) for t in texts)]]
    pairs, _ = make_pairs(PROMPTS[:1], outputs, min_words=3, contrast_rules=[BOILERPLATE])
    assert pairs.select("response_a", "response_b").row(0) == (texts[0], texts[2])
    # without rules the selection is unchanged: the first two usable, distinct candidates
    pairs, _ = make_pairs(PROMPTS[:1], outputs, min_words=3)
    assert pairs.select("response_a", "response_b").row(0) == (texts[0], texts[1])


def test_several_pairs_per_prompt_use_each_candidate_once():
    texts = ["plain short answer", "plain short reply", "As an AI language model, a plain reply here",
             "plain short answer with many more words in it", "one more plain answer"]
    # the best contrast first (0, 2), then the best among the rest (1, 3): the lengths differ
    assert pick_pairs("q?", texts, [BOILERPLATE, SHORTER], 2) == [(0, 2), (1, 3)]
    assert pick_pairs("q?", texts, [BOILERPLATE, SHORTER], 1) == [contrast_pair("q?", texts, [BOILERPLATE, SHORTER])]
    # without rules: two by two in order; never more pairs than the candidates allow
    assert pick_pairs("q?", texts, [], 3) == [(0, 1), (2, 3)]
    outputs = [[comp("no"), *(comp(t) for t in texts)], [comp("one two three"), comp("four five six")]]
    pairs, counts = make_pairs(PROMPTS[:2], outputs, min_words=3, contrast_rules=[BOILERPLATE, SHORTER],
                               pairs_per_prompt=2)
    assert pairs["prompt_id"].to_list() == ["p1", "p1", "p2"]
    assert pairs.select("response_a", "response_b").rows()[:2] == [(texts[0], texts[2]), (texts[1], texts[3])]
    assert pairs["pair_id"].n_unique() == 3
    assert counts["candidates/fewer_pairs"] == 1  # p2 had two candidates: one pair (kept)


def test_pairs_per_prompt_needs_two_candidates_each():
    import pytest
    from pydantic import ValidationError

    from salmon_dag.config import PairsConfig

    assert PairsConfig(candidates=8, pairs_per_prompt=4).pairs_per_prompt == 4
    with pytest.raises(ValidationError, match="pairs_per_prompt 3 needs candidates >= 6"):
        PairsConfig(candidates=5, pairs_per_prompt=3)


def test_sampling_gives_two_distinct_responses_per_prompt(tiny_checkpoint):
    engine = create_engine(EngineConfig(backend="hf", device="cpu", dtype="float32"), str(tiny_checkpoint))
    outputs = engine.generate([format_chat_prompt(p) for p in ["Name a fruit.", "Say hello.", "Count to three."]],
                              SamplingParams(max_new_tokens=12, temperature=0.7, n=2, seed=0))
    pairs, dropped = make_pairs(PROMPTS, outputs, min_words=1)
    assert pairs.height + dropped.get("too_short", 0) + dropped.get("identical", 0) == 3
    assert dropped["candidates/sampled"] == 6
    assert dropped.get("identical", 0) == 0
    assert (pairs["response_a"] != pairs["response_b"]).all()


def test_contrast_rules_are_the_judged_principles_rules_under_rule_contrast_only():
    from pathlib import Path

    from salmon_dag.pairs import contrast_rules
    from salmon_dag.principles import load_principles

    pset = load_principles(Path(__file__).resolve().parents[1] / "principles", "reward_model")
    ruled = [p.name for _, p in pset.principles() if p.rule is not None]
    assert len(contrast_rules(pset, None)) == len(ruled) > 1
    assert len(contrast_rules(pset, ruled[:1])) == 1


def test_select_first_reads_no_contrast_rules(tmp_path):
    from assets_defs.self_align import contrast_rules
    from salmon_dag.settings import Settings

    profile = tmp_path / "first.yaml"
    profile.write_text("extends: tiny\npairs:\n  select: first\n")
    # a principles folder that does not exist: under select: first it is never read
    assert contrast_rules(Settings(str(profile), str(tmp_path / "wh"), str(tmp_path / "none"))) == []
